// QIL ops: transformer gradients against finite differences, the straight-through discretizer, zero gradients
// outside the interval, hand-computed discretizer values, effective thresholds, bit-width errors,
// accumulation into pre-filled gradients, and the signed first-layer activation rule.
#include <cstring>
#include <set>
#include <string>

#include "fresh_check.h"
#include "gradcheck.h"
#include "kernel_builds.h"

#include "engine/ops.h"
#include "quant/qil.h"
#include "quant/qil_ops.h"

using namespace engine;
using namespace qiltest;
using namespace quant;

namespace {
Tensor param(float v) {
  Tensor t = Tensor::scalar(v);
  t.set_requires_grad(true);
  return t;
}

// |v| uniform in [lo, hi], random sign when signed.
Tensor magnitudes(int64_t n, Generator& g, float lo, float hi, bool signed_values) {
  Tensor t = rand_uniform({n}, g, lo, hi);
  if (signed_values)
    for (int64_t i = 0; i < n; ++i)
      if (g.uniform() < 0.5f) t.data()[i] = -t.data()[i];
  return t;
}

GradCheckOptions fd_options() {
  GradCheckOptions o;
  o.eps = 2e-3f;  // well inside the 0.1 margin kept from the interval's edges
  o.samples = 40;
  return o;
}
}  // namespace

TEST_CASE("weight transformer: gradients to w, c, d, gamma match finite differences inside the interval") {
  // c = 0.6, d = 0.4: interval [0.2, 1.0]; |w| in [0.3, 0.9] keeps u in [0.125, 0.875], away from the edges.
  for (float gamma : {0.7f, 1.f, 1.8f}) {
    Generator g(11);
    Tensor w = magnitudes(60, g, 0.3f, 0.9f, true).set_requires_grad(true);
    CAPTURE(gamma);
    gradcheck([](const std::vector<Tensor>& in) { return qil_weight_transform(in[0], in[1], in[2], in[3]); },
              {w, param(0.6f), param(0.4f), param(gamma)}, fd_options(), "qil_weight_transform");
  }
  // Only negative, then only positive weights: a sign error in the c, d or gamma terms cannot cancel out.
  for (bool negative : {true, false}) {
    Generator g(12);
    Tensor w = magnitudes(30, g, 0.3f, 0.9f, false);
    if (negative)
      for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = -w.data()[i];
    w.set_requires_grad(true);
    CAPTURE(negative);
    gradcheck([](const std::vector<Tensor>& in) { return qil_weight_transform(in[0], in[1], in[2], in[3]); },
              {w, param(0.6f), param(0.4f), param(1.8f)}, fd_options(), "qil_weight_transform one sign");
  }
}

TEST_CASE("weight transformer: gradient values at one point, by hand") {
  // c = 0.5, d = 0.25 (interval [0.25, 0.75]), w = -0.5: u = 0.5, s = -1. With gamma = 2:
  // ŵ = -0.25; ∂ŵ/∂w = γu^(γ-1)/(2d) = 2·0.5/0.5 = 2; ∂ŵ/∂c = -s·2 = 2; ∂ŵ/∂d = -s·γu^(γ-1)(|w|-c)/(2d²) = 0;
  // ∂ŵ/∂γ = s·u^γ·ln u = -0.25·ln 0.5 = 0.1732868.
  Tensor w = Tensor::from_vector({-0.5f}, {1}).set_requires_grad(true);
  Tensor c = param(0.5f), d = param(0.25f), gm = param(2.f);
  Tensor y = qil_weight_transform(w, c, d, gm);
  CHECK(y.item() == doctest::Approx(-0.25f));
  ops::sum(y).backward();
  CHECK(w.grad().item() == doctest::Approx(2.f));
  CHECK(c.grad().item() == doctest::Approx(2.f));
  CHECK(d.grad().item() == doctest::Approx(0.f));
  CHECK(gm.grad().item() == doctest::Approx(0.25 * std::log(2.0)));
  // w = 0.6 (s = 1, u = 0.7), gamma = 1: ∂ŵ/∂d = -(0.6 - 0.5)/(2·0.0625) = -0.8.
  Tensor w2 = Tensor::from_vector({0.6f}, {1}).set_requires_grad(true);
  Tensor c2 = param(0.5f), d2 = param(0.25f), g2 = param(1.f);
  ops::sum(qil_weight_transform(w2, c2, d2, g2)).backward();
  CHECK(d2.grad().item() == doctest::Approx(-0.8f));
  CHECK(g2.grad().item() == doctest::Approx(0.7 * std::log(0.7)));
}

