// QIL quantizer objects: parameters and names, calibration, project() constraints, statistics, the
// least-squares output scale, and a forward/backward through the interface.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "gradcheck.h"

#include "engine/ops.h"
#include "quant/qil.h"
#include "quant/qil_ops.h"
#include "quant/registry.h"

using namespace engine;
using namespace qiltest;
using namespace quant;

namespace {
void set(Tensor& t, float v) { t.data()[0] = v; }
}  // namespace

TEST_CASE("named parameters, trainability and use before calibration") {
  QilWeightQuantizer wq(4);
  NamedTensors p = wq.named_parameters();
  REQUIRE(p.size() == 3);
  CHECK(p[0].first == "c");
  CHECK(p[1].first == "d");
  CHECK(p[2].first == "gamma");
  for (auto& [name, t] : p) {
    CHECK(t.numel() == 1);
    CHECK(t.requires_grad());
  }
  CHECK(p[0].second.same(wq.c()));  // handles, not copies: a checkpoint load writes through them
  QilWeightQuantizer fixed(4, true);
  CHECK_FALSE(fixed.named_parameters()[2].second.requires_grad());
  QilActQuantizer aq(4);
  REQUIRE(aq.named_parameters().size() == 2);
  CHECK(aq.named_parameters()[1].first == "d");

  Tensor w = Tensor::zeros({4});
  CHECK_FALSE(wq.calibrated());
  CHECK_THROWS_WITH_AS(wq(w), doctest::Contains("QilWeightQuantizer: quantizer used before calibration"), Error);
  CHECK_THROWS_WITH_AS(aq(w), doctest::Contains("QilActQuantizer: quantizer used before calibration"), Error);
}

TEST_CASE("bits outside 2..8 are rejected by the quantizers") {
  CHECK_THROWS_WITH_AS(QilWeightQuantizer(1), doctest::Contains("bits must be in 2..8, got 1"), Error);
  CHECK_THROWS_WITH_AS(QilActQuantizer(9), doctest::Contains("bits must be in 2..8, got 9"), Error);
  QilWeightQuantizer wq(4);
  CHECK_THROWS_WITH_AS(wq.set_bits(32), doctest::Contains("set_bits: bits must be in 2..8, got 32"), Error);
  CHECK(wq.bits() == 4);
  wq.set_bits(2);
  CHECK(wq.bits() == 2);
}

TEST_CASE("weight calibration: c = d = max|w| / 2, a calibrated quantizer keeps its interval") {
  QilWeightQuantizer wq(4);
  CHECK_THROWS_WITH_AS(wq.finish_calibration(), doctest::Contains("nothing observed"), Error);
  wq.observe(Tensor::from_vector({0.1f, -0.8f, 0.3f}, {3}));
  wq.observe(Tensor::from_vector({0.1f, -0.2f, 0.5f}, {3}));
  wq.finish_calibration();
  CHECK(wq.calibrated());
  CHECK(wq.c().item() == doctest::Approx(0.4f));
  CHECK(wq.d().item() == doctest::Approx(0.4f));
  CHECK(wq.d_min() == doctest::Approx(1e-4 * 0.8));
  // Later observations (a lower-bit stage) leave the interval alone.
  wq.set_bits(3);
  wq.observe(Tensor::from_vector({5.f}, {1}));
  wq.finish_calibration();
  CHECK(wq.c().item() == doctest::Approx(0.4f));
  // Forgetting the interval recalibrates.
  wq.set_calibrated(false);
  wq.observe(Tensor::from_vector({5.f}, {1}));
  wq.finish_calibration();
  CHECK(wq.c().item() == doctest::Approx(2.5f));

  QilWeightQuantizer zero(4);
  zero.observe(Tensor::zeros({3}));
  CHECK_THROWS_WITH_AS(zero.finish_calibration(), doctest::Contains("all observed weights are zero"), Error);
}

namespace {
// Standard normal samples (Box-Muller on a fixed LCG): the test's own generator, independent of the engine's.
std::vector<float> gaussian(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  auto uniform = [&seed] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (static_cast<double>(seed >> 11) + 0.5) / 9007199254740992.0;
  };
  for (size_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform())), t = 6.283185307179586 * uniform();
    v[i] = static_cast<float>(r * std::cos(t));
    if (i + 1 < n) v[i + 1] = static_cast<float>(r * std::sin(t));
  }
  return v;
}

