// PACT's fused op (one OpenMP pass forward, one backward, ∂L/∂α summed in float blocks and double, each pass built
// for AVX2 and the baseline) and the quantizer that owns α.
#include "quant/pact.h"

// As in qil_ops.cpp: no floating-point traps, so the clamps below vectorize.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "quant/dorefa.h"
#include "quant/kernel_util.h"
#include "quant/fast_math.h"
#include "quant/qil_ops.h"
#include "quant/registry.h"

namespace quant {

using engine::DType;

namespace {
using namespace kernel;
float alpha_of(const char* op, const Tensor& a) {
  QIL_CHECK(a.defined() && a.dtype() == DType::f32 && a.numel() == 1, op,
            ": alpha must be a one-element f32 tensor");
  const float v = a.item();
  QIL_CHECK(std::isfinite(v) && v > 0.f, op, ": alpha must be positive and finite, got ", v);
  return v;
}

// Forward on [b, e): y = clip(x, 0, α) (or clip(x, −α, α)); kRound puts it on the grid k·α/q.
template <bool kRound, bool kSigned>
__attribute__((always_inline)) inline void pact_forward(const float* xp, float* yp, int64_t b, int64_t e, float a,
                                                        float qf) {
  const float q_over_a = qf / a;
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float v = xp[i];
    const float s = kSigned ? 1.f - 2.f * static_cast<float>(v < 0.f) : 1.f;
    float m = kSigned ? std::fabs(v) : v;  // the magnitude that is clipped
    m = m < 0.f ? 0.f : m;
    m = m > a ? a : m;
    if (kRound) m = static_cast<float>(round_nonneg(m * q_over_a)) * a / qf;
    yp[i] = s * m + 0.f;  // + 0 turns -0 into +0
  }
}

// Backward on [b, e), the same for the rounded op and the surrogate (the STE): dx += g (dx = g into a fresh
// buffer) where 0 <= x < α (|x| < α when signed); returns Σ g·∂/∂α, with ∂/∂α = 1 (sign(x) when signed) where
// x >= α (|x| >= α), summed in float over blocks of kSumBlock and in double across them.
template <bool kSigned, bool kNeedX, bool kFresh>
__attribute__((always_inline)) inline double pact_backward(const float* xv, const float* gyp, float* dx, int64_t b,
                                                           int64_t e, float a) {
  double ga = 0.0;
  for (int64_t blk = b; blk < e; blk += kSumBlock) {
    const int64_t end = std::min(e, blk + kSumBlock);
    float bs = 0.f;
#pragma omp simd reduction(+ : bs)
    for (int64_t i = blk; i < end; ++i) {
      const float v = xv[i];
      const float m = kSigned ? std::fabs(v) : v;
      const float above = static_cast<float>(m >= a);  // 0/1 masks keep the reduction vectorized
      const float inside = kSigned ? 1.f - above : static_cast<float>(v >= 0.f) - above;
      if (kNeedX) dx[i] = kFresh ? inside * gyp[i] : dx[i] + inside * gyp[i];
      const float s = kSigned ? 1.f - 2.f * static_cast<float>(v < 0.f) : 1.f;
      bs += gyp[i] * (above * s);
    }
    ga += bs;
  }
  return ga;
}

// Both kernels for each ISA (kernel_util.h: use_avx2); the same bodies, compiled twice.
#define QIL_PACT_BACKWARD_X(S)                                                  \
  if (!dx) return pact_backward<S, false, false>(xv, gyp, dx, b, e, a);         \
  if (fresh) return pact_backward<S, true, true>(xv, gyp, dx, b, e, a);         \
  return pact_backward<S, true, false>(xv, gyp, dx, b, e, a);
#define QIL_PACT_KERNELS(SUFFIX, ATTR)                                                                          \
  ATTR void forward_##SUFFIX(const float* xp, float* yp, int64_t b, int64_t e, float a, float qf,            \
                             bool is_signed) {                                                               \
    if (qf > 0.f) {                                                                                          \
      if (is_signed) pact_forward<true, true>(xp, yp, b, e, a, qf);                                          \
      else pact_forward<true, false>(xp, yp, b, e, a, qf);                                                   \
    } else {                                                                                                 \
      if (is_signed) pact_forward<false, true>(xp, yp, b, e, a, qf);                                         \
      else pact_forward<false, false>(xp, yp, b, e, a, qf);                                                  \
    }                                                                                                        \
  }                                                                                                          \
  ATTR double backward_##SUFFIX(const float* xv, const float* gyp, float* dx, int64_t b, int64_t e, float a, \
                                bool is_signed, bool fresh) {                                                \
    if (is_signed) { QIL_PACT_BACKWARD_X(true) }                                                             \
    QIL_PACT_BACKWARD_X(false)                                                                               \
  }
