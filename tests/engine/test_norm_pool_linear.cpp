// linear, batch_norm2d (training and eval), max/avg/adaptive/global pooling: each against a plain-loop twin
// (forward and every backward output, into poisoned gradients), finite differences, BN running-statistics
// arithmetic and misuse errors.
#include <algorithm>
#include <numeric>

#include "op_check.h"

#include "engine/ops.h"

using namespace engine;
using namespace qiltest;

namespace {

ops::Pool2dGeom pool(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, bool ceil = false,
                     bool include_pad = true) {
  ops::Pool2dGeom g;
  g.kh = kh, g.kw = kw, g.stride_h = sh, g.stride_w = sw, g.pad_h = ph, g.pad_w = pw;
  g.ceil_mode = ceil;
  g.count_include_pad = include_pad;
  return g;
}

// Distinct values spaced 0.05 apart in a shuffled order: no max-pool ties, and a finite-difference step of
// 0.01 never changes which element wins a window.
Tensor distinct(const Shape& s, Generator& g) {
  Tensor t = Tensor::empty(s);
  std::vector<int64_t> perm(t.numel());
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t i = t.numel() - 1; i > 0; --i) std::swap(perm[i], perm[g.below(i + 1)]);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = 0.05f * (perm[i] - t.numel() / 2);
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------- linear

TEST_CASE("linear matches the plain-loop reference: forward, dx, dw, db into poisoned gradients") {
  struct Case { int64_t n, in, out; bool bias; };
  for (const Case k : {Case{1, 5, 3, true}, Case{7, 17, 13, true}, Case{4, 64, 10, false}, Case{3, 1, 1, true}}) {
    const std::string what = str_cat("linear (", k.n, ", ", k.in, ") -> ", k.out, k.bias ? " bias" : "");
    Generator g(11);
    Tensor x = randn({k.n, k.in}, g).set_requires_grad(true);
    Tensor w = randn({k.out, k.in}, g).set_requires_grad(true);
    Tensor b = k.bias ? randn({k.out}, g).set_requires_grad(true) : Tensor();
    const Tensor px = poison_grad(x, g), pw = poison_grad(w, g);
    const Tensor pb = k.bias ? poison_grad(b, g) : Tensor();
    Tensor y = ops::linear(x, w, b);
    REQUIRE(y.shape() == Shape{k.n, k.out});
    Tensor gy = randn(y.shape(), g);
    y.backward(gy);
    Ref ry(k.n * k.out), rdx(k.n * k.in), rdw(k.out * k.in), rdb(k.out);
    for (int64_t n = 0; n < k.n; ++n)
      for (int64_t o = 0; o < k.out; ++o) {
        const double gv = gy.data()[n * k.out + o];
        if (k.bias) ry.add(n * k.out + o, b.data()[o]), rdb.add(o, gv);
        for (int64_t i = 0; i < k.in; ++i) {
          ry.add(n * k.out + o, static_cast<double>(x.data()[n * k.in + i]) * w.data()[o * k.in + i]);
          rdx.add(n * k.in + i, gv * w.data()[o * k.in + i]);
          rdw.add(o * k.in + i, gv * x.data()[n * k.in + i]);
        }
      }
    check_ref(y, ry, what + " forward");
    check_ref(x.grad(), rdx, what + " dx", px);
    check_ref(w.grad(), rdw, what + " dw", pw);
    if (k.bias) check_ref(b.grad(), rdb, what + " db", pb);
  }
}

TEST_CASE("linear gradients match finite differences, misuse errors") {
  Generator g(4);
  gradcheck([](const std::vector<Tensor>& t) { return ops::linear(t[0], t[1], t[2]); },
            {randn({3, 5}, g).set_requires_grad(true), randn({4, 5}, g).set_requires_grad(true),
             randn({4}, g).set_requires_grad(true)},
            {}, "linear");
  check_error([] { ops::linear(Tensor::zeros({2, 5}), Tensor::zeros({4, 6}), Tensor()); },
              {"linear", "[2, 5]", "[4, 6]"});
  check_error([] { ops::linear(Tensor::zeros({2, 5, 1}), Tensor::zeros({4, 5}), Tensor()); }, {"linear", "[2, 5, 1]"});
  check_error([] { ops::linear(Tensor::zeros({2, 5}), Tensor::zeros({4, 5}), Tensor::zeros({3})); },
              {"linear", "bias", "[3]"});
}

// ------------------------------------------------------------------------------------------ batch norm

namespace {

struct BnRef {
  Ref y, dx, dgamma, dbeta;
};

// Training: batch mean and biased variance; dx through the statistics. Eval: running statistics are
// constants, so dx = gamma * rstd * gy.
BnRef bn_reference(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rmean, const Tensor& rvar,
                   bool training, float eps, const Tensor& gy) {
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3), m = n * hw;
  BnRef r{Ref(x.numel()), Ref(x.numel()), Ref(c), Ref(c)};
  auto at = [&](int64_t b, int64_t ch, int64_t i) { return (b * c + ch) * hw + i; };
  for (int64_t ch = 0; ch < c; ++ch) {
    double mean = 0.0, var = 0.0;
    if (training) {
      for (int64_t b = 0; b < n; ++b)
        for (int64_t i = 0; i < hw; ++i) mean += x.data()[at(b, ch, i)];
      mean /= m;
      for (int64_t b = 0; b < n; ++b)
        for (int64_t i = 0; i < hw; ++i) var += std::pow(x.data()[at(b, ch, i)] - mean, 2);
      var /= m;
    } else {
      mean = rmean.data()[ch];
      var = rvar.data()[ch];
    }
    const double rstd = 1.0 / std::sqrt(var + eps), ga = gamma.data()[ch], be = beta.data()[ch];
    double sum_g = 0.0, sum_gx = 0.0, abs_g = 0.0, abs_gx = 0.0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i) {
        const int64_t k = at(b, ch, i);
        const double xh = (x.data()[k] - mean) * rstd, gv = gy.data()[k];
        r.y.add(k, ga * xh);
        r.y.add(k, be);
        r.y.mag[k] += std::fabs(ga) * rstd * (std::fabs(x.data()[k]) + std::fabs(mean));  // x - mean cancels
        r.dbeta.add(ch, gv);
        r.dgamma.add(ch, gv * xh);
        sum_g += gv, sum_gx += gv * xh, abs_g += std::fabs(gv), abs_gx += std::fabs(gv * xh);
      }
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < hw; ++i) {
        const int64_t k = at(b, ch, i);
        const double xh = (x.data()[k] - mean) * rstd, gv = gy.data()[k];
        r.dx.add(k, ga * rstd * gv);
        if (training) {  // minus the parts that flow through the batch mean and variance
          r.dx.add(k, -ga * rstd * sum_g / m);
          r.dx.add(k, -ga * rstd * xh * sum_gx / m);
          r.dx.mag[k] += std::fabs(ga * rstd) * (abs_g + std::fabs(xh) * abs_gx) / m;  // the sums' own error
        }
      }
  }
  return r;
}

