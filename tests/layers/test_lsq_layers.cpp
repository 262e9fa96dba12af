// LSQ inside a network: a LeNet quantized with kind "lsq" calibrates s, fits output scales near 1 (LSQ's output
// is in value units, unlike QIL's normalized levels), lowers its loss on one batch with plain SGD steps, and
// survives a checkpoint round trip with its steps, kinds and output scales. Not the op (tests/quant/test_lsq.cpp).
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "gradcheck.h"

#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/serialize.h"
#include "layers/model_io.h"
#include "layers/models.h"
#include "layers/quantize.h"
#include "train_fixtures.h"

using namespace layers;
using engine::Generator;
using qiltest::Batch;
using qiltest::random_batch;
using qiltest::train_steps;

namespace {
std::unique_ptr<Module> lsq_lenet(int bits, const Batch& b, uint64_t seed) {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, seed});
  QuantPlan plan;
  plan.wbits = plan.abits = bits;
  plan.quantizer = "lsq";
  apply_quant_plan(*m, plan);
  calibrate(*m, 1, [&, n = 0](Tensor& x) mutable { x = b.x; return n++ < 1; });
  return m;
}
}  // namespace

TEST_CASE("LSQ layers: kinds and s = 2·mean|w|/sqrt(Q_P) after calibration, output scales fit near 1") {
  Batch b = random_batch(16, 10, 3);
  for (int bits : {8, 4}) {
    CAPTURE(bits);
    auto m = lsq_lenet(bits, b, 5);
    int quantized = 0;
    for (auto& [name, l] : quantizable_layers(*m)) {
      if (!l->quantized()) continue;
      CAPTURE(name);
      ++quantized;
      REQUIRE(l->weight_quantizer());
      CHECK(std::string(l->weight_quantizer()->kind()) == "lsq_weight");
      CHECK(std::string(l->act_quantizer()->kind()) == "lsq_activation");
      double abs_sum = 0;
      const auto w = l->weight().to_vector();
      for (float v : w) abs_sum += std::fabs(v);
      const double qp = (1 << (bits - 1)) - 1;
      CHECK(l->weight_quantizer()->parameter("s").item() ==
            doctest::Approx(2.0 * abs_sum / static_cast<double>(w.size()) / std::sqrt(qp)).epsilon(1e-4));
      // QIL's levels are normalized (w̄ in [-1, 1]), so its scale absorbs max|w|; LSQ's are in value units,
      // and the least-squares fit only corrects clipping and rounding.
      const float scale = l->out_scale().item();
      CHECK(std::fabs(scale - 1.f) < (bits == 8 ? 0.02f : 0.1f));  // measured: 1.004, 1.001; 0.974, 0.965
    }
    CHECK(quantized >= 2);
  }
}

TEST_CASE("LSQ layers: a quantized lenet lowers its loss on one batch, and s trains") {
  Batch b = random_batch(32, 10, 4);
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 9});  // from scratch: the loss starts near ln 10
  QuantPlan plan;
  plan.wbits = plan.abits = 3;
  plan.quantizer = "lsq";
  apply_quant_plan(*m, plan);
  calibrate(*m, 1, [&, n = 0](Tensor& x) mutable { x = b.x; return n++ < 1; });
  std::map<std::string, float> s0;
  for (auto& [name, l] : quantizable_layers(*m))
    if (l->quantized()) s0[name] = l->weight_quantizer()->parameter("s").item();
  const float first = engine::ops::softmax_cross_entropy(m->forward(b.x), b.y).item();
  const float last = train_steps(*m, b, 40, 0.05f);
  MESSAGE("3-bit LSQ lenet: loss " << first << " -> " << last);
  CHECK(last < 0.5f * first);
  bool moved = false;
  for (auto& [name, l] : quantizable_layers(*m))
    if (l->quantized()) moved = moved || l->weight_quantizer()->parameter("s").item() != s0[name];
  CHECK(moved);
}

TEST_CASE("LSQ layers: a checkpoint round trip keeps kinds, steps and output scales, and the outputs") {
  Batch b = random_batch(8, 10, 6);
  auto m = lsq_lenet(4, b, 7);
  for (auto& [name, l] : quantizable_layers(*m)) {
    if (!l->quantized()) continue;
    l->weight_quantizer()->parameter("s").data()[0] *= 0.9f;  // away from calibration: a recalibration shows
    l->act_quantizer()->parameter("s").data()[0] *= 1.1f;
  }
  const ModelMeta meta{"lenet", ModelSpec{1, 10, 28, 7}, {0.5f}, {0.25f}};
  engine::Checkpoint ck;
  add_model(ck, *m, meta);
  const auto dir = std::filesystem::temp_directory_path() / ("qil_test_lsq_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "lsq.ckpt").string();
  engine::write_checkpoint(path, ck);
  LoadedModel lm = load_model_checkpoint(path);
  std::filesystem::remove_all(dir);

  std::map<std::string, QuantizableModule*> loaded;
  for (auto& [n, l] : quantizable_layers(*lm.model)) loaded[n] = l;
  for (auto& [n, l] : quantizable_layers(*m)) {
    if (!l->quantized()) continue;
    CAPTURE(n);
    QuantizableModule* k = loaded.at(n);
    REQUIRE(k->weight_quantizer());
    CHECK(std::string(k->weight_quantizer()->kind()) == "lsq_weight");
    CHECK(std::string(k->act_quantizer()->kind()) == "lsq_activation");
    CHECK(k->weight_quantizer()->parameter("s").item() == l->weight_quantizer()->parameter("s").item());
    CHECK(k->act_quantizer()->parameter("s").item() == l->act_quantizer()->parameter("s").item());
    CHECK(k->out_scale().item() == l->out_scale().item());
  }
  bool asked = false;
  calibrate(*lm.model, 1, [&](Tensor&) { asked = true; return false; });
  CHECK_FALSE(asked);
  engine::NoGradGuard ng;
  m->eval();
  lm.model->eval();
  CHECK(lm.model->forward(b.x).to_vector() == m->forward(b.x).to_vector());
}
