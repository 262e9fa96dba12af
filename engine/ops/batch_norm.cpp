// 2-D batch normalization on plain NCHW with OpenMP loops: training mode (batch statistics, running buffers
// updated in place) and eval mode (running statistics), each with its backward. Own loops rather than oneDNN:
// oneDNN 2.6 runs plain-NCHW batch norm on a generic reference-grade kernel (ncsp_bnorm) that cost half of a
// ResNet-20 training step; one thread per channel over contiguous (H, W) planes is memory-bound instead.
// Blocked (nChw16c, or nChw8c on AVX2) inputs run the same formulas with one block of channels per vector and
// keep their layout.
// Eval-mode backward is real, not an error: quantizer-only training runs BN frozen in eval mode and still
// needs the gradient to flow through it (to x, and to gamma/beta if they ask).
// batch_norm2d_relu is the same op with the ReLU after it fused into both passes: forward writes max(y, 0),
// backward masks the incoming gradient by recomputing y's sign from x (no extra read of the output).
// The sign must come out exactly as forward computed it: x·scale + shift is rounded twice in both (no
// contraction into an FMA on one side only), and the ReLU's compare-and-select vectorizes without traps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#endif
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace engine::ops {

namespace {

constexpr int64_t kParallelMin = 16384;

// One output element: x·scale + shift, then the ReLU when fused. Backward recomputes its sign.
template <bool Relu>
inline float bn_out(float x, float sc, float sh) {
  const float v = x * sc + sh;
  return Relu ? (v > 0.f ? v : 0.f) : v;
}
// The gradient that reaches the normalization: gy, or 0 where the fused ReLU output 0 (bn_out's v <= 0).
template <bool Relu>
inline float bn_grad(float gy, float x, float sc, float sh) {
  if (!Relu) return gy;
  const float v = x * sc + sh;
  return v > 0.f ? gy : 0.f;
}

// Float lanes within a plane (vectorized), double across planes: a channel can hold millions of values.
double plane_sum(const float* p, int64_t len) {
  float a = 0.f;
#pragma omp simd reduction(+ : a)
  for (int64_t k = 0; k < len; ++k) a += p[k];
  return a;
}
double plane_centred_squares(const float* p, int64_t len, float mu) {
  float a = 0.f;
#pragma omp simd reduction(+ : a)
  for (int64_t k = 0; k < len; ++k) a += (p[k] - mu) * (p[k] - mu);
  return a;
}

// Calls f(std::integral_constant<int64_t, B>) with B = block_channels(): the blocked kernels below take the
// block width as a compile-time constant (their inner loops are one vector of B lanes).
template <class F>
void with_block(F&& f) {
  if (block_channels() == 8)
    f(std::integral_constant<int64_t, 8>{});
  else
    f(std::integral_constant<int64_t, 16>{});
}

// Per-channel sums of t1(o, ch) and t2(o, ch) over a blocked (N, C/B, H, W, B) tensor, o the memory index
// and ch its channel. Threads split the (image, block) spans, each with float lanes, and merge in double:
// with few channel blocks (16 channels is one or two blocks) a split by channel would leave threads idle.
template <int64_t B, class T1, class T2>
void blocked_channel_sums(int64_t n, int64_t c, int64_t plane, T1 t1, T2 t2, double* s1, double* s2) {
  const int64_t cb = c / B;
  std::fill(s1, s1 + c, 0.0);
  std::fill(s2, s2 + c, 0.0);
#pragma omp parallel if (n * c * plane > kParallelMin)
  {
    std::vector<double> l1(static_cast<size_t>(c), 0.0), l2(static_cast<size_t>(c), 0.0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n * cb; ++i) {
      const int64_t g = i % cb, base = i * plane * B;
      float a[B] = {}, b[B] = {};
      for (int64_t k = 0; k < plane; ++k) {
        const int64_t o = base + k * B;
#pragma omp simd
        for (int64_t l = 0; l < B; ++l) {
          a[l] += t1(o + l, g * B + l);
          b[l] += t2(o + l, g * B + l);
        }
      }
      for (int64_t l = 0; l < B; ++l) {
        l1[g * B + l] += a[l];
        l2[g * B + l] += b[l];
      }
    }
#pragma omp critical
    for (int64_t ch = 0; ch < c; ++ch) {
      s1[ch] += l1[ch];
      s2[ch] += l2[ch];
    }
  }
}

// Where the elements of one tensor live: (N, C, H, W) plain, or blocked (N, C/B, H, W, B).
struct BnGeom {
  int64_t n, c, plane;
  bool blocked;
};

// Batch mean and biased variance per channel into mp, vp: two passes, the mean and then the centred squares
// (no cancellation in E[x²] − E[x]²). B: the block width of a blocked x.
template <int64_t B>
void batch_statistics(const float* xp, const BnGeom& s, float* mp, float* vp) {
  const double m = static_cast<double>(s.n * s.plane);
  if (s.blocked) {
    std::vector<double> s1(static_cast<size_t>(s.c)), s2(static_cast<size_t>(s.c));
    auto zero = [](int64_t, int64_t) { return 0.f; };
    blocked_channel_sums<B>(s.n, s.c, s.plane, [xp](int64_t o, int64_t) { return xp[o]; }, zero, s1.data(),
                            s2.data());
    for (int64_t ch = 0; ch < s.c; ++ch) mp[ch] = static_cast<float>(s1[ch] / m);
    blocked_channel_sums<B>(
        s.n, s.c, s.plane, [xp, mp](int64_t o, int64_t ch) { return (xp[o] - mp[ch]) * (xp[o] - mp[ch]); }, zero,
        s1.data(), s2.data());
    for (int64_t ch = 0; ch < s.c; ++ch) vp[ch] = static_cast<float>(s1[ch] / m);
    return;
  }
#pragma omp parallel for schedule(static) if (s.n * s.c * s.plane > kParallelMin)
  for (int64_t ch = 0; ch < s.c; ++ch) {
    double sum = 0.0;
    for (int64_t i = 0; i < s.n; ++i) sum += plane_sum(xp + (i * s.c + ch) * s.plane, s.plane);
    const float mu = static_cast<float>(sum / m);
    double q = 0.0;
    for (int64_t i = 0; i < s.n; ++i) q += plane_centred_squares(xp + (i * s.c + ch) * s.plane, s.plane, mu);
    mp[ch] = mu;
    vp[ch] = static_cast<float>(q / m);
  }
}

// y = bn_out(x, scale[ch], shift[ch]) over every element; one (image, channel or channel block) span per
// iteration.
template <bool Relu, int64_t B>
void scale_shift(const float* xp, float* yp, const BnGeom& s, const float* scale, const float* shift) {
  const int64_t lanes = s.blocked ? B : 1, spans = s.n * (s.c / lanes);
#pragma omp parallel for schedule(static) if (s.n * s.c * s.plane > kParallelMin)
  for (int64_t i = 0; i < spans; ++i) {
    const int64_t ch0 = (i % (s.c / lanes)) * lanes, base = i * s.plane * lanes;
    if (s.blocked) {
      for (int64_t k = 0; k < s.plane; ++k) {
        const int64_t o = base + k * B;
#pragma omp simd
        for (int64_t l = 0; l < B; ++l) yp[o + l] = bn_out<Relu>(xp[o + l], scale[ch0 + l], shift[ch0 + l]);
      }
    } else {
      const float sc = scale[ch0], sh = shift[ch0];
#pragma omp simd
      for (int64_t k = 0; k < s.plane; ++k) yp[base + k] = bn_out<Relu>(xp[base + k], sc, sh);
    }
  }
}

// Per channel: Σ g and Σ g·(x − mean), g = bn_grad(gy) (the gradient past the fused ReLU).
template <bool Relu, int64_t B>
void grad_sums(const float* xp, const float* gyp, const BnGeom& s, const float* mp, const float* sc, const float* sh,
               double* sg, double* sgx) {
  if (s.blocked) {
    auto g = [=](int64_t o, int64_t ch) { return bn_grad<Relu>(gyp[o], xp[o], sc[ch], sh[ch]); };
    blocked_channel_sums<B>(
        s.n, s.c, s.plane, g, [=](int64_t o, int64_t ch) { return g(o, ch) * (xp[o] - mp[ch]); }, sg, sgx);
    return;
  }
#pragma omp parallel for schedule(static) if (s.n * s.c * s.plane > kParallelMin)
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const float mu = mp[ch], scale = sc[ch], shift = sh[ch];
    double tg = 0.0, tgx = 0.0;
    for (int64_t i = 0; i < s.n; ++i) {
      const float* xr = xp + (i * s.c + ch) * s.plane;
      const float* gr = gyp + (i * s.c + ch) * s.plane;
      float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
      for (int64_t k = 0; k < s.plane; ++k) {
        const float gk = bn_grad<Relu>(gr[k], xr[k], scale, shift);
        a += gk;
        b += gk * (xr[k] - mu);
      }
      tg += a;
      tgx += b;
    }
    sg[ch] = tg;
    sgx[ch] = tgx;
  }
}

// Per-channel coefficients of dx = k1 (g − mean_g − (x − mean) mean_gx).
struct InputGradCoef {
  std::vector<float> k1, mean_g, mean_gx;
};

// dx += k1 (g − mean_g − (x − mean) mean_gx) over every element, g = bn_grad(gy); dx = when Overwrite (a
// fresh gradient buffer, autograd.h).
template <bool Relu, bool Overwrite, int64_t B>
void input_grad(const float* xp, const float* gyp, float* dx, const BnGeom& s, const float* mp, const float* sc,
                const float* sh, const InputGradCoef& k) {
  const int64_t lanes = s.blocked ? B : 1, spans = s.n * (s.c / lanes);
#pragma omp parallel for schedule(static) if (s.n * s.c * s.plane > kParallelMin)
  for (int64_t i = 0; i < spans; ++i) {
    const int64_t ch0 = (i % (s.c / lanes)) * lanes, base = i * s.plane * lanes;
    const float *k1 = &k.k1[ch0], *mg = &k.mean_g[ch0], *mgx = &k.mean_gx[ch0], *mu = mp + ch0, *a = sc + ch0,
                *b = sh + ch0;
    if (s.blocked) {
      for (int64_t q = 0; q < s.plane; ++q) {
        const int64_t o = base + q * B;
#pragma omp simd
        for (int64_t l = 0; l < B; ++l) {
          const float g = bn_grad<Relu>(gyp[o + l], xp[o + l], a[l], b[l]);
          const float d = k1[l] * (g - mg[l] - (xp[o + l] - mu[l]) * mgx[l]);
          dx[o + l] = Overwrite ? d : dx[o + l] + d;
        }
      }
    } else {
#pragma omp simd
      for (int64_t q = 0; q < s.plane; ++q) {
        const float g = bn_grad<Relu>(gyp[base + q], xp[base + q], a[0], b[0]);
        const float d = k1[0] * (g - mg[0] - (xp[base + q] - mu[0]) * mgx[0]);
        dx[base + q] = Overwrite ? d : dx[base + q] + d;
      }
    }
  }
}

// What backward needs of a forward: its input, gamma, the statistics it normalized with and the per-channel
// scale and shift it applied (the fused ReLU's sign is recomputed from them).
struct BnSaved {
  Tensor x, gamma, mean, var, scale, shift;  // x (N, C, H, W); the rest (C)
  bool training;
  bool relu;
  float eps;
};

// Gradients of x, gamma and beta, each added to its buffer or written into it when fresh (autograd.h).
template <bool Relu>
void bn_backward(const BnSaved& sv, const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
  const BnGeom s{sv.x.size(0), sv.x.size(1), sv.x.size(2) * sv.x.size(3), sv.x.layout() == Layout::blocked};
  const double m = static_cast<double>(s.n * s.plane);
  const float *xp = sv.x.data(), *gyp = gy.data(), *mp = sv.mean.data(), *vp = sv.var.data();
  const float *sc = sv.scale.data(), *sh = sv.shift.data();
  const float* gp = sv.gamma.defined() ? sv.gamma.data() : nullptr;
  float* dx = gx[0].defined() ? gx[0].data() : nullptr;
  float* dg = gx.size() > 1 && gx[1].defined() ? gx[1].data() : nullptr;
  float* db = gx.size() > 2 && gx[2].defined() ? gx[2].data() : nullptr;
  std::vector<double> sg(static_cast<size_t>(s.c)), sgx(static_cast<size_t>(s.c));
  // Σ g, Σ g·(x − μ): dβ, dγ, the dx terms.
  with_block([&](auto blk) { grad_sums<Relu, decltype(blk)::value>(xp, gyp, s, mp, sc, sh, sg.data(), sgx.data()); });
  InputGradCoef k{std::vector<float>(s.c), std::vector<float>(s.c), std::vector<float>(s.c)};
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const float inv_std = 1.f / std::sqrt(vp[ch] + sv.eps);
    const double sgx_hat = sgx[ch] * inv_std;  // Σ g·x̂
    if (db) db[ch] = (fresh[2] ? 0.f : db[ch]) + static_cast<float>(sg[ch]);
    if (dg) dg[ch] = (fresh[1] ? 0.f : dg[ch]) + static_cast<float>(sgx_hat);
    // Training: dx = γ/σ (g − Σg/M − x̂ Σg·x̂/M); eval (constant statistics): dx = γ/σ g.
    k.k1[ch] = (gp ? gp[ch] : 1.f) * inv_std;
    k.mean_g[ch] = sv.training ? static_cast<float>(sg[ch] / m) : 0.f;
    k.mean_gx[ch] = sv.training ? static_cast<float>(sgx_hat / m) * inv_std : 0.f;
  }
  with_block([&](auto blk) {
    constexpr int64_t b = decltype(blk)::value;
    if (dx && fresh[0])
      input_grad<Relu, true, b>(xp, gyp, dx, s, mp, sc, sh, k);
    else if (dx)
      input_grad<Relu, false, b>(xp, gyp, dx, s, mp, sc, sh, k);
  });
}