struct BnCase { int64_t n, c, h, w; };

}  // namespace

TEST_CASE("batch_norm2d matches the reference in training and eval: forward, dx, dgamma, dbeta") {
  for (bool training : {true, false})
    for (const BnCase k : {BnCase{2, 3, 5, 4}, BnCase{1, 17, 3, 7}, BnCase{4, 5, 1, 1}, BnCase{2, 32, 6, 6}}) {
      const std::string what = str_cat("batch_norm2d ", training ? "training" : "eval", " (", k.n, ", ", k.c, ", ",
                                       k.h, ", ", k.w, ")");
      Generator g(21);
      Tensor x = randn({k.n, k.c, k.h, k.w}, g, 2.f);
      for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] += 0.5f * static_cast<float>((i / (k.h * k.w)) % k.c);
      x.set_requires_grad(true);
      Tensor gamma = rand_uniform({k.c}, g, 0.5f, 1.5f).set_requires_grad(true);
      Tensor beta = randn({k.c}, g).set_requires_grad(true);
      Tensor rmean = randn({k.c}, g), rvar = rand_uniform({k.c}, g, 0.5f, 2.f);
      const Tensor rmean0 = rmean.clone(), rvar0 = rvar.clone();
      const Tensor px = poison_grad(x, g), pg = poison_grad(gamma, g), pb = poison_grad(beta, g);
      Tensor y = ops::batch_norm2d(x, gamma, beta, rmean, rvar, training, 0.1f, 1e-5f);
      Tensor gy = randn(y.shape(), g);
      y.backward(gy);
      const BnRef r = bn_reference(x, gamma, beta, rmean0, rvar0, training, 1e-5f, gy);
      check_ref(y, r.y, what + " forward");
      check_ref(x.grad(), r.dx, what + " dx", px);
      check_ref(gamma.grad(), r.dgamma, what + " dgamma", pg);
      check_ref(beta.grad(), r.dbeta, what + " dbeta", pb);
    }
}

