// DoReFa: hand-computed weight and activation levels at 2, 3 and 4 bits; the weight gradient by hand (through
// tanh and the max normalization, ties sharing the max's term) and against finite differences of the continuous
// part tanh(w)/max|tanh w|; the rounding passed straight through (the rounded op's gradient is the surrogate's);
// the activations' STE; the parameterless quantizers' statistics and thresholds, the factory and
// quantizer_from_stats; fast_tanh; fresh gradient buffers; the AVX2 build against the baseline. Not DoReFa inside a network (tests/layers/test_pact_layers.cpp).
#include <cmath>
#include <cstring>

#include "fresh_check.h"
#include "gradcheck.h"
#include "kernel_builds.h"

#include "engine/ops.h"
#include "quant/dorefa.h"
#include "quant/fast_math.h"
#include "quant/quantizer.h"
#include "quant/registry.h"

using namespace engine;
using namespace qiltest;
using namespace quant;

namespace {
void check_values(const Tensor& y, const std::vector<double>& want, double eps = 1e-6) {
  REQUIRE(y.numel() == static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CHECK(y.data()[i] == doctest::Approx(want[i]).epsilon(eps));
  }
}

// w = atanh(t) for the t the golden values are written in.
Tensor from_tanh(const std::vector<double>& t) {
  std::vector<float> w;
  for (double v : t) w.push_back(static_cast<float>(std::atanh(v)));
  return Tensor::from_vector(w, {static_cast<int64_t>(w.size())});
}
}  // namespace

TEST_CASE("fast_tanh agrees with std::tanh to a few float ulps, exactly odd, 0 at 0 and +-1 far out") {
  double worst = 0.0;
  int asymmetric = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -12.f + 24.f * static_cast<float>(i) / 200000.f;
    const double want = std::tanh(static_cast<double>(x));
    worst = std::max(worst, std::fabs(fast_tanh(x) - want) / std::max(std::fabs(want), 1e-30));
    asymmetric += fast_tanh(-x) != -fast_tanh(x);
  }
  CHECK(worst < 4e-7);
  CHECK(asymmetric == 0);
  CHECK(fast_tanh(0.f) == 0.f);
  CHECK(fast_tanh(1e-20f) == 1e-20f);
  CHECK(fast_tanh(100.f) == 1.f);
  CHECK(fast_tanh(-1e30f) == -1.f);
}

TEST_CASE("dorefa weights: golden levels at 2, 3 and 4 bits") {
  // t = tanh w = -0.8 -0.5 -0.1 0 0.2 0.45 0.8, so M = max|t| = 0.8 and r = t/(2M) + 1/2 = t/1.6 + 0.5:
  //   r = 0 0.1875 0.4375 0.5 0.625 0.78125 1.
  const Tensor w = from_tanh({-0.8, -0.5, -0.1, 0.0, 0.2, 0.45, 0.8});
  // 2 bits, q = 3: q·r = 0 0.5625 1.3125 1.5 1.875 2.34375 3;  round: 0 1 1 2 2 2 3;  w̄ = 2k/3 - 1.
  // (w = 0 sits on a tie, r = 1/2, and rounds up to +1/3: the 2^k levels have no 0.)
  check_values(dorefa_weight(w, 2), {-1, -1.0 / 3, -1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1});
  // 3 bits, q = 7: q·r = 0 1.3125 3.0625 3.5 4.375 5.46875 7;  round: 0 1 3 4 4 5 7;  w̄ = 2k/7 - 1.
  check_values(dorefa_weight(w, 3), {-1, -5.0 / 7, -1.0 / 7, 1.0 / 7, 1.0 / 7, 3.0 / 7, 1});
  // 4 bits, q = 15: q·r = 0 2.8125 6.5625 7.5 9.375 11.71875 15;  round: 0 3 7 8 9 12 15;  w̄ = 2k/15 - 1.
  check_values(dorefa_weight(w, 4), {-1, -9.0 / 15, -1.0 / 15, 1.0 / 15, 3.0 / 15, 9.0 / 15, 1});
  // The surrogate 2r - 1 = t/M: -1 -0.625 -0.125 0 0.25 0.5625 1.
  check_values(dorefa_weight_transform(w), {-1, -0.625, -0.125, 0, 0.25, 0.5625, 1}, 1e-5);
  // Scaling the weights' tanh keeps the levels relative to the largest: the rule is scale-free in t.
  CHECK(dorefa_weight_levels(2) == 3);
  CHECK(dorefa_weight_levels(8) == 255);
  CHECK_THROWS_WITH_AS(dorefa_weight(w, 1), doctest::Contains("bits must be in 2..8, got 1"), Error);
  // All-zero weights: M = 0, r = 1/2 for every one (2 bits: k = 2, +1/3), no division by zero.
  check_values(dorefa_weight(Tensor::zeros({3}), 2), {1.0 / 3, 1.0 / 3, 1.0 / 3});
}

