// DoReFa's weight op (a max reduction and one OpenMP pass forward; two passes backward: the reductions the max
// normalization needs, then the gradient) and its two parameterless quantizers.
#include "quant/dorefa.h"

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
#include "quant/kernel_util.h"
#include "quant/fast_math.h"
#include "quant/pact.h"
#include "quant/qil_ops.h"
#include "quant/registry.h"

namespace quant {

using engine::DType;

namespace {
using namespace kernel;
// A select rather than std::max: GCC left std::max<float> an out-of-line call per element here, 40% of the op's
// forward (measured with perf on a 2.4M-weight tensor).
float max_abs(const float* p, int64_t n) {
  float m = 0.f;
#pragma omp parallel for simd reduction(max : m) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(p[i]);
    m = a > m ? a : m;
  }
  return m;
}

// What a forward call fixed: the normalizer M, max|w| (whose holders receive the max term), and whether M is the
// tensor's own (false: a fixed M, no max term, r clamped).
struct Norm {
  float m, max_abs;
  bool own;
};

// The forward on [b, e): y = 2·r − 1, r = tanh(w)/(2M) + 1/2 (rounded to q levels when kRound).
template <bool kRound>
__attribute__((always_inline)) inline void weight_forward(const float* wp, float* yp, int64_t b, int64_t e, Norm nm,
                                                          float qf) {
  const float inv2m = nm.m > 0.f ? 0.5f / nm.m : 0.f;
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    float r = fast_tanh(wp[i]) * inv2m + 0.5f;
    r = r < 0.f ? 0.f : r;  // only a fixed M can move r out of [0, 1] (and float rounding, by an ulp)
    r = r > 1.f ? 1.f : r;
    if (kRound) r = static_cast<float>(round_nonneg(r * qf)) / qf;
    yp[i] = 2.f * r - 1.f;
  }
}

// Σ G·t and the number of elements at max|w| on [b, e) (the max term's two reductions): float lanes over blocks
// of kSumBlock elements, double across blocks.
struct MaxSums {
  double gt = 0.0, ties = 0.0;
  MaxSums& operator+=(const MaxSums& o) {
    gt += o.gt, ties += o.ties;
    return *this;
  }
};
__attribute__((always_inline)) inline MaxSums weight_reductions(const float* wv, const float* gyp, int64_t b,
                                                                int64_t e, float max_abs_w) {
  MaxSums out;
  for (int64_t blk = b; blk < e; blk += kSumBlock) {
    const int64_t end = std::min(e, blk + kSumBlock);
    float sa = 0.f, sb = 0.f;  // sb counts to at most kSumBlock: exact in float
#pragma omp simd reduction(+ : sa, sb)
    for (int64_t i = blk; i < end; ++i) {
      sa += gyp[i] * fast_tanh(wv[i]);
      sb += static_cast<float>(std::fabs(wv[i]) == max_abs_w);
    }
    out.gt += sa;
    out.ties += sb;
  }
  return out;
}

// dw += (or, kFresh, =) G·(1 − t²)/M (inside [0, 1] for a fixed M), minus, at the max, sign(w)·(1 − t²)·max_term,
// on [b, e).
template <bool kFresh>
__attribute__((always_inline)) inline void weight_grad(const float* wv, const float* gyp, float* dw, int64_t b,
                                                       int64_t e, Norm nm, float max_term) {
  const float inv_m = 1.f / nm.m, max_abs_w = nm.max_abs, m = nm.m;
  const bool own = nm.own;
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float t = fast_tanh(wv[i]);
    const float d = 1.f - t * t;
    const float inside = own ? 1.f : static_cast<float>(std::fabs(t) <= m);
    const float at_max = own ? static_cast<float>(std::fabs(wv[i]) == max_abs_w) : 0.f;
    const float s = 1.f - 2.f * static_cast<float>(wv[i] < 0.f);
    const float t_i = inside * gyp[i] * d * inv_m - at_max * s * d * max_term;
    dw[i] = kFresh ? t_i : dw[i] + t_i;
  }
}

// The three kernels for each ISA (kernel_util.h: use_avx2); the same bodies, compiled twice.
#define QIL_DOREFA_KERNELS(SUFFIX, ATTR)                                                                            \
  ATTR void forward_##SUFFIX(const float* wp, float* yp, int64_t b, int64_t e, Norm nm, float qf) {             \
    if (qf > 0.f) weight_forward<true>(wp, yp, b, e, nm, qf);                                                  \
    else weight_forward<false>(wp, yp, b, e, nm, qf);                                                          \
  }                                                                                                             \
  ATTR MaxSums reductions_##SUFFIX(const float* wv, const float* gyp, int64_t b, int64_t e, float max_abs_w) { \
    return weight_reductions(wv, gyp, b, e, max_abs_w);                                                        \
  }                                                                                                             \
  ATTR void grad_##SUFFIX(const float* wv, const float* gyp, float* dw, int64_t b, int64_t e, Norm nm,          \
                          float max_term, bool fresh) {                                                         \
    if (fresh) weight_grad<true>(wv, gyp, dw, b, e, nm, max_term);                                             \
    else weight_grad<false>(wv, gyp, dw, b, e, nm, max_term);                                                  \
  }
