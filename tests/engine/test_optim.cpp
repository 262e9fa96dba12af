// SGD against steps computed by hand (torch.optim.SGD's rule, dampening 0) and the LR schedules at chosen
// steps. The arithmetic is in the comments; tolerances are float rounding only.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/optim.h"
#include "engine/ops.h"

using namespace engine;

namespace {
Tensor param(std::vector<float> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::from_vector(v, {n}).set_requires_grad(true);
}
void set_grad(Tensor& p, std::vector<float> g) { p.grad() = Tensor::from_vector(g, p.shape()); }
void check_values(const Tensor& t, std::vector<float> want) {
  std::vector<float> got = t.to_vector();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-6));
}
}  // namespace

TEST_CASE("SGD without momentum: p -= lr * g") {
  Tensor p = param({1.f, -2.f});
  SGD opt({ParamGroup{"all", {p}}}, 0.f);
  set_grad(p, {0.5f, 0.25f});
  opt.step(0.1f);
  check_values(p, {0.95f, -2.025f});  // 1 - 0.1*0.5, -2 - 0.1*0.25
}

TEST_CASE("SGD momentum: the first step sets b = g, later b = mu*b + g") {
  // PyTorch: buf = clone(g) on the first step (not (1-dampening)*g, not mu*0 + g with a decay); then
  // buf.mul_(mu).add_(g); p.add_(buf, alpha=-lr). With g = 1 every step, mu = 0.9, lr = 0.1:
  //   step 1: b = 1                  p = 1    - 0.1*1    = 0.9
  //   step 2: b = 0.9*1   + 1 = 1.9  p = 0.9  - 0.1*1.9  = 0.71
  //   step 3: b = 0.9*1.9 + 1 = 2.71 p = 0.71 - 0.1*2.71 = 0.439
  Tensor p = param({1.f});
  SGD opt({ParamGroup{"all", {p}}}, 0.9f);
  const float want[] = {0.9f, 0.71f, 0.439f};
  for (float w : want) {
    set_grad(p, {1.f});
    opt.step(0.1f);
    check_values(p, {w});
  }
  NamedTensors st = opt.export_state();
  REQUIRE(st.size() == 1);
  CHECK(st[0].first == "all.0");
  check_values(st[0].second, {2.71f});
}

TEST_CASE("SGD Nesterov: the update is g + mu*b") {
  // g = 1, mu = 0.9, lr = 0.1:
  //   step 1: b = 1,   d = 1 + 0.9*1   = 1.9   p = 1    - 0.19  = 0.81
  //   step 2: b = 1.9, d = 1 + 0.9*1.9 = 2.71  p = 0.81 - 0.271 = 0.539
  Tensor p = param({1.f});
  SGD opt({ParamGroup{"all", {p}}}, 0.9f, true);
  set_grad(p, {1.f});
  opt.step(0.1f);
  check_values(p, {0.81f});
  set_grad(p, {1.f});
  opt.step(0.1f);
  check_values(p, {0.539f});
}

TEST_CASE("SGD weight decay is added to the gradient before momentum") {
  // wd = 0.1, mu = 0.9, lr = 0.1, p = 2, g = 0.5 each step:
  //   step 1: d = 0.5 + 0.1*2    = 0.7    b = 0.7                   p = 2    - 0.07   = 1.93
  //   step 2: d = 0.5 + 0.1*1.93 = 0.693  b = 0.9*0.7 + 0.693 = 1.323  p = 1.93 - 0.1323 = 1.7977
  // (Decoupled decay, AdamW-style, would give p = 2*(1 - 0.01) - 0.05 = 1.93 on step 1 too but differs on
  // step 2: the decay would not enter the momentum buffer.)
  Tensor p = param({2.f});
  SGD opt({ParamGroup{"w", {p}, 1.f, 0.1f}}, 0.9f);
  set_grad(p, {0.5f});
  opt.step(0.1f);
  check_values(p, {1.93f});
  set_grad(p, {0.5f});
  opt.step(0.1f);
  check_values(p, {1.7977f});
}