TEST_CASE("activation transformer: gradients to x, c, d match finite differences inside the interval") {
  // c = 1, d = 0.8: interval [0.2, 1.8]; x in [0.3, 1.7].
  Generator g(21);
  Tensor x = rand_uniform({3, 4, 5}, g, 0.3f, 1.7f).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return qil_activation_transform(in[0], in[1], in[2]); },
            {x, param(1.f), param(0.8f)}, fd_options(), "qil_activation_transform");
  // Signed rule: |x| in the interval, both signs.
  Tensor xs = magnitudes(50, g, 0.3f, 1.7f, true).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return qil_activation_transform(in[0], in[1], in[2], true); },
            {xs, param(1.f), param(0.8f)}, fd_options(), "qil_activation_transform signed");
}

TEST_CASE("transformers: finite differences also hold with pruned and clipped elements present") {
  // c = 0.6, d = 0.4: |w| in [0, 0.1] pruned, [0.3, 0.9] inside, [1.1, 2] clipped.
  Generator g(31);
  Tensor w = Tensor::empty({90});
  for (int64_t i = 0; i < 90; ++i) {
    const float lo[3] = {0.f, 0.3f, 1.1f}, hi[3] = {0.1f, 0.9f, 2.f};
    const float m = g.uniform(lo[i % 3], hi[i % 3]);
    w.data()[i] = (i / 3) % 2 ? m : -m;
  }
  w.set_requires_grad(true);
  GradCheckOptions o = fd_options();
  o.samples = 90;
  gradcheck([](const std::vector<Tensor>& in) { return qil_weight_transform(in[0], in[1], in[2], in[3]); },
            {w, param(0.6f), param(0.4f), param(0.7f)}, o, "qil_weight_transform mixed");
  Tensor x = Tensor::empty({90});
  for (int64_t i = 0; i < 90; ++i) x.data()[i] = std::fabs(w.data()[i]);
  x.set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return qil_activation_transform(in[0], in[1], in[2]); },
            {x, param(0.6f), param(0.4f)}, o, "qil_activation_transform mixed");
}