TEST_CASE("dorefa weights: the gradient by hand, through tanh and the max (ties share it), accumulated") {
  // w = 0.5 -0.5 0.1, G = 1 2 3; t = tanh w, M = tanh 0.5 = 0.462117, S = Σ G·t = -0.163113, d = 1 - t².
  // ∂L/∂w_j = G_j·d_j/M, minus at the two tied maxima sign(w_j)·d_j·S/(2·M²):
  //   2.002184, 3.103325, 6.427372 (python, double precision).
  Tensor w = Tensor::from_vector({0.5f, -0.5f, 0.1f}, {3});
  w.set_requires_grad(true);
  w.grad() = Tensor::full({3}, 100.f);
  dorefa_weight(w, 3).backward(Tensor::from_vector({1, 2, 3}, {3}));
  check_values(w.grad(), {102.002184, 103.103325, 106.427372}, 2e-6);
  // One maximum (w = 0.5 -0.3 0.1): S = 0.178496; the whole max term on w_0: 1.044490, 3.960628, 6.427372.
  Tensor v = Tensor::from_vector({0.5f, -0.3f, 0.1f}, {3});
  v.set_requires_grad(true);
  dorefa_weight(v, 3).backward(Tensor::from_vector({1, 2, 3}, {3}));
  check_values(v.grad(), {1.044490, 3.960628, 6.427372}, 2e-6);
  // All-zero weights receive no gradient.
  Tensor z = Tensor::zeros({3});
  z.set_requires_grad(true);
  dorefa_weight(z, 3).backward(Tensor::from_vector({1, 2, 3}, {3}));
  CHECK(z.grad().to_vector() == std::vector<float>{0, 0, 0});
}

TEST_CASE("dorefa weights: finite differences of tanh(w)/max|tanh w| (the max included), rounding straight through") {
  // 20 weights (gradcheck checks every coordinate of an input this small, the max among them), the largest
  // |w| well clear of the next so that the argmax does not change within eps.
  Generator g(7);
  Tensor w = randn({20}, g, 0.5f);
  w.data()[13] = -1.6f;  // the max |w|: its own coordinate carries the max term
  for (int i = 0; i < 20; ++i)
    if (i != 13) w.data()[i] = std::max(-1.2f, std::min(1.2f, w.data()[i]));
  w.set_requires_grad(true);
  GradCheckOptions o;  // eps 1e-2: float noise in the objective stays near 1e-4, curvature error near 1e-5
  o.rtol = 5e-3f;
  o.atol = 5e-4f;
  gradcheck([](const std::vector<Tensor>& in) { return dorefa_weight_transform(in[0]); }, {w}, o,
            "dorefa_weight_transform");

  // The rounded op passes its gradient straight through q_k: the same as the surrogate's, element for element.
  Tensor big = randn({5000}, g, 0.1f);
  const Tensor gy = randn({5000}, g);
  big.set_requires_grad(true);
  dorefa_weight(big, 2).backward(gy);
  const std::vector<float> dq = big.grad().to_vector();
  big.grad() = Tensor();
  dorefa_weight_transform(big).backward(gy);
  CHECK(big.grad().to_vector() == dq);
}