TEST_CASE("SGD groups: own LR scale and decay, a parameter without gradient is untouched") {
  // base_lr = 1, no momentum.
  //   group a (lr_scale 1, wd 0):      p = 1, g = 2  -> 1 - 1*2 = -1
  //   group b (lr_scale 0.01, wd 0.5): p = 4, g = 1  -> d = 1 + 0.5*4 = 3, p = 4 - 0.01*3 = 3.97
  //   group b, q = 5 with no gradient  -> stays 5 (not decayed to 5 - 0.01*2.5 = 4.975)
  Tensor a = param({1.f}), b = param({4.f}), q = param({5.f});
  SGD opt({ParamGroup{"a", {a}}, ParamGroup{"b", {b, q}, 0.01f, 0.5f}}, 0.f);
  set_grad(a, {2.f});
  set_grad(b, {1.f});
  opt.step(1.f);
  check_values(a, {-1.f});
  check_values(b, {3.97f});
  check_values(q, {5.f});
  CHECK_FALSE(q.grad().defined());
}

TEST_CASE("SGD steps a gradient left by backward and records no graph") {
  // loss = sum(relu(w)) with w = [1, -1]: dL/dw = [1, 0]; lr 0.5 -> [0.5, -1].
  Tensor w = param({1.f, -1.f});
  SGD opt({ParamGroup{"w", {w}}}, 0.f);
  ops::sum(ops::relu(w)).backward();
  opt.step(0.5f);
  check_values(w, {0.5f, -1.f});
  CHECK_FALSE(w.grad_fn());
  CHECK(grad_enabled());  // the guard inside step is released
}

TEST_CASE("SGD zero_grad zeroes or drops gradients") {
  Tensor a = param({1.f}), b = param({2.f});
  SGD opt({ParamGroup{"g", {a, b}}}, 0.f);
  set_grad(a, {3.f});
  opt.zero_grad();
  check_values(a.grad(), {0.f});
  CHECK_FALSE(b.grad().defined());  // not allocated: b stays skipped
  opt.zero_grad(true);
  CHECK_FALSE(a.grad().defined());
}

TEST_CASE("SGD state export/import resumes the same trajectory") {
  // Two optimizers over copies of the same parameters; after one step the second takes the first's state,
  // then both take the same steps and must agree bit for bit.
  Tensor p1 = param({1.f, 2.f}), p2 = param({1.f, 2.f});
  SGD o1({ParamGroup{"w", {p1}, 1.f, 0.01f, {"fc.weight"}}}, 0.9f, true);
  SGD o2({ParamGroup{"w", {p2}, 1.f, 0.01f, {"fc.weight"}}}, 0.9f, true);
  set_grad(p1, {0.3f, -0.7f});
  o1.step(0.1f);
  p2.copy_from(p1);
  NamedTensors st = o1.export_state();
  REQUIRE(st.size() == 1);
  CHECK(st[0].first == "w.fc.weight");
  o2.import_state(st);
  // A third copy resumes without the state: its buffer restarts (b = g), so its trajectory must differ.
  Tensor p3 = param({1.f, 2.f});
  p3.copy_from(p1);
  SGD o3({ParamGroup{"w", {p3}, 1.f, 0.01f, {"fc.weight"}}}, 0.9f, true);
  for (int k = 0; k < 3; ++k) {
    for (Tensor* p : {&p1, &p2, &p3}) set_grad(*p, {0.1f * k, 0.2f});
    o1.step(0.05f);
    o2.step(0.05f);
    o3.step(0.05f);
  }
  CHECK(p1.to_vector() == p2.to_vector());
  CHECK(p1.to_vector() != p3.to_vector());
}

TEST_CASE("SGD import_state rejects unknown keys and wrong shapes, keeping its state") {
  Tensor p = param({1.f, 2.f});
  SGD opt({ParamGroup{"w", {p}}}, 0.9f);
  CHECK_THROWS_WITH_AS(opt.import_state({{"w.1", Tensor::zeros({2})}}),
                       doctest::Contains("buffer 'w.1' names no parameter"), Error);
  CHECK_THROWS_WITH_AS(opt.import_state({{"w.0", Tensor::zeros({3})}}), doctest::Contains("buffer 'w.0' is"),
                       Error);
  CHECK(opt.export_state().empty());
}