// min_s ||w − s·ŵ||² / ||w||² for the quantizer's current rule: the error left after the best scale.
double scaled_error(const QilWeightQuantizer& wq, const Tensor& w) {
  engine::NoGradGuard ng;
  const auto q = wq(w).to_vector(), x = w.to_vector();
  double xq = 0, qq = 0, xx = 0;
  for (size_t i = 0; i < x.size(); ++i) xq += double(x[i]) * q[i], qq += double(q[i]) * q[i], xx += double(x[i]) * x[i];
  return 1.0 - xq * xq / qq / xx;
}
}  // namespace

TEST_CASE("mse weight calibration: the ternary threshold of a Gaussian is the analytic optimum") {
  // At 2 bits (levels -1, 0, 1) the interval [0, p] rounds |w| > p/2 to 1. For w ~ N(0, 1) the least-squares
  // scaled error is smallest where the threshold t maximizes E[|w|; |w| > t]² / P(|w| > t) = 2φ(t)² / Q(t)
  // (Q the normal tail): found here from that closed form on a fine grid, not from samples.
  double t_star = 0, best = -1;
  for (double t = 0.3; t < 1.0; t += 1e-4) {
    const double phi = std::exp(-0.5 * t * t) / std::sqrt(6.283185307179586), tail = 0.5 * std::erfc(t / std::sqrt(2.0));
    if (phi * phi / tail > best) best = phi * phi / tail, t_star = t;
  }
  REQUIRE(t_star == doctest::Approx(0.612).epsilon(0.01));  // the known value
  std::vector<float> a = gaussian(1 << 18, 11);
  for (float& x : a) x = std::fabs(x);
  CHECK(mse_clip_point(a, 1) / 2 == doctest::Approx(t_star).epsilon(0.02));
  // Through the quantizer: c = d = p/2, and most weights survive where max calibration zeroes nearly all.
  const std::vector<float> wv = gaussian(1 << 16, 5);
  const Tensor w = Tensor::from_vector(wv, {static_cast<int64_t>(wv.size())});
  QilWeightQuantizer mse(2, false, WeightCalib::mse), max(2);
  mse.observe(w);
  max.observe(w);
  mse.finish_calibration();
  max.finish_calibration();
  CHECK(mse.c().item() == mse.d().item());
  CHECK(mse.c().item() == doctest::Approx(t_star).epsilon(0.03));
  CHECK(mse.stats(w).pruned_fraction == doctest::Approx(std::erf(t_star / std::sqrt(2.0))).epsilon(0.03));
  CHECK(max.stats(w).pruned_fraction > 0.95);
  CHECK(scaled_error(mse, w) < scaled_error(max, w));
}

TEST_CASE("mse weight calibration: never worse than max at 2-8 bits, exact on weights already on the grid") {
  const std::vector<float> wv = gaussian(1 << 15, 9);
  const Tensor w = Tensor::from_vector(wv, {static_cast<int64_t>(wv.size())});
  for (int bits = 2; bits <= 8; ++bits) {
    CAPTURE(bits);
    QilWeightQuantizer mse(bits, false, WeightCalib::mse), max(bits);
    mse.observe(w);
    max.observe(w);
    mse.finish_calibration();
    max.finish_calibration();
    if (bits <= 4) CHECK(mse.c().item() < max.c().item());  // a Gaussian's tail is worth clipping at few levels
    CHECK(scaled_error(mse, w) <= scaled_error(max, w));
  }
  // Weights already on a 3-bit grid (multiples of 0.1 up to ±0.3): the chosen interval represents them exactly.
  std::vector<float> grid;
  for (int i = 0; i < 400; ++i) grid.push_back(0.1f * static_cast<float>(i % 7 - 3));
  const Tensor g = Tensor::from_vector(grid, {400});
  QilWeightQuantizer exact(3, false, WeightCalib::mse);
  exact.observe(g);
  exact.finish_calibration();
  CHECK(scaled_error(exact, g) < 1e-9);
  CHECK_THROWS_WITH_AS(mse_clip_point({0.f, 0.f}, 3), doctest::Contains("all values are zero"), Error);
  CHECK(parse_weight_calib("mse") == WeightCalib::mse);
  CHECK_THROWS_WITH_AS(parse_weight_calib("median"), doctest::Contains("unknown weight calibration 'median'"), Error);
}

