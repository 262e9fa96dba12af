// Fixtures for the export and npy tests: a self-deleting temp folder, raw file writing, and a small LeNet
// checkpoint (optionally quantized, with γ and output scales moved off their defaults).
#pragma once
#include <unistd.h>

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "layers/model_io.h"
#include "engine/random.h"
#include "layers/models.h"
#include "layers/quantize.h"

namespace exporttest {

namespace fs = std::filesystem;

// Runs f, which must throw engine::Error with a message containing every one of parts.
template <class F>
void check_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL("no error; expected one mentioning '", parts.back(), "'");
  } catch (const engine::Error& e) {
    const std::string msg = e.what();
    for (const auto& part : parts) CHECK_MESSAGE(msg.find(part) != std::string::npos, "'", part, "' not in: ", msg);
  }
}

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("qil_export_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline engine::Tensor random_tensor(const engine::Shape& shape, uint64_t seed) {
  engine::Generator g(seed);
  engine::Tensor t = engine::Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = g.normal();
  return t;
}

// LeNet on 1x8x8 inputs, 3 classes.
inline layers::ModelMeta tiny_meta() { return layers::ModelMeta{"lenet", layers::ModelSpec{1, 3, 8, 7}, {0.5f}, {0.25f}}; }

inline void set_scalar(layers::Module& m, const std::string& name, float v) {
  for (auto& p : m.named_parameters())
    if (p.name == name) {
      p.tensor.data()[0] = v;
      return;
    }
  FAIL("no parameter ", name);
}

// Writes a LeNet checkpoint. quantized: conv2 at W<wbits>A4 and fc1 at W3A4 (conv1 and fc2 stay full
// precision) with quantizers of `kind`, calibrated on random batches, then (QIL) γ and out_scale set by hand so
// that the test sees γ ≠ 1 and s ≠ 1.
inline void write_tiny_checkpoint(const std::string& path, bool quantized, const std::string& kind = "qil",
                                  int wbits = 4) {
  const layers::ModelMeta meta = tiny_meta();
  auto model = layers::build_model(meta.model, meta.spec);
  if (quantized) {
    layers::QuantPlan plan;
    plan.wbits = wbits;
    plan.abits = 4;
    plan.quantizer = kind;
    plan.overrides["fc1"] = layers::LayerOverride{3, 4, false, ""};
    layers::apply_quant_plan(*model, plan);
    int left = 2;
    uint64_t seed = 100;
    layers::calibrate(*model, 2, [&](engine::Tensor& x) {
      if (left-- == 0) return false;
      x = random_tensor({4, 1, 8, 8}, seed++);
      return true;
    });
    if (kind == "qil") {
      set_scalar(*model, "conv2.weight_quant.gamma", 1.3f);
      set_scalar(*model, "fc1.weight_quant.gamma", 0.7f);
      set_scalar(*model, "conv2.out_scale", 0.8f);
      set_scalar(*model, "fc1.out_scale", 1.7f);
    }
  }
  engine::Checkpoint ck;
  layers::add_model(ck, *model, meta);
  engine::write_checkpoint(path, ck);
}

// ResNet-20 on 1x8x8 inputs, 3 classes, at `bits` of `kind`; with QIL and LSQ the first conv and the last linear
// at 8 bits (the first conv's input signed; DoReFa's and PACT's 8-bit weight codes do not fit int8), with
// non-trivial BatchNorm statistics, calibrated on random batches. `seed` draws everything.
inline layers::LoadedModel quantized_resnet20(const std::string& kind, int bits, uint64_t seed) {
  layers::LoadedModel lm;
  lm.meta = layers::ModelMeta{"resnet20", layers::ModelSpec{1, 3, 8, seed}, {0.5f}, {0.25f}};
  lm.model = layers::build_model(lm.meta.model, lm.meta.spec);
  for (auto& b : lm.model->named_buffers()) {
    engine::Tensor t = random_tensor(b.tensor.shape(), ++seed);
    const bool var = b.name.find("running_var") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = var ? 0.5f + std::fabs(t.data()[i]) : 0.3f * t.data()[i];
    b.tensor.copy_from(t);
  }
  layers::QuantPlan plan;
  plan.wbits = plan.abits = bits;
  plan.first_last_bits = kind == "qil" || kind == "lsq" ? 8 : 32;
  plan.quantizer = kind;
  layers::apply_quant_plan(*lm.model, plan);
  int left = 2;
  layers::calibrate(*lm.model, 2, [&](engine::Tensor& x) {
    if (left-- == 0) return false;
    x = random_tensor({4, 1, 8, 8}, seed++);
    return true;
  });
  return lm;
}

inline void write_model_checkpoint(const std::string& path, const layers::LoadedModel& lm) {
  engine::Checkpoint ck;
  layers::add_model(ck, *lm.model, lm.meta);
  engine::write_checkpoint(path, ck);
}

// Same logits up to float rounding. qil and the other side (a reader, a runtime) round differently, so a value
// within rounding of a quantization step can take the neighbouring level on one side (on the full Fashion-MNIST
// test set, 1.4% of images for a W4A4 ResNet-20): one image in 16 may differ; a wrong rule moves nearly all.
inline void check_same_logits(const engine::Tensor& want, const engine::Tensor& got) {
  REQUIRE(got.shape() == want.shape());
  double max_logit = 0;
  for (int64_t i = 0; i < want.numel(); ++i) max_logit = std::max(max_logit, double(std::fabs(want.data()[i])));
  REQUIRE(max_logit > 0.01);  // a network whose logits are all ~0 would prove nothing
  int64_t top1 = 0, close = 0;
  double worst = 0;
  const int64_t n = want.size(0), k = want.size(1);
  for (int64_t i = 0; i < n; ++i) {
    int64_t bw = 0, bg = 0;
    double d = 0;
    for (int64_t j = 0; j < k; ++j) {
      d = std::max(d, double(std::fabs(want.data()[i * k + j] - got.data()[i * k + j])));
      if (want.data()[i * k + j] > want.data()[i * k + bw]) bw = j;
      if (got.data()[i * k + j] > got.data()[i * k + bg]) bg = j;
    }
    top1 += bw == bg;
    close += d <= 1e-4 * max_logit;
    worst = std::max(worst, d);
  }
  MESSAGE("max |difference| ", worst, " with logits up to ", max_logit, "; within 1e-4 of that on ", close, "/", n,
          " images, top-1 equal on ", top1, "/", n);
  CHECK(close >= n - 1);
  CHECK(top1 >= n - 1);
}

}  // namespace exporttest