TEST_CASE("outside the interval every gradient is exactly zero") {
  // c = 0.6, d = 0.4: pruned below 0.2, clipped above 1.0.
  Tensor w = Tensor::from_vector({-0.19f, 0.f, 0.1f, 1.01f, -1.5f, 3.f}, {6}).set_requires_grad(true);
  Tensor c = param(0.6f), d = param(0.4f), gm = param(1.8f);
  Tensor y = qil_weight(w, c, d, gm, 4);
  CHECK(y.to_vector() == std::vector<float>{0.f, 0.f, 0.f, 1.f, -1.f, 1.f});
  y.backward(Tensor::from_vector({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {6}));
  CHECK(w.grad().to_vector() == std::vector<float>(6, 0.f));
  CHECK(c.grad().item() == 0.f);
  CHECK(d.grad().item() == 0.f);
  CHECK(gm.grad().item() == 0.f);

  Tensor x = Tensor::from_vector({-1.f, 0.f, 0.19f, 1.01f, 5.f}, {5}).set_requires_grad(true);
  Tensor ca = param(0.6f), da = param(0.4f);
  Tensor ya = qil_activation(x, ca, da, 4);
  CHECK(ya.to_vector() == std::vector<float>{0.f, 0.f, 0.f, 1.f, 1.f});
  ya.backward(Tensor::full({5}, 1.f));
  CHECK(x.grad().to_vector() == std::vector<float>(5, 0.f));
  CHECK(ca.grad().item() == 0.f);
  CHECK(da.grad().item() == 0.f);
}

TEST_CASE("the discretizer passes gradients straight through (STE)") {
  Generator g(41);
  Tensor w = magnitudes(200, g, 0.f, 1.5f, true);
  Tensor G = randn({200}, g);
  for (int bits : {2, 4, 8}) {
    Tensor wa = w.clone().set_requires_grad(true), wb = w.clone().set_requires_grad(true);
    Tensor ca = param(0.6f), da = param(0.4f), ga = param(0.7f);
    Tensor cb = param(0.6f), db = param(0.4f), gb = param(0.7f);
    qil_weight(wa, ca, da, ga, bits).backward(G);
    qil_weight_transform(wb, cb, db, gb).backward(G);
    CAPTURE(bits);
    CHECK(wa.grad().to_vector() == wb.grad().to_vector());
    CHECK(ca.grad().item() == cb.grad().item());
    CHECK(da.grad().item() == db.grad().item());
    CHECK(ga.grad().item() == gb.grad().item());
    bool some_nonzero = false;
    for (float v : wa.grad().to_vector()) some_nonzero = some_nonzero || v != 0.f;
    CHECK(some_nonzero);
  }
  Tensor x = rand_uniform({200}, g, 0.f, 2.f);
  Tensor xa = x.clone().set_requires_grad(true), xb = x.clone().set_requires_grad(true);
  Tensor ca = param(1.f), da = param(0.7f), cb = param(1.f), db = param(0.7f);
  qil_activation(xa, ca, da, 3).backward(G);
  qil_activation_transform(xb, cb, db).backward(G);
  CHECK(xa.grad().to_vector() == xb.grad().to_vector());
  CHECK(ca.grad().item() == cb.grad().item());
  CHECK(da.grad().item() == db.grad().item());
}

TEST_CASE("discretizer golden values") {
  NoGradGuard ng;
  // 2-bit weights, q = 1, interval [0, 1] (c = d = 0.5), gamma = 1, so ŵ = sign(w)·|w| inside:
  // 0.49 -> round(0.49) = 0; 0.5 -> round(0.5) = 1 (half away from zero); -0.5 -> -1; -0.3 -> 0; 1.7 -> 1.
  Tensor w = Tensor::from_vector({0.49f, 0.5f, -0.5f, -0.3f, 1.7f, -2.f}, {6});
  CHECK(qil_weight(w, Tensor::scalar(0.5f), Tensor::scalar(0.5f), Tensor::scalar(1.f), 2).to_vector() ==
        std::vector<float>{0.f, 1.f, -1.f, 0.f, 1.f, -1.f});
  // A pruned negative weight is +0, not -0 (integer export and sign tests see a plain zero).
  for (float v : qil_weight(w, Tensor::scalar(0.5f), Tensor::scalar(0.5f), Tensor::scalar(1.f), 2).to_vector())
    if (v == 0.f) CHECK_FALSE(std::signbit(v));
  // 2-bit weights are exactly ternary whatever gamma.
  Generator g(51);
  Tensor wr = randn({500}, g);
  for (float v : qil_weight(wr, Tensor::scalar(0.7f), Tensor::scalar(0.5f), Tensor::scalar(1.8f), 2).to_vector())
    CHECK((v == -1.f || v == 0.f || v == 1.f));
  // 4-bit weights, q = 7, interval [0, 1]:
  // gamma 1: 0.3 -> 2.1 -> 2/7; gamma 2: 0.3 -> 0.09·7 = 0.63 -> 1/7; -0.8 -> 0.64·7 = 4.48 -> -4/7.
  Tensor w4 = Tensor::from_vector({0.3f, -0.8f}, {2});
  CHECK(qil_weight(w4, Tensor::scalar(0.5f), Tensor::scalar(0.5f), Tensor::scalar(1.f), 4).to_vector() ==
        std::vector<float>{2.f / 7.f, -6.f / 7.f});  // -0.8·7 = -5.6 -> -6
  CHECK(qil_weight(w4, Tensor::scalar(0.5f), Tensor::scalar(0.5f), Tensor::scalar(2.f), 4).to_vector() ==
        std::vector<float>{1.f / 7.f, -4.f / 7.f});
  // Interval [0.2, 1.0] (c = 0.6, d = 0.4), 3-bit (q = 3), gamma 1: w = 0.5 -> u = 0.375 -> 1.125 -> 1/3;
  // w = -0.9 -> u = 0.875 -> 2.625 -> -1; w = 0.15 pruned -> 0.
  Tensor w3 = Tensor::from_vector({0.5f, -0.9f, 0.15f}, {3});
  CHECK(qil_weight(w3, Tensor::scalar(0.6f), Tensor::scalar(0.4f), Tensor::scalar(1.f), 3).to_vector() ==
        std::vector<float>{1.f / 3.f, -1.f, 0.f});

  // 4-bit activations, q = 15, interval [0, 2] (c = d = 1): x = 1 -> u = 0.5 -> 7.5 -> 8/15;
  // 0.1 -> 0.05·15 = 0.75 -> 1/15; 3 -> 1; -0.5 -> 0; 1.9 -> 0.95·15 = 14.25 -> 14/15.
  Tensor x = Tensor::from_vector({1.f, 0.1f, 3.f, -0.5f, 1.9f}, {5});
  CHECK(qil_activation(x, Tensor::scalar(1.f), Tensor::scalar(1.f), 4).to_vector() ==
        std::vector<float>{8.f / 15.f, 1.f / 15.f, 1.f, 0.f, 14.f / 15.f});
  // A fine sweep over [-0.5, 2.5] hits exactly the 16 levels k/15.
  Tensor sweep = Tensor::empty({3001});
  for (int i = 0; i <= 3000; ++i) sweep.data()[i] = -0.5f + 0.001f * i;
  std::set<float> levels;
  for (float v : qil_activation(sweep, Tensor::scalar(1.f), Tensor::scalar(1.f), 4).to_vector()) levels.insert(v);
  std::set<float> want;
  for (int k = 0; k <= 15; ++k) want.insert(static_cast<float>(k) / 15.f);
  CHECK(levels == want);
}

TEST_CASE("signed first-layer activations: the weights' symmetric rule with gamma = 1") {
  NoGradGuard ng;
  // 8-bit signed, q = 127, interval [0, 1]: -0.3 -> u = 0.3 -> 38.1 -> -38/127; 0.5 -> 63.5 -> 64/127;
  // -2 -> -1.
  Tensor x = Tensor::from_vector({-0.3f, 0.5f, -2.f, 0.f}, {4});
  CHECK(qil_activation(x, Tensor::scalar(0.5f), Tensor::scalar(0.5f), 8, true).to_vector() ==
        std::vector<float>{-38.f / 127.f, 64.f / 127.f, -1.f, 0.f});
  // Same values as the weight op at gamma 1, same bits, any input.
  Generator g(61);
  Tensor xr = randn({300}, g, 1.5f);
  for (int bits : {2, 5, 8})
    CHECK(qil_activation(xr, Tensor::scalar(0.9f), Tensor::scalar(0.6f), bits, true).to_vector() ==
          qil_weight(xr, Tensor::scalar(0.9f), Tensor::scalar(0.6f), Tensor::scalar(1.f), bits).to_vector());
  // Odd symmetry.
  Tensor neg = xr.clone();
  for (int64_t i = 0; i < neg.numel(); ++i) neg.data()[i] = -neg.data()[i];
  auto a = qil_activation(xr, Tensor::scalar(0.9f), Tensor::scalar(0.6f), 4, true).to_vector();
  auto b = qil_activation(neg, Tensor::scalar(0.9f), Tensor::scalar(0.6f), 4, true).to_vector();
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == -b[i]);
}