QIL_PACT_KERNELS(avx2, QIL_AVX2)
QIL_PACT_KERNELS(base, )
#undef QIL_PACT_KERNELS
#undef QIL_PACT_BACKWARD_X

// q = 0: the surrogate (no rounding).
Tensor pact_op(const char* op, const char* bwd_name, const Tensor& x, const Tensor& alpha, int q, bool is_signed) {
  engine::ops::OpTimer timer(op);
  check_input(op, x);
  const float a = alpha_of(op, alpha);
  Tensor y = Tensor::empty_like(x);
  const float* xp = x.data();
  float* yp = y.data();
  const float qf = static_cast<float>(q);
  const auto forward = use_avx2() ? forward_avx2 : forward_base;
  split_range(x.numel(), [&](int64_t b, int64_t e) { forward(xp, yp, b, e, a, qf, is_signed); });
  return engine::record_fresh(op, y, {x, alpha}, [xs = x.detach(), a, is_signed, bwd_name](
                                                      const Tensor& gy, std::vector<Tensor>& gx,
                                                      const std::vector<bool>& fresh) {
    engine::ops::OpTimer timer(bwd_name);
    float* dx = gx[0].defined() ? gx[0].data() : nullptr;
    const float* xv = xs.data();
    const float* gyp = gy.data();
    const auto backward = use_avx2() ? backward_avx2 : backward_base;
    const double ga = thread_sum<double>(xs.numel(), [&](int64_t b, int64_t e) {
      return backward(xv, gyp, dx, b, e, a, is_signed, dx != nullptr && fresh[0]);
    });
    put_scalar(gx[1], fresh[1], ga);
  });
}
}  // namespace

int pact_levels(int bits, bool is_signed, const char* op) {
  QIL_CHECK(bits >= 2 && bits <= 8, op, ": bits must be in 2..8, got ", bits);
  return is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
}

Tensor pact_quantize(const Tensor& x, const Tensor& alpha, int bits, bool is_signed) {
  return pact_op("pact_quantize", "pact_quantize.bwd", x, alpha, pact_levels(bits, is_signed, "pact_quantize"),
                 is_signed);
}

Tensor pact_transform(const Tensor& x, const Tensor& alpha, bool is_signed) {
  return pact_op("pact_transform", "pact_transform.bwd", x, alpha, 0, is_signed);
}

void clip_level_stats(const Tensor& y, double alpha, int q, bool is_signed, QuantStats& st) {
  std::vector<int64_t> hist(static_cast<size_t>(2 * q + 1), 0);
  const float* yp = y.data();
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) {
    const long k = std::lround(static_cast<double>(yp[i]) * q / alpha);  // y = k·α/q
    ++hist[static_cast<size_t>(std::clamp<long>(k, -q, q) + q)];
  }
  const double nn = n > 0 ? static_cast<double>(n) : 1.0;
  st.pruned_fraction = static_cast<double>(hist[static_cast<size_t>(q)]) / nn;
  st.clipped_fraction = static_cast<double>(hist.back() + (is_signed ? hist.front() : 0)) / nn;
  st.levels_used = static_cast<int>(std::count_if(hist.begin(), hist.end(), [](int64_t h) { return h > 0; }));
}

// ---- the quantizer ----------------------------------------------------------------------------------------

PactQuantizer::PactQuantizer(int bits, bool is_signed, double percentile, ActCalib calib)
    : bits_(bits), is_signed_(is_signed), calib_(calib), clip_(percentile, is_signed),
      alpha_(Tensor::scalar(1.f)) {
  alpha_.set_requires_grad(true);
  pact_levels(bits, is_signed, "PactQuantizer");
  QIL_CHECK(percentile > 0.0 && percentile <= 100.0, "PactQuantizer: percentile must be in (0, 100], got ",
            percentile);
}

const char* PactQuantizer::kernel_isa() const { return qil_kernel_isa(); }

void PactQuantizer::set_bits(int bits) {
  pact_levels(bits, is_signed_, "PactQuantizer::set_bits");
  bits_ = bits;
}

Tensor PactQuantizer::operator()(const Tensor& x) const {
  QIL_CHECK(calibrated_, kind(), ": quantizer used before calibration (observe() a few batches, then "
                                 "finish_calibration(), or set_calibrated(true) after loading its alpha)");
  return pact_quantize(x, alpha_, bits_, is_signed_);
}

Tensor PactQuantizer::transform(const Tensor& x) const {
  QIL_CHECK(calibrated_, kind(), "::transform: quantizer used before calibration");
  return pact_transform(x, alpha_, is_signed_);
}

