// Quantization across stages at the layer level: the output-scale fit leaves the bias alone, a stage that
// adds a quantizer refits the scale, the plan's γ setting wins over a loaded one, and frozen intervals stay
// where calibration put them while the weights train, and --recalibrate-weights sets a new width's interval again.
//
// The fixtures sit on the quantization grid so that the right answer is exact and checkable by hand:
// inputs x ∈ {0, 1, 2, 3} with a 2-bit activation quantizer calibrated to [0, 3] give x̄ = x/3; weights
// w ∈ {0, ±0.2, ±0.4, ±0.6} with a 3-bit weight quantizer calibrated to [0, 0.6] give w̄ = w/0.6. Then
// x·wᵀ = 3·0.6·(x̄·w̄ᵀ) = 1.8·(x̄·w̄ᵀ): the least-squares output scale is 1.8 whatever the bias.
#include <array>
#include <map>

#include "gradcheck.h"
#include "train_fixtures.h"

#include "engine/ops.h"
#include "engine/optim.h"
#include "layers/basic.h"
#include "layers/models.h"
#include "layers/quantize.h"
#include "quant/qil.h"

using namespace layers;
using engine::Generator;

namespace {

constexpr int64_t kIn = 6, kOut = 4, kBatch = 64;

// A Linear(6 -> 4) with grid weights (max |w| = 0.6 is present) and a bias of `bias` on every output.
std::unique_ptr<Linear> grid_linear(float bias) {
  Generator g(7);
  auto lin = std::make_unique<Linear>(kIn, kOut, true, g);
  const float grid[] = {0.f, 0.2f, -0.2f, 0.4f, -0.4f, 0.6f, -0.6f};
  float* w = lin->weight().data();
  for (int64_t i = 0; i < kIn * kOut; ++i) w[i] = grid[(i * 5 + 3) % 7];
  w[0] = 0.6f;
  float* b = lin->bias().data();
  for (int64_t o = 0; o < kOut; ++o) b[o] = bias;
  return lin;
}

// (kBatch, kIn) inputs in {0, 1, 2, 3}; a third of them 3, so the 99.9th percentile is 3.
Tensor grid_input() {
  Tensor x = Tensor::empty({kBatch, kIn});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>((i * 7 + i / 5) % 4 == 0 ? 3 : i % 4);
  return x;
}

// The least-squares scale fitted without regard to the bias, as the fit once did: ⟨y_fp, y_q⟩/⟨y_q, y_q⟩ with
// both outputs including b. Used only to show that the fixture tells the two fits apart.
double bias_blind_scale(Linear& lin, const Tensor& x) {
  engine::NoGradGuard ng;
  Tensor y_fp = engine::ops::linear(x, lin.weight(), lin.bias());
  Tensor y_q = engine::ops::linear((*lin.act_quantizer())(x), (*lin.weight_quantizer())(lin.weight()), lin.bias());
  return quant::least_squares_scale(y_fp, y_q);
}

// A LeNet's input batch for the stage tests: 16 random 28x28 images.
Tensor lenet_input() {
  Generator g(5);
  return qiltest::randn({16, 1, 28, 28}, g);
}

}  // namespace

TEST_CASE("the output-scale fit leaves the bias out: s = <y_fp - b, z> / <z, z>") {
  auto lin = grid_linear(10.f);  // a bias far larger than the outputs, a true scale far from 1
  const Tensor x = grid_input();
  lin->set_quant(LayerQuantSpec{3, 2});
  qiltest::calibrate_once(*lin, x);
  REQUIRE(lin->act_quantizer()->parameter("c").item() == doctest::Approx(1.5f));  // interval [0, 3]
  REQUIRE(lin->weight_quantizer()->parameter("c").item() == doctest::Approx(0.3f));  // interval [0, 0.6]
  CHECK(lin->out_scale().item() == doctest::Approx(1.8).epsilon(1e-5));
  // The fixture separates the two fits: ignoring the bias would give a scale well away from 1.8.
  CHECK(std::fabs(bias_blind_scale(*lin, x) - 1.8) > 0.05);
  // And with the fitted scale the quantized layer reproduces the full-precision one exactly.
  engine::NoGradGuard ng;
  const auto y_q = lin->forward(x).to_vector();
  const auto y_fp = engine::ops::linear(x, lin->weight(), lin->bias()).to_vector();
  double worst = 0;
  for (size_t i = 0; i < y_q.size(); ++i) worst = std::max(worst, std::fabs(double(y_q[i]) - y_fp[i]));
  CHECK(worst < 1e-4);  // outputs are about 10 ± 4
}