TEST_CASE("effective thresholds: formulas at gamma 1 and the discretized values on both sides") {
  const double c = 0.6, d = 0.4;
  for (int q : {1, 3, 7, 15}) {
    CHECK(qil_prune_threshold(c, d, 1.0, q) == doctest::Approx(c - d + d / q).epsilon(1e-12));
    CHECK(qil_clip_threshold(c, d, 1.0, q) == doctest::Approx(c + d - d / q).epsilon(1e-12));
  }
  NoGradGuard ng;
  const double delta = 1e-4 * 2 * d;  // far above float rounding, far below a level's width
  for (float gamma : {0.7f, 1.f, 1.8f})
    for (int bits : {2, 3, 4, 8}) {
      const int q = qil_weight_levels(bits);
      const double tp = qil_prune_threshold(c, d, gamma, q), tc = qil_clip_threshold(c, d, gamma, q);
      CAPTURE(gamma);
      CAPTURE(bits);
      for (float s : {1.f, -1.f}) {
        Tensor w = Tensor::from_vector({s * static_cast<float>(tp - delta), s * static_cast<float>(tp + delta),
                                        s * static_cast<float>(tc - delta), s * static_cast<float>(tc + delta)},
                                       {4});
        auto y = qil_weight(w, Tensor::scalar(c), Tensor::scalar(d), Tensor::scalar(gamma), bits).to_vector();
        CHECK(y[0] == 0.f);
        CHECK(y[1] == s / static_cast<float>(q));  // the first level
        CHECK(std::fabs(y[2]) < 1.f);
        CHECK(y[3] == s);
      }
    }
  // Activations (unsigned): thresholds c - d + d/q and c + d - d/q.
  for (int bits : {2, 4, 8}) {
    const int q = qil_activation_levels(bits);
    const double tp = qil_prune_threshold(c, d, 1.0, q), tc = qil_clip_threshold(c, d, 1.0, q);
    Tensor x = Tensor::from_vector({static_cast<float>(tp - delta), static_cast<float>(tp + delta),
                                    static_cast<float>(tc - delta), static_cast<float>(tc + delta)},
                                   {4});
    auto y = qil_activation(x, Tensor::scalar(c), Tensor::scalar(d), bits).to_vector();
    CAPTURE(bits);
    CHECK(y[0] == 0.f);
    CHECK(y[1] == 1.f / static_cast<float>(q));
    CHECK(y[2] < 1.f);
    CHECK(y[3] == 1.f);
  }
}

