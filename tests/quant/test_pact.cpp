// PACT: hand-computed levels at 2, 3 and 4 bits (and the signed variant), the paper's straight-through gradients
// by hand (∂/∂x = 1 on [0, α), ∂/∂α = 1 at and above α, 0 below), the same gradients as the un-rounded clip,
// finite differences of the clip in x and α and of the staircase in α (which also sees the grid's k/q), the
// quantizer's calibration, floor, gradient scale, L2 flag and statistics, the factory, and the AVX2 build against
// the baseline. Not PACT inside a network or its α penalty in the optimizer (tests/layers/test_pact_layers.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "fresh_check.h"
#include "gradcheck.h"
#include "kernel_builds.h"

#include "engine/ops.h"
#include "quant/pact.h"
#include "quant/qil.h"
#include "quant/quantizer.h"
#include "quant/registry.h"

using namespace engine;
using namespace qiltest;
using namespace quant;

namespace {
Tensor param(float v) {
  Tensor t = Tensor::scalar(v);
  t.set_requires_grad(true);
  return t;
}

void check_values(const Tensor& y, const std::vector<float>& want) {
  REQUIRE(y.numel() == static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(y.data()[i] == doctest::Approx(want[i]).epsilon(1e-6));
  }
}
}  // namespace

TEST_CASE("pact: golden levels at 2, 3 and 4 bits, and the signed variant") {
  // 2 bits, α = 3: q = 3, the grid is 0 1 2 3. x = -1 0.4 0.6 1.49 1.5 2.5 3.2
  // clip to [0, 3]: 0 0.4 0.6 1.49 1.5 2.5 3;  ·q/α = ·1;  round (half away): 0 0 1 1 2 3 3.
  const Tensor x2 = Tensor::from_vector({-1.f, 0.4f, 0.6f, 1.49f, 1.5f, 2.5f, 3.2f}, {7});
  check_values(pact_quantize(x2, param(3.f), 2), {0, 0, 1, 1, 2, 3, 3});
  // 3 bits, α = 3.5: q = 7, q/α = 2, the grid 0 0.5 ... 3.5. x = 0.2 0.3 1.1 2.6 3.3 3.6
  // ·2: 0.4 0.6 2.2 5.2 6.6 (clipped) 7;  round: 0 1 2 5 7 7;  ·0.5: 0 0.5 1 2.5 3.5 3.5.
  const Tensor x3 = Tensor::from_vector({0.2f, 0.3f, 1.1f, 2.6f, 3.3f, 3.6f}, {6});
  check_values(pact_quantize(x3, param(3.5f), 3), {0, 0.5f, 1, 2.5f, 3.5f, 3.5f});
  // 4 bits, α = 7.5: q = 15, q/α = 2. x = -0.3 0.24 0.26 3.1 7.3 7.6
  // clip and ·2: 0 0.48 0.52 6.2 14.6 15;  round: 0 0 1 6 15 15;  ·0.5: 0 0 0.5 3 7.5 7.5.
  const Tensor x4 = Tensor::from_vector({-0.3f, 0.24f, 0.26f, 3.1f, 7.3f, 7.6f}, {6});
  check_values(pact_quantize(x4, param(7.5f), 4), {0, 0, 0.5f, 3, 7.5f, 7.5f});
  // Signed, 3 bits, α = 1.5: q = 2^2 - 1 = 3, q/α = 2. x = -2 -0.8 -0.2 0.24 0.3 1.2
  // |x| clipped to 1.5, ·2: 3 1.6 0.4 0.48 0.6 2.4;  round: 3 2 0 0 1 2;  ·0.5 with the sign: -1.5 -1 0 0 0.5 1.
  const Tensor xs = Tensor::from_vector({-2.f, -0.8f, -0.2f, 0.24f, 0.3f, 1.2f}, {6});
  check_values(pact_quantize(xs, param(1.5f), 3, true), {-1.5f, -1, 0, 0, 0.5f, 1});
  // The surrogate is the clip alone.
  check_values(pact_transform(x3, param(3.5f)), {0.2f, 0.3f, 1.1f, 2.6f, 3.3f, 3.5f});
  check_values(pact_transform(xs, param(1.5f), true), {-1.5f, -0.8f, -0.2f, 0.24f, 0.3f, 1.2f});
  CHECK(pact_levels(2, false) == 3);
  CHECK(pact_levels(8, false) == 255);
  CHECK(pact_levels(4, true) == 7);
  CHECK_THROWS_WITH_AS(pact_quantize(x2, param(0.f), 2), doctest::Contains("alpha must be positive"), Error);
  CHECK_THROWS_WITH_AS(pact_quantize(x2, param(1.f), 9), doctest::Contains("bits must be in 2..8, got 9"), Error);
}

