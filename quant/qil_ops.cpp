// QIL weight and activation quantizer ops: forward and backward each one OpenMP pass over the tensor.
// Backward recomputes each element's region (pruned / inside / clipped) from the saved input and the scalars
// captured at forward time, so nothing but the input is kept. Gradients are written into fresh buffers
// (engine::record_fresh) and added to the others; scalar gradients sum in float over blocks of kSumBlock elements
// and in double across blocks and threads (in thread order).
#include "quant/qil_ops.h"

// Floating-point exceptions are never enabled in qil. Without this GCC refuses to turn a comparison-driven
// select (the clamps below) into vector code, and every loop of this file would run one element at a time.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "quant/kernel_util.h"
#include "quant/fast_math.h"

namespace quant {

using engine::DType;

namespace {
using namespace kernel;
float scalar_of(const char* op, const char* name, const Tensor& t) {
  QIL_CHECK(t.defined(), op, ": undefined ", name);
  QIL_CHECK(t.dtype() == DType::f32 && t.numel() == 1, op, ": ", name,
            " must be a one-element f32 tensor, got ", t);
  const float v = t.item();
  QIL_CHECK(std::isfinite(v), op, ": ", name, " is not finite (", v, ")");
  return v;
}

// The profile counter of an op's backward (op is one of the four literals below).
const char* backward_name(const char* op) {
  const std::string o = op;
  if (o == "qil_weight") return "qil_weight.bwd";
  if (o == "qil_activation") return "qil_activation.bwd";
  if (o == "qil_weight_transform") return "qil_weight_transform.bwd";
  return "qil_activation_transform.bwd";
}

// The interval [c − d, c + d] and α = 1/(2d), as captured by a forward call.
struct Interval {
  float c, d, lo, hi, inv2d;
};

Interval interval_of(const char* op, const Tensor& c, const Tensor& d) {
  const float cv = scalar_of(op, "c", c);
  const float dv = scalar_of(op, "d", d);
  QIL_CHECK(dv > 0.f, op, ": d must be positive, got ", dv, " (c = ", cv, ")");
  return {cv, dv, cv - dv, cv + dv, 0.5f / dv};
}

// u(v) = (v − c)/(2d) + 0.5, clamped so that rounding at the interval's edges cannot leave [0, 1].
inline float u_of(float v, float c, float inv2d) {
  float u = (v - c) * inv2d + 0.5f;
  u = u < 0.f ? 0.f : u;
  return u > 1.f ? 1.f : u;
}

const float kLnUFloor = std::log(kQilUFloor);

// ln max(u, 1e-30): finite for u = 0.
inline float log_unit(float u) { return fast_log(u < 1e-30f ? 1e-30f : u); }
// u^γ for u in [0, 1], exactly 0 at u = 0 and 1 at u = 1.
inline float pow_unit(float u, float g) { return fast_exp(g * log_unit(u)) * static_cast<float>(u > 0.f); }

// The kernels run on each thread's share of the elements [b, e) (split_range) and are compiled twice, for AVX2
// and for the baseline (kernel_util.h: use_avx2). The AVX2 version is 8 floats wide instead of 4; it was measured
// to cut qil_activation's forward by about 40% (docs/performance-history.md). tests/quant/test_qil_ops.cpp compares the
// two builds.

// Symmetric forward: ŵ = sign(w)·u(|w|)^γ inside, 0 below, sign(w) above; kDiscretize rounds to q levels.
// Templated so that each variant is a branch-free loop the compiler can vectorize.
template <bool kUnitGamma, bool kDiscretize>
__attribute__((always_inline)) inline void symmetric_forward(const float* wp, float* yp, int64_t b, int64_t e,
                                                             const Interval iv, float g, float qf) {
  // Scalars in locals and every value computed unconditionally, then selected: that keeps the loop
  // branch-free for the vectorizer.
  const float c = iv.c, lo = iv.lo, hi = iv.hi, inv2d = iv.inv2d;
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float a = std::fabs(wp[i]);
    const float s = 1.f - 2.f * static_cast<float>(wp[i] < 0.f);
    const float u = u_of(a, c, inv2d);
    float h = kUnitGamma ? u : pow_unit(u, g);  // |ŵ|
    h = a < lo ? 0.f : h;                        // pruned
    h = a > hi ? 1.f : h;                        // clipped
    if (kDiscretize)
      yp[i] = s * static_cast<float>(round_nonneg(h * qf)) / qf + 0.f;  // + 0 turns -0 into +0
    else
      yp[i] = s * h + 0.f;
  }
}

// Symmetric backward on [b, e): writes (kFresh: the buffer holds no gradient yet) or adds gy·∂ŵ/∂w into dw (if
// given) and returns Σ s·t, Σ s·t·(|w| − c) and Σ gy·s·u^γ·ln u, where t = gy·∂ŵ/∂w; the caller turns them into
// the gradients to c, d and γ. Inside the interval, with dh = γ·u^(γ−1): ∂ŵ/∂w = dh/(2d), ∂ŵ/∂c = −s·dh/(2d),
// ∂ŵ/∂d = −s·dh·(|w| − c)/(2d²), ∂ŵ/∂γ = s·u^γ·ln u; u floored at kQilUFloor inside ln u and u^(γ−1).
// The sums run in float over blocks of kSumBlock elements and in double across blocks, like unsigned_backward's.
struct ScalarGrads {
  double c = 0.0, d = 0.0, g = 0.0;
  ScalarGrads& operator+=(const ScalarGrads& o) {
    c += o.c, d += o.d, g += o.g;
    return *this;
  }
};
template <bool kUnitGamma, bool kNeedGamma, bool kNeedW, bool kFresh>
__attribute__((always_inline)) inline ScalarGrads symmetric_backward(const float* wv, const float* gyp, float* dw,
                                                                     int64_t b, int64_t e, const Interval iv,
                                                                     float g) {
  const float c = iv.c, lo = iv.lo, hi = iv.hi, inv2d = iv.inv2d;
  ScalarGrads out;
  for (int64_t blk = b; blk < e; blk += kSumBlock) {
    const int64_t end = std::min(e, blk + kSumBlock);
    float sc = 0.f, sd = 0.f, sg = 0.f;
#pragma omp simd reduction(+ : sc, sd, sg)
    for (int64_t i = blk; i < end; ++i) {
      const float a = std::fabs(wv[i]);
      const float s = 1.f - 2.f * static_cast<float>(wv[i] < 0.f);
      // Pruned or clipped: ŵ is constant there, every gradient 0. A 0/1 float mask rather than a select keeps
      // this reduction loop vectorized.
      const float inside = static_cast<float>(a >= lo) * static_cast<float>(a <= hi);
      const float u = u_of(a, c, inv2d);
      float dh = 1.f, ph = u, lf = 0.f;
      if (!kUnitGamma || kNeedGamma) {
        const float lu = log_unit(u);
        lf = lu < kLnUFloor ? kLnUFloor : lu;  // ln max(u, floor)
        if (!kUnitGamma) {
          dh = g * fast_exp((g - 1.f) * lf);
          ph = fast_exp(g * lu) * static_cast<float>(u > 0.f);
        }
      }
      const float go = inside * gyp[i];
      const float t = go * dh * inv2d;  // gy·∂ŵ/∂w
      if (kNeedW) dw[i] = kFresh ? t : dw[i] + t;
      sc += s * t;
      sd += s * t * (a - c);
      if (kNeedGamma) sg += go * s * ph * lf;
    }
    out.c += sc;
    out.d += sd;
    out.g += sg;
  }
  return out;
}

// The twelve variants of symmetric_backward behind one call, for each ISA (a macro, like the forward's).
#define QIL_SYM_BACKWARD_W(U, G)                                                    \
  if (!dw) return symmetric_backward<U, G, false, false>(wv, gyp, dw, b, e, iv, g); \
  if (fresh) return symmetric_backward<U, G, true, true>(wv, gyp, dw, b, e, iv, g); \
  return symmetric_backward<U, G, true, false>(wv, gyp, dw, b, e, iv, g);
#define QIL_SYM_BACKWARD_BODY                                        \
  if (unit_gamma) {                                                  \
    if (need_g) { QIL_SYM_BACKWARD_W(true, true) }                   \
    QIL_SYM_BACKWARD_W(true, false)                                  \
  }                                                                  \
  if (need_g) { QIL_SYM_BACKWARD_W(false, true) }                    \
  QIL_SYM_BACKWARD_W(false, false)
QIL_AVX2 ScalarGrads symmetric_backward_avx2(const float* wv, const float* gyp, float* dw, int64_t b, int64_t e,
                                             const Interval iv, float g, bool unit_gamma, bool need_g, bool fresh) {
  QIL_SYM_BACKWARD_BODY
}
ScalarGrads symmetric_backward_base(const float* wv, const float* gyp, float* dw, int64_t b, int64_t e,
                                    const Interval iv, float g, bool unit_gamma, bool need_g, bool fresh) {
  QIL_SYM_BACKWARD_BODY
}
#undef QIL_SYM_BACKWARD_BODY
#undef QIL_SYM_BACKWARD_W

// The four variants of symmetric_forward behind one call, for each ISA (the same body twice: it is a macro so
// that each copy is compiled with its own target).
#define QIL_SYMMETRIC_BODY                                                         \
  if (unit_gamma) {                                                                \
    if (discretize) symmetric_forward<true, true>(wp, yp, b, e, iv, g, qf);        \
    else symmetric_forward<true, false>(wp, yp, b, e, iv, g, qf);                  \
  } else {                                                                         \
    if (discretize) symmetric_forward<false, true>(wp, yp, b, e, iv, g, qf);       \
    else symmetric_forward<false, false>(wp, yp, b, e, iv, g, qf);                 \
  }
QIL_AVX2 void symmetric_forward_avx2(const float* wp, float* yp, int64_t b, int64_t e, const Interval iv, float g,
                                     float qf, bool unit_gamma, bool discretize) {
  QIL_SYMMETRIC_BODY
}
void symmetric_forward_base(const float* wp, float* yp, int64_t b, int64_t e, const Interval iv, float g, float qf,
                            bool unit_gamma, bool discretize) {
  QIL_SYMMETRIC_BODY
}
#undef QIL_SYMMETRIC_BODY

// Unsigned forward: x̂ = 0 below c − d, 1 above c + d, u(x) inside; discretized when kDiscretize.
template <bool kDiscretize>
__attribute__((always_inline)) inline void unsigned_forward(const float* xp, float* yp, int64_t b, int64_t e,
                                                            const Interval iv, float qf) {
  const float c = iv.c, lo = iv.lo, hi = iv.hi, inv2d = iv.inv2d;
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    const float v = xp[i];
    float h = u_of(v, c, inv2d);
    h = v < lo ? 0.f : h;
    h = v > hi ? 1.f : h;
    yp[i] = kDiscretize ? static_cast<float>(round_nonneg(h * qf)) / qf : h;
  }
}