TEST_CASE("bits outside 2..8 are rejected with the value named") {
  Tensor w = Tensor::zeros({3});
  Tensor c = Tensor::scalar(0.5f), d = Tensor::scalar(0.5f), gm = Tensor::scalar(1.f);
  CHECK_THROWS_WITH_AS(qil_weight(w, c, d, gm, 1), doctest::Contains("qil_weight: bits must be in 2..8, got 1"),
                       Error);
  CHECK_THROWS_WITH_AS(qil_weight(w, c, d, gm, 9), doctest::Contains("got 9"), Error);
  CHECK_THROWS_WITH_AS(qil_activation(w, c, d, 0), doctest::Contains("qil_activation: bits must be in 2..8, got 0"),
                       Error);
  CHECK_THROWS_WITH_AS(qil_activation(w, c, d, 32, true), doctest::Contains("got 32"), Error);
  CHECK_NOTHROW(qil_weight(w, c, d, gm, 2));
  CHECK_NOTHROW(qil_activation(w, c, d, 8));
  // Bad scalars name themselves.
  CHECK_THROWS_WITH_AS(qil_weight(w, c, Tensor::scalar(0.f), gm, 4), doctest::Contains("d must be positive, got 0"),
                       Error);
  CHECK_THROWS_WITH_AS(qil_weight(w, Tensor::zeros({2}), d, gm, 4), doctest::Contains("c must be a one-element"),
                       Error);
}