TEST_CASE("pact: the paper's STE by hand, accumulated, identical to the clip's gradients") {
  // 3 bits, α = 3.5, G_i = i + 1. x = -0.4 0.2 0.3 1.1 2.6 3.5 4.0
  // ∂/∂x: 1 where 0 <= x < α: 0 1 1 1 1 0 0 (x = α is clipped: its derivative goes to α).
  // ∂/∂α: 1 where x >= α: the last two, Σ G = 6 + 7 = 13; below α it is 0, however far the grid moves.
  Tensor x = Tensor::from_vector({-0.4f, 0.2f, 0.3f, 1.1f, 2.6f, 3.5f, 4.0f}, {7});
  x.set_requires_grad(true);
  Tensor a = param(3.5f);
  const Tensor G = Tensor::from_vector({1, 2, 3, 4, 5, 6, 7}, {7});
  x.grad() = Tensor::full({7}, 100.f);  // pre-filled: backward must add to it
  a.grad() = Tensor::full({}, 100.f);
  pact_quantize(x, a, 3).backward(G);
  const std::vector<float> dx = {100, 102, 103, 104, 105, 100, 100};
  for (int i = 0; i < 7; ++i) CHECK(x.grad().data()[i] == dx[size_t(i)]);
  CHECK(a.grad().item() == 113.f);

  // Signed, α = 1.5: ∂/∂α = sign(x) where |x| >= α. x = -2 -0.8 0.3 1.5 1.6, G = 1..5: -1 + 4 + 5 = 8;
  // ∂/∂x = 1 where |x| < α: 0 1 1 0 0.
  Tensor xs = Tensor::from_vector({-2.f, -0.8f, 0.3f, 1.5f, 1.6f}, {5});
  xs.set_requires_grad(true);
  Tensor as = param(1.5f);
  pact_quantize(xs, as, 3, true).backward(Tensor::from_vector({1, 2, 3, 4, 5}, {5}));
  CHECK(xs.grad().to_vector() == std::vector<float>{0, 2, 3, 0, 0});
  CHECK(as.grad().item() == 8.f);

  // Straight through: the rounded op's gradients are the clip's, element for element, on random inputs.
  Generator g(3);
  for (bool sgn : {false, true}) {
    CAPTURE(sgn);
    Tensor v = randn({4000}, g, 2.f);
    Tensor gy = randn({4000}, g);
    v.set_requires_grad(true);
    Tensor a1 = param(1.7f), a2 = param(1.7f);
    pact_quantize(v, a1, 4, sgn).backward(gy);
    const std::vector<float> dq = v.grad().to_vector();
    v.grad() = Tensor();
    pact_transform(v, a2, sgn).backward(gy);
    CHECK(v.grad().to_vector() == dq);
    CHECK(a1.grad().item() == a2.grad().item());
  }
}