void PactQuantizer::observe(const Tensor& x) {
  if (calibrated_) return;
  check_input("PactQuantizer::observe", x);
  clip_.observe(x, calib_);
}

void PactQuantizer::finish_calibration() {
  if (calibrated_) return;
  alpha_.data()[0] = static_cast<float>(clip_.finish(calib_, positive_levels(), "PactQuantizer::finish_calibration"));
  calibrated_ = true;
}

void PactQuantizer::project() {
  engine::NoGradGuard ng;
  float& a = alpha_.data()[0];
  a = std::max(a, kAlphaFloor);
}

void PactQuantizer::scale_gradients(GradBalance mode, int64_t elements) {
  if (mode == GradBalance::none || elements <= 0) return;
  if (!alpha_.requires_grad() || !alpha_.grad().defined()) return;
  // ∂L/∂α is a sum over the N clipped elements of each image: LSQ's g = 1/sqrt(N·q) keeps its step from growing
  // with the layer's size, as it does for QIL's and LSQ's parameters.
  Tensor g = alpha_.grad();
  g.data()[0] = static_cast<float>(g.data()[0] / std::sqrt(static_cast<double>(elements) * positive_levels()));
}

QuantStats PactQuantizer::stats() const {
  QuantStats st;
  st.kind = kind();
  st.bits = bits_;
  const int q = positive_levels();
  st.levels_total = is_signed_ ? 2 * q + 1 : q + 1;
  st.alpha = alpha_.item();
  st.prune_threshold = st.alpha / (2.0 * q);
  st.clip_threshold = st.alpha * (1.0 - 1.0 / (2.0 * q));
  return st;
}

QuantStats PactQuantizer::stats(const Tensor& x) const {
  QuantStats st = stats();
  engine::NoGradGuard ng;
  clip_level_stats((*this)(x), st.alpha, positive_levels(), is_signed_, st);
  return st;
}

LevelRule pact_level_rule(float alpha, int q, bool is_signed) {
  using Op = LevelRule::Op;
  LevelRule r;
  r.is_signed = is_signed;
  r.sign_magnitude = true;
  r.steps = {{Op::clip, "clipped", {{"lo", 0.f}, {"hi", alpha}}},
             {Op::multiply, "times_q_over_alpha", {{"q_over_alpha", static_cast<float>(q) / alpha}}}};
  r.rounding = LevelRule::Rounding::half_up;
  return r;
}

LevelRule PactQuantizer::level_rule() const {
  QIL_CHECK(calibrated_, kind(), "::level_rule: quantizer used before calibration");
  return pact_level_rule(alpha_.item(), positive_levels(), is_signed_);
}

// ---- the family -------------------------------------------------------------------------------------------

namespace {
// PACT's paper quantizes the weights with DoReFa's rule.
std::unique_ptr<Quantizer> make_weight(int bits, const QuantizerOptions& /*o*/) {
  return std::make_unique<DorefaWeightQuantizer>(bits);
}

std::unique_ptr<Quantizer> make_activation(int bits, const QuantizerOptions& o) {
  return std::make_unique<PactQuantizer>(bits, o.is_signed, o.percentile, o.pact_calib);
}

std::unique_ptr<Quantizer> from_stats(const QuantStats& s) {
  auto p = std::make_unique<PactQuantizer>(s.bits, s.kind == "pact_activation_signed");
  p->alpha().data()[0] = static_cast<float>(s.alpha);
  p->set_calibrated(true);
  return p;
}
}  // namespace

QuantizerFamily pact_family() {
  QuantizerFamily f;
  f.name = "pact";
  f.summary = "learned clipping level alpha; DoReFa weights";
  f.options = {Option::l2_penalty, Option::pact_calib};
  f.make_weight = make_weight;
  f.make_activation = make_activation;
  const std::string note = "PACT layers: the c_X column holds the clipping level alpha";
  for (const char* kind : {"pact_activation", "pact_activation_signed"})
    f.stats_kinds.push_back({kind, ReportColumns::scalar, note,
                             note + "; prune_X = alpha/(2q), clip_X = alpha*(1 - 1/(2q)), q = 2^bits - 1"});
  f.from_stats = from_stats;
  f.input_rule =
      "x_bar = round(clamp(x, 0, alpha) * q/alpha) * alpha/q with q = 2^bits - 1; for signed_input layers "
      "x_bar = sign(x) * round(min(|x|, alpha) * q/alpha) * alpha/q with q = 2^(bits-1) - 1; round is half "
      "away from zero";
  return f;
}

}  // namespace quant