TEST_CASE("batch_norm2d gradients match finite differences in training and eval") {
  Generator g(8);
  Tensor x = randn({3, 4, 3, 2}, g).set_requires_grad(true);
  Tensor gamma = rand_uniform({4}, g, 0.5f, 1.5f).set_requires_grad(true);
  Tensor beta = randn({4}, g).set_requires_grad(true);
  Tensor rmean = randn({4}, g, 0.3f), rvar = rand_uniform({4}, g, 0.5f, 2.f);
  for (bool training : {true, false}) {
    Tensor rm = rmean.clone(), rv = rvar.clone();
    gradcheck([&](const std::vector<Tensor>& t) { return ops::batch_norm2d(t[0], t[1], t[2], rm, rv, training); },
              {x, gamma, beta}, {}, training ? "batch_norm2d training" : "batch_norm2d eval");
  }
}

TEST_CASE("batch_norm2d running statistics: momentum and unbiased variance in training, untouched in eval") {
  // Channel 0 holds 1, 2, 3, 4: mean 2.5, biased var 1.25, unbiased 5/3.
  // Channel 1 holds 0, 0, 0, 8: mean 2, squared deviations 4+4+4+36 = 48, unbiased 16 (biased 12).
  // x is (N=2, C=2, 1, 2): n0 = {c0: 1 2, c1: 0 0}, n1 = {c0: 3 4, c1: 0 8}.
  Tensor x = Tensor::from_vector({1, 2, 0, 0, 3, 4, 0, 8}, {2, 2, 1, 2});
  Tensor gamma = Tensor::full({2}, 1.f), beta = Tensor::zeros({2});
  Tensor rm = Tensor::from_vector({0.f, 1.f}, {2}), rv = Tensor::from_vector({1.f, 2.f}, {2});
  Tensor y = ops::batch_norm2d(x, gamma, beta, rm, rv, true, 0.1f, 1e-5f);
  // mean: 0.9 * 0 + 0.1 * 2.5 = 0.25;  0.9 * 1 + 0.1 * 2 = 1.1
  // var:  0.9 * 1 + 0.1 * 5/3 = 1.0666667;  0.9 * 2 + 0.1 * 16 = 3.4
  CHECK(rm.data()[0] == doctest::Approx(0.25).epsilon(1e-6));
  CHECK(rm.data()[1] == doctest::Approx(1.1).epsilon(1e-6));
  CHECK(rv.data()[0] == doctest::Approx(0.9 + 0.1 * 5.0 / 3.0).epsilon(1e-6));
  CHECK(rv.data()[1] == doctest::Approx(3.4).epsilon(1e-6));
  // The output used the biased variance: (1 - 2.5) / sqrt(1.25 + 1e-5).
  CHECK(y.data()[0] == doctest::Approx(-1.5 / std::sqrt(1.25 + 1e-5)).epsilon(1e-5));

  // Eval: running statistics normalize and stay exactly as they were, forward and backward.
  const std::vector<float> rm0 = rm.to_vector(), rv0 = rv.to_vector();
  Tensor xe = x.clone().set_requires_grad(true);
  Tensor ye = ops::batch_norm2d(xe, gamma, beta, rm, rv, false, 0.1f, 1e-5f);
  ops::sum(ye).backward();
  CHECK(rm.to_vector() == rm0);
  CHECK(rv.to_vector() == rv0);
  CHECK(ye.data()[0] == doctest::Approx((1.0 - 0.25) / std::sqrt(rv0[0] + 1e-5)).epsilon(1e-5));
  // Frozen statistics: d(sum y)/dx = gamma / sqrt(running_var + eps) for every element of the channel.
  CHECK(xe.grad().data()[1] == doctest::Approx(1.0 / std::sqrt(rv0[0] + 1e-5)).epsilon(1e-5));
  CHECK(xe.grad().data()[7] == doctest::Approx(1.0 / std::sqrt(rv0[1] + 1e-5)).epsilon(1e-5));
}