TEST_CASE("pact: finite differences of the clip in x and alpha, of the staircase in alpha minus the grid's k/q") {
  // Inputs at least 0.1 from the kinks 0 and α (and from -α when signed), some clipped; α = 2.
  Generator g(11);
  std::vector<float> vals;
  while (vals.size() < 40) {
    const float v = g.uniform(-3.f, 3.f);
    if (std::fabs(v) > 0.1f && std::fabs(std::fabs(v) - 2.f) > 0.1f) vals.push_back(v);
  }
  GradCheckOptions o;
  o.eps = 1e-3f;
  o.samples = 40;
  for (bool sgn : {false, true}) {
    CAPTURE(sgn);
    Tensor v = Tensor::from_vector(vals, {40});
    v.set_requires_grad(true);
    gradcheck([sgn](const std::vector<Tensor>& in) { return pact_transform(in[0], in[1], sgn); }, {v, param(2.f)},
              o, "pact_transform");
  }

  // The staircase: inside [0, α), x̄ = k·α/q with k locally constant, so finite differences in α see k/q there
  // and 1 above α; the paper's ∂x̄/∂α keeps only the 1. Values with x·q/α at least 0.1 from a rounding jump.
  const int bits = 3;
  const float a0 = 2.f, qf = 7.f;
  std::vector<float> st;
  for (float v : vals) {
    const float r = v * qf / a0;
    if (v > 0.f && std::fabs(r - std::floor(r) - 0.5f) > 0.1f) st.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(st.size());
  REQUIRE(n >= 10);
  Tensor a = param(a0);
  const Tensor x = Tensor::from_vector(st, {n});
  const Tensor G = randn({n}, g);
  pact_quantize(x, a, bits).backward(G);
  auto objective = [&](float av) {
    NoGradGuard ng;
    const Tensor y = pact_quantize(x, Tensor::scalar(av), bits);
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) acc += double(y.data()[i]) * G.data()[i];
    return acc;
  };
  const double fd = (objective(a0 + o.eps) - objective(a0 - o.eps)) / (2.0 * o.eps);
  double grid = 0.0;  // Σ_inside G·k/q
  for (int64_t i = 0; i < n; ++i)
    if (st[size_t(i)] < a0) grid += G.data()[i] * std::round(st[size_t(i)] * qf / a0) / qf;
  CHECK(a.grad().item() == doctest::Approx(fd - grid).epsilon(1e-3));
}

TEST_CASE("PactQuantizer: calibration at the percentile (max for sparse inputs), floor, gradient scale, L2 flag") {
  PactQuantizer q(4);
  CHECK_THROWS_WITH_AS(q(Tensor::from_vector({1.f}, {1})), doctest::Contains("used before calibration"), Error);
  // Inputs 0..999 evenly: the 99.9th percentile is 0.999·999 = 998.001; two batches average their percentiles.
  Tensor x = Tensor::empty({1000});
  for (int64_t i = 0; i < 1000; ++i) x.data()[i] = static_cast<float>(i);
  q.observe(x);
  Tensor x2 = Tensor::empty({1000});
  for (int64_t i = 0; i < 1000; ++i) x2.data()[i] = static_cast<float>(2 * i);
  q.observe(x2);  // 1996.002
  q.finish_calibration();
  CHECK(q.calibrated());
  CHECK(q.alpha().item() == doctest::Approx((998.001 + 1996.002) / 2));
  q.observe(Tensor::full({10}, 1e6f));  // calibrated: left alone
  q.finish_calibration();
  CHECK(q.alpha().item() == doctest::Approx(1497.0015));
  // A sparse input whose percentile is 0 (1999 zeros, one 5: the order statistics around 99.9% are both 0): the
  // max instead.
  PactQuantizer sparse(2);
  Tensor z = Tensor::zeros({2000});
  z.data()[7] = 5.f;
  sparse.observe(z);
  sparse.finish_calibration();
  CHECK(sparse.alpha().item() == 5.f);
  // Signed: the percentile of |x|.
  PactQuantizer sq(4, true);
  Tensor xs = Tensor::empty({1000});
  for (int64_t i = 0; i < 1000; ++i) xs.data()[i] = -static_cast<float>(i);
  sq.observe(xs);
  sq.finish_calibration();
  CHECK(sq.alpha().item() == doctest::Approx(998.001));

  // Gradient scale 1/sqrt(N·q): N = 100, q = 15: 3 -> 3/sqrt(1500); none and N <= 0 leave it.
  q.alpha().grad() = Tensor::full({}, 3.f);
  q.scale_gradients(GradBalance::none, 100);
  q.scale_gradients(GradBalance::sqrt, 0);
  CHECK(q.alpha().grad().item() == 3.f);
  q.scale_gradients(GradBalance::sqrt, 100);
  CHECK(q.alpha().grad().item() == doctest::Approx(3.0 / std::sqrt(1500.0)));
  q.alpha().grad() = Tensor::full({}, 3.f);
  q.scale_gradients(GradBalance::relative, 100);
  CHECK(q.alpha().grad().item() == doctest::Approx(3.0 / std::sqrt(1500.0)));

  // project(): α stays above the floor.
  q.alpha().data()[0] = -1.f;
  q.project();
  CHECK(q.alpha().item() == PactQuantizer::kAlphaFloor);
  q.alpha().data()[0] = 2.f;
  q.project();
  CHECK(q.alpha().item() == 2.f);
  // α, and only α, is penalized; freezing stops it.
  CHECK(q.l2_penalized("alpha"));
  CHECK_FALSE(q.l2_penalized("s"));
  q.set_frozen(true);
  CHECK_FALSE(q.alpha().requires_grad());
  q.set_frozen(false);
  CHECK(q.alpha().requires_grad());
}