void check_channel_vector(const char* op, const char* what, const Tensor& t, int64_t c, const Tensor& x) {
  QIL_CHECK(t.dtype() == DType::f32 && t.dim() == 1 && t.size(0) == c, op, ": ", what, " must be (", c,
            ") for input ", x.shape(), ", got ", t.shape());
}

void check_batch_norm(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                      const Tensor& running_mean, const Tensor& running_var, bool training, float momentum,
                      float eps) {
  QIL_CHECK(x.defined() && x.dtype() == DType::f32 && x.dim() == 4, op, ": input must be f32 (N, C, H, W), got ", x);
  const int64_t c = x.size(1);
  const int64_t m = x.size(0) * x.size(2) * x.size(3);  // values per channel
  QIL_CHECK(gamma.defined() == beta.defined(), op, ": gamma and beta must both be given or both be omitted");
  if (gamma.defined()) {
    check_channel_vector(op, "gamma", gamma, c, x);
    check_channel_vector(op, "beta", beta, c, x);
  }
  const bool track = running_mean.defined() || running_var.defined();
  if (track) {
    QIL_CHECK(running_mean.defined() && running_var.defined(), op,
              ": running_mean and running_var must both be given or both be omitted");
    check_channel_vector(op, "running_mean", running_mean, c, x);
    check_channel_vector(op, "running_var", running_var, c, x);
  }
  QIL_CHECK(training || track, op, ": eval mode needs running statistics (input ", x.shape(), ")");
  QIL_CHECK(!training || m > 1, op, ": training needs more than one value per channel, input ", x.shape());
  QIL_CHECK(m >= 1 && c >= 1, op, ": empty input ", x.shape());
  QIL_CHECK(eps > 0.f && momentum >= 0.f && momentum <= 1.f, op, ": invalid eps ", eps, " or momentum ", momentum);
}