QIL_AVX2 void unsigned_forward_avx2(const float* xp, float* yp, int64_t b, int64_t e, const Interval iv, float qf,
                                    bool discretize) {
  if (discretize) unsigned_forward<true>(xp, yp, b, e, iv, qf);
  else unsigned_forward<false>(xp, yp, b, e, iv, qf);
}
void unsigned_forward_base(const float* xp, float* yp, int64_t b, int64_t e, const Interval iv, float qf,
                           bool discretize) {
  if (discretize) unsigned_forward<true>(xp, yp, b, e, iv, qf);
  else unsigned_forward<false>(xp, yp, b, e, iv, qf);
}

// Unsigned backward on [b, e): dx (when given) gets t = gy·∂x̂/∂x, written when kFresh, else added; returns Σ t and
// Σ t·(x − c). The sums run in float over blocks of kSumBlock elements (float lanes: twice the width of double
// ones) and in double across blocks, so their rounding stays that of a kSumBlock-term float sum.
struct ChunkSums {
  double t = 0.0, tx = 0.0;
  ChunkSums& operator+=(const ChunkSums& o) {
    t += o.t, tx += o.tx;
    return *this;
  }
};
template <bool kNeedX, bool kFresh>
__attribute__((always_inline)) inline ChunkSums unsigned_backward(const float* xv, const float* gyp, float* dx,
                                                                  int64_t b, int64_t e, const Interval iv) {
  const float c = iv.c, lo = iv.lo, hi = iv.hi, inv2d = iv.inv2d;
  ChunkSums out;
  for (int64_t s = b; s < e; s += kSumBlock) {
    const int64_t end = std::min(e, s + kSumBlock);
    float st = 0.f, stx = 0.f;
#pragma omp simd reduction(+ : st, stx)
    for (int64_t i = s; i < end; ++i) {
      const float v = xv[i];
      const float inside = static_cast<float>(v >= lo) * static_cast<float>(v <= hi);  // 0/1 mask
      const float t = inside * gyp[i] * inv2d;                                         // gy·∂x̂/∂x
      if (kNeedX) dx[i] = kFresh ? t : dx[i] + t;
      st += t;
      stx += t * (v - c);
    }
    out.t += st;
    out.tx += stx;
  }
  return out;
}
#define QIL_UNSIGNED_BACKWARD_BODY                                   \
  if (!dx) return unsigned_backward<false, false>(xv, gyp, dx, b, e, iv); \
  if (fresh) return unsigned_backward<true, true>(xv, gyp, dx, b, e, iv); \
  return unsigned_backward<true, false>(xv, gyp, dx, b, e, iv);
