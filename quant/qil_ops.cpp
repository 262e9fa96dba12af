// QIL weight and activation quantizer ops: forward and backward each one OpenMP pass over the tensor.
// Backward recomputes each element's region (pruned / inside / clipped) from the saved input and the scalars
// captured at forward time, so nothing but the input is kept. Scalar gradients reduce in double and
// accumulate (+=) like every other gradient.
#include "quant/qil_ops.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"

namespace quant {

using engine::DType;

namespace {
// Large loops only: thread start-up costs more than a few thousand floats.
constexpr int64_t kParallelMin = 16384;

void check_input(const char* op, const Tensor& t) {
  QIL_CHECK(t.defined(), op, ": undefined input");
  QIL_CHECK(t.dtype() == DType::f32, op, ": expected an f32 tensor, got ", t);
}

float scalar_of(const char* op, const char* name, const Tensor& t) {
  QIL_CHECK(t.defined(), op, ": undefined ", name);
  QIL_CHECK(t.dtype() == DType::f32 && t.numel() == 1, op, ": ", name,
            " must be a one-element f32 tensor, got ", t);
  const float v = t.item();
  QIL_CHECK(std::isfinite(v), op, ": ", name, " is not finite (", v, ")");
  return v;
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
inline float u_of(float v, const Interval& iv) {
  return std::min(1.f, std::max(0.f, (v - iv.c) * iv.inv2d + 0.5f));
}

// q = 0 means "no discretizer" (the transform-only ops).
inline float discretize(float h, float q) { return q > 0.f ? std::round(h * q) / q : h; }

// Weights and signed activations: ŵ = sign(w)·u(|w|)^γ inside, 0 below, sign(w) above.
// gamma undefined means γ = 1 and no gradient to it (the signed activation rule).
Tensor symmetric_op(const char* op, const Tensor& w, const Tensor& c, const Tensor& d, const Tensor& gamma,
                    int q) {
  check_input(op, w);
  const Interval iv = interval_of(op, c, d);
  const float g = gamma.defined() ? scalar_of(op, "gamma", gamma) : 1.f;
  QIL_CHECK(g > 0.f, op, ": gamma must be positive, got ", g);
  const bool unit_gamma = g == 1.f;
  const float qf = static_cast<float>(q);

  Tensor y = Tensor::empty(w.shape());
  const float* wp = w.data();
  float* yp = y.data();
  const int64_t n = w.numel();
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(wp[i]);
    const float s = wp[i] < 0.f ? -1.f : 1.f;
    float h;
    if (a < iv.lo) h = 0.f;
    else if (a > iv.hi) h = s;
    else {
      const float u = u_of(a, iv);
      h = s * (unit_gamma ? u : std::pow(u, g));
    }
    yp[i] = discretize(h, qf);
  }

  std::vector<Tensor> inputs{w, c, d};
  if (gamma.defined()) inputs.push_back(gamma);
  return engine::record(op, y, std::move(inputs), [ws = w.detach(), iv, g](const Tensor& gy,
                                                                           std::vector<Tensor>& gx) {
    const float* gyp = gy.data();
    const float* wv = ws.data();
    float* dw = gx[0].defined() ? gx[0].data() : nullptr;
    const bool need_c = gx[1].defined(), need_d = gx[2].defined();
    const bool need_g = gx.size() > 3 && gx[3].defined();
    const bool unit_gamma = g == 1.f;
    const int64_t n = ws.numel();
    double gc = 0.0, gd = 0.0, gg = 0.0;
#pragma omp parallel for reduction(+ : gc, gd, gg) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(wv[i]);
      if (a < iv.lo || a > iv.hi) continue;  // pruned or clipped: ŵ is constant there
      const float s = wv[i] < 0.f ? -1.f : 1.f;
      const float u = u_of(a, iv);
      const float uf = std::max(u, kQilUFloor);
      // dh = dŵ/du without the sign: γ·u^(γ−1); ph = u^γ (exact, unfloored) for ∂ŵ/∂γ = s·u^γ·ln u.
      float dh = 1.f, lu = 0.f, ph = u;
      if (!unit_gamma || need_g) lu = std::log(uf);
      if (!unit_gamma) {
        const float pf = std::exp(g * lu);
        dh = g * pf / uf;
        ph = u >= kQilUFloor ? pf : std::pow(u, g);
      }
      const float go = gyp[i];
      const float t = go * dh * iv.inv2d;  // go · ∂ŵ/∂w
      if (dw) dw[i] += t;
      if (need_c) gc -= static_cast<double>(s * t);
      if (need_d) gd -= static_cast<double>(s * t) * (a - iv.c) / iv.d;
      if (need_g) gg += static_cast<double>(go * s * ph * lu);
    }
    if (need_c) gx[1].data()[0] += static_cast<float>(gc);
    if (need_d) gx[2].data()[0] += static_cast<float>(gd);
    if (need_g) gx[3].data()[0] += static_cast<float>(gg);
  });
}

// Post-ReLU activations: x̂ = clamp(u(x), 0, 1).
Tensor unsigned_act_op(const char* op, const Tensor& x, const Tensor& c, const Tensor& d, int q) {
  check_input(op, x);
  const Interval iv = interval_of(op, c, d);
  const float qf = static_cast<float>(q);
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.data();
  float* yp = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = xp[i];
    const float h = v < iv.lo ? 0.f : v > iv.hi ? 1.f : u_of(v, iv);
    yp[i] = discretize(h, qf);
  }
  return engine::record(op, y, {x, c, d}, [xs = x.detach(), iv](const Tensor& gy, std::vector<Tensor>& gx) {
    const float* gyp = gy.data();
    const float* xv = xs.data();
    float* dx = gx[0].defined() ? gx[0].data() : nullptr;
    const bool need_c = gx[1].defined(), need_d = gx[2].defined();
    const int64_t n = xs.numel();
    double gc = 0.0, gd = 0.0;
#pragma omp parallel for reduction(+ : gc, gd) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const float v = xv[i];
      if (v < iv.lo || v > iv.hi) continue;
      const float t = gyp[i] * iv.inv2d;  // gy · ∂x̂/∂x
      if (dx) dx[i] += t;
      if (need_c) gc -= t;
      if (need_d) gd -= static_cast<double>(t) * (v - iv.c) / iv.d;
    }
    if (need_c) gx[1].data()[0] += static_cast<float>(gc);
    if (need_d) gx[2].data()[0] += static_cast<float>(gd);
  });
}

void check_bits(int bits, const char* op) {
  QIL_CHECK(bits >= 2 && bits <= 8, op, ": bits must be in 2..8, got ", bits);
}
}  // namespace

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

Tensor qil_weight_transform(const Tensor& w, const Tensor& c, const Tensor& d, const Tensor& gamma) {
  QIL_CHECK(gamma.defined(), "qil_weight_transform: undefined gamma");
  return symmetric_op("qil_weight_transform", w, c, d, gamma, 0);
}

Tensor qil_activation_transform(const Tensor& x, const Tensor& c, const Tensor& d, bool is_signed) {
  if (is_signed) return symmetric_op("qil_activation_transform", x, c, d, Tensor(), 0);
  return unsigned_act_op("qil_activation_transform", x, c, d, 0);
}

}  // namespace quant
