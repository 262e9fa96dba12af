// `qil export --format int` says everything: tests/apps/int_reader.py, an independent NumPy reader written from
// docs/export.md, rebuilds LeNet and ResNet-20 from the integers, scales and metadata alone, and its logits must
// match qil's fake-quantized network on the same batch, for every quantizer kind.
#include <doctest/doctest.h>

#include "test_paths.h"

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "apps/export.h"
#include "apps/npy.h"
#include "engine/autograd.h"
#include "engine/serialize.h"
#include "export_fixtures.h"
#include "layers/models.h"
#include "layers/quantize.h"

using engine::Tensor;
using namespace exporttest;

namespace {

// ResNet-20 on 1x8x8 inputs, 3 classes, at `bits`; with QIL and LSQ the first conv and the last linear at 8 bits
// (the first conv's input is signed; DoReFa's and PACT's 8-bit weight codes do not fit int8), calibrated on random batches, with non-trivial BatchNorm statistics.
void write_resnet_checkpoint(const std::string& path, const std::string& kind, int bits) {
  const layers::ModelMeta meta{"resnet20", layers::ModelSpec{1, 3, 8, 11}, {0.5f}, {0.25f}};
  auto model = layers::build_model(meta.model, meta.spec);
  uint64_t seed = 500;
  for (auto& b : model->named_buffers()) {
    Tensor t = random_tensor(b.tensor.shape(), ++seed);
    const bool var = b.name.find("running_var") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = var ? 0.5f + std::fabs(t.data()[i]) : 0.3f * t.data()[i];
    b.tensor.copy_from(t);
  }
  layers::QuantPlan plan;
  plan.wbits = bits;
  plan.abits = bits;
  plan.first_last_8bit = kind == "qil" || kind == "lsq";
  plan.quantizer = kind;
  layers::apply_quant_plan(*model, plan);
  int left = 2;
  layers::calibrate(*model, 2, [&](Tensor& x) {
    if (left-- == 0) return false;
    x = random_tensor({4, 1, 8, 8}, seed++);
    return true;
  });
  engine::Checkpoint ck;
  layers::add_model(ck, *model, meta);
  engine::write_checkpoint(path, ck);
}

struct Agreement {
  double max_abs = 0, max_logit = 0;
  int64_t top1_equal = 0, images = 0;
  std::vector<double> per_image;  // max |difference| per image
};

// Exports `ckpt` as int, runs the reader and qil on the same batch, and compares the logits.
Agreement compare_with_reader(const TempDir& dir, const std::string& ckpt) {
  layers::LoadedModel lm = layers::load_model_checkpoint(ckpt);
  const apps::ExportedModel e = apps::export_int(*lm.model, lm.meta);
  engine::write_safetensors(dir.file("i.safetensors"), e.tensors, e.metadata);
  const Tensor x = random_tensor({16, 1, 8, 8}, 77);  // (N, C, H, W)
  apps::write_npy(dir.file("x.npy"), x);
  const Tensor want = apps::predict_logits(*lm.model, lm.meta.spec, x, 16, "x");
  const char* py = std::getenv("QIL_PYTHON");
  const std::string reader = testpaths::source_dir() + "/tests/apps/int_reader.py";
  const std::string cmd = std::string(py ? py : "/usr/bin/python3") + " '" + reader + "' '" +
                          dir.file("i.safetensors") + "' '" + dir.file("x.npy") + "' '" + dir.file("y.npy") + "'";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "the NumPy reader failed (needs python3-numpy): ", cmd);
  const Tensor got = apps::read_npy(dir.file("y.npy"));
  REQUIRE(got.shape() == want.shape());
  Agreement a;
  const int64_t n = want.size(0), k = want.size(1);
  a.images = n;
  for (int64_t i = 0; i < n; ++i) {
    int64_t bw = 0, bg = 0;
    a.per_image.push_back(0);
    for (int64_t j = 0; j < k; ++j) {
      const float w = want.data()[i * k + j], g = got.data()[i * k + j];
      a.per_image.back() = std::max(a.per_image.back(), double(std::fabs(w - g)));
      a.max_abs = std::max(a.max_abs, double(std::fabs(w - g)));
      a.max_logit = std::max(a.max_logit, double(std::fabs(w)));
      if (w > want.data()[i * k + bw]) bw = j;
      if (g > got.data()[i * k + bg]) bg = j;
    }
    a.top1_equal += bw == bg;
  }
  return a;
}

}  // namespace

TEST_CASE("int export: the NumPy reader reproduces qil's logits from the integers and scales alone") {
  for (const std::string kind : {"qil", "lsq", "pact", "dorefa"}) {
    for (const std::string model : {"lenet", "resnet20"}) {
      CAPTURE(kind);
      CAPTURE(model);
      TempDir dir;
      if (model == "lenet") write_tiny_checkpoint(dir.file("m.ckpt"), true, kind);  // conv2 W4A4, fc1 W3A4
      else write_resnet_checkpoint(dir.file("m.ckpt"), kind, 2);
      const Agreement a = compare_with_reader(dir, dir.file("m.ckpt"));
      MESSAGE(kind, " ", model, ": max |reader - qil| ", a.max_abs, " with logits up to ", a.max_logit,
              ", top-1 equal on ", a.top1_equal, "/", a.images);
      REQUIRE(a.max_logit > 0.01);  // a network whose logits are all ~0 would prove nothing
      // The reader computes in float64, qil in float32: a value within rounding of a quantization step may take
      // the neighbouring level on one side, so one image in 16 may differ; a wrong rule moves nearly all.
      const auto close = std::count_if(a.per_image.begin(), a.per_image.end(),
                                       [&](double d) { return d <= 1e-4 * a.max_logit; });
      CHECK(close >= a.images - 1);
      CHECK(a.top1_equal >= a.images - 1);
    }
  }
}
