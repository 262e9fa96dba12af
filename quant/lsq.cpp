// LSQ's fused op (one OpenMP pass forward, one backward, ∂L/∂s reduced in float blocks and double, each pass built
// for AVX2 and the baseline) and the quantizer that owns s.
#include "quant/lsq.h"

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
#include "quant/fast_math.h"
#include "quant/kernel_util.h"
#include "quant/qil_ops.h"
#include "quant/registry.h"

namespace quant {

using engine::DType;

namespace {
using namespace kernel;
float step_of(const char* op, const Tensor& s) {
  QIL_CHECK(s.defined() && s.dtype() == DType::f32 && s.numel() == 1, op, ": s must be a one-element f32 tensor");
  const float v = s.item();
  QIL_CHECK(std::isfinite(v) && v > 0.f, op, ": s must be positive and finite, got ", v);
  return v;
}

// round half away from zero, std::round's rule (QIL's too), so that v̄(−v) = −v̄(v) inside the range, for
// |r| < 2^31 (callers clamp r to the range first): round_nonneg adds 0.5 in double, where it is exact, and
// truncates, which SSE2 vectorizes; std::floor and std::round need SSE4.1 to, and floor(|r| + 0.5f) rounds
// 0.49999997 up.
inline float round_half_away(float r) {
  const float a = static_cast<float>(round_nonneg(std::fabs(r)));
  return r < 0.f ? -a : a;
}

// The forward on [b, e): v̄ = clamp(v/s, −Q_N, Q_P), rounded when kRound, times s.
template <bool kRound>
__attribute__((always_inline)) inline void lsq_forward(const float* vp, float* yp, int64_t b, int64_t e, float sv,
                                                       float inv_s, float qn, float qp) {
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    float r = vp[i] * inv_s;
    r = r < -qn ? -qn : r;
    r = r > qp ? qp : r;
    yp[i] = (kRound ? round_half_away(r) : r) * sv + 0.f;  // + 0 turns -0 into +0
  }
}

// The backward on [b, e): dv += ∂L/∂v where dv is given (dv = ∂L/∂v when kFresh: the buffer holds nothing yet),
// and the returned ∂L/∂s, summed in float over blocks of kSumBlock and in double across them. Plain arguments (no
// lambda captures, which GCC reads through memory on every iteration) so that the loop and its reduction vectorize.
template <bool kRound, bool kNeedV, bool kFresh>
__attribute__((always_inline)) inline double lsq_backward(const float* gy, const float* v, float* dv, int64_t b,
                                                          int64_t e, float inv_s, float qn, float qp) {
  double gs = 0.0;
  for (int64_t blk = b; blk < e; blk += kSumBlock) {
    const int64_t end = std::min(e, blk + kSumBlock);
    float bs = 0.f;
#pragma omp simd reduction(+ : bs)
    for (int64_t i = blk; i < end; ++i) {
      const float r = v[i] * inv_s;
      const float below = static_cast<float>(r <= -qn), above = static_cast<float>(r >= qp);
      const float inside = 1.f - below - above;  // 0/1 masks keep the reduction vectorized
      if (kNeedV) dv[i] = kFresh ? inside * gy[i] : dv[i] + inside * gy[i];
      // ∂v̄/∂s: round(r) − r inside (the STE's), −Q_N / Q_P clipped; the surrogate has no rounding term.
      const float rc = r < -qn ? -qn : (r > qp ? qp : r);  // inside, rc = r; clamped so the rounding is defined
      const float ds = inside * (kRound ? round_half_away(rc) - rc : 0.f) - below * qn + above * qp;
      bs += gy[i] * ds;
    }
    gs += bs;
  }
  return gs;
}

// Both kernels for each ISA (kernel_util.h: use_avx2); the same bodies, compiled twice.
#define QIL_LSQ_KERNELS(SUFFIX, ATTR)                                                                              \
  ATTR void forward_##SUFFIX(const float* vp, float* yp, int64_t b, int64_t e, float sv, float inv_s, float qn,  \
                             float qp, bool round) {                                                            \
    if (round) lsq_forward<true>(vp, yp, b, e, sv, inv_s, qn, qp);                                             \
    else lsq_forward<false>(vp, yp, b, e, sv, inv_s, qn, qp);                                                  \
  }                                                                                                             \
  ATTR double backward_##SUFFIX(const float* gy, const float* v, float* dv, int64_t b, int64_t e, float inv_s,  \
                                float qn, float qp, bool round, bool fresh) {                                   \
    if (round) {                                                                                                \
      if (!dv) return lsq_backward<true, false, false>(gy, v, dv, b, e, inv_s, qn, qp);                        \
      if (fresh) return lsq_backward<true, true, true>(gy, v, dv, b, e, inv_s, qn, qp);                        \
      return lsq_backward<true, true, false>(gy, v, dv, b, e, inv_s, qn, qp);                                  \
    }                                                                                                           \
    if (!dv) return lsq_backward<false, false, false>(gy, v, dv, b, e, inv_s, qn, qp);                         \
    if (fresh) return lsq_backward<false, true, true>(gy, v, dv, b, e, inv_s, qn, qp);                         \
    return lsq_backward<false, true, false>(gy, v, dv, b, e, inv_s, qn, qp);                                   \
  }