QIL_DOREFA_KERNELS(avx2, QIL_AVX2)
QIL_DOREFA_KERNELS(base, )
#undef QIL_DOREFA_KERNELS

// The whole backward: the max term's reductions (own M only; each thread's sums added in thread order), then
// the gradient pass. dw is written when fresh (engine::record_fresh), else added to.
void weight_backward(const float* wv, const float* gyp, float* dw, int64_t n, Norm nm, bool fresh) {
  if (!(nm.m > 0.f)) {  // all-zero weights: r = 1/2 whatever w does at first order
    if (fresh) std::fill(dw, dw + n, 0.f);
    return;
  }
  const bool wide = use_avx2();
  float max_term = 0.f;  // ΣG·t/(n·M²): the max's share of every element's dependence on M
  if (nm.own) {
    const MaxSums sum = thread_sum<MaxSums>(n, [&](int64_t b, int64_t e) {
      return wide ? reductions_avx2(wv, gyp, b, e, nm.max_abs) : reductions_base(wv, gyp, b, e, nm.max_abs);
    });
    max_term = static_cast<float>(sum.gt / (sum.ties * static_cast<double>(nm.m) * nm.m));
  }
  const auto grad = wide ? grad_avx2 : grad_base;
  split_range(n, [&](int64_t b, int64_t e) { grad(wv, gyp, dw, b, e, nm, max_term, fresh); });
}

// q = 0: the surrogate (no rounding).
Tensor weight_op(const char* op, const char* bwd_name, const Tensor& w, int q, float fixed_m) {
  engine::ops::OpTimer timer(op);
  QIL_CHECK(w.defined(), op, ": undefined input");
  QIL_CHECK(w.dtype() == DType::f32, op, ": expected an f32 tensor, got ", w);
  QIL_CHECK(std::isfinite(fixed_m) && fixed_m >= 0.f, op, ": the fixed normalizer must be >= 0, got ", fixed_m);
  const int64_t n = w.numel();
  const float ma = max_abs(w.data(), n);
  const Norm nm{fixed_m > 0.f ? fixed_m : fast_tanh(ma), ma, !(fixed_m > 0.f)};
  Tensor y = Tensor::empty_like(w);
  const auto forward = use_avx2() ? forward_avx2 : forward_base;
  const float* wp = w.data();
  float* yp = y.data();
  split_range(n, [&](int64_t b, int64_t e) { forward(wp, yp, b, e, nm, static_cast<float>(q)); });
  // A fresh dw (engine::record_fresh) is written, not zero-filled by autograd and then added to.
  return engine::record_fresh(op, y, {w}, [ws = w.detach(), nm, bwd_name](const Tensor& gy, std::vector<Tensor>& gx,
                                                                          const std::vector<bool>& fresh) {
    engine::ops::OpTimer timer(bwd_name);
    if (!gx[0].defined()) return;
    weight_backward(ws.data(), gy.data(), gx[0].data(), ws.numel(), nm, fresh[0]);
  });
}
}  // namespace

int dorefa_weight_levels(int bits, const char* op) {
  QIL_CHECK(bits >= 2 && bits <= 8, op, ": bits must be in 2..8, got ", bits);
  return (1 << bits) - 1;
}

Tensor dorefa_weight(const Tensor& w, int bits, float fixed_m) {
  return weight_op("dorefa_weight", "dorefa_weight.bwd", w, dorefa_weight_levels(bits), fixed_m);
}

Tensor dorefa_weight_transform(const Tensor& w, float fixed_m) {
  return weight_op("dorefa_weight_transform", "dorefa_weight_transform.bwd", w, 0, fixed_m);
}

// ---- weights ----------------------------------------------------------------------------------------------

DorefaWeightQuantizer::DorefaWeightQuantizer(int bits) : bits_(bits) {
  dorefa_weight_levels(bits, "DorefaWeightQuantizer");
}

const char* DorefaWeightQuantizer::kernel_isa() const { return qil_kernel_isa(); }

void DorefaWeightQuantizer::set_bits(int bits) {
  dorefa_weight_levels(bits, "DorefaWeightQuantizer::set_bits");
  bits_ = bits;
}

QuantStats DorefaWeightQuantizer::stats() const {
  QuantStats st;
  st.kind = kind();
  st.bits = bits_;
  const int q = positive_levels();
  st.levels_total = q + 1;
  st.tanh_max = fixed_m_;
  st.prune_threshold = 0.0;
  // tanh(w) >= M·(1 − 1/q) <=> r >= 1 − 1/(2q) <=> round(q·r) = q.
  st.clip_threshold = fixed_m_ > 0.f ? std::atanh(std::min(1.0, fixed_m_ * (1.0 - 1.0 / q))) : 0.0;
  return st;
}