TEST_CASE("mse activation calibration: ReLU of a Gaussian at 2 bits lands on the integrated optimum") {
  // Unsigned 2 bits: levels 0..3, k = min(round(3·v/p), 3). For v = max(z, 0), z ~ N(0, 1), the best p
  // maximizes E[v·k]² / E[k²]; both expectations are integrated here against the normal density.
  auto kept = [](double p) {
    double vk = 0, kk = 0;
    for (double v = 5e-5; v < 8.0; v += 1e-4) {
      const double w = std::exp(-0.5 * v * v) * 1e-4, k = std::min(std::floor(3 * v / p + 0.5), 3.0);
      vk += v * k * w;
      kk += k * k * w;
    }
    return vk * vk / kk;
  };
  double p_star = 0, best = -1;
  for (double p = 1.0; p < 4.0; p += 2e-3)
    if (kept(p) > best) best = kept(p), p_star = p;
  std::vector<float> z = gaussian(1 << 16, 23);
  for (float& v : z) v = std::max(v, 0.f);
  // Two batches, pooled: the same as one batch of both.
  const Tensor x1 = Tensor::from_vector(std::vector<float>(z.begin(), z.begin() + (1 << 15)), {1 << 15});
  const Tensor x2 = Tensor::from_vector(std::vector<float>(z.begin() + (1 << 15), z.end()), {1 << 15});
  QilActQuantizer mse(2, false, 99.9, ActCalib::mse), pct(2);
  for (const Tensor* x : {&x1, &x2}) mse.observe(*x), pct.observe(*x);
  mse.finish_calibration();
  pct.finish_calibration();
  CHECK(2 * mse.c().item() == doctest::Approx(p_star).epsilon(0.03));
  CHECK(mse.c().item() == mse.d().item());
  CHECK(pct.c().item() > 1.4f);  // the 99.9th percentile of v is ~3.1: [0, 3.1], far wider
  // The error left after the best scale, through the quantizer's own forward.
  auto err = [&](const QilActQuantizer& q) {
    engine::NoGradGuard ng;
    const auto y = q(x1).to_vector(), x = x1.to_vector();
    double xy = 0, yy = 0, xx = 0;
    for (size_t i = 0; i < x.size(); ++i) xy += double(x[i]) * y[i], yy += double(y[i]) * y[i], xx += double(x[i]) * x[i];
    return 1.0 - xy * xy / yy / xx;
  };
  CHECK(err(mse) < err(pct));
  CHECK(parse_act_calib("mse") == ActCalib::mse);
  CHECK_THROWS_WITH_AS(parse_act_calib("max"), doctest::Contains("unknown activation calibration 'max'"), Error);
  // An all-zero input stays an error, as with the percentile rule.
  QilActQuantizer zero(2, false, 99.9, ActCalib::mse);
  zero.observe(Tensor::zeros({8}));
  CHECK_THROWS_WITH_AS(zero.finish_calibration(), doctest::Contains("observed inputs are zero"), Error);
}

TEST_CASE("activation calibration: c = d = p/2, p the 99.9th percentile averaged over batches") {
  // 1001 values k/1000 in shuffled order: the 99.9th percentile (position 0.999·1000 = 999) is 0.999.
  Generator g(5);
  std::vector<float> v(1001);
  for (int k = 0; k <= 1000; ++k) v[k] = k / 1000.f;
  for (size_t i = v.size() - 1; i > 0; --i) std::swap(v[i], v[g.below(i + 1)]);
  std::vector<float> v2 = v;
  for (float& e : v2) e *= 2.f;  // second batch: percentile 1.998
  QilActQuantizer aq(4);
  aq.observe(Tensor::from_vector(v, {1001}));
  aq.observe(Tensor::from_vector(v2, {7, 11, 13}));
  aq.finish_calibration();
  // p = (0.999 + 1.998) / 2 = 1.4985.
  CHECK(aq.c().item() == doctest::Approx(0.74925f));
  CHECK(aq.d().item() == doctest::Approx(0.74925f));
  CHECK(aq.d_min() == doctest::Approx(1e-4 * 1.4985));

  // Signed: the percentile of |x|.
  std::vector<float> vs = v;
  for (size_t i = 0; i < vs.size(); i += 2) vs[i] = -vs[i];
  QilActQuantizer sq(8, true);
  sq.observe(Tensor::from_vector(vs, {1001}));
  sq.finish_calibration();
  CHECK(sq.c().item() == doctest::Approx(0.4995f));

  // A very sparse input (percentile 0) falls back to its maximum; an all-zero one is an error.
  Tensor sparse = Tensor::zeros({10000});
  sparse.data()[17] = 3.f;
  QilActQuantizer spq(4);
  spq.observe(sparse);
  spq.finish_calibration();
  CHECK(spq.c().item() == doctest::Approx(1.5f));
  QilActQuantizer zq(4);
  zq.observe(Tensor::zeros({100}));
  CHECK_THROWS_WITH_AS(zq.finish_calibration(), doctest::Contains("observed inputs are zero"), Error);

  // A large input is subsampled with a stride; the percentile stays close on shuffled data.
  const int64_t n = QilActQuantizer::kCalibSample + 12345;
  Tensor big = rand_uniform({n}, g, 0.f, 4.f);
  QilActQuantizer bq(4);
  bq.observe(big);
  bq.finish_calibration();
  CHECK(bq.c().item() == doctest::Approx(0.999f * 4.f / 2.f).epsilon(2e-3));
}