TEST_CASE("SGD rejects bad hyper-parameters, naming the value") {
  Tensor p = param({1.f});
  CHECK_THROWS_WITH_AS(SGD({ParamGroup{"w", {p}}}, 1.f), doctest::Contains("momentum 1 outside [0, 1)"), Error);
  CHECK_THROWS_WITH_AS(SGD({ParamGroup{"w", {p}}}, -0.5f), doctest::Contains("momentum -0.5"), Error);
  CHECK_THROWS_WITH_AS(SGD({ParamGroup{"w", {p}}}, 0.f, true), doctest::Contains("Nesterov"), Error);
  CHECK_THROWS_WITH_AS(SGD({ParamGroup{"w", {p}, 1.f, -1e-4f}}, 0.9f),
                       doctest::Contains("group 'w' has invalid weight_decay -0.0001"), Error);
  CHECK_THROWS_WITH_AS(SGD({ParamGroup{"w", {p}, -2.f}}, 0.9f), doctest::Contains("invalid lr_scale -2"), Error);
  CHECK_THROWS_WITH_AS(SGD({ParamGroup{"a", {p}}, ParamGroup{"b", {p}}}, 0.9f),
                       doctest::Contains("parameter b.0 appears more than once"), Error);
  CHECK_THROWS_WITH_AS(SGD({ParamGroup{"a", {}}, ParamGroup{"a", {}}}, 0.9f),
                       doctest::Contains("group name 'a' used twice"), Error);
  SGD opt({ParamGroup{"w", {p}}}, 0.9f);
  CHECK_THROWS_WITH_AS(opt.step(-0.1f), doctest::Contains("invalid learning rate -0.1"), Error);
}

TEST_CASE("SGD on a large parameter (the OpenMP path) matches the scalar rule") {
  const int64_t n = 100000;
  Tensor p = Tensor::full({n}, 1.f).set_requires_grad(true);
  p.grad() = Tensor::full({n}, 1.f);
  p.grad().data()[n - 1] = 3.f;
  SGD opt({ParamGroup{"w", {p}, 1.f, 0.f}}, 0.9f);
  opt.step(0.1f);
  opt.step(0.1f);  // two steps: 1 - 0.1 - 0.19 = 0.71; last: 1 - 0.3 - 0.57 = 0.13
  CHECK(p.data()[0] == doctest::Approx(0.71f).epsilon(1e-6));
  CHECK(p.data()[n / 2] == doctest::Approx(0.71f).epsilon(1e-6));
  CHECK(p.data()[n - 1] == doctest::Approx(0.13f).epsilon(1e-5));
}

// ---- schedules ----

TEST_CASE("multistep: gamma applies from the first step of each milestone epoch") {
  // base 0.1, milestones 30 and 60, gamma 0.1, 100 steps per epoch.
  LrSchedule s = LrSchedule::multistep(0.1f, {30, 60}, 0.1f);
  CHECK(s.lr(0, 100) == doctest::Approx(0.1));
  CHECK(s.lr(2999, 100) == doctest::Approx(0.1));   // last step of epoch 29
  CHECK(s.lr(3000, 100) == doctest::Approx(0.01));  // first step of epoch 30
  CHECK(s.lr(5999, 100) == doctest::Approx(0.01));
  CHECK(s.lr(6000, 100) == doctest::Approx(0.001));
  CHECK(s.lr(45.5) == doctest::Approx(0.01));
}

TEST_CASE("cosine: base at 0, half at the midpoint, floor at the end") {
  LrSchedule s = LrSchedule::cosine(0.2f, 10);
  CHECK(s.lr(0.0) == doctest::Approx(0.2));
  CHECK(s.lr(5.0) == doctest::Approx(0.1));                        // (1 + cos(pi/2))/2 = 1/2
  CHECK(s.lr(2.5) == doctest::Approx(0.2 * (1 + std::sqrt(0.5)) / 2));  // cos(pi/4) = sqrt(1/2)
  CHECK(s.lr(10.0) == doctest::Approx(0.0));
  CHECK(s.lr(12.0) == doctest::Approx(0.0));
  CHECK(s.lr(500, 100) == doctest::Approx(0.1));  // step 500 of 100/epoch = epoch 5
  LrSchedule f = LrSchedule::cosine(0.2f, 10, 0.02f);
  CHECK(f.lr(5.0) == doctest::Approx(0.11));  // 0.02 + 0.18/2
  CHECK(f.lr(10.0) == doctest::Approx(0.02));
  CHECK(f.lr(20.0) == doctest::Approx(0.02));
}