TEST_CASE("batch_norm2d in eval mode with frozen gamma/beta still passes the gradient to x") {
  Generator g(3);
  Tensor x = randn({2, 3, 4, 4}, g).set_requires_grad(true);
  Tensor gamma = rand_uniform({3}, g, 0.5f, 1.5f), beta = randn({3}, g);  // frozen: no grad
  Tensor rm = randn({3}, g), rv = rand_uniform({3}, g, 0.5f, 2.f);
  ops::sum(ops::batch_norm2d(x, gamma, beta, rm, rv, false)).backward();
  CHECK_FALSE(gamma.grad().defined());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t ch = (i / 16) % 3;
    REQUIRE(x.grad().data()[i] == doctest::Approx(gamma.data()[ch] / std::sqrt(rv.data()[ch] + 1e-5)).epsilon(1e-5));
  }
}

TEST_CASE("batch_norm2d misuse errors name the op and the shapes") {
  Tensor x = Tensor::zeros({2, 3, 4, 4});
  Tensor c3 = Tensor::zeros({3}), c4 = Tensor::zeros({4});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.f), rv4 = Tensor::full({4}, 1.f), none;
  check_error([&] { ops::batch_norm2d(x, c4, c3, rm, rv, true); }, {"batch_norm2d", "gamma", "[4]", "[2, 3, 4, 4]"});
  check_error([&] { ops::batch_norm2d(x, c3, c3, rm, rv4, false); }, {"batch_norm2d", "running_var", "[4]"});
  check_error([&] { ops::batch_norm2d(Tensor::zeros({2, 3}), c3, c3, rm, rv, true); }, {"batch_norm2d", "[2, 3]"});
  check_error([&] { ops::batch_norm2d(Tensor::zeros({1, 3, 1, 1}), c3, c3, rm, rv, true); },
              {"batch_norm2d", "more than one value", "[1, 3, 1, 1]"});
  check_error([&] { ops::batch_norm2d(x, c3, c3, none, none, false); }, {"batch_norm2d", "running statistics"});
}

// ------------------------------------------------------------------------- batch_norm2d_relu (fused)

namespace {

// x (N, C, H, W) whose normalized values (training: batch statistics; eval: rm/rv), times gamma plus beta, stay
// at least `margin` away from 0, the ReLU's kink: elements too close are pushed away and the statistics
// recomputed until none is. The finite-difference step then never flips a ReLU.
Tensor away_from_kink(Tensor x, const Tensor& gamma, const Tensor& beta, const Tensor& rm, const Tensor& rv,
                      bool training, float margin) {
  const int64_t c = x.size(1), hw = x.size(2) * x.size(3);
  for (int round = 0; round < 50; ++round) {
    engine::NoGradGuard ng;
    Tensor m = rm.clone(), v = rv.clone();
    const Tensor y = ops::batch_norm2d(x, gamma, beta, m, v, training);
    bool moved = false;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float yi = y.data()[i];
      if (std::fabs(yi) >= margin) continue;
      const int64_t ch = (i / hw) % c;
      x.data()[i] += (yi >= 0.f ? 1.f : -1.f) * (gamma.data()[ch] >= 0.f ? 1.f : -1.f) * 3.f * margin;
      moved = true;
    }
    if (!moved) return x;
  }
  FAIL("away_from_kink: no input with every output at least " << margin << " from 0");
  return x;
}

}  // namespace

