// 2-D batch normalization on plain NCHW with OpenMP loops: training mode (batch statistics, running buffers
// updated in place) and eval mode (running statistics), each with its backward. Own loops rather than oneDNN:
// oneDNN 2.6 runs plain-NCHW batch norm on a generic reference-grade kernel (ncsp_bnorm) that cost half of a
// ResNet-20 training step; one thread per channel over contiguous (H, W) planes is memory-bound instead.
// Blocked (nChw16c) inputs run the same formulas with 16 channels per vector and keep their layout.
// Eval-mode backward is real, not an error: quantizer-only training runs BN frozen in eval mode and still
// needs the gradient to flow through it (to x, and to gamma/beta if they ask).
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace engine::ops {

namespace {

constexpr int64_t kParallelMin = 16384;

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

// Per-channel sums of t1(o, ch) and t2(o, ch) over a blocked (N, C/16, H, W, 16) tensor, o the memory index
// and ch its channel. Threads split the (image, block) spans, each with float lanes, and merge in double:
// with few channel blocks (16 channels is one block) a split by channel would leave threads idle.
template <class T1, class T2>
void blocked_channel_sums(int64_t n, int64_t c, int64_t plane, T1 t1, T2 t2, double* s1, double* s2) {
  const int64_t cb = c / kBlock;
  std::fill(s1, s1 + c, 0.0);
  std::fill(s2, s2 + c, 0.0);
#pragma omp parallel if (n * c * plane > kParallelMin)
  {
    std::vector<double> l1(static_cast<size_t>(c), 0.0), l2(static_cast<size_t>(c), 0.0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n * cb; ++i) {
      const int64_t g = i % cb, base = i * plane * kBlock;
      float a[kBlock] = {}, b[kBlock] = {};
      for (int64_t k = 0; k < plane; ++k) {
        const int64_t o = base + k * kBlock;
#pragma omp simd
        for (int64_t l = 0; l < kBlock; ++l) {
          a[l] += t1(o + l, g * kBlock + l);
          b[l] += t2(o + l, g * kBlock + l);
        }
      }
      for (int64_t l = 0; l < kBlock; ++l) {
        l1[g * kBlock + l] += a[l];
        l2[g * kBlock + l] += b[l];
      }
    }
#pragma omp critical
    for (int64_t ch = 0; ch < c; ++ch) {
      s1[ch] += l1[ch];
      s2[ch] += l2[ch];
    }
  }
}

// y = x * scale[ch] + shift[ch] over a blocked tensor; one (image, block) span per iteration.
void blocked_scale_shift(const float* xp, float* yp, int64_t n, int64_t c, int64_t plane, const float* scale,
                         const float* shift) {
  const int64_t cb = c / kBlock;
#pragma omp parallel for schedule(static) if (n * c * plane > kParallelMin)
  for (int64_t i = 0; i < n * cb; ++i) {
    const int64_t g = i % cb, base = i * plane * kBlock;
    const float* sc = scale + g * kBlock;
    const float* sh = shift + g * kBlock;
    for (int64_t k = 0; k < plane; ++k) {
      const int64_t o = base + k * kBlock;
#pragma omp simd
      for (int64_t l = 0; l < kBlock; ++l) yp[o + l] = xp[o + l] * sc[l] + sh[l];
    }
  }
}

// Training/eval statistics of a blocked input into mp/vp (training only), then y.
void bn_forward_blocked(const float* xp, float* yp, int64_t n, int64_t c, int64_t plane, bool training,
                        float* mp, float* vp, const float* gp, const float* bp, float eps) {
  const double m = static_cast<double>(n * plane);
  std::vector<double> s1(static_cast<size_t>(c)), s2(static_cast<size_t>(c));
  if (training) {  // two passes, as the plain path
    auto zero = [](int64_t, int64_t) { return 0.f; };
    blocked_channel_sums(n, c, plane, [xp](int64_t o, int64_t) { return xp[o]; }, zero, s1.data(), s2.data());
    for (int64_t ch = 0; ch < c; ++ch) mp[ch] = static_cast<float>(s1[ch] / m);
    blocked_channel_sums(
        n, c, plane, [xp, mp](int64_t o, int64_t ch) { return (xp[o] - mp[ch]) * (xp[o] - mp[ch]); }, zero,
        s1.data(), s2.data());
    for (int64_t ch = 0; ch < c; ++ch) vp[ch] = static_cast<float>(s1[ch] / m);
  }
  std::vector<float> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    scale[ch] = (gp ? gp[ch] : 1.f) / std::sqrt(vp[ch] + eps);
    shift[ch] = (bp ? bp[ch] : 0.f) - mp[ch] * scale[ch];
  }
  blocked_scale_shift(xp, yp, n, c, plane, scale.data(), shift.data());
}

// The blocked backward: the same formulas as the plain one (batch_norm2d's closure).
void bn_backward_blocked(const float* xp, const float* gyp, float* dx, float* dg, float* db, int64_t n, int64_t c,
                         int64_t plane, bool training, const float* mp, const float* vp, const float* gp,
                         float eps) {
  const double m = static_cast<double>(n * plane);
  std::vector<double> sg(static_cast<size_t>(c)), sgx(static_cast<size_t>(c));
  blocked_channel_sums(
      n, c, plane, [gyp](int64_t o, int64_t) { return gyp[o]; },
      [gyp, xp, mp](int64_t o, int64_t ch) { return gyp[o] * (xp[o] - mp[ch]); }, sg.data(), sgx.data());
  std::vector<float> k1(static_cast<size_t>(c)), mean_g(static_cast<size_t>(c)), mean_gx(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    const float inv_std = 1.f / std::sqrt(vp[ch] + eps);
    const double sgx_hat = sgx[ch] * inv_std;
    if (db) db[ch] += static_cast<float>(sg[ch]);
    if (dg) dg[ch] += static_cast<float>(sgx_hat);
    k1[ch] = (gp ? gp[ch] : 1.f) * inv_std;
    mean_g[ch] = training ? static_cast<float>(sg[ch] / m) : 0.f;
    mean_gx[ch] = training ? static_cast<float>(sgx_hat / m) * inv_std : 0.f;
  }
  if (!dx) return;
  const int64_t cb = c / kBlock;
#pragma omp parallel for schedule(static) if (n * c * plane > kParallelMin)
  for (int64_t i = 0; i < n * cb; ++i) {
    const int64_t g = i % cb, base = i * plane * kBlock;
    const float *kk = k1.data() + g * kBlock, *mg = mean_g.data() + g * kBlock, *mgx = mean_gx.data() + g * kBlock,
                *mu = mp + g * kBlock;
    for (int64_t k = 0; k < plane; ++k) {
      const int64_t o = base + k * kBlock;
#pragma omp simd
      for (int64_t l = 0; l < kBlock; ++l) dx[o + l] += kk[l] * (gyp[o + l] - mg[l] - (xp[o + l] - mu[l]) * mgx[l]);
    }
  }
}

void check_channel_vector(const char* what, const Tensor& t, int64_t c, const Tensor& x) {
  QIL_CHECK(t.dtype() == DType::f32 && t.dim() == 1 && t.size(0) == c, "batch_norm2d: ", what, " must be (", c,
            ") for input ", x.shape(), ", got ", t.shape());
}

}  // namespace