QIL_LSQ_KERNELS(avx2, QIL_AVX2)
QIL_LSQ_KERNELS(base, )
#undef QIL_LSQ_KERNELS

template <bool kRound>
Tensor lsq_op(const char* op, const char* bwd_name, const Tensor& v, const Tensor& s, LsqRange rg) {
  engine::ops::OpTimer timer(op);
  check_input(op, v);
  const float sv = step_of(op, s);
  const float inv_s = 1.f / sv, qn = static_cast<float>(rg.qn), qp = static_cast<float>(rg.qp);
  Tensor y = Tensor::empty_like(v);
  const float* vp = v.data();
  float* yp = y.data();
  const auto forward = use_avx2() ? forward_avx2 : forward_base;
  split_range(v.numel(), [&](int64_t b, int64_t e) { forward(vp, yp, b, e, sv, inv_s, qn, qp, kRound); });
  return engine::record_fresh(op, y, {v, s}, [vs = v.detach(), inv_s, qn, qp, bwd_name](
                                                  const Tensor& gy, std::vector<Tensor>& gx,
                                                  const std::vector<bool>& fresh) {
    engine::ops::OpTimer timer(bwd_name);
    const float* gyp = gy.data();
    const float* vv = vs.data();
    float* dv = gx[0].defined() ? gx[0].data() : nullptr;
    const auto backward = use_avx2() ? backward_avx2 : backward_base;
    const double gs = thread_sum<double>(vs.numel(), [&](int64_t b, int64_t e) {
      return backward(gyp, vv, dv, b, e, inv_s, qn, qp, kRound, dv != nullptr && fresh[0]);
    });
    put_scalar(gx[1], fresh[1], gs);
  });
}
}  // namespace

LsqRange lsq_signed_range(int bits, const char* op) {
  check_bits(bits, op);
  return {1 << (bits - 1), (1 << (bits - 1)) - 1};
}

LsqRange lsq_symmetric_range(int bits, const char* op) {
  check_bits(bits, op);
  return {(1 << (bits - 1)) - 1, (1 << (bits - 1)) - 1};
}

LsqRange lsq_unsigned_range(int bits, const char* op) {
  check_bits(bits, op);
  return {0, (1 << bits) - 1};
}

Tensor lsq_quantize(const Tensor& v, const Tensor& s, LsqRange r) {
  return lsq_op<true>("lsq_quantize", "lsq_quantize.bwd", v, s, r);
}

Tensor lsq_transform(const Tensor& v, const Tensor& s, LsqRange r) {
  return lsq_op<false>("lsq_transform", "lsq_transform.bwd", v, s, r);
}