// batch_norm2d and batch_norm2d_relu: y = [relu](gamma * (x - mean) / sqrt(var + eps) + beta) per channel.
Tensor batch_norm(const char* op, const char* bwd_name, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  Tensor& running_mean, Tensor& running_var, bool training, float momentum, float eps, bool relu) {
  check_batch_norm(op, x, gamma, beta, running_mean, running_var, training, momentum, eps);
  const BnGeom s{x.size(0), x.size(1), x.size(2) * x.size(3), x.layout() == Layout::blocked};
  const bool affine = gamma.defined(), track = running_mean.defined();
  // Statistics the output was normalized with; captured by backward. Eval copies the running buffers so a
  // later in-place update cannot change what backward sees.
  Tensor mean = training ? Tensor::empty({s.c}) : running_mean.clone();  // (C)
  Tensor var = training ? Tensor::empty({s.c}) : running_var.clone();    // (C), biased in training
  float* mp = mean.data();
  float* vp = var.data();
  if (training) with_block([&](auto blk) { batch_statistics<decltype(blk)::value>(x.data(), s, mp, vp); });
  Tensor scale = Tensor::empty({s.c}), shift = Tensor::empty({s.c});  // (C): y = x·scale + shift
  for (int64_t ch = 0; ch < s.c; ++ch) {
    scale.data()[ch] = (affine ? gamma.data()[ch] : 1.f) / std::sqrt(vp[ch] + eps);
    shift.data()[ch] = (affine ? beta.data()[ch] : 0.f) - mp[ch] * scale.data()[ch];
  }
  Tensor y = Tensor::empty_like(x);  // (N, C, H, W), x's layout
  with_block([&](auto blk) {
    constexpr int64_t b = decltype(blk)::value;
    if (relu)
      scale_shift<true, b>(x.data(), y.data(), s, scale.data(), shift.data());
    else
      scale_shift<false, b>(x.data(), y.data(), s, scale.data(), shift.data());
  });

  if (training && track) {  // PyTorch: the running variance is the unbiased one, var * m / (m - 1)
    float* rm = running_mean.data();
    float* rv = running_var.data();
    const float m = static_cast<float>(s.n * s.plane);
    const float unbias = m / (m - 1.f);
    for (int64_t i = 0; i < s.c; ++i) {
      rm[i] = (1.f - momentum) * rm[i] + momentum * mp[i];
      rv[i] = (1.f - momentum) * rv[i] + momentum * vp[i] * unbias;
    }
  }
  BnSaved saved{x.detach(), affine ? gamma.detach() : Tensor(), mean, var, scale, shift, training, relu, eps};
  return record_fresh(op, y, {x, gamma, beta},
                      [saved, bwd_name](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
                        OpTimer timer(bwd_name);
                        if (saved.relu)
                          bn_backward<true>(saved, gy, gx, fresh);
                        else
                          bn_backward<false>(saved, gy, gx, fresh);
                      });
}

}  // namespace

// y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel; mean/var from the batch (training, biased
// variance) or from the running buffers (eval).
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps) {
  OpTimer timer("batch_norm2d");
  return batch_norm("batch_norm2d", "batch_norm2d.bwd", x, gamma, beta, running_mean, running_var, training, momentum,
                    eps, false);
}

Tensor batch_norm2d_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum, float eps) {
  OpTimer timer("batch_norm2d_relu");
  return batch_norm("batch_norm2d_relu", "batch_norm2d_relu.bwd", x, gamma, beta, running_mean, running_var,
                    training, momentum, eps, true);
}

}  // namespace engine::ops