TEST_CASE("PactQuantizer: --pact-calib mse starts alpha at the least-squares clip point of the pooled inputs") {
  // Two batches: most inputs in [0, 1), a few far out, some negative (an unsigned quantizer sees max(x, 0)).
  Tensor a = Tensor::empty({1000}), b = Tensor::empty({1000});
  std::vector<float> pooled;
  for (int64_t i = 0; i < 1000; ++i) {
    a.data()[i] = i % 500 == 0 ? 5.f : static_cast<float>(i % 97) / 97.f - (i % 13 == 0 ? 0.5f : 0.f);
    b.data()[i] = i % 500 == 0 ? 6.f : static_cast<float>(i % 89) / 89.f;
  }
  for (const Tensor* t : {&a, &b})
    for (int64_t i = 0; i < 1000; ++i) pooled.push_back(std::max(t->data()[i], 0.f));
  PactQuantizer pct(2), mse(2, false, 99.9, ActCalib::mse);
  for (PactQuantizer* q : {&pct, &mse}) {
    q->observe(a);
    q->observe(b);
    q->finish_calibration();
  }
  CHECK(mse.calibration() == ActCalib::mse);
  CHECK(mse.alpha().item() == doctest::Approx(mse_clip_point(pooled, 3)).epsilon(1e-6));
  // The percentile sits among the outliers; the least-squares point near the bulk.
  CHECK(pct.alpha().item() > 4.f);
  CHECK(mse.alpha().item() < 0.5f * pct.alpha().item());
  // The factory and set_options carry the rule; the default stays the percentile.
  QuantizerOptions o;
  CHECK(dynamic_cast<PactQuantizer&>(*make_activation_quantizer("pact", 2, o)).calibration() == ActCalib::percentile);
  o.pact_calib = ActCalib::mse;
  auto made = make_activation_quantizer("pact", 2, o);
  CHECK(dynamic_cast<PactQuantizer&>(*made).calibration() == ActCalib::mse);
  PactQuantizer later(2);
  later.set_options(o);
  CHECK(later.calibration() == ActCalib::mse);
  CHECK(family_reads("pact", Option::pact_calib));
  CHECK_FALSE(family_reads("qil", Option::pact_calib));
}