TEST_CASE("project(): d >= d_min, c >= d, gamma in [0.25, 4], fix_gamma pins gamma to 1") {
  QilWeightQuantizer wq(4);
  wq.observe(Tensor::from_vector({2.f}, {1}));  // c = d = 1, width 2, d_min = 2e-4
  wq.finish_calibration();
  set(wq.d(), -0.5f);
  set(wq.c(), -1.f);
  set(wq.gamma(), 10.f);
  wq.project();
  CHECK(wq.d().item() == doctest::Approx(2e-4f));
  CHECK(wq.c().item() == doctest::Approx(2e-4f));
  CHECK(wq.gamma().item() == 4.f);
  // c < d: the nearest point with c >= d is the midpoint on c = d, (0.25, 0.25) — not (0.3, 0.3), which
  // would move c up without moving d down.
  set(wq.d(), 0.3f);
  set(wq.c(), 0.2f);
  set(wq.gamma(), 0.1f);
  wq.project();
  CHECK(wq.d().item() == doctest::Approx(0.25f));
  CHECK(wq.c().item() == doctest::Approx(0.25f));
  CHECK(wq.gamma().item() == 0.25f);
  set(wq.d(), 0.3f);
  set(wq.c(), 0.7f);
  set(wq.gamma(), 1.7f);
  wq.project();  // already feasible: untouched
  CHECK(wq.c().item() == doctest::Approx(0.7f));
  CHECK(wq.d().item() == doctest::Approx(0.3f));
  CHECK(wq.gamma().item() == doctest::Approx(1.7f));

  QilWeightQuantizer fq(4, true);
  set(fq.gamma(), 2.f);
  fq.project();
  CHECK(fq.gamma().item() == 1.f);
  fq.set_fix_gamma(false);
  CHECK(fq.gamma().requires_grad());
  set(fq.gamma(), 2.f);
  fq.project();
  CHECK(fq.gamma().item() == 2.f);
  fq.set_fix_gamma(true);
  CHECK(fq.gamma().item() == 1.f);
  CHECK_FALSE(fq.gamma().requires_grad());

  QilActQuantizer aq(4);
  aq.observe(Tensor::from_vector({0.f, 4.f}, {2}));  // percentile 0.999·4 = 3.996 -> d = 1.998
  aq.finish_calibration();
  set(aq.d(), 0.f);
  set(aq.c(), 0.f);
  aq.project();
  CHECK(aq.d().item() == doctest::Approx(1e-4 * 3.996));
  CHECK(aq.c().item() == doctest::Approx(1e-4 * 3.996));

  // An interval loaded into a fresh quantizer: set_calibrated(true) takes d_min from the loaded width.
  QilActQuantizer loaded(4);
  set(loaded.c(), 0.9f);
  set(loaded.d(), 0.25f);
  loaded.set_calibrated(true);
  CHECK(loaded.d_min() == doctest::Approx(1e-4 * 0.5));
  loaded.observe(Tensor::full({3}, 7.f));
  loaded.finish_calibration();
  CHECK(loaded.c().item() == 0.9f);
}

