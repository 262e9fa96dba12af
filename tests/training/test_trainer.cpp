// The training library on its own (no command line): RunState survives JSON (and reads the checkpoints written
// before it existed), Trainer::step lowers the loss of a small batch, accumulated micro-batches step as their
// whole batch, the optimizer groups (activation intervals, PACT's decayed α), nothing non-finite is saved or
// stepped on, and distillation's loss and gradient. This suite links qil_training alone.
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "apps/training/run_state.h"
#include "apps/training/stage_runner.h"
#include "apps/training/trainer.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "gradcheck.h"
#include "layers/basic.h"
#include "layers/models.h"
#include "layers/quantize.h"

using engine::Tensor;

TEST_CASE("RunState: JSON round trip, a checkpoint's run_state written before RunState existed still reads") {
  apps::training::RunState s = apps::training::RunState::start(3);
  s.position.stage = 1;
  s.position.epoch = 2;
  s.position.batch = 7;
  s.position.step = 31;
  s.position.global_epoch = 5;
  s.position.best_val = {81.5, 40.25, -1};
  s.position.loss_sum = 123.456;
  s.position.correct = 900;
  s.position.seen = 1024;
  s.position.micro_batch = 16;
  s.position.accumulate = 2;
  s.position.ranks = 4;
  const nlohmann::json j = s;
  const auto back = j.get<apps::training::RunState>();
  CHECK(nlohmann::json(back) == j);
  CHECK(back.position.best_val == s.position.best_val);
  CHECK(back.position.loss_sum == s.position.loss_sum);
  CHECK(back.position.ranks == 4);
  // The layout main's checkpoints carry, keys and all; the epoch sums came later and default to 0.
  const auto old = nlohmann::json::parse(
      R"({"position":{"stage":1,"epoch":0,"batch":3,"step":13,"global_epoch":1,"best_val":[60.9375,-1.0]},)"
      R"("rng":{}})").get<apps::training::RunState>();
  CHECK(old.position.stage == 1);
  CHECK(old.position.batch == 3);
  CHECK(old.position.step == 13);
  CHECK(old.position.best_val == std::vector<double>{60.9375, -1.0});
  CHECK(old.position.seen == 0);
  CHECK(old.position.ranks == 0);  // layout unknown: resume_layout then asks for the same --accumulate
  CHECK(j.at("position").contains("global_epoch"));
  CHECK_FALSE(j.contains("rng"));  // dropout is reseeded per micro-batch: no generator state to keep
}

TEST_CASE("Trainer::step lowers the loss of a small batch, evaluate reports on the same scale") {
  using engine::Tensor;
  auto m = layers::build_model("lenet", layers::ModelSpec{1, 10, 28, 7});
  engine::Generator g(3);
  Tensor x = qiltest::randn({16, 1, 28, 28}, g);
  Tensor y = Tensor::empty({16}, engine::DType::s32);
  for (int64_t i = 0; i < 16; ++i) y.data<int32_t>()[i] = static_cast<int32_t>(i % 10);
  engine::SGD opt(apps::training::param_groups(*m, 0.0, 1.0), 0.9f);
  apps::training::Trainer trainer(*m, opt, apps::training::StepOptions{});
  m->train();
  const auto first = trainer.step(x, y, 0.05f);
  CHECK(first.count == 16);
  CHECK(first.loss > 1.5f);  // about log(10) at initialization
  apps::training::StepResult last;
  for (int i = 0; i < 25; ++i) last = trainer.step(x, y, 0.05f);
  CHECK(last.loss < 0.5f * first.loss);
  CHECK(last.correct > first.correct);
}