TEST_CASE("PactQuantizer: stats and thresholds, set_bits keeps alpha, the factory and quantizer_from_stats") {
  auto w = make_weight_quantizer("pact", 3);
  auto a = make_activation_quantizer("pact", 3);
  QuantizerOptions so;
  so.is_signed = true;
  auto s = make_activation_quantizer("pact", 3, so);
  CHECK(std::string(w->kind()) == "dorefa_weight");  // PACT's weights are DoReFa's
  CHECK(std::string(a->kind()) == "pact_activation");
  CHECK(std::string(s->kind()) == "pact_activation_signed");
  CHECK(a->positive_levels() == 7);
  CHECK(s->positive_levels() == 3);
  CHECK_FALSE(a->is_signed());
  CHECK(s->is_signed());
  REQUIRE(a->named_parameters().size() == 1);
  CHECK(a->named_parameters()[0].first == "alpha");

  a->parameter("alpha").data()[0] = 3.5f;
  a->set_calibrated(true);
  // 3 bits, α = 3.5, q = 7: prune below α/(2q) = 0.25, clip at α(1 - 1/(2q)) = 3.25; levels 0..7: 8.
  QuantStats st = a->stats();
  CHECK(st.kind == "pact_activation");
  CHECK(st.alpha == 3.5);
  CHECK(st.prune_threshold == doctest::Approx(0.25));
  CHECK(st.clip_threshold == doctest::Approx(3.25));
  CHECK(st.levels_total == 8);
  // Over the golden inputs: levels 0 0.5 1 2.5 3.5 3.5 -> codes 0 1 2 5 7 7.
  const Tensor x = Tensor::from_vector({0.2f, 0.3f, 1.1f, 2.6f, 3.3f, 3.6f}, {6});
  st = a->stats(x);
  CHECK(st.pruned_fraction == doctest::Approx(1.0 / 6));
  CHECK(st.clipped_fraction == doctest::Approx(2.0 / 6));
  CHECK(st.levels_used == 5);
  // The thresholds are where the levels change: just below 0.25 rounds to 0, 3.25 to α.
  const auto y = (*a)(Tensor::from_vector({0.2499f, 0.2501f, 3.2499f, 3.25f}, {4})).to_vector();
  CHECK(y == std::vector<float>{0.f, 0.5f, 3.f, 3.5f});
  auto r = quantizer_from_stats(st);
  CHECK(std::string(r->kind()) == "pact_activation");
  CHECK((*r)(x).to_vector() == (*a)(x).to_vector());
  a->set_bits(2);
  CHECK(a->parameter("alpha").item() == 3.5f);
  CHECK(a->positive_levels() == 3);
  // Signed thresholds on |x|, both ends clipped.
  s->parameter("alpha").data()[0] = 1.5f;
  s->set_calibrated(true);
  st = s->stats(Tensor::from_vector({-2.f, -0.8f, -0.2f, 0.24f, 0.3f, 1.2f}, {6}));
  CHECK(st.levels_total == 7);
  CHECK(st.clipped_fraction == doctest::Approx(1.0 / 6));  // -1.5
  CHECK(st.pruned_fraction == doctest::Approx(2.0 / 6));
}

TEST_CASE("fresh gradient buffers: the PACT ops write every element, equal to accumulating into zeros") {
  Generator g(92);
  for (bool round : {true, false})
    for (bool is_signed : {false, true}) {
      CAPTURE(round);
      CAPTURE(is_signed);
      Tensor x = randn({40000}, g, 2.f);  // above the parallel threshold; some above alpha, negatives too
      check_fresh_equals_accumulated(
          [&](const std::vector<Tensor>& t) {
            return round ? pact_quantize(t[0], t[1], 4, is_signed) : pact_transform(t[0], t[1], is_signed);
          },
          {req(x), req(Tensor::scalar(1.5f))}, "pact");
    }
}

TEST_CASE("the AVX2 PACT kernels give the baseline's bits, and dalpha within float rounding") {
  if (!avx2_kernels_run()) return;
  Generator g(43);
  const Tensor x0 = randn({50001}, g), gy = randn({50001}, g);  // odd: the vector loops' remainders run too
  for (int bits : {3, 0}) {  // 0: the transform (no rounding)
    for (bool is_signed : {true, false}) {
      CAPTURE(bits);
      CAPTURE(is_signed);
      auto run = [&](bool baseline) {
        BaselineKernels kernels(baseline);
        Tensor x = x0.clone().set_requires_grad(true), a = param(0.8f);
        Tensor y = bits ? pact_quantize(x, a, bits, is_signed) : pact_transform(x, a, is_signed);
        y.backward(gy);
        return std::vector<Tensor>{y, x.grad(), a.grad()};
      };
      const auto wide = run(false), base = run(true);
      CHECK(std::memcmp(wide[0].data(), base[0].data(), wide[0].nbytes()) == 0);
      CHECK(std::memcmp(wide[1].data(), base[1].data(), wide[1].nbytes()) == 0);
      CHECK(wide[2].item() == doctest::Approx(base[2].item()).epsilon(1e-5));
      CHECK(std::fabs(base[2].item()) > 1.f);  // many clipped elements: a sum of many terms
    }
  }
}