TEST_CASE("statistics: thresholds, pruned and clipped fractions, levels used") {
  QilWeightQuantizer wq(2);
  wq.observe(Tensor::from_vector({1.f}, {1}));  // c = d = 0.5, interval [0, 1]
  wq.finish_calibration();
  // 2-bit, gamma 1: ŵ = sign(w)·|w| inside; w̄ = {-1, 0, 0, 0, 1, 1}.
  Tensor w = Tensor::from_vector({-0.9f, -0.2f, 0.f, 0.3f, 0.6f, 1.5f}, {6});
  QuantStats s = wq.stats(w);
  CHECK(s.kind == "qil_weight");
  CHECK(s.bits == 2);
  CHECK(s.levels_total == 3);
  CHECK(s.prune_threshold == doctest::Approx(0.5));  // c - d + d/q = 0 + 0.5
  CHECK(s.clip_threshold == doctest::Approx(0.5));   // c + d - d/q: ternary has one threshold
  CHECK(s.pruned_fraction == doctest::Approx(0.5));
  CHECK(s.clipped_fraction == doctest::Approx(0.5));
  CHECK(s.levels_used == 3);
  CHECK(wq.stats().pruned_fraction == -1.0);

  // 4-bit (q = 7): 0.05 -> 0.35 -> 0; -0.2 -> -1.4 -> -1/7; 0.5 -> 3.5 -> 4/7; 0.97 -> 6.79 -> 1; 2 -> 1.
  wq.set_bits(4);
  set(wq.gamma(), 1.8f);
  QuantStats s4 = wq.stats(Tensor::from_vector({0.05f, -0.2f, 0.5f, 0.97f, 2.f}, {5}));
  CHECK(s4.levels_total == 15);
  CHECK(s4.gamma == doctest::Approx(1.8));
  CHECK(s4.prune_threshold == doctest::Approx(qil_prune_threshold(0.5, 0.5, 1.8, 7)));
  CHECK(s4.clip_threshold == doctest::Approx(qil_clip_threshold(0.5, 0.5, 1.8, 7)));
  set(wq.gamma(), 1.f);
  s4 = wq.stats(Tensor::from_vector({0.05f, -0.2f, 0.5f, 0.97f, 2.f}, {5}));
  CHECK(s4.pruned_fraction == doctest::Approx(0.2));
  CHECK(s4.clipped_fraction == doctest::Approx(0.4));
  CHECK(s4.levels_used == 4);  // 0, -1/7, 4/7, 1

  // Activations, 2-bit (q = 3), interval [0.2, 1.0]: thresholds 0.2 + 0.4/3 and 1.0 - 0.4/3.
  QilActQuantizer aq(2);
  set(aq.c(), 0.6f);
  set(aq.d(), 0.4f);
  aq.set_calibrated(true);
  QuantStats sa = aq.stats(Tensor::from_vector({0.f, 0.3f, 0.5f, 0.95f, 3.f, 0.1f}, {6}));
  CHECK(sa.levels_total == 4);
  CHECK(sa.prune_threshold == doctest::Approx(0.2 + 0.4 / 3));
  CHECK(sa.clip_threshold == doctest::Approx(1.0 - 0.4 / 3));
  // 0, 0.1 -> 0; 0.3 -> u 0.125 -> 0.375 -> 0; 0.5 -> 0.375 -> 1.125 -> 1/3; 0.95 -> 0.9375 -> 2.81 -> 1; 3 -> 1.
  CHECK(sa.pruned_fraction == doctest::Approx(0.5));
  CHECK(sa.clipped_fraction == doctest::Approx(2.0 / 6));
  CHECK(sa.levels_used == 3);
}

TEST_CASE("through the interface: forward equals the op, backward reaches c, d, gamma") {
  std::unique_ptr<Quantizer> q = std::make_unique<QilWeightQuantizer>(3);
  Generator g(9);
  Tensor w = randn({4, 3, 3, 3}, g, 0.5f).set_requires_grad(true);
  q->observe(w);
  q->finish_calibration();
  Tensor y = (*q)(w);
  CHECK(y.shape() == w.shape());
  auto* wq = static_cast<QilWeightQuantizer*>(q.get());
  {
    NoGradGuard ng;
    CHECK(y.to_vector() == qil_weight(w, wq->c(), wq->d(), wq->gamma(), 3).to_vector());
  }
  ops::sum(y).backward();
  for (auto& [name, t] : q->named_parameters()) {
    CAPTURE(name);
    REQUIRE(t.grad().defined());
    CHECK(t.grad().item() != 0.f);
  }
  // A pinned gamma receives no gradient.
  QilWeightQuantizer fixed(3, true);
  fixed.observe(w);
  fixed.finish_calibration();
  ops::sum(fixed(w)).backward();
  CHECK_FALSE(fixed.gamma().grad().defined());
  CHECK(fixed.c().grad().defined());
}