QuantStats DorefaWeightQuantizer::stats(const Tensor& w) const {
  QuantStats st = stats();
  engine::NoGradGuard ng;
  const Tensor y = (*this)(w);
  const int q = positive_levels();
  if (fixed_m_ <= 0.f) {
    st.tanh_max = fast_tanh(max_abs(w.data(), w.numel()));  // the M the op used
    st.clip_threshold = std::atanh(std::min(1.0, st.tanh_max * (1.0 - 1.0 / q)));
  }
  std::vector<int64_t> hist(static_cast<size_t>(q + 1), 0);  // w̄ = 2k/q − 1, k in [0, q]
  const float* yp = y.data();
  for (int64_t i = 0; i < y.numel(); ++i) {
    const long k = std::lround((static_cast<double>(yp[i]) + 1.0) * q / 2.0);
    ++hist[static_cast<size_t>(std::clamp<long>(k, 0, q))];
  }
  const double n = y.numel() > 0 ? static_cast<double>(y.numel()) : 1.0;
  st.pruned_fraction = 0.0;
  st.clipped_fraction = static_cast<double>(hist.front() + hist.back()) / n;
  st.levels_used = static_cast<int>(std::count_if(hist.begin(), hist.end(), [](int64_t h) { return h > 0; }));
  return st;
}

// ---- activations ------------------------------------------------------------------------------------------

DorefaActQuantizer::DorefaActQuantizer(int bits, bool is_signed)
    : bits_(bits), is_signed_(is_signed), one_(Tensor::scalar(1.f)) {
  pact_levels(bits, is_signed, "DorefaActQuantizer");
}

void DorefaActQuantizer::set_bits(int bits) {
  pact_levels(bits, is_signed_, "DorefaActQuantizer::set_bits");
  bits_ = bits;
}

int DorefaActQuantizer::positive_levels() const { return pact_levels(bits_, is_signed_); }

Tensor DorefaActQuantizer::operator()(const Tensor& x) const { return pact_quantize(x, one_, bits_, is_signed_); }

Tensor DorefaActQuantizer::transform(const Tensor& x) const { return pact_transform(x, one_, is_signed_); }

QuantStats DorefaActQuantizer::stats() const {
  QuantStats st;
  st.kind = kind();
  st.bits = bits_;
  const int q = positive_levels();
  st.levels_total = is_signed_ ? 2 * q + 1 : q + 1;
  st.alpha = 1.0;
  st.prune_threshold = 1.0 / (2.0 * q);
  st.clip_threshold = 1.0 - 1.0 / (2.0 * q);
  return st;
}

QuantStats DorefaActQuantizer::stats(const Tensor& x) const {
  QuantStats st = stats();
  engine::NoGradGuard ng;
  clip_level_stats((*this)(x), 1.0, positive_levels(), is_signed_, st);
  return st;
}

LevelRule DorefaActQuantizer::level_rule() const { return pact_level_rule(1.f, positive_levels(), is_signed_); }

// ---- the family -------------------------------------------------------------------------------------------

namespace {
std::unique_ptr<Quantizer> make_weight(int bits, const QuantizerOptions& /*o*/) {
  return std::make_unique<DorefaWeightQuantizer>(bits);
}

std::unique_ptr<Quantizer> make_activation(int bits, const QuantizerOptions& o) {
  return std::make_unique<DorefaActQuantizer>(bits, o.is_signed);
}

std::unique_ptr<Quantizer> from_stats(const QuantStats& s) {
  if (s.kind == "dorefa_weight") {
    auto w = std::make_unique<DorefaWeightQuantizer>(s.bits);
    w->set_fixed_normalizer(static_cast<float>(s.tanh_max));  // 0 (not reported): the input's own M
    return w;
  }
  return std::make_unique<DorefaActQuantizer>(s.bits, s.kind == "dorefa_activation_signed");
}
}  // namespace

QuantizerFamily dorefa_family() {
  QuantizerFamily f;
  f.name = "dorefa";
  f.summary = "nothing learned";
  f.make_weight = make_weight;
  f.make_activation = make_activation;
  f.stats_kinds = {
      {"dorefa_weight", ReportColumns::none, "",
       "DoReFa weights (also PACT's) learn nothing (-): w_bar = 2*q_k(tanh(w)/(2M) + 1/2) - 1, M = max|tanh w|, "
       "has no 0 level (prune 0); clip = atanh(M*(1 - 1/q))"}};
  for (const char* kind : {"dorefa_activation", "dorefa_activation_signed"})
    f.stats_kinds.push_back({kind, ReportColumns::none, "",
                             "DoReFa inputs learn nothing (-): x_bar = q_k(clip(x, 0, 1)); prune 1/(2q), clip 1 - 1/(2q)"});
  f.from_stats = from_stats;
  f.input_rule =
      "x_bar = round(clamp(x, 0, 1) * q)/q with q = 2^bits - 1; for signed_input layers x_bar = sign(x) * "
      "round(min(|x|, 1) * q)/q with q = 2^(bits-1) - 1; round is half away from zero";
  return f;
}

}  // namespace quant