TEST_CASE("batch_norm2d_relu equals relu(batch_norm2d): values, running statistics, dx, dgamma, dbeta") {
  for (bool training : {true, false})
    for (bool blocked : {false, true})
      for (const BnCase k : {BnCase{2, 16, 5, 4}, BnCase{3, 32, 3, 7}, BnCase{4, 16, 1, 1}}) {
        const std::string what = str_cat("batch_norm2d_relu ", training ? "training" : "eval",
                                         blocked ? " blocked" : " plain", " (", k.n, ", ", k.c, ", ", k.h, ", ", k.w,
                                         ")");
        Generator g(5);
        const Tensor x0 = randn({k.n, k.c, k.h, k.w}, g, 2.f);  // blocked: the same values in nChw16c order
        Tensor xf = (blocked ? to_blocked(x0) : x0.clone()).set_requires_grad(true);
        Tensor xu = (blocked ? to_blocked(x0) : x0.clone()).set_requires_grad(true);
        Tensor gamma = rand_uniform({k.c}, g, -1.5f, 1.5f);  // negative gammas flip the mask
        Tensor beta = randn({k.c}, g, 0.5f);
        Tensor gf = gamma.clone().set_requires_grad(true), gu = gamma.clone().set_requires_grad(true);
        Tensor bf = beta.clone().set_requires_grad(true), bu = beta.clone().set_requires_grad(true);
        Tensor rm = randn({k.c}, g, 0.2f), rv = rand_uniform({k.c}, g, 0.5f, 2.f);
        Tensor rmf = rm.clone(), rvf = rv.clone(), rmu = rm.clone(), rvu = rv.clone();
        // Poisoned gradients, the same in both: each op must add to them, never overwrite them.
        const Tensor px = poison_grad(xf, g), pg = poison_grad(gf, g), pb = poison_grad(bf, g);
        xu.grad() = px.clone(), gu.grad() = pg.clone(), bu.grad() = pb.clone();
        Tensor yf = ops::batch_norm2d_relu(xf, gf, bf, rmf, rvf, training);
        Tensor yu = ops::relu(ops::batch_norm2d(xu, gu, bu, rmu, rvu, training));
        REQUIRE(yf.layout() == xf.layout());
        REQUIRE(yu.layout() == xf.layout());
        check_close(yf.plain(), yu.plain(), 0.f, 0.f, what + " forward");
        check_close(rmf, rmu, 0.f, 0.f, what + " running mean");
        check_close(rvf, rvu, 0.f, 0.f, what + " running variance");
        int64_t zeros = 0;
        for (float v : yf.to_vector()) zeros += v == 0.f;
        CHECK_MESSAGE(zeros > 0, what << ": no element was cut by the ReLU");
        CHECK_MESSAGE(zeros < yf.numel(), what << ": every element was cut by the ReLU");
        const Tensor gy = randn(yf.shape(), g);  // in y's memory order, whatever its layout
        yf.backward(gy);
        yu.backward(gy);
        check_close(xf.grad(), xu.grad(), 1e-5f, 1e-6f, what + " dx");
        check_close(gf.grad(), gu.grad(), 1e-5f, 1e-5f, what + " dgamma");
        check_close(bf.grad(), bu.grad(), 1e-5f, 1e-5f, what + " dbeta");
        CHECK_FALSE(xf.grad().to_vector() == px.to_vector());  // the gradient did arrive
      }
}

TEST_CASE("batch_norm2d_relu gradients match finite differences in training and eval") {
  for (bool training : {true, false}) {
    Generator g(9);
    Tensor gamma = rand_uniform({4}, g, 0.5f, 1.5f);
    gamma.data()[1] = -gamma.data()[1];
    Tensor beta = randn({4}, g, 0.3f);
    Tensor rm = randn({4}, g, 0.3f), rv = rand_uniform({4}, g, 0.5f, 2.f);
    Tensor x = away_from_kink(randn({3, 4, 3, 2}, g), gamma, beta, rm, rv, training, 0.1f);
    x.set_requires_grad(true);
    gamma.set_requires_grad(true);
    beta.set_requires_grad(true);
    Tensor m = rm.clone(), v = rv.clone();
    GradCheckOptions o;
    o.eps = 1e-3f;
    o.samples = 72;  // every element of x
    gradcheck([&](const std::vector<Tensor>& t) { return ops::batch_norm2d_relu(t[0], t[1], t[2], m, v, training); },
              {x, gamma, beta}, o, training ? "batch_norm2d_relu training" : "batch_norm2d_relu eval");
  }
}