TEST_CASE("least-squares output scale") {
  // y_fp = (1, 2), y_q = (1, 1): <y_fp, y_q> / <y_q, y_q> = 3 / 2.
  CHECK(least_squares_scale(Tensor::from_vector({1.f, 2.f}, {2}), Tensor::from_vector({1.f, 1.f}, {2})) ==
        doctest::Approx(1.5));
  Generator g(3);
  Tensor yq = randn({5, 7}, g);
  Tensor yfp = yq.clone();
  for (int64_t i = 0; i < yfp.numel(); ++i) yfp.data()[i] *= -2.5f;
  CHECK(least_squares_scale(yfp, yq) == doctest::Approx(-2.5));
  CHECK(least_squares_scale(yfp, Tensor::zeros({5, 7})) == 1.0);
  CHECK_THROWS_WITH_AS(least_squares_scale(yfp, Tensor::zeros({7, 5})),
                       doctest::Contains("least_squares_scale: shapes differ"), Error);
}

TEST_CASE("a quantizer rebuilt from its stats runs the same rule, transform is the op's transformer") {
  const Tensor v = Tensor::from_vector({-1.2f, -0.45f, -0.05f, 0.f, 0.12f, 0.3f, 0.61f, 0.9f, 1.7f}, {9});
  QilWeightQuantizer wq(3);
  set(wq.c(), 0.5f);
  set(wq.d(), 0.4f);
  set(wq.gamma(), 1.7f);
  wq.set_calibrated(true);
  QilActQuantizer sq(4, /*is_signed=*/true);
  set(sq.c(), 0.6f);
  set(sq.d(), 0.35f);
  sq.set_calibrated(true);
  QilActQuantizer aq(2);
  set(aq.c(), 0.4f);
  set(aq.d(), 0.3f);
  aq.set_calibrated(true);
  NoGradGuard ng;
  for (const Quantizer* q : std::initializer_list<const Quantizer*>{&wq, &sq, &aq}) {
    CAPTURE(q->kind());
    const std::unique_ptr<Quantizer> r = quantizer_from_stats(q->stats());
    CHECK(std::string(r->kind()) == q->kind());
    CHECK(r->bits() == q->bits());
    CHECK(r->calibrated());
    const QuantStats a = q->stats(v), b = r->stats(v);
    CHECK(b.c == a.c);
    CHECK(b.d == a.d);
    CHECK(b.gamma == a.gamma);
    CHECK(b.clip_threshold == a.clip_threshold);
    CHECK(b.pruned_fraction == a.pruned_fraction);
    const Tensor y = (*q)(v), z = (*r)(v);
    for (int64_t i = 0; i < v.numel(); ++i) CHECK(z.data()[i] == y.data()[i]);
  }
  // transform() is the op's transformer with the quantizer's own parameters.
  const Tensor tw = wq.transform(v), ow = qil_weight_transform(v, wq.c(), wq.d(), wq.gamma());
  const Tensor ts = sq.transform(v), os = qil_activation_transform(v, sq.c(), sq.d(), true);
  for (int64_t i = 0; i < v.numel(); ++i) {
    CHECK(tw.data()[i] == ow.data()[i]);
    CHECK(ts.data()[i] == os.data()[i]);
  }
  CHECK(tw.data()[8] == doctest::Approx(1.f));  // |w| = 1.7 > c + d: clipped to sign(w)
  CHECK(tw.data()[3] == 0.f);                   // |w| = 0 < c - d: pruned
  QuantStats bad;
  bad.kind = "lsq_step";
  bad.bits = 4;
  CHECK_THROWS_WITH_AS(quantizer_from_stats(bad), doctest::Contains("unknown quantizer kind 'lsq_step'"), Error);
  QilWeightQuantizer fresh(4);
  CHECK_THROWS_WITH_AS(fresh.transform(v), doctest::Contains("used before calibration"), Error);
}