QIL_AVX2 ChunkSums unsigned_backward_avx2(const float* xv, const float* gyp, float* dx, int64_t b, int64_t e,
                                          const Interval iv, bool fresh) {
  QIL_UNSIGNED_BACKWARD_BODY
}
ChunkSums unsigned_backward_base(const float* xv, const float* gyp, float* dx, int64_t b, int64_t e,
                                 const Interval iv, bool fresh) {
  QIL_UNSIGNED_BACKWARD_BODY
}
#undef QIL_UNSIGNED_BACKWARD_BODY

// The levels k = round(x̂·q) of unsigned_forward<true> (T = uint8_t) or of symmetric_forward<true, true>
// (T = int8_t, sign(x)·k): the same float operations, so the same k; written as integers.
template <class T>
void activation_codes(const float* xp, T* kp, int64_t n, const Interval iv, float qf) {
  const float c = iv.c, lo = iv.lo, hi = iv.hi, inv2d = iv.inv2d;
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::is_signed_v<T> ? std::fabs(xp[i]) : xp[i];
    float h = u_of(v, c, inv2d);
    h = v < lo ? 0.f : h;
    h = v > hi ? 1.f : h;
    const int32_t k = round_nonneg(h * qf);
    kp[i] = static_cast<T>(std::is_signed_v<T> && xp[i] < 0.f ? -k : k);
  }
}