TEST_CASE("batch_norm2d_relu misuse errors name the fused op") {
  Tensor x = Tensor::zeros({2, 3, 4, 4});
  Tensor c3 = Tensor::zeros({3}), c4 = Tensor::zeros({4});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.f);
  check_error([&] { ops::batch_norm2d_relu(x, c4, c3, rm, rv, true); },
              {"batch_norm2d_relu", "gamma", "[4]", "[2, 3, 4, 4]"});
  check_error([&] { ops::batch_norm2d_relu(Tensor::zeros({1, 3, 1, 1}), c3, c3, rm, rv, true); },
              {"batch_norm2d_relu", "more than one value"});
}

// --------------------------------------------------------------------------------------- max / avg pool

namespace {

int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, bool ceil) {
  // Written independently of conv_out_size: PyTorch's pooling_output_shape.
  const double span = static_cast<double>(in + 2 * p - k) / s;
  int64_t out = static_cast<int64_t>(ceil ? std::ceil(span) : std::floor(span)) + 1;
  if (ceil && (out - 1) * s >= in + p) --out;
  return out;
}

struct PoolRef {
  Ref y, dx;
};

PoolRef pool_reference(bool is_max, const Tensor& x, const ops::Pool2dGeom& g, const Tensor& gy) {
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3), oh = gy.size(2), ow = gy.size(3);
  PoolRef r{Ref(gy.numel()), Ref(x.numel())};
  for (int64_t k = 0; k < planes; ++k)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t yi = (k * oh + i) * ow + j;
        const int64_t hs = i * g.stride_h - g.pad_h, ws = j * g.stride_w - g.pad_w;
        // PyTorch: the include-pad divisor stops at the explicit padding; exclude-pad counts real inputs only.
        const int64_t he = std::min(hs + g.kh, h + g.pad_h), we = std::min(ws + g.kw, w + g.pad_w);
        const int64_t h0 = std::max<int64_t>(hs, 0), w0 = std::max<int64_t>(ws, 0);
        const int64_t h1 = std::min(he, h), w1 = std::min(we, w);
        const double div = g.count_include_pad ? (he - hs) * (we - ws) : (h1 - h0) * (w1 - w0);
        int64_t best = -1;
        for (int64_t a = h0; a < h1; ++a)
          for (int64_t b = w0; b < w1; ++b) {
            const int64_t xi = (k * h + a) * w + b;
            if (is_max) {
              if (best < 0 || x.data()[xi] > x.data()[best]) best = xi;
            } else {
              r.y.add(yi, x.data()[xi] / div);
              r.dx.add(xi, gy.data()[yi] / div);
            }
          }
        if (is_max) {
          r.y.add(yi, x.data()[best]);
          r.dx.add(best, gy.data()[yi]);
        }
      }
  return r;
}

std::vector<ops::Pool2dGeom> pool_cases(bool include_pad) {
  return {
      pool(3, 3, 2, 2, 1, 1, false, include_pad),  // ResNet stem
      pool(2, 2, 2, 2, 0, 0, false, include_pad),
      pool(3, 2, 2, 1, 1, 0, false, include_pad),  // rectangular, stride and padding differ per axis
      pool(3, 3, 2, 2, 0, 0, true, include_pad),   // ceil mode
      pool(3, 3, 2, 2, 1, 1, true, include_pad),   // ceil mode whose last window reaches past the padding
      pool(1, 1, 2, 2, 0, 0, false, include_pad),  // subsampling
      pool(3, 3, 1, 1, 1, 1, false, include_pad),  // overlapping windows
  };
}

Shape pool_input(int index) {  // non-square, batch 1, odd channel counts
  const Shape shapes[] = {{2, 3, 9, 8}, {1, 5, 8, 11}, {2, 17, 7, 7}};
  return shapes[index % 3];
}