TEST_CASE("backward accumulates into pre-filled gradients") {
  Generator g(71);
  Tensor w0 = magnitudes(40, g, 0.f, 1.2f, true);
  Tensor G = randn({40}, g);
  // Fresh gradients.
  Tensor wf = w0.clone().set_requires_grad(true), cf = param(0.6f), df = param(0.4f), gf = param(1.3f);
  qil_weight(wf, cf, df, gf, 4).backward(G);
  // Pre-filled with 5.
  Tensor wp = w0.clone().set_requires_grad(true), cp = param(0.6f), dp = param(0.4f), gp = param(1.3f);
  wp.grad() = Tensor::full({40}, 5.f);
  cp.grad() = Tensor::scalar(5.f);
  dp.grad() = Tensor::scalar(5.f);
  gp.grad() = Tensor::scalar(5.f);
  qil_weight(wp, cp, dp, gp, 4).backward(G);
  for (int64_t i = 0; i < 40; ++i) CHECK(wp.grad().data()[i] == doctest::Approx(wf.grad().data()[i] + 5.f));
  CHECK(cp.grad().item() == doctest::Approx(cf.grad().item() + 5.f));
  CHECK(dp.grad().item() == doctest::Approx(df.grad().item() + 5.f));
  CHECK(gp.grad().item() == doctest::Approx(gf.grad().item() + 5.f));

  // Fan-out: the same activation quantized twice gets both gradients.
  Tensor x = rand_uniform({30}, g, 0.f, 1.f).set_requires_grad(true);
  Tensor ca = param(0.5f), da = param(0.5f);
  ops::sum(ops::add(qil_activation(x, ca, da, 4), qil_activation(x, ca, da, 4))).backward();
  for (float v : x.grad().to_vector()) CHECK(v == doctest::Approx(2.f));  // 2 · 1/(2d)
  CHECK(ca.grad().item() == doctest::Approx(-60.f));                       // 30 elements · 2 · (-1/(2d))
}

TEST_CASE("fresh gradient buffers: the QIL ops write every element, equal to accumulating into zeros") {
  Generator g(72);
  // Sizes above the ops' parallel threshold, with elements pruned, inside and clipped; a 4-bit op and a
  // transformer (no discretizer) each.
  for (int bits : {4, 0}) {
    CAPTURE(bits);
    check_fresh_equals_accumulated(
        [&](const std::vector<Tensor>& t) {
          return bits ? qil_weight(t[0], t[1], t[2], t[3], bits) : qil_weight_transform(t[0], t[1], t[2], t[3]);
        },
        {req(magnitudes(40000, g, 0.f, 1.2f, true)), req(Tensor::scalar(0.6f)), req(Tensor::scalar(0.4f)),
         req(Tensor::scalar(1.3f))},
        "qil_weight");
    for (bool is_signed : {false, true})
      check_fresh_equals_accumulated(
          [&](const std::vector<Tensor>& t) {
            return bits ? qil_activation(t[0], t[1], t[2], bits, is_signed)
                        : qil_activation_transform(t[0], t[1], t[2], is_signed);
          },
          {req(magnitudes(40000, g, 0.f, 1.5f, is_signed)), req(Tensor::scalar(0.7f)), req(Tensor::scalar(0.5f))},
          is_signed ? "qil_activation (signed)" : "qil_activation");
  }
}

TEST_CASE("the AVX2 forward kernels give the baseline's bits, every variant (where the CPU has AVX2)") {
  if (!avx2_kernels_run()) return;
  Generator g(73);
  // Odd length: the vector loops' remainders run too. Pruned, inside and clipped elements, both signs.
  const Tensor w = magnitudes(40001, g, 0.f, 1.4f, true), x = magnitudes(40001, g, 0.f, 1.6f, false);
  const Tensor c = Tensor::scalar(0.6f), d = Tensor::scalar(0.4f), gamma = Tensor::scalar(1.3f);
  const Tensor one = Tensor::scalar(1.f);
  auto outputs = [&] {
    engine::NoGradGuard ng;
    return std::vector<Tensor>{qil_weight(w, c, d, gamma, 3), qil_weight(w, c, d, one, 5),
                               qil_weight_transform(w, c, d, gamma), qil_weight_transform(w, c, d, one),
                               qil_activation(x, c, d, 4), qil_activation_transform(x, c, d),
                               qil_activation(w, c, d, 4, true), qil_activation_transform(w, c, d, true)};
  };
  const std::vector<Tensor> wide = outputs();
  std::vector<Tensor> base;
  {
    BaselineKernels kernels(true);
    CHECK(std::string(qil_kernel_isa()) == "baseline (sse2)");
    base = outputs();
  }
  for (size_t k = 0; k < wide.size(); ++k) {
    CAPTURE(k);
    CHECK(std::memcmp(wide[k].data(), base[k].data(), wide[k].nbytes()) == 0);
  }
}