// Weights and signed activations. gamma undefined means γ = 1 and no gradient to it (the signed
// activation rule). q = 0: no discretizer.
Tensor symmetric_op(const char* op, const Tensor& w, const Tensor& c, const Tensor& d, const Tensor& gamma,
                    int q) {
  engine::ops::OpTimer timer(op);
  check_input(op, w);
  const Interval iv = interval_of(op, c, d);
  const float g = gamma.defined() ? scalar_of(op, "gamma", gamma) : 1.f;
  QIL_CHECK(g > 0.f, op, ": gamma must be positive, got ", g);
  const float qf = static_cast<float>(q);

  Tensor y = Tensor::empty_like(w);
  const float* wp = w.data();
  float* yp = y.data();
  const int64_t n = w.numel();
  const auto kernel = use_avx2() ? symmetric_forward_avx2 : symmetric_forward_base;
  split_range(n, [&](int64_t b, int64_t e) { kernel(wp, yp, b, e, iv, g, qf, g == 1.f, q > 0); });

  std::vector<Tensor> inputs{w, c, d};
  if (gamma.defined()) inputs.push_back(gamma);
  return engine::record_fresh(op, y, std::move(inputs), [ws = w.detach(), iv, g, op](
                                   const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
    engine::ops::OpTimer timer(backward_name(op));
    const float* gyp = gy.data();
    const float* wv = ws.data();
    float* dw = gx[0].defined() ? gx[0].data() : nullptr;
    const bool need_g = gx.size() > 3 && gx[3].defined();
    const int64_t n = ws.numel();
    const auto kernel = use_avx2() ? symmetric_backward_avx2 : symmetric_backward_base;
    const ScalarGrads sums = thread_sum<ScalarGrads>(n, [&](int64_t b, int64_t e) {
      return kernel(wv, gyp, dw, b, e, iv, g, g == 1.f, need_g, dw != nullptr && fresh[0]);
    });
    put_scalar(gx[1], fresh[1], -sums.c);         // ∂L/∂c = −Σ s·t
    put_scalar(gx[2], fresh[2], -sums.d / iv.d);  // ∂L/∂d = −Σ s·t·(|w| − c)/d
    if (need_g) put_scalar(gx[3], fresh[3], sums.g);
  });
}