std::string describe(const char* op, const Shape& s, const ops::Pool2dGeom& g) {
  return str_cat(op, " x", s, " k(", g.kh, ",", g.kw, ") s(", g.stride_h, ",", g.stride_w, ") p(", g.pad_h, ",",
                 g.pad_w, ")", g.ceil_mode ? " ceil" : "", g.count_include_pad ? "" : " exclude-pad");
}

}  // namespace

TEST_CASE("max_pool2d and avg_pool2d match the plain-loop reference: forward and dx into poisoned gradients") {
  int index = 0;
  for (int mode = 0; mode < 3; ++mode) {  // max, avg include-pad, avg exclude-pad
    const bool is_max = mode == 0;
    for (const ops::Pool2dGeom& g : pool_cases(mode != 2)) {
      const Shape s = pool_input(index++);
      const std::string what = describe(is_max ? "max_pool2d" : "avg_pool2d", s, g);
      Generator gen(31 + index);
      Tensor x = (is_max ? distinct(s, gen) : randn(s, gen)).set_requires_grad(true);
      const Tensor px = poison_grad(x, gen);
      Tensor y = is_max ? ops::max_pool2d(x, g) : ops::avg_pool2d(x, g);
      const Shape want{s[0], s[1], pool_out(s[2], g.kh, g.stride_h, g.pad_h, g.ceil_mode),
                       pool_out(s[3], g.kw, g.stride_w, g.pad_w, g.ceil_mode)};
      REQUIRE_MESSAGE(y.shape() == want, what);
      Tensor gy = randn(y.shape(), gen);
      y.backward(gy);
      const PoolRef r = pool_reference(is_max, x, g, gy);
      check_ref(y, r.y, what + " forward");
      check_ref(x.grad(), r.dx, what + " dx", px);
    }
  }
}

TEST_CASE("pool gradients match finite differences (max inputs kept apart from ties)") {
  Generator g(9);
  Tensor xm = distinct({2, 3, 7, 6}, g).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& t) { return ops::max_pool2d(t[0], pool(3, 3, 2, 2, 1, 1, true)); }, {xm},
            {}, "max_pool2d");
  Tensor xa = randn({2, 3, 7, 6}, g).set_requires_grad(true);
  for (bool inc : {true, false})
    gradcheck([&](const std::vector<Tensor>& t) { return ops::avg_pool2d(t[0], pool(3, 3, 2, 2, 1, 1, true, inc)); },
              {xa}, {}, inc ? "avg_pool2d include-pad" : "avg_pool2d exclude-pad");
  gradcheck([](const std::vector<Tensor>& t) { return ops::adaptive_avg_pool2d(t[0], 3, 4); }, {xa}, {},
            "adaptive_avg_pool2d");
  gradcheck([](const std::vector<Tensor>& t) { return ops::global_avg_pool(t[0]); }, {xa}, {}, "global_avg_pool");
}

TEST_CASE("avg_pool2d by hand: padding counted or not") {
  // One 2x2 plane [[1, 2], [3, 4]], kernel 2, stride 2, padding 1 -> 2x2 windows each holding one value.
  Tensor x = Tensor::from_vector({1, 2, 3, 4}, {1, 1, 2, 2});
  const std::vector<float> include_pad{0.25f, 0.5f, 0.75f, 1.f}, exclude_pad{1, 2, 3, 4};  // value / 4, value / 1
  CHECK(ops::avg_pool2d(x, pool(2, 2, 2, 2, 1, 1, false, true)).to_vector() == include_pad);
  CHECK(ops::avg_pool2d(x, pool(2, 2, 2, 2, 1, 1, false, false)).to_vector() == exclude_pad);
}

// --------------------------------------------------------------------------------- adaptive / global