// y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel; mean/var from the batch (training, biased
// variance) or from the running buffers (eval).
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps) {
  OpTimer timer("batch_norm2d");
  QIL_CHECK(x.defined() && x.dtype() == DType::f32 && x.dim() == 4,
            "batch_norm2d: input must be f32 (N, C, H, W), got ", x);
  const int64_t c = x.size(1);
  const int64_t m = x.size(0) * x.size(2) * x.size(3);  // values per channel
  QIL_CHECK(gamma.defined() == beta.defined(), "batch_norm2d: gamma and beta must both be given or both be omitted");
  const bool affine = gamma.defined();
  if (affine) {
    check_channel_vector("gamma", gamma, c, x);
    check_channel_vector("beta", beta, c, x);
  }
  const bool track = running_mean.defined() || running_var.defined();
  if (track) {
    QIL_CHECK(running_mean.defined() && running_var.defined(),
              "batch_norm2d: running_mean and running_var must both be given or both be omitted");
    check_channel_vector("running_mean", running_mean, c, x);
    check_channel_vector("running_var", running_var, c, x);
  }
  QIL_CHECK(training || track, "batch_norm2d: eval mode needs running statistics (input ", x.shape(), ")");
  QIL_CHECK(!training || m > 1, "batch_norm2d: training needs more than one value per channel, input ", x.shape());
  QIL_CHECK(m >= 1 && c >= 1, "batch_norm2d: empty input ", x.shape());
  QIL_CHECK(eps > 0.f && momentum >= 0.f && momentum <= 1.f, "batch_norm2d: invalid eps ", eps, " or momentum ",
            momentum);

  const int64_t n = x.size(0), plane = x.size(2) * x.size(3);
  // Statistics the output was normalized with; captured by backward. Eval copies the running buffers so a
  // later in-place update cannot change what backward sees.
  Tensor mean = training ? Tensor::empty({c}) : running_mean.clone();  // (C)
  Tensor var = training ? Tensor::empty({c}) : running_var.clone();    // (C), biased in training
  Tensor y = Tensor::empty_like(x);                                    // (N, C, H, W), x's layout
  const float* xp = x.data();
  float* yp = y.data();
  float* mp = mean.data();
  float* vp = var.data();
  const float* gp = affine ? gamma.data() : nullptr;
  const float* bp = affine ? beta.data() : nullptr;
  const bool blocked = x.layout() == Layout::blocked;
  if (blocked) bn_forward_blocked(xp, yp, n, c, plane, training, mp, vp, gp, bp, eps);
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
  for (int64_t ch = 0; ch < (blocked ? 0 : c); ++ch) {
    if (training) {  // two passes: the mean, then the centred squares (no cancellation in E[x²] − E[x]²)
      double s = 0.0;
      for (int64_t i = 0; i < n; ++i) s += plane_sum(xp + (i * c + ch) * plane, plane);
      const float mu = static_cast<float>(s / static_cast<double>(m));
      double q = 0.0;
      for (int64_t i = 0; i < n; ++i) q += plane_centred_squares(xp + (i * c + ch) * plane, plane, mu);
      mp[ch] = mu;
      vp[ch] = static_cast<float>(q / static_cast<double>(m));
    }
    const float inv_std = 1.f / std::sqrt(vp[ch] + eps);
    const float scale = (gp ? gp[ch] : 1.f) * inv_std;
    const float shift = (bp ? bp[ch] : 0.f) - mp[ch] * scale;
    for (int64_t i = 0; i < n; ++i) {
      const float* xs = xp + (i * c + ch) * plane;
      float* ys = yp + (i * c + ch) * plane;
#pragma omp simd
      for (int64_t k = 0; k < plane; ++k) ys[k] = xs[k] * scale + shift;
    }
  }

  if (training && track) {  // PyTorch: the running variance is the unbiased one, var * m / (m - 1)
    float* rm = running_mean.data();
    float* rv = running_var.data();
    const float unbias = static_cast<float>(m) / static_cast<float>(m - 1);
    for (int64_t i = 0; i < c; ++i) {
      rm[i] = (1.f - momentum) * rm[i] + momentum * mp[i];
      rv[i] = (1.f - momentum) * rv[i] + momentum * vp[i] * unbias;
    }
  }

  return record("batch_norm2d", y, {x, gamma, beta},
                [xs = x.detach(), gs = affine ? gamma.detach() : Tensor(), mean, var, training, eps](
                    const Tensor& gy, std::vector<Tensor>& gx) {
                  OpTimer timer("batch_norm2d.bwd");
                  const int64_t n = xs.size(0), c = xs.size(1), plane = xs.size(2) * xs.size(3);
                  const double m = static_cast<double>(n * plane);
                  const float* xp = xs.data();
                  const float* gyp = gy.data();
                  const float* mp = mean.data();
                  const float* vp = var.data();
                  const float* gp = gs.defined() ? gs.data() : nullptr;
                  float* dx = gx[0].defined() ? gx[0].data() : nullptr;
                  float* dg = gx.size() > 1 && gx[1].defined() ? gx[1].data() : nullptr;
                  float* db = gx.size() > 2 && gx[2].defined() ? gx[2].data() : nullptr;
                  if (xs.layout() == Layout::blocked)
                    return bn_backward_blocked(xp, gyp, dx, dg, db, n, c, plane, training, mp, vp, gp, eps);
#pragma omp parallel for schedule(static) if (xs.numel() > kParallelMin)
                  for (int64_t ch = 0; ch < c; ++ch) {
                    const float mu = mp[ch], inv_std = 1.f / std::sqrt(vp[ch] + eps);
                    // Σ gy and Σ gy·x̂ over the channel: dβ, dγ, and (training) the terms of dx.
                    double sg = 0.0, sgx = 0.0;
                    for (int64_t i = 0; i < n; ++i) {
                      const float* xr = xp + (i * c + ch) * plane;
                      const float* g = gyp + (i * c + ch) * plane;
                      float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
                      for (int64_t k = 0; k < plane; ++k) {
                        a += g[k];
                        b += g[k] * (xr[k] - mu);
                      }
                      sg += a;
                      sgx += b;
                    }
                    sgx *= inv_std;
                    if (db) db[ch] += static_cast<float>(sg);
                    if (dg) dg[ch] += static_cast<float>(sgx);
                    if (!dx) continue;
                    // Training: dx = γ/σ (gy − Σgy/M − x̂ Σgy·x̂/M); eval (constant statistics): dx = γ/σ gy.
                    const float k1 = (gp ? gp[ch] : 1.f) * inv_std;
                    const float mean_g = training ? static_cast<float>(sg / m) : 0.f;
                    const float mean_gx = training ? static_cast<float>(sgx / m) * inv_std : 0.f;
                    for (int64_t i = 0; i < n; ++i) {
                      const float* xr = xp + (i * c + ch) * plane;
                      const float* g = gyp + (i * c + ch) * plane;
                      float* d = dx + (i * c + ch) * plane;
#pragma omp simd
                      for (int64_t k = 0; k < plane; ++k) d[k] += k1 * (g[k] - mean_g - (xr[k] - mu) * mean_gx);
                    }
                  }
                });
}

}  // namespace engine::ops