// ---- the quantizer ----------------------------------------------------------------------------------------

LsqQuantizer::LsqQuantizer(Role role, int bits) : role_(role), bits_(bits), s_(Tensor::scalar(1.f)) {
  s_.set_requires_grad(true);
  range();  // checks bits
}

const char* LsqQuantizer::kind() const {
  switch (role_) {
    case Role::weight: return "lsq_weight";
    case Role::weight_symmetric: return "lsq_weight_symmetric";
    case Role::activation: return "lsq_activation";
    default: return "lsq_activation_signed";
  }
}

LsqRange LsqQuantizer::range() const {
  if (role_ == Role::weight_symmetric) return lsq_symmetric_range(bits_, "LsqQuantizer");
  return is_signed() ? lsq_signed_range(bits_, "LsqQuantizer") : lsq_unsigned_range(bits_, "LsqQuantizer");
}

const char* LsqQuantizer::kernel_isa() const { return qil_kernel_isa(); }

void LsqQuantizer::set_bits(int bits) {
  check_bits(bits, "LsqQuantizer::set_bits");
  bits_ = bits;
}

void LsqQuantizer::require_calibrated(const char* op) const {
  QIL_CHECK(calibrated_, op, ": quantizer used before calibration (observe() a few batches, then "
                             "finish_calibration(), or set_calibrated(true) after loading its step)");
}

Tensor LsqQuantizer::operator()(const Tensor& v) const {
  require_calibrated(kind());
  return lsq_quantize(v, s_, range());
}

Tensor LsqQuantizer::transform(const Tensor& v) const {
  require_calibrated(kind());
  return lsq_transform(v, s_, range());
}

void LsqQuantizer::observe(const Tensor& v) {
  if (calibrated_) return;
  check_input("LsqQuantizer::observe", v);
  const float* p = v.data();
  const int64_t n = v.numel();
  double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) sum += std::fabs(p[i]);
  abs_sum_ += sum;
  abs_count_ += n;
}

void LsqQuantizer::finish_calibration() {
  if (calibrated_) return;
  QIL_CHECK(abs_count_ > 0, "LsqQuantizer::finish_calibration: nothing observed");
  const double mean_abs = abs_sum_ / static_cast<double>(abs_count_);
  QIL_CHECK(mean_abs > 0.0, "LsqQuantizer::finish_calibration: all observed values are zero");
  // The paper's initialization: 2⟨|v|⟩/sqrt(Q_P).
  s_.data()[0] = static_cast<float>(2.0 * mean_abs / std::sqrt(static_cast<double>(range().qp)));
  calibrated_ = true;
  abs_sum_ = 0.0;
  abs_count_ = 0;
}

void LsqQuantizer::project() {
  engine::NoGradGuard ng;
  float& s = s_.data()[0];
  s = std::max(s, kStepFloor);
}

void LsqQuantizer::scale_gradients(GradBalance mode, int64_t elements) {
  if (mode == GradBalance::none || elements <= 0) return;
  if (!s_.requires_grad() || !s_.grad().defined()) return;
  // The paper's g = 1/sqrt(N·Q_P): ∂L/∂s is a sum over N elements, and its size relative to s grows with Q_P.
  Tensor g = s_.grad();
  g.data()[0] = static_cast<float>(g.data()[0] / std::sqrt(static_cast<double>(elements) * range().qp));
}

QuantStats LsqQuantizer::stats() const {
  QuantStats st;
  st.kind = kind();
  st.bits = bits_;
  const LsqRange r = range();
  st.levels_total = r.qn + r.qp + 1;
  st.c = 0.0;
  st.d = 0.0;
  st.gamma = 1.0;
  st.step = s_.item();
  st.prune_threshold = 0.5 * st.step;
  st.clip_threshold = (r.qp - 0.5) * st.step;
  return st;
}