TEST_CASE("adaptive_avg_pool2d uses PyTorch's bin edges") {
  // 1 x 5 row to 3 bins: edges floor(i*5/3) .. ceil((i+1)*5/3) = [0,2), [1,4), [3,5).
  Tensor x = Tensor::from_vector({1, 2, 3, 4, 5}, {1, 1, 1, 5});
  const std::vector<float> want{1.5f, 3.f, 4.5f};
  CHECK(ops::adaptive_avg_pool2d(x, 1, 3).to_vector() == want);

  for (const auto& [in, out] : std::vector<std::pair<Shape, std::pair<int64_t, int64_t>>>{
           {{2, 3, 7, 5}, {3, 2}}, {{1, 5, 6, 6}, {4, 4}}, {{2, 3, 5, 7}, {5, 7}}, {{1, 17, 3, 3}, {5, 5}}}) {
    const auto [oh, ow] = out;
    const std::string what = str_cat("adaptive_avg_pool2d ", in, " -> (", oh, ", ", ow, ")");
    Generator g(13);
    Tensor x = randn(in, g).set_requires_grad(true);
    const Tensor px = poison_grad(x, g);
    Tensor y = ops::adaptive_avg_pool2d(x, oh, ow);
    REQUIRE(y.shape() == Shape{in[0], in[1], oh, ow});
    Tensor gy = randn(y.shape(), g);
    y.backward(gy);
    const int64_t h = in[2], w = in[3];
    Ref ry(y.numel()), rdx(x.numel());
    for (int64_t k = 0; k < in[0] * in[1]; ++k)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t h0 = static_cast<int64_t>(std::floor(double(i) * h / oh));
          const int64_t h1 = static_cast<int64_t>(std::ceil(double(i + 1) * h / oh));
          const int64_t w0 = static_cast<int64_t>(std::floor(double(j) * w / ow));
          const int64_t w1 = static_cast<int64_t>(std::ceil(double(j + 1) * w / ow));
          const double div = (h1 - h0) * (w1 - w0);
          const int64_t yi = (k * oh + i) * ow + j;
          for (int64_t a = h0; a < h1; ++a)
            for (int64_t b = w0; b < w1; ++b) {
              ry.add(yi, x.data()[(k * h + a) * w + b] / div);
              rdx.add((k * h + a) * w + b, gy.data()[yi] / div);
            }
        }
    check_ref(y, ry, what + " forward");
    check_ref(x.grad(), rdx, what + " dx", px);
  }
}

TEST_CASE("global_avg_pool: reference, poisoned gradient") {
  Generator g(14);
  Tensor x = randn({3, 5, 4, 7}, g).set_requires_grad(true);
  const Tensor px = poison_grad(x, g);
  Tensor y = ops::global_avg_pool(x);
  REQUIRE(y.shape() == Shape{3, 5});
  Tensor gy = randn(y.shape(), g);
  y.backward(gy);
  Ref ry(15), rdx(x.numel());
  for (int64_t k = 0; k < 15; ++k)
    for (int64_t i = 0; i < 28; ++i) {
      ry.add(k, x.data()[k * 28 + i] / 28.0);
      rdx.add(k * 28 + i, gy.data()[k] / 28.0);
    }
  check_ref(y, ry, "global_avg_pool forward");
  check_ref(x.grad(), rdx, "global_avg_pool dx", px);
}

TEST_CASE("pooling misuse errors name the op and the shapes") {
  check_error([] { ops::max_pool2d(Tensor::zeros({3, 8, 8}), pool(2, 2, 2, 2, 0, 0)); }, {"max_pool2d", "[3, 8, 8]"});
  check_error([] { ops::avg_pool2d(Tensor::zeros({1, 3, 2, 2}), pool(5, 5, 1, 1, 0, 0)); },
              {"avg_pool2d", "output size", "[1, 3, 2, 2]"});
  check_error([] { ops::max_pool2d(Tensor::zeros({1, 3, 8, 8}), pool(2, 2, 2, 2, 2, 2)); },
              {"max_pool2d", "padding (2, 2)", "half the kernel"});
  check_error([] { ops::adaptive_avg_pool2d(Tensor::zeros({1, 3, 8, 8}), 0, 2); },
              {"adaptive_avg_pool2d", "output size (0, 2)", "[1, 3, 8, 8]"});
  check_error([] { ops::global_avg_pool(Tensor::zeros({4, 8})); }, {"global_avg_pool", "[4, 8]"});
}