TEST_CASE("a stage that adds a quantizer to a layer refits its output scale") {
  auto lin = grid_linear(0.5f);
  const Tensor x = grid_input();
  lin->set_quant(LayerQuantSpec{32, 2});  // w32a2: activations only, x = 3·x̄
  qiltest::calibrate_once(*lin, x);
  CHECK(lin->out_scale().item() == doctest::Approx(3.0).epsilon(1e-5));
  const float c_x = lin->act_quantizer()->parameter("c").item();
  lin->set_quant(LayerQuantSpec{3, 2});  // w3a2: the weights join, x·wᵀ = 1.8·x̄·w̄ᵀ
  CHECK_FALSE(lin->scale_fitted());
  qiltest::calibrate_once(*lin, x);
  CHECK(lin->out_scale().item() == doctest::Approx(1.8).epsilon(1e-5));
  CHECK(lin->act_quantizer()->parameter("c").item() == c_x);  // the existing interval is kept
  // A change of width alone (3 -> 2 bits) keeps the scale it has: the stage starts from the previous one.
  lin->out_scale().data()[0] = 1.7f;
  lin->set_quant(LayerQuantSpec{2, 2});
  CHECK(lin->scale_fitted());
  qiltest::calibrate_once(*lin, x);
  CHECK(lin->out_scale().item() == 1.7f);
}

TEST_CASE("the plan's gamma setting wins over the one a quantizer was created or loaded with") {
  auto lin = grid_linear(0.f);
  auto spec = [](int bits, bool fix_gamma) {
    LayerQuantSpec s{bits, bits};
    s.options.fix_gamma = fix_gamma;
    return s;
  };
  lin->set_quant(spec(4, false));
  auto* wq = lin->weight_quantizer();
  wq->parameter("gamma").data()[0] = 1.7f;  // as learned (or loaded from a checkpoint saved without --fix-gamma)
  CHECK(wq->parameter("gamma").requires_grad());
  lin->set_quant(spec(4, true));  // then --fix-gamma
  CHECK(wq->fix_gamma());
  CHECK(lin->quant_spec().options.fix_gamma);
  CHECK(wq->parameter("gamma").item() == 1.f);
  CHECK_FALSE(wq->parameter("gamma").requires_grad());
  lin->set_quant(spec(3, false));  // and back: trainable from 1
  CHECK_FALSE(wq->fix_gamma());
  CHECK(wq->parameter("gamma").requires_grad());
}

TEST_CASE("frozen intervals stay at calibration while the weights and the output scale train") {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 3});
  Generator g(5);
  Tensor x = qiltest::randn({32, 1, 28, 28}, g);
  Tensor y = Tensor::empty({32}, engine::DType::s32);
  for (int64_t i = 0; i < 32; ++i) y.data<int32_t>()[i] = static_cast<int32_t>(i % 10);
  QuantPlan plan;
  plan.wbits = plan.abits = 2;
  apply_quant_plan(*m, plan);
  calibrate(*m, 1, [&, n = 0](Tensor& b) mutable { b = x; return n++ < 1; });
  freeze_intervals(*m, true);
  auto snapshot = [&](bool intervals) {
    std::vector<float> v;
    for (auto& p : m->named_parameters()) {
      const bool is_interval = p.kind == ParamKind::quant && p.name.find("out_scale") == std::string::npos;
      if (is_interval == intervals)
        for (float f : p.tensor.to_vector()) v.push_back(f);
    }
    return v;
  };
  const auto intervals0 = snapshot(true), others0 = snapshot(false);
  std::vector<Tensor> params;
  for (auto& p : m->named_parameters())
    if (p.tensor.requires_grad()) params.push_back(p.tensor);
  engine::SGD opt({engine::ParamGroup("all", params, 1.f, 0.f)}, 0.9f);
  for (int s = 0; s < 5; ++s) {
    opt.zero_grad();
    Tensor l = engine::ops::softmax_cross_entropy(m->forward(x), y);
    l.backward();
    scale_quantizer_gradients(*m);
    opt.step(0.05f);
    project_quantizers(*m);
  }
  CHECK(snapshot(true) == intervals0);
  CHECK(snapshot(false) != others0);
  // Unfreezing makes c, d and γ trainable again (a pinned γ stays pinned).
  freeze_intervals(*m, false);
  for (auto& [n, l] : quantizable_layers(*m))
    if (l->weight_quantizer() && l->quantized()) CHECK(l->weight_quantizer()->parameter("c").requires_grad());
}

TEST_CASE("--recalibrate-weights: a new weight width calibrates the weight interval and scale again") {
  auto run = [](bool recalibrate, quant::WeightCalib calib) {
    auto m = build_model("lenet", ModelSpec{1, 10, 28, 3});
    const Tensor x = lenet_input();
    auto calib_on_x = [&] { qiltest::calibrate_once(*m, x); };
    QuantPlan plan;
    plan.wbits = plan.abits = 3;
    plan.weight_calib = calib;
    plan.recalibrate_weights = recalibrate;
    apply_quant_plan(*m, plan);
    calib_on_x();
    // As training would leave them: intervals and scales away from calibration.
    std::map<std::string, std::pair<float, float>> trained;
    for (auto& [n, l] : quantizable_layers(*m)) {
      if (!l->quantized()) continue;
      l->weight_quantizer()->parameter("c").data()[0] *= 1.3f;
      l->act_quantizer()->parameter("c").data()[0] *= 1.1f;
      l->out_scale().data()[0] = 0.77f;
      trained[n] = {l->weight_quantizer()->parameter("c").item(), l->act_quantizer()->parameter("c").item()};
    }
    plan.wbits = 2;  // w2a3: only the weight width changes
    apply_quant_plan(*m, plan);
    calib_on_x();
    // What a fresh 2-bit quantizer calibrated on the same weights would say.
    for (auto& [n, l] : quantizable_layers(*m)) {
      if (!l->quantized()) continue;
      CAPTURE(n);
      quant::QilWeightQuantizer fresh(2, false, calib);
      fresh.observe(l->weight());
      fresh.finish_calibration();
      const float c_w = l->weight_quantizer()->parameter("c").item();
      CHECK(l->act_quantizer()->parameter("c").item() == trained[n].second);  // activations keep theirs
      if (recalibrate) {
        CHECK(c_w == fresh.c().item());
        CHECK(l->out_scale().item() != 0.77f);  // refit with the new interval
      } else {
        CHECK(c_w == trained[n].first);
        CHECK(l->out_scale().item() == 0.77f);
      }
    }
  };
  run(true, quant::WeightCalib::mse);
  run(true, quant::WeightCalib::max);
  run(false, quant::WeightCalib::mse);
}