TEST_CASE("dorefa activations: q_k(clip(x, 0, 1)) at 2, 3 and 4 bits, gradient 1 from 0 up to 1 and nothing learned") {
  auto q2 = make_activation_quantizer("dorefa", 2);
  CHECK(std::string(q2->kind()) == "dorefa_activation");
  CHECK(q2->named_parameters().empty());
  CHECK(q2->calibrated());  // nothing to calibrate
  // 2 bits, q = 3: x = -0.5 0.1 0.2 0.5 0.9 1.7 -> clip 0 0.1 0.2 0.5 0.9 1 -> ·3: 0 0.3 0.6 1.5 2.7 3
  // -> round 0 0 1 2 3 3 -> /3.
  Tensor x = Tensor::from_vector({-0.5f, 0.1f, 0.2f, 0.5f, 0.9f, 1.7f}, {6});
  check_values((*q2)(x), {0, 0, 1.0 / 3, 2.0 / 3, 1, 1});
  // 3 bits, q = 7: ·7: 0 0.7 1.4 3.5 6.3 7 -> 0 1 1 4 6 7 -> /7.
  check_values((*make_activation_quantizer("dorefa", 3))(x), {0, 1.0 / 7, 1.0 / 7, 4.0 / 7, 6.0 / 7, 1});
  // 4 bits, q = 15, x = -0.5 0.12 0.2 0.5 0.92 1.7: ·15: 0 1.8 3 7.5 13.8 15 -> 0 2 3 8 14 15 -> /15.
  const Tensor x4 = Tensor::from_vector({-0.5f, 0.12f, 0.2f, 0.5f, 0.92f, 1.7f}, {6});
  check_values((*make_activation_quantizer("dorefa", 4))(x4), {0, 2.0 / 15, 3.0 / 15, 8.0 / 15, 14.0 / 15, 1});
  // Signed (a first conv's input), 3 bits: q = 3 on clip(x, -1, 1): -1.7 -0.5 0.1 0.9 -> -3 -2 0 3 (·3 rounded)
  QuantizerOptions so;
  so.is_signed = true;
  auto s3 = make_activation_quantizer("dorefa", 3, so);
  CHECK(std::string(s3->kind()) == "dorefa_activation_signed");
  check_values((*s3)(Tensor::from_vector({-1.7f, -0.5f, 0.1f, 0.9f}, {4})), {-1, -2.0 / 3, 0, 1});

  // STE: ∂x̄/∂x = 1 where 0 <= x < 1, accumulated.
  x.set_requires_grad(true);
  x.grad() = Tensor::full({6}, 10.f);
  (*q2)(x).backward(Tensor::from_vector({1, 2, 3, 4, 5, 6}, {6}));
  CHECK(x.grad().to_vector() == std::vector<float>{10, 12, 13, 14, 15, 10});

  // stats: the fixed clipping level 1; prune below 1/(2q) = 1/6, clip at 1 - 1/6.
  QuantStats st = q2->stats(Tensor::from_vector({-0.5f, 0.1f, 0.2f, 0.5f, 0.9f, 1.7f}, {6}));
  CHECK(st.alpha == 1.0);
  CHECK(st.prune_threshold == doctest::Approx(1.0 / 6));
  CHECK(st.clip_threshold == doctest::Approx(5.0 / 6));
  CHECK(st.levels_total == 4);
  CHECK(st.pruned_fraction == doctest::Approx(2.0 / 6));
  CHECK(st.clipped_fraction == doctest::Approx(2.0 / 6));
  CHECK(st.levels_used == 4);
  CHECK(std::string(quantizer_from_stats(st)->kind()) == "dorefa_activation");
}

