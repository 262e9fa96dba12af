// LSQ: hand-computed levels at 2, 3 and 4 bits, the paper's gradients against a hand computation and against
// finite differences (of the staircase in s, where FD sees round(v/s); of the un-rounded surrogate in v and s),
// accumulation, the gradient scale 1/sqrt(N·Q_P), calibration 2·mean|v|/sqrt(Q_P), the floor on s, stats, and
// the factory, fresh gradient buffers, the AVX2 build against the baseline. Not LSQ inside a network (tests/layers/test_lsq_layers.cpp).
#include <cmath>
#include <cstring>

#include "fresh_check.h"
#include "gradcheck.h"
#include "kernel_builds.h"

#include "engine/ops.h"
#include "quant/lsq.h"
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

TEST_CASE("ranges: weights [-2^(b-1), 2^(b-1)-1], post-ReLU [0, 2^b-1], bits outside 2..8 are errors") {
  CHECK(lsq_signed_range(2).qn == 2);
  CHECK(lsq_signed_range(2).qp == 1);
  CHECK(lsq_signed_range(3).qn == 4);
  CHECK(lsq_signed_range(3).qp == 3);
  CHECK(lsq_signed_range(8).qn == 128);
  CHECK(lsq_unsigned_range(4).qn == 0);
  CHECK(lsq_unsigned_range(4).qp == 15);
  CHECK_THROWS_WITH_AS(lsq_signed_range(1, "x"), doctest::Contains("x: bits must be in 2..8, got 1"), Error);
  CHECK_THROWS_WITH_AS(lsq_unsigned_range(9), doctest::Contains("got 9"), Error);
}

TEST_CASE("golden levels at 2, 3 and 4 bits") {
  // 3-bit weights, s = 0.5 (Q_N = 4, Q_P = 3): v/s = -6 -3.8 -2.4 -1.2 -0.2 0.4 0.8 1.8 2.8 4
  // clip to [-4, 3]:  -4 -3.8 -2.4 -1.2 -0.2 0.4 0.8 1.8 2.8 3;  round: -4 -4 -2 -1 0 0 1 2 3 3;  × 0.5:
  const Tensor w = Tensor::from_vector({-3.0f, -1.9f, -1.2f, -0.6f, -0.1f, 0.2f, 0.4f, 0.9f, 1.4f, 2.0f}, {10});
  check_values(lsq_quantize(w, param(0.5f), lsq_signed_range(3)), {-2, -2, -1, -0.5, 0, 0, 0.5, 1, 1.5, 1.5});
  // 2-bit weights, s = 1 (Q_N = 2, Q_P = 1): ternary plus -2. v = -2.7 -1.2 -0.4 0.3 0.8 1.9
  // clip: -2 -1.2 -0.4 0.3 0.8 1;  round: -2 -1 0 0 1 1.
  const Tensor w2 = Tensor::from_vector({-2.7f, -1.2f, -0.4f, 0.3f, 0.8f, 1.9f}, {6});
  check_values(lsq_quantize(w2, param(1.f), lsq_signed_range(2)), {-2, -1, 0, 0, 1, 1});
  // 4-bit post-ReLU activations, s = 0.25 (Q_N = 0, Q_P = 15): v/s = -4 0.4 1.2 4.2 14.4 20
  // clip to [0, 15]: 0 0.4 1.2 4.2 14.4 15;  round: 0 0 1 4 14 15;  × 0.25: 0 0 0.25 1 3.5 3.75.
  const Tensor x = Tensor::from_vector({-1.f, 0.1f, 0.3f, 1.05f, 3.6f, 5.f}, {6});
  check_values(lsq_quantize(x, param(0.25f), lsq_unsigned_range(4)), {0, 0, 0.25, 1, 3.5, 3.75});
  // 4-bit signed activations (first conv), s = 0.1 (Q_N = 8, Q_P = 7): v/s = -10 -3.3 2.6 9
  // clip: -8 -3.3 2.6 7;  round: -8 -3 3 7;  × 0.1: -0.8 -0.3 0.3 0.7.
  const Tensor xs = Tensor::from_vector({-1.f, -0.33f, 0.26f, 0.9f}, {4});
  check_values(lsq_quantize(xs, param(0.1f), lsq_signed_range(4)), {-0.8f, -0.3f, 0.3f, 0.7f});
  // The surrogate keeps the clip and drops the rounding: 3-bit, s = 0.5 on the first weights.
  check_values(lsq_transform(w, param(0.5f), lsq_signed_range(3)),
               {-2, -1.9f, -1.2f, -0.6f, -0.1f, 0.2f, 0.4f, 0.9f, 1.4f, 1.5});
  CHECK_THROWS_WITH_AS(lsq_quantize(w, param(0.f), lsq_signed_range(3)), doctest::Contains("s must be positive"),
                       Error);
}