TEST_CASE("constant with warm-up: a linear ramp per step reaching the full LR on the last warm-up step") {
  // 2 warm-up epochs of 5 steps = 10 warm-up steps; step k runs at (k+1)/10 of the LR.
  LrSchedule s = LrSchedule::constant(0.4f).with_warmup(2);
  CHECK(s.lr(0, 5) == doctest::Approx(0.04));
  CHECK(s.lr(4, 5) == doctest::Approx(0.2));
  CHECK(s.lr(9, 5) == doctest::Approx(0.4));
  CHECK(s.lr(10, 5) == doctest::Approx(0.4));
  CHECK(s.lr(1000, 5) == doctest::Approx(0.4));
  CHECK(s.lr(0.5) == doctest::Approx(0.1));  // epoch form: progress 0.5/2
  // With a start factor: 0.1 + 0.9 * progress.
  LrSchedule t = LrSchedule::constant(1.f).with_warmup(1, 0.1f);
  CHECK(t.lr(0.0) == doctest::Approx(0.1));
  CHECK(t.lr(0.5) == doctest::Approx(0.55));
  CHECK(t.lr(1.0) == doctest::Approx(1.0));
}

TEST_CASE("warm-up composes with cosine and multistep by multiplication") {
  // cosine over 10 epochs, 1 warm-up epoch of 4 steps. Step 1: epoch 0.25, cosine 0.5*(1+cos(0.025 pi)),
  // warm-up (1+1)/4.
  LrSchedule c = LrSchedule::cosine(1.f, 10).with_warmup(1);
  CHECK(c.lr(1, 4) == doctest::Approx(0.5 * (1 + std::cos(M_PI * 0.025)) * 0.5));
  CHECK(c.lr(20, 4) == doctest::Approx(0.5));  // epoch 5, past the warm-up: cosine alone
  LrSchedule m = LrSchedule::multistep(1.f, {1}, 0.5f).with_warmup(2);
  CHECK(m.lr(1.5) == doctest::Approx(0.5 * 0.75));  // milestone passed, warm-up at 3/4
}

TEST_CASE("schedules reject bad values, naming them") {
  CHECK_THROWS_WITH_AS(LrSchedule::constant(-0.1f), doctest::Contains("invalid base learning rate -0.1"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::multistep(0.1f, {30, 20}, 0.1f),
                       doctest::Contains("milestones not increasing: 30 then 20"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::multistep(0.1f, {30, 30}, 0.1f), doctest::Contains("30 then 30"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::multistep(0.1f, {-1}, 0.1f), doctest::Contains("milestone -1"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::multistep(0.1f, {1}, 0.f), doctest::Contains("gamma 0"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::cosine(0.1f, 0), doctest::Contains("total epochs 0"), Error);
  CHECK_THROWS_WITH_AS(LrSchedule::cosine(0.1f, 10, 0.5f), doctest::Contains("floor 0.5"), Error);
  LrSchedule s = LrSchedule::constant(0.1f);
  CHECK_THROWS_WITH_AS(s.with_warmup(-1), doctest::Contains("warm-up length -1"), Error);
  CHECK_THROWS_WITH_AS(s.with_warmup(1, 2.f), doctest::Contains("start factor 2"), Error);
  CHECK_THROWS_WITH_AS(s.lr(-1, 10), doctest::Contains("negative step -1"), Error);
  CHECK_THROWS_WITH_AS(s.lr(1, 0), doctest::Contains("steps per epoch 0"), Error);
  CHECK_THROWS_WITH_AS(s.lr(-0.5), doctest::Contains("invalid epoch -0.5"), Error);
}