namespace {
// Largest |a - b| over a model's parameters, relative to the largest |b| of the same tensor.
double max_rel_diff(layers::Module& a, layers::Module& b) {
  auto pb = b.named_parameters();
  double worst = 0;
  size_t i = 0;
  for (auto& p : a.named_parameters()) {
    const auto va = p.tensor.to_vector(), vb = pb[i++].tensor.to_vector();
    double diff = 0, scale = 1e-30;
    for (size_t k = 0; k < va.size(); ++k) {
      diff = std::max(diff, static_cast<double>(std::fabs(va[k] - vb[k])));
      scale = std::max(scale, static_cast<double>(std::fabs(vb[k])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}
}  // namespace

TEST_CASE("Trainer: two accumulated micro-batches step as their whole batch (without BatchNorm)") {
  using engine::Tensor;
  engine::Generator g(11);
  Tensor x = qiltest::randn({16, 1, 28, 28}, g);  // (16, 1, 28, 28); halves of 8
  Tensor y = Tensor::empty({16}, engine::DType::s32);
  for (int64_t i = 0; i < 16; ++i) y.data<int32_t>()[i] = static_cast<int32_t>((i * 7) % 10);
  auto half = [](const Tensor& t, int64_t h) {
    engine::Shape s = t.shape();
    s[0] = 8;
    Tensor out = Tensor::empty(s, t.dtype());
    std::memcpy(out.bytes(), static_cast<const char*>(t.bytes()) + h * out.nbytes(), out.nbytes());
    return out;
  };
  auto run = [&](const std::string& model, bool accumulate) {
    auto m = layers::build_model(model, layers::ModelSpec{1, 10, 28, 7});
    engine::SGD opt(apps::training::param_groups(*m, 5e-4, 1.0), 0.9f);
    apps::training::Trainer t(*m, opt, apps::training::StepOptions{});
    m->train();
    for (int step = 0; step < 3; ++step) {
      if (!accumulate) {
        t.step(x, y, 0.05f);
        continue;
      }
      t.accumulate(half(x, 0), half(y, 0));
      CHECK(t.pending() == 1);
      t.accumulate(half(x, 1), half(y, 1));
      t.apply(0.05f);
      CHECK(t.pending() == 0);
    }
    if (accumulate)
      CHECK_THROWS_WITH_AS(t.apply(0.05f), doctest::Contains("no micro-batch was accumulated"), engine::Error);
    return m;
  };
  auto whole = run("lenet-nobn", false), split = run("lenet-nobn", true);
  auto start = layers::build_model("lenet-nobn", layers::ModelSpec{1, 10, 28, 7});
  CHECK(max_rel_diff(*split, *whole) < 1e-5);
  CHECK(max_rel_diff(*start, *whole) > 1e-3);  // the steps moved the weights far beyond that tolerance
  // BatchNorm normalizes each micro-batch alone: with it, the same split is a different step.
  CHECK(max_rel_diff(*run("lenet", true), *run("lenet", false)) > 1e-4);
}

TEST_CASE("optimizer groups: activation intervals get their own LR only when --act-quant-lr-scale asks for it") {
  auto m = layers::build_model("lenet", layers::ModelSpec{1, 10, 28, 7});
  layers::QuantPlan plan;
  plan.wbits = plan.abits = 4;
  layers::apply_quant_plan(*m, plan);
  auto names = [](const std::vector<engine::ParamGroup>& gs) {
    std::vector<std::string> n;
    for (const auto& g : gs) n.push_back(g.name);
    return n;
  };
  const auto same = apps::training::param_groups(*m, 5e-4, 0.5);
  CHECK(names(same) == std::vector<std::string>{"weights", "no_decay", "quant"});
  const auto own = apps::training::param_groups(*m, 5e-4, 0.5, 100.0);
  REQUIRE(names(own) == std::vector<std::string>{"weights", "no_decay", "quant", "quant_act"});
  CHECK(own[2].lr_scale == doctest::Approx(0.5));
  CHECK(own[3].lr_scale == doctest::Approx(50.0));
  for (const auto& n : own[3].param_names) CHECK_MESSAGE(n.find("act_quant.") != std::string::npos, n);
  for (const auto& n : own[2].param_names) CHECK_MESSAGE(n.find("act_quant.") == std::string::npos, n);
  CHECK(own[3].params.size() == 2 * 2);  // lenet's two quantized layers (conv2, fc1), c and d each
  CHECK(own[2].params.size() + own[3].params.size() == same[2].params.size());
}

TEST_CASE("nothing non-finite is saved: an overflowed BatchNorm statistic stops the run, named") {
  auto m = layers::build_model("lenet", layers::ModelSpec{1, 10, 28, 7});
  CHECK_NOTHROW(apps::training::require_finite_state(*m, "fp32", 1));
  for (auto& b : m->named_buffers())
    if (b.name == "bn1.running_var") b.tensor.data()[3] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(apps::training::require_finite_state(*m, "fp32", 2),
                       doctest::Contains("training diverged: bn1.running_var holds inf after stage fp32 epoch 2"),
                       engine::Error);
}

namespace {

// LeNet and a `gain` parameter whose gradient turns NaN on demand while the loss stays finite, as an overflow
// inside a backward pass would.
class PoisonedGradient : public layers::Module {
 public:
  bool armed = false;       // the gradient of `gain` turns NaN
  bool nan_output = false;  // a logit turns NaN: the loss does
  PoisonedGradient() {
    net_ = register_module("net", layers::build_model("lenet", layers::ModelSpec{1, 10, 28, 7}));
    gain_ = register_parameter("gain", engine::Tensor::full({1}, 1.f));
  }
  engine::Tensor forward(const engine::Tensor& x) override {
    const engine::Tensor y = net_->forward(x);  // (N, 10)
    engine::Tensor out = y.detach().clone();
    if (nan_output) out.data()[0] = NAN;
    return engine::record("poison", out, {y, gain_},
                          [armed = armed](const engine::Tensor& gy, std::vector<engine::Tensor>& gx) {
                            if (gx[0].defined())
                              for (int64_t i = 0; i < gy.numel(); ++i) gx[0].data()[i] += gy.data()[i];
                            if (gx[1].defined()) gx[1].data()[0] += armed ? NAN : 0.f;
                          });
  }
  std::string describe() const override { return "PoisonedGradient"; }

 private:
  layers::Module* net_ = nullptr;
  engine::Tensor gain_;
};

std::vector<std::vector<float>> values(const std::vector<layers::NamedTensor>& ts) {
  std::vector<std::vector<float>> out;
  for (const auto& t : ts)
    if (t.tensor.dtype() == engine::DType::f32) out.emplace_back(t.tensor.data(), t.tensor.data() + t.tensor.numel());
  return out;
}

}  // namespace

TEST_CASE("a non-finite loss or gradient is not stepped on: named, and the model left as it was") {
  using engine::Tensor;
  PoisonedGradient m;
  engine::Generator g(3);
  Tensor x = qiltest::randn({8, 1, 28, 28}, g);
  Tensor y = Tensor::empty({8}, engine::DType::s32);
  for (int64_t i = 0; i < 8; ++i) y.data<int32_t>()[i] = static_cast<int32_t>(i % 10);
  engine::SGD opt(apps::training::param_groups(m, 5e-4, 1.0), 0.9f);
  apps::training::Trainer trainer(m, opt, apps::training::StepOptions{});
  m.train();
  REQUIRE(trainer.step(x, y, 0.05f).stepped());  // momentum buffers exist from here on
  const auto params = values(m.named_parameters()), buffers = values(m.named_buffers());
  std::vector<std::vector<float>> momentum;
  for (const auto& [n, t] : opt.export_state()) momentum.emplace_back(t.data(), t.data() + t.numel());
  auto unchanged = [&] {
    CHECK(values(m.named_parameters()) == params);
    CHECK(values(m.named_buffers()) == buffers);  // BatchNorm's running statistics moved in the forward pass
    size_t i = 0;
    for (const auto& [n, t] : opt.export_state())
      CHECK(std::vector<float>(t.data(), t.data() + t.numel()) == momentum[i++]);
  };

  m.armed = true;  // a finite loss, a NaN gradient
  const auto r = trainer.step(x, y, 0.05f);
  CHECK(std::isfinite(r.loss));
  CHECK(!r.stepped());
  CHECK(r.nonfinite == "gradient of gain");
  unchanged();

  m.armed = false;
  m.nan_output = true;  // the loss
  const auto l = trainer.step(x, y, 0.05f);
  CHECK(std::isnan(l.loss));
  CHECK(l.nonfinite == "loss");
  unchanged();

  m.nan_output = false;  // an infinite pixel (today: BatchNorm turns it into NaN, ReLU drops it, the loss stays
  Tensor bad = x.clone();  // finite and conv1's gradient is NaN)
  bad.data()[5] = std::numeric_limits<float>::infinity();
  const auto b = trainer.step(bad, y, 0.05f);
  CHECK(!b.stepped());
  CHECK((b.nonfinite == "loss" || b.nonfinite.rfind("gradient of net.", 0) == 0));
  unchanged();
  CHECK(trainer.step(x, y, 0.05f).stepped());
  CHECK(values(m.named_parameters()) != params);
}

// Distillation's loss against the formula computed here in double precision, and its gradient against
// central finite differences. logits (4, 5), a teacher's logits, labels; T = 3, w = 0.7.
TEST_CASE("distillation_loss: (1 - w) CE(labels) + w T^2 CE(teacher at T), gradient by finite differences") {
  engine::Generator g(21);
  const int64_t n = 4, k = 5;
  const float t = 3.f, w = 0.7f;
  engine::Tensor z = qiltest::randn({n, k}, g, 2.f), zt = qiltest::randn({n, k}, g, 2.f);
  engine::Tensor y = engine::Tensor::empty({n}, engine::DType::s32);
  for (int64_t i = 0; i < n; ++i) y.data<int32_t>()[i] = static_cast<int32_t>((i * 3) % k);
  auto log_softmax = [&](const float* row, double scale, int64_t j) {
    double m = -1e30, s = 0;
    for (int64_t c = 0; c < k; ++c) m = std::max(m, row[c] * scale);
    for (int64_t c = 0; c < k; ++c) s += std::exp(row[c] * scale - m);
    return row[j] * scale - m - std::log(s);
  };
  double ce = 0, kd = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* zi = z.data() + i * k;
    const float* ti = zt.data() + i * k;
    ce -= log_softmax(zi, 1.0, y.data<int32_t>()[i]);
    for (int64_t j = 0; j < k; ++j) kd -= std::exp(log_softmax(ti, 1.0 / t, j)) * log_softmax(zi, 1.0 / t, j);
  }
  const double expected = (1 - w) * ce / n + w * t * t * kd / n;
  CHECK(apps::training::distillation_loss(z, zt, y, t, w).item() == doctest::Approx(expected).epsilon(1e-5));
  // w = 0 is the plain cross-entropy.
  CHECK(apps::training::distillation_loss(z, zt, y, t, 0.f).item() ==
        doctest::Approx(engine::ops::softmax_cross_entropy(z, y).item()).epsilon(1e-6));
  z.set_requires_grad(true);
  qiltest::gradcheck([&](const std::vector<engine::Tensor>& in) {
    return apps::training::distillation_loss(in[0], zt, y, t, w);
  }, {z}, {}, "distillation_loss");
  CHECK_THROWS_WITH_AS(apps::training::distillation_loss(z, zt, y, 0.f, w), doctest::Contains("temperature"),
                       engine::Error);
}

TEST_CASE("--pact-alpha-decay: alpha alone in an optimizer group whose weight decay adds lambda * alpha") {
  auto m = layers::build_model("lenet", layers::ModelSpec{1, 10, 28, 7});
  layers::QuantPlan plan;
  plan.wbits = plan.abits = 4;
  plan.quantizer = "pact";
  layers::apply_quant_plan(*m, plan);
  engine::Generator g(6);
  const Tensor x = qiltest::randn({8, 1, 28, 28}, g);
  layers::calibrate(*m, 1, [&, n = 0](Tensor& b) mutable { b = x; return n++ < 1; });
  std::set<const void*> alphas;
  for (auto& [name, l] : layers::quantizable_layers(*m))
    if (l->quantized()) alphas.insert(l->act_quantizer()->parameter("alpha").id());
  REQUIRE(alphas.size() >= 2);
  // No penalty: no such group, α with the other quantizer parameters.
  for (const auto& g : apps::training::param_groups(*m, 5e-4, 1.0, 1.0, 0.0)) CHECK(g.name.find("l2") == std::string::npos);
  // λ = 0.01: "quant_l2" holds exactly the α, at the quantizer LR, decayed by λ.
  const float lambda = 0.01f;
  auto groups = apps::training::param_groups(*m, 5e-4, 2.0, 1.0, lambda);
  const engine::ParamGroup* l2 = nullptr;
  for (const auto& g : groups) {
    if (g.name == "quant_l2") l2 = &g;
    if (g.name != "quant_l2")
      for (const Tensor& p : g.params) CHECK(alphas.count(p.id()) == 0);
  }
  REQUIRE(l2);
  CHECK(l2->weight_decay == lambda);
  CHECK(l2->lr_scale == 2.f);
  CHECK(l2->params.size() == alphas.size());
  // With its own activation LR, the group follows it: "quant_act_l2".
  bool act_l2 = false;
  for (const auto& g : apps::training::param_groups(*m, 5e-4, 2.0, 0.5, lambda))
    if (g.name == "quant_act_l2") act_l2 = g.lr_scale == 1.f && g.params.size() == alphas.size();
  CHECK(act_l2);
  // One SGD step: α' = α − lr·(scale·(∂L/∂α + λ·α)); with ∂L/∂α = 0.5, lr = 0.1, scale 2: the decay's share is
  // 0.2·λ·α, so α' = α − 0.2·(0.5 + 0.01·α).
  engine::SGD opt(groups, 0.9f);
  opt.zero_grad();
  std::map<const void*, float> before;
  for (const Tensor& p : l2->params) {
    Tensor h = p;
    before[p.id()] = p.item();
    h.grad() = Tensor::full({}, 0.5f);
  }
  opt.step(0.1f);
  for (const Tensor& p : opt.groups()[size_t(l2 - groups.data())].params) {
    const float a = before.at(p.id());
    CHECK(p.item() == doctest::Approx(a - 0.2f * (0.5f + lambda * a)));
  }
}