TEST_CASE("rounding is std::round's: halves away from zero, and the float just below a half rounds down") {
  // s = 1, 4-bit signed (Q_N = 8, Q_P = 7): v̄ = round(v). 0.49999997 + 0.5 rounds to 1 in float arithmetic, so
  // a rounding that adds the half in float gives 1 where std::round gives 0.
  const float below_half = std::nextafter(0.5f, 0.f);
  const std::vector<float> v = {below_half, -below_half, 0.5f, -0.5f, 1.5f, -2.5f, std::nextafter(2.5f, 0.f), 6.5f};
  const Tensor y = lsq_quantize(Tensor::from_vector(v, {static_cast<int64_t>(v.size())}), param(1.f),
                                lsq_signed_range(4));
  for (size_t i = 0; i < v.size(); ++i) {
    CAPTURE(v[i]);
    CHECK(y.data()[i] == std::round(v[i]));
  }
}

TEST_CASE("gradients: the paper's dv and ds, by hand, accumulated into pre-filled gradients") {
  // The 3-bit weights above, s = 0.5, upstream G_i = i + 1.
  // ∂/∂v: 1 where -4 < v/s < 3: 0 1 1 1 1 1 1 1 1 0.
  // ∂/∂s per element: -Q_N = -4; round(r) - r = -0.2 0.4 0.2 0.2 -0.4 0.2 0.2 0.2; Q_P = 3.
  // Σ G·∂/∂s = -4 - 0.4 + 1.2 + 0.8 + 1.0 - 2.4 + 1.4 + 1.6 + 1.8 + 30 = 31.0.
  Tensor w = Tensor::from_vector({-3.0f, -1.9f, -1.2f, -0.6f, -0.1f, 0.2f, 0.4f, 0.9f, 1.4f, 2.0f}, {10});
  w.set_requires_grad(true);
  Tensor s = param(0.5f);
  std::vector<float> gv(10);
  for (int i = 0; i < 10; ++i) gv[size_t(i)] = float(i + 1);
  const Tensor G = Tensor::from_vector(gv, {10});
  // Gradients pre-filled with 100 must come out as 100 + the op's: backward accumulates.
  w.grad() = Tensor::full({10}, 100.f);
  s.grad() = Tensor::full({}, 100.f);
  lsq_quantize(w, s, lsq_signed_range(3)).backward(G);
  const std::vector<float> mask = {0, 1, 1, 1, 1, 1, 1, 1, 1, 0};
  for (int i = 0; i < 10; ++i) CHECK(w.grad().data()[i] == doctest::Approx(100.f + mask[size_t(i)] * gv[size_t(i)]));
  CHECK(s.grad().item() == doctest::Approx(100.0 + 31.0).epsilon(1e-5));
}