QuantStats LsqQuantizer::stats(const Tensor& v) const {
  QuantStats st = stats();
  engine::NoGradGuard ng;
  const Tensor y = (*this)(v);
  const LsqRange r = range();
  std::vector<int64_t> hist(static_cast<size_t>(r.qn + r.qp + 1), 0);
  const float* yp = y.data();
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) {
    const long k = std::lround(static_cast<double>(yp[i]) / st.step);  // v̄ = k·s
    ++hist[static_cast<size_t>(std::clamp<long>(k, -r.qn, r.qp) + r.qn)];
  }
  const double nn = n > 0 ? static_cast<double>(n) : 1.0;
  st.pruned_fraction = static_cast<double>(hist[static_cast<size_t>(r.qn)]) / nn;
  // The top level, and for signed rules the bottom one (−Q_N, one level beyond −Q_P).
  const int64_t clipped = hist.back() + (r.qn > 0 ? hist.front() : 0);
  st.clipped_fraction = static_cast<double>(clipped) / nn;
  st.levels_used = static_cast<int>(std::count_if(hist.begin(), hist.end(), [](int64_t h) { return h > 0; }));
  return st;
}

LevelRule LsqQuantizer::level_rule() const {
  require_calibrated("LsqQuantizer::level_rule");
  using Op = LevelRule::Op;
  const LsqRange r = range();
  LevelRule rule;
  rule.is_signed = is_signed();
  rule.steps = {{Op::multiply, "scaled", {{"inv_s", 1.f / s_.item()}}},
                {Op::clip, "clipped", {{"lo", static_cast<float>(-r.qn)}, {"hi", static_cast<float>(r.qp)}}}};
  rule.rounding = LevelRule::Rounding::half_away;
  return rule;
}

// ---- the family -------------------------------------------------------------------------------------------

namespace {
std::unique_ptr<Quantizer> make_weight(int bits, const QuantizerOptions& o) {
  return std::make_unique<LsqQuantizer>(o.symmetric ? LsqQuantizer::Role::weight_symmetric : LsqQuantizer::Role::weight,
                                        bits);
}

std::unique_ptr<Quantizer> make_activation(int bits, const QuantizerOptions& o) {
  return std::make_unique<LsqQuantizer>(
      o.is_signed ? LsqQuantizer::Role::activation_signed : LsqQuantizer::Role::activation, bits);
}

std::unique_ptr<Quantizer> from_stats(const QuantStats& s) {
  const auto role = s.kind == "lsq_weight"             ? LsqQuantizer::Role::weight
                    : s.kind == "lsq_weight_symmetric" ? LsqQuantizer::Role::weight_symmetric
                    : s.kind == "lsq_activation"       ? LsqQuantizer::Role::activation
                                                       : LsqQuantizer::Role::activation_signed;
  auto l = std::make_unique<LsqQuantizer>(role, s.bits);
  l->step().data()[0] = static_cast<float>(s.step);
  l->set_calibrated(true);
  return l;
}
}  // namespace

QuantizerFamily lsq_family() {
  QuantizerFamily f;
  f.name = "lsq";
  f.summary = "learned step size s";
  f.options = {Option::symmetric_weights};
  f.recorded = {{"lsq_symmetric", &QuantizerOptions::symmetric}};
  f.make_weight = make_weight;
  f.make_activation = make_activation;
  const std::string note = "LSQ layers: the c columns hold the step s";
  for (const char* kind : {"lsq_weight", "lsq_weight_symmetric", "lsq_activation", "lsq_activation_signed"})
    f.stats_kinds.push_back({kind, ReportColumns::scalar, note, note + "; prune = s/2, clip = (Q_P - 1/2)*s"});
  f.from_stats = from_stats;
  f.input_rule =
      "x_bar = round(clamp(x/s, 0, 2^bits - 1)) * s; for signed_input layers x_bar = round(clamp(x/s, "
      "-2^(bits-1), 2^(bits-1) - 1)) * s; round is half away from zero";
  return f;
}

}  // namespace quant