// Post-ReLU activations: x̂ = 0 below c − d, 1 above c + d, u(x) inside. q = 0: no discretizer.
Tensor unsigned_act_op(const char* op, const Tensor& x, const Tensor& c, const Tensor& d, int q) {
  engine::ops::OpTimer timer(op);
  check_input(op, x);
  const Interval iv = interval_of(op, c, d);
  const float qf = static_cast<float>(q);
  Tensor y = Tensor::empty_like(x);
  const float* xp = x.data();
  float* yp = y.data();
  const int64_t n = x.numel();
  const auto kernel = use_avx2() ? unsigned_forward_avx2 : unsigned_forward_base;
  split_range(n, [&](int64_t b, int64_t e) { kernel(xp, yp, b, e, iv, qf, q > 0); });
  // ∂x̂/∂x = 1/(2d), ∂x̂/∂c = −1/(2d), ∂x̂/∂d = −(x − c)/(2d²) inside; 0 outside.
  // A fresh dx (engine::record_fresh) is written, not zero-filled by autograd and then added to.
  return engine::record_fresh(op, y, {x, c, d}, [xs = x.detach(), iv, op](const Tensor& gy, std::vector<Tensor>& gx,
                                                                          const std::vector<bool>& fresh) {
    engine::ops::OpTimer timer(backward_name(op));
    const float* gyp = gy.data();
    const float* xv = xs.data();
    float* dx = gx[0].defined() ? gx[0].data() : nullptr;
    const int64_t n = xs.numel();
    const auto kernel = use_avx2() ? unsigned_backward_avx2 : unsigned_backward_base;
    const ChunkSums sums = thread_sum<ChunkSums>(
        n, [&](int64_t b, int64_t e) { return kernel(xv, gyp, dx, b, e, iv, dx != nullptr && fresh[0]); });
    put_scalar(gx[1], fresh[1], -sums.t);          // ∂L/∂c = −Σ t
    put_scalar(gx[2], fresh[2], -sums.tx / iv.d);  // ∂L/∂d = −Σ t·(x − c)/d
  });
}

}  // namespace

const char* qil_kernel_isa() { return use_avx2() ? "avx2" : "baseline (sse2)"; }
void set_qil_baseline_kernels(bool force) { kernel::force_baseline_kernels = force; }

int qil_weight_levels(int bits, const char* op) {
  check_bits(bits, op);
  return (1 << (bits - 1)) - 1;
}

int qil_activation_levels(int bits, const char* op) {
  check_bits(bits, op);
  return (1 << bits) - 1;
}

Tensor qil_weight(const Tensor& w, const Tensor& c, const Tensor& d, const Tensor& gamma, int bits) {
  QIL_CHECK(gamma.defined(), "qil_weight: undefined gamma");
  return symmetric_op("qil_weight", w, c, d, gamma, qil_weight_levels(bits, "qil_weight"));
}

Tensor qil_activation(const Tensor& x, const Tensor& c, const Tensor& d, int bits, bool is_signed) {
  if (is_signed)
    return symmetric_op("qil_activation", x, c, d, Tensor(), qil_weight_levels(bits, "qil_activation"));
  return unsigned_act_op("qil_activation", x, c, d, qil_activation_levels(bits, "qil_activation"));
}

Tensor qil_activation_codes(const Tensor& x, const Tensor& c, const Tensor& d, int bits, bool is_signed) {
  const char* op = "qil_activation_codes";
  engine::ops::OpTimer timer(op);
  check_input(op, x);
  const Interval iv = interval_of(op, c, d);
  const int q = is_signed ? qil_weight_levels(bits, op) : qil_activation_levels(bits, op);
  Tensor k = Tensor::empty(x.shape(), is_signed ? DType::s8 : DType::u8, x.layout());
  if (is_signed) activation_codes(x.data(), k.data<int8_t>(), x.numel(), iv, static_cast<float>(q));
  else activation_codes(x.data(), k.data<uint8_t>(), x.numel(), iv, static_cast<float>(q));
  return k;
}

Tensor qil_weight_transform(const Tensor& w, const Tensor& c, const Tensor& d, const Tensor& gamma) {
  QIL_CHECK(gamma.defined(), "qil_weight_transform: undefined gamma");
  return symmetric_op("qil_weight_transform", w, c, d, gamma, 0);
}

Tensor qil_activation_transform(const Tensor& x, const Tensor& c, const Tensor& d, bool is_signed) {
  if (is_signed) return symmetric_op("qil_activation_transform", x, c, d, Tensor(), 0);
  return unsigned_act_op("qil_activation_transform", x, c, d, 0);
}

}  // namespace quant