TEST_CASE("gradients: finite differences of the surrogate in v and s, of the staircase in s plus -v/s") {
  // Values whose v/s sits at least 0.1 from every integer (rounding jumps) and from the clip edges, with some
  // clipped on either side; 4-bit weights, s = 0.3: Q_N = 8, Q_P = 7, range [-2.4, 2.1].
  Generator g(5);
  const LsqRange r = lsq_signed_range(4);
  const float s0 = 0.3f;
  std::vector<float> vals;
  while (vals.size() < 40) {
    const float v = g.uniform(-3.5f, 3.f);
    const float q = v / s0;
    if (std::fabs(q - std::round(q)) > 0.15f) vals.push_back(v);
  }
  GradCheckOptions o;
  o.eps = 1e-3f;  // moves v/s by at most 0.012 for v, and 3.5/0.3 * 1e-3/0.3 ≈ 0.04 for s: no jump crossed
  o.samples = 40;
  Tensor v = Tensor::from_vector(vals, {40});
  v.set_requires_grad(true);
  gradcheck([r](const std::vector<Tensor>& in) { return lsq_transform(in[0], in[1], r); }, {v, param(s0)}, o,
            "lsq_transform");

  // The staircase: FD in s sees Σ G·round(v/s) inside and -Q_N / Q_P clipped (round(v/s) is locally
  // constant); the paper's ∂v̄/∂s adds -v/s inside. So analytic = FD - Σ_inside G·v/s.
  Tensor s = param(s0);
  Tensor vq = Tensor::from_vector(vals, {40});
  Tensor G = randn({40}, g);
  lsq_quantize(vq, s, r).backward(G);
  auto objective = [&](float sv) {
    NoGradGuard ng;
    const Tensor y = lsq_quantize(vq, Tensor::scalar(sv), r);
    double acc = 0.0;
    for (int i = 0; i < 40; ++i) acc += double(y.data()[i]) * G.data()[i];
    return acc;
  };
  const double fd = (objective(s0 + o.eps) - objective(s0 - o.eps)) / (2.0 * o.eps);
  double ste = 0.0;
  for (int i = 0; i < 40; ++i) {
    const double q = vals[size_t(i)] / s0;
    if (q > -r.qn && q < r.qp) ste -= G.data()[i] * q;
  }
  CHECK(s.grad().item() == doctest::Approx(fd + ste).epsilon(2e-3));
}

TEST_CASE("LsqQuantizer: calibration 2·mean|v|/sqrt(Q_P), the floor on s, gradient scale 1/sqrt(N·Q_P)") {
  LsqQuantizer wq(LsqQuantizer::Role::weight, 4);  // Q_P = 7
  CHECK_THROWS_WITH_AS(wq(Tensor::from_vector({1.f}, {1})), doctest::Contains("used before calibration"), Error);
  // mean|v| over both observed tensors: (1 + 2 + 3 + 2) / 4 = 2, s = 2·2/sqrt(7).
  wq.observe(Tensor::from_vector({-1.f, 2.f}, {2}));
  wq.observe(Tensor::from_vector({3.f, -2.f}, {2}));
  wq.finish_calibration();
  CHECK(wq.calibrated());
  CHECK(wq.step().item() == doctest::Approx(4.0 / std::sqrt(7.0)));
  // Calibrated: further observations leave s alone.
  wq.observe(Tensor::from_vector({100.f}, {1}));
  wq.finish_calibration();
  CHECK(wq.step().item() == doctest::Approx(4.0 / std::sqrt(7.0)));

  LsqQuantizer aq(LsqQuantizer::Role::activation, 3);  // Q_P = 7 too; mean|x| = 0.5
  aq.observe(Tensor::from_vector({0.f, 1.f, 0.5f, 0.5f}, {4}));
  aq.finish_calibration();
  CHECK(aq.step().item() == doctest::Approx(1.0 / std::sqrt(7.0)));

  // Gradient scale: g = 1/sqrt(N·Q_P); N = 1000, Q_P = 7: 2.5 -> 2.5/sqrt(7000). none leaves it; N <= 0 too.
  wq.step().grad() = Tensor::full({}, 2.5f);
  wq.scale_gradients(GradBalance::none, 1000);
  CHECK(wq.step().grad().item() == 2.5f);
  wq.scale_gradients(GradBalance::sqrt, 0);
  CHECK(wq.step().grad().item() == 2.5f);
  wq.scale_gradients(GradBalance::sqrt, 1000);
  CHECK(wq.step().grad().item() == doctest::Approx(2.5 / std::sqrt(7000.0)));
  LsqQuantizer w2(LsqQuantizer::Role::weight, 2);  // Q_P = 1: g = 1/sqrt(N)
  w2.step().grad() = Tensor::full({}, 1.f);
  w2.scale_gradients(GradBalance::relative, 100);
  CHECK(w2.step().grad().item() == doctest::Approx(0.1));

  // project(): s stays above the floor; a positive s is untouched.
  wq.step().data()[0] = -0.5f;
  wq.project();
  CHECK(wq.step().item() == LsqQuantizer::kStepFloor);
  wq.step().data()[0] = 0.25f;
  wq.project();
  CHECK(wq.step().item() == 0.25f);
}