TEST_CASE("DorefaWeightQuantizer: no parameters, stats with max|tanh w| and the clip threshold, from_stats") {
  auto q = make_weight_quantizer("dorefa", 3);
  CHECK(std::string(q->kind()) == "dorefa_weight");
  CHECK(q->named_parameters().empty());
  CHECK(q->calibrated());
  CHECK(q->positive_levels() == 7);
  CHECK(q->is_signed());
  q->parameters_loaded({});  // a checkpoint holds nothing of it: still ready
  CHECK(q->calibrated());
  const Tensor w = from_tanh({-0.8, -0.5, -0.1, 0.0, 0.2, 0.45, 0.8});
  const QuantStats st = q->stats(w);
  // M = 0.8; clip where tanh|w| >= M·(1 - 1/q) = 0.8·6/7, |w| >= atanh(0.685714) = 0.839; nothing is pruned.
  CHECK(st.tanh_max == doctest::Approx(0.8).epsilon(1e-6));
  CHECK(st.clip_threshold == doctest::Approx(std::atanh(0.8 * 6 / 7)).epsilon(1e-5));
  CHECK(st.prune_threshold == 0.0);
  CHECK(st.pruned_fraction == 0.0);
  CHECK(st.levels_total == 8);
  CHECK(st.clipped_fraction == doctest::Approx(2.0 / 7));  // -1 and 1
  CHECK(st.levels_used == 6);                              // k = 0 1 3 4 5 7
  // Either side of the threshold (the max 0.8 keeps M): below it a weight is one level short of 1.
  const float thr = static_cast<float>(st.clip_threshold);
  const Tensor probe = from_tanh({0.8, -0.8, 0.0, 0.0});
  Tensor pw = probe.clone();
  pw.data()[2] = thr * 0.999f;
  pw.data()[3] = thr * 1.001f;
  const auto y = (*q)(pw).to_vector();
  CHECK(y[2] == doctest::Approx(5.0 / 7));
  CHECK(y[3] == doctest::Approx(1.0));
  // Rebuilt from its stats, the quantizer normalizes by the reported M and so reproduces w's levels on any grid.
  auto r = quantizer_from_stats(st);
  CHECK(r->stats().tanh_max == doctest::Approx(0.8).epsilon(1e-6));
  CHECK(r->stats().clip_threshold == doctest::Approx(st.clip_threshold).epsilon(1e-6));
  const std::vector<float> yq = (*q)(w).to_vector();
  check_values((*r)(w), std::vector<double>(yq.begin(), yq.end()));
  const Tensor grid = Tensor::from_vector({0.f, 0.2f, 0.9f, 3.f}, {4});  // |w| = 3 beyond M's: clamped to 1
  CHECK((*r)(grid).data()[3] == 1.f);
  q->set_bits(2);
  CHECK(q->positive_levels() == 3);
  CHECK(q->stats(w).levels_total == 4);
}

TEST_CASE("dorefa weights: fresh gradient buffers are written whole, equal to accumulating into zeros") {
  Generator g(31);
  for (int bits : {0, 3}) {  // 0: the transform (no rounding)
    CAPTURE(bits);
    auto f = [bits](float fixed_m) {
      return [bits, fixed_m](const std::vector<Tensor>& t) {
        return bits ? dorefa_weight(t[0], bits, fixed_m) : dorefa_weight_transform(t[0], fixed_m);
      };
    };
    check_fresh_equals_accumulated(f(0.f), {req(randn({40001}, g))}, "dorefa_weight, own max");
    check_fresh_equals_accumulated(f(0.5f), {req(randn({40001}, g))}, "dorefa_weight, fixed normalizer");
    check_fresh_equals_accumulated(f(0.f), {req(Tensor::zeros({9}))}, "dorefa_weight, all-zero weights");
  }
}

TEST_CASE("dorefa weights: the AVX2 kernels give the baseline's bits (the max term's sum within rounding)") {
  if (!avx2_kernels_run()) return;
  Generator g(32);
  const Tensor w0 = randn({50001}, g), gy = randn({50001}, g);  // odd: the vector loops' remainders run too
  float max_abs = 0.f;
  for (float v : w0.to_vector()) max_abs = std::max(max_abs, std::fabs(v));
  for (float fixed_m : {0.f, 0.5f}) {  // own max (the max term) and a fixed normalizer (clamped r)
    for (int bits : {3, 0}) {
      CAPTURE(fixed_m);
      CAPTURE(bits);
      auto run = [&](bool baseline) {
        BaselineKernels kernels(baseline);
        Tensor w = w0.clone().set_requires_grad(true);
        Tensor y = bits ? dorefa_weight(w, bits, fixed_m) : dorefa_weight_transform(w, fixed_m);
        y.backward(gy);
        return std::pair<Tensor, Tensor>{y, w.grad()};
      };
      const auto [yw, dw_w] = run(false);
      const auto [yb, dw_b] = run(true);
      CHECK(std::memcmp(yw.data(), yb.data(), yw.nbytes()) == 0);
      int64_t differ = 0, at_max = 0;
      for (int64_t i = 0; i < w0.numel(); ++i) {
        if (std::fabs(w0.data()[i]) == max_abs) {  // its gradient holds the max term, a float-lane sum
          ++at_max;
          CHECK(dw_w.data()[i] == doctest::Approx(dw_b.data()[i]).epsilon(1e-5));
        } else {
          differ += dw_w.data()[i] != dw_b.data()[i];
        }
      }
      CHECK(at_max == 1);
      CHECK(differ == 0);
    }
  }
}