TEST_CASE("qil_activation backward: the AVX2 kernel gives the baseline's dx bits and its c, d sums within rounding") {
  if (!avx2_kernels_run()) return;
  Generator g(74);
  const Tensor x0 = magnitudes(50001, g, 0.f, 1.6f, false), gy = randn({50001}, g);
  auto grads = [&](bool baseline) {
    BaselineKernels kernels(baseline);
    Tensor x = x0.clone().set_requires_grad(true), c = param(0.7f), d = param(0.5f);
    qil_activation(x, c, d, 4).backward(gy);
    return std::vector<Tensor>{x.grad(), c.grad(), d.grad()};
  };
  const auto wide = grads(false), base = grads(true);
  CHECK(std::memcmp(wide[0].data(), base[0].data(), wide[0].nbytes()) == 0);  // elementwise: the same bits
  // The sums: blocks of float lanes (8 or 4 wide) added in double; the two orders differ by float rounding only.
  for (int k : {1, 2}) {
    CAPTURE(k);
    CHECK(wide[k].item() == doctest::Approx(base[k].item()).epsilon(1e-5));
    CHECK(std::fabs(base[k].item()) > 1.f);  // a sum of many terms, not a cancellation to nothing
  }
}

TEST_CASE("qil_weight and signed qil_activation backward: the AVX2 kernel gives the baseline's bits and sums") {
  if (!avx2_kernels_run()) return;
  Generator g(75);
  const Tensor w0 = magnitudes(50001, g, 0.f, 1.4f, true), gy = randn({50001}, g);
  // kind 0: weights, learned gamma 1.3; 1: weights, learned gamma at exactly 1 (the unit-gamma kernels with a
  // gamma gradient); 2: signed activations (gamma fixed at 1, no gamma gradient).
  auto grads = [&](int kind, bool baseline) {
    BaselineKernels kernels(baseline);
    Tensor w = w0.clone().set_requires_grad(true), c = param(0.6f), d = param(0.4f);
    Tensor gm = param(kind == 0 ? 1.3f : 1.f);
    Tensor y = kind == 2 ? qil_activation(w, c, d, 4, true) : qil_weight(w, c, d, gm, 3);
    y.backward(gy);
    std::vector<Tensor> out{w.grad(), c.grad(), d.grad()};
    if (kind != 2) out.push_back(gm.grad());
    return out;
  };
  for (int kind : {0, 1, 2}) {
    CAPTURE(kind);
    const auto wide = grads(kind, false), base = grads(kind, true);
    REQUIRE(wide.size() == base.size());
    CHECK(std::memcmp(wide[0].data(), base[0].data(), wide[0].nbytes()) == 0);  // elementwise: the same bits
    for (size_t k = 1; k < wide.size(); ++k) {  // the sums: float lanes 8 or 4 wide, added in double
      CAPTURE(k);
      CHECK(wide[k].item() == doctest::Approx(base[k].item()).epsilon(1e-5));
      CHECK(std::fabs(base[k].item()) > 1.f);  // a sum of many terms, not a cancellation to nothing
    }
  }
}

TEST_CASE("a weight exactly at the pruning edge gets a finite gradient (the u floor)") {
  // c = d: the interval starts at 0, so w = 0 sits at u = 0 where u^(γ-1) and ln u are infinite.
  Tensor w = Tensor::from_vector({0.f, 0.f}, {2}).set_requires_grad(true);
  Tensor c = param(0.5f), d = param(0.5f), gm = param(0.25f);
  Tensor y = qil_weight(w, c, d, gm, 4);
  CHECK(y.to_vector() == std::vector<float>{0.f, 0.f});
  ops::sum(y).backward();
  for (float v : w.grad().to_vector()) CHECK(std::isfinite(v));
  CHECK(std::isfinite(c.grad().item()));
  CHECK(std::isfinite(d.grad().item()));
  CHECK(gm.grad().item() == 0.f);  // u^γ·ln u -> 0 as u -> 0
}