TEST_CASE("LsqQuantizer: stats, set_bits keeps s, and the factory and quantizer_from_stats by kind") {
  auto w = make_weight_quantizer("lsq", 3);
  auto a = make_activation_quantizer("lsq", 4);
  QuantizerOptions so;
  so.is_signed = true;
  auto f = make_activation_quantizer("lsq", 4, so);
  CHECK(std::string(w->kind()) == "lsq_weight");
  CHECK(std::string(a->kind()) == "lsq_activation");
  CHECK(std::string(f->kind()) == "lsq_activation_signed");
  CHECK(w->positive_levels() == 3);
  CHECK(a->positive_levels() == 15);
  CHECK(f->positive_levels() == 7);
  CHECK(w->is_signed());
  CHECK_FALSE(a->is_signed());
  CHECK(w->named_parameters().size() == 1);
  CHECK(w->named_parameters()[0].first == "s");

  w->parameter("s").data()[0] = 0.5f;
  w->set_calibrated(true);
  // 3-bit, s = 0.5: prune below s/2 = 0.25; clip at (Q_P - 1/2)·s = 1.25; levels -4..3: 8.
  QuantStats st = w->stats();
  CHECK(st.kind == "lsq_weight");
  CHECK(st.bits == 3);
  CHECK(st.step == 0.5);
  CHECK(st.prune_threshold == doctest::Approx(0.25));
  CHECK(st.clip_threshold == doctest::Approx(1.25));
  CHECK(st.levels_total == 8);
  // Over the golden weights: levels -2 -2 -1 -0.5 0 0 0.5 1 1.5 1.5 -> codes -4 -4 -2 -1 0 0 1 2 3 3.
  const Tensor v = Tensor::from_vector({-3.0f, -1.9f, -1.2f, -0.6f, -0.1f, 0.2f, 0.4f, 0.9f, 1.4f, 2.0f}, {10});
  st = w->stats(v);
  CHECK(st.pruned_fraction == doctest::Approx(0.2));   // two zeros
  CHECK(st.clipped_fraction == doctest::Approx(0.4));  // two at -4, two at 3
  CHECK(st.levels_used == 7);                          // -4 -2 -1 0 1 2 3
  // Rebuilt from its stats, the quantizer computes the very same levels.
  auto r = quantizer_from_stats(st);
  CHECK(std::string(r->kind()) == "lsq_weight");
  const Tensor y0 = (*w)(v), y1 = (*r)(v);
  for (int64_t i = 0; i < v.numel(); ++i) CHECK(y0.data()[i] == y1.data()[i]);
  w->set_bits(2);
  CHECK(w->parameter("s").item() == 0.5f);
  CHECK(w->positive_levels() == 1);
}