TEST_CASE("--recalibrate-activations: a new activation width calibrates the activation interval again") {
  for (bool recalibrate : {true, false}) {
    CAPTURE(recalibrate);
    auto m = build_model("lenet", ModelSpec{1, 10, 28, 3});
    const Tensor x = lenet_input();
    auto calib_on_x = [&] { qiltest::calibrate_once(*m, x); };
    QuantPlan plan;
    plan.wbits = plan.abits = 3;
    plan.act_calib = quant::ActCalib::mse;
    plan.recalibrate_activations = recalibrate;
    apply_quant_plan(*m, plan);
    calib_on_x();
    std::map<std::string, std::array<float, 3>> before;  // calibrated c_X, then as trained: c_X, c_W
    for (auto& [n, l] : quantizable_layers(*m)) {
      if (!l->quantized()) continue;
      const float c_x = l->act_quantizer()->parameter("c").item();
      l->act_quantizer()->parameter("c").data()[0] *= 1.1f;
      l->weight_quantizer()->parameter("c").data()[0] *= 1.3f;
      l->out_scale().data()[0] = 0.77f;
      before[n] = {c_x, l->act_quantizer()->parameter("c").item(), l->weight_quantizer()->parameter("c").item()};
    }
    plan.abits = 2;  // w3a2: only the activation width changes
    apply_quant_plan(*m, plan);
    calib_on_x();
    for (auto& [n, l] : quantizable_layers(*m)) {
      if (!l->quantized()) continue;
      CAPTURE(n);
      const float c_x = l->act_quantizer()->parameter("c").item();
      CHECK(l->weight_quantizer()->parameter("c").item() == before[n][2]);  // weights keep theirs
      if (recalibrate) {
        CHECK(c_x != before[n][1]);
        CHECK(c_x < before[n][0]);  // three levels clip lower than seven
        CHECK(l->out_scale().item() != 0.77f);
      } else {
        CHECK(c_x == before[n][1]);
        CHECK(l->out_scale().item() == 0.77f);
      }
    }
  }
}

TEST_CASE("gradient balancing: relative multiplies c and d by d², out_scale by its square, none leaves them") {
  auto lin = grid_linear(0.f);
  lin->set_quant(LayerQuantSpec{3, 2});
  qiltest::calibrate_once(*lin, grid_input());  // weights c = d = 0.3, activations c = d = 1.5, scale 1.8
  auto* wq = lin->weight_quantizer();
  auto* aq = lin->act_quantizer();
  std::vector<Tensor> ps{wq->parameter("c"), wq->parameter("d"), wq->parameter("gamma"),
                         aq->parameter("c"), aq->parameter("d"), lin->out_scale()};
  auto set_grads = [&] {
    for (auto& p : ps) {
      p.zero_grad();
      p.grad().data()[0] = 2.f;
    }
  };
  auto grads = [&] {
    std::vector<float> g;
    for (auto& p : ps) g.push_back(p.grad().item());
    return g;
  };
  set_grads();
  lin->scale_quant_grads(GradBalance::none);
  CHECK(grads() == std::vector<float>{2, 2, 2, 2, 2, 2});
  set_grads();
  lin->scale_quant_grads(GradBalance::relative);
  const auto g = grads();
  CHECK(g[0] == doctest::Approx(2 * 0.09));  // 2 * 0.3^2
  CHECK(g[1] == doctest::Approx(2 * 0.09));
  CHECK(g[2] == doctest::Approx(2 / std::sqrt(24.0 * 3)));  // γ: 1/sqrt(N·q), N = 6·4 weights, q = 3
  CHECK(g[3] == doctest::Approx(2 * 2.25));  // 2 * 1.5^2
  CHECK(g[4] == doctest::Approx(2 * 2.25));
  CHECK(g[5] == doctest::Approx(2 * 3.24));  // 2 * 1.8^2
  CHECK(parse_grad_balance("relative") == GradBalance::relative);
  CHECK_THROWS_WITH_AS(parse_grad_balance("cube"), doctest::Contains("'cube'"), engine::Error);
}