TEST_CASE("fresh gradient buffers: the LSQ ops write every element, equal to accumulating into zeros") {
  Generator g(91);
  for (bool round : {true, false})
    for (bool is_signed : {false, true}) {
      CAPTURE(round);
      CAPTURE(is_signed);
      const LsqRange r = is_signed ? lsq_signed_range(4) : lsq_unsigned_range(4);
      Tensor v = randn({40000}, g, 1.5f);  // above the parallel threshold; some clipped at either end
      if (!is_signed)
        for (int64_t i = 0; i < v.numel(); ++i) v.data()[i] = std::fabs(v.data()[i]);
      check_fresh_equals_accumulated(
          [&](const std::vector<Tensor>& t) { return round ? lsq_quantize(t[0], t[1], r) : lsq_transform(t[0], t[1], r); },
          {req(v), req(Tensor::scalar(0.2f))}, "lsq");
    }
}

TEST_CASE("the AVX2 LSQ kernels give the baseline's bits, and ds within float rounding") {
  if (!avx2_kernels_run()) return;
  Generator g(41);
  const Tensor v0 = randn({50001}, g), gy = randn({50001}, g);  // odd: the vector loops' remainders run too
  for (bool round : {true, false}) {
    for (bool is_signed : {true, false}) {
      CAPTURE(round);
      CAPTURE(is_signed);
      const LsqRange r = is_signed ? lsq_signed_range(3) : lsq_unsigned_range(3);
      auto run = [&](bool baseline) {
        BaselineKernels kernels(baseline);
        Tensor v = v0.clone().set_requires_grad(true), s = param(0.3f);
        Tensor y = round ? lsq_quantize(v, s, r) : lsq_transform(v, s, r);
        y.backward(gy);
        return std::vector<Tensor>{y, v.grad(), s.grad()};
      };
      const auto wide = run(false), base = run(true);
      CHECK(std::memcmp(wide[0].data(), base[0].data(), wide[0].nbytes()) == 0);
      CHECK(std::memcmp(wide[1].data(), base[1].data(), wide[1].nbytes()) == 0);
      CHECK(wide[2].item() == doctest::Approx(base[2].item()).epsilon(1e-5));
      CHECK(std::fabs(base[2].item()) > 1.f);  // clipped elements on both sides: a sum of many terms
    }
  }
}

TEST_CASE("LSQ's symmetric weight grid: Q_N = Q_P = 2^(b-1) - 1, ternary at 2 bits, rebuilt from its stats") {
  CHECK(lsq_symmetric_range(2).qn == 1);
  CHECK(lsq_symmetric_range(2).qp == 1);
  CHECK(lsq_symmetric_range(4).qn == 7);
  CHECK_THROWS_AS(lsq_symmetric_range(1), engine::Error);
  QuantizerOptions o;
  o.symmetric = true;
  auto w = make_weight_quantizer("lsq", 2, o);
  CHECK(std::string(w->kind()) == "lsq_weight_symmetric");
  CHECK(w->min_level() == -1);
  CHECK(w->positive_levels() == 1);
  w->parameter("s").data()[0] = 0.5f;
  w->set_calibrated(true);
  // s = 0.5 at 2 bits: v/s rounded and clipped to [-1, 1]: -3 -> -1, -0.3 -> -0.6 -> -1, 0.2 -> 0.4 -> 0,
  // 0.3 -> 0.6 -> 1, 2 -> 1. Values k·s: -0.5 -0.5 0 0.5 0.5 (the signed grid would give -1.0 for v = -3).
  const Tensor v = Tensor::from_vector({-3.0f, -0.3f, 0.2f, 0.3f, 2.0f}, {5});
  const Tensor y = (*w)(v);
  const float expected[] = {-0.5f, -0.5f, 0.f, 0.5f, 0.5f};
  for (int i = 0; i < 5; ++i) CHECK(y.data()[i] == expected[i]);
  const QuantStats st = w->stats(v);
  CHECK(st.levels_total == 3);
  auto r = quantizer_from_stats(st);
  CHECK(std::string(r->kind()) == "lsq_weight_symmetric");
  const Tensor y1 = (*r)(v);
  for (int i = 0; i < 5; ++i) CHECK(y1.data()[i] == expected[i]);
}
