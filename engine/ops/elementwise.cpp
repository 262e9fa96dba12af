// Elementwise and shape ops on OpenMP loops: relu, add, mul_scalar, dropout, reshape, flatten, sum, mean.
// Layout-agnostic: outputs keep the input's layout (add converts mixed operands to plain). Backward closures
// accumulate (+=) into the buffers they are handed, or write them when autograd hands them fresh (record_fresh).
// Floating-point exceptions are never enabled in qil. Without this GCC refuses to turn relu's select into
// vector code and runs it one element at a time behind a mispredicted branch (measured: relu's backward cost
// 12% of a ResNet-20 step).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace engine::ops {

namespace {
// Large loops only: thread start-up costs more than a few thousand floats.
constexpr int64_t kParallelMin = 16384;
void check_f32(const char* op, const Tensor& t) {
  QIL_CHECK(t.defined(), op, ": undefined input");
  QIL_CHECK(t.dtype() == DType::f32, op, ": expected an f32 tensor, got ", t);
}

// Σ a·b in float lanes over blocks of kSumBlock elements, the block sums in double; each thread sums a contiguous
// share and the shares are added in thread order, so the result repeats for a given thread count.
constexpr int64_t kSumBlock = 1024;
double dot_blocks(const float* a, const float* b, int64_t n) {
  std::vector<double> part(static_cast<size_t>(omp_get_max_threads()), 0.0);
#pragma omp parallel if (n > kParallelMin)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    double acc = 0.0;
    for (int64_t blk = n * t / nt, e = n * (t + 1) / nt; blk < e; blk += kSumBlock) {
      const int64_t end = std::min(e, blk + kSumBlock);
      float f = 0.f;
#pragma omp simd reduction(+ : f)
      for (int64_t i = blk; i < end; ++i) f += a[i] * b[i];
      acc += f;
    }
    part[static_cast<size_t>(t)] = acc;
  }
  double sum = 0.0;
  for (double v : part) sum += v;
  return sum;
}
}  // namespace

// y = max(x, 0). x: any shape.
namespace {
// dx = (y > 0) · gy, written (fresh) or added: the backward of relu and of add_relu's two inputs.
void relu_grad(const Tensor& gy, const Tensor& y, Tensor& gx, bool fresh) {
  const float* g = gy.data();
  const float* yv = y.data();
  float* dx = gx.data();
  const int64_t n = y.numel();
  // g loaded unconditionally: a conditional load keeps GCC from vectorizing.
  if (fresh) {
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      dx[i] = yv[i] > 0.f ? gi : 0.f;
    }
    return;
  }
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    dx[i] += yv[i] > 0.f ? gi : 0.f;
  }
}
}  // namespace

Tensor relu(const Tensor& x) {
  OpTimer timer("relu");
  check_f32("relu", x);
  Tensor y = Tensor::empty_like(x);
  const float* xp = x.data();
  float* yp = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] > 0.f ? xp[i] : 0.f;
  return record_fresh("relu", y, {x},
                      [ys = y.detach()](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
                        OpTimer timer("relu.bwd");
                        relu_grad(gy, ys, gx[0], fresh[0]);
                      });
}

// y = a + b, same shapes.
Tensor add(const Tensor& a_in, const Tensor& b_in) {
  check_f32("add", a_in);
  check_f32("add", b_in);
  QIL_CHECK(a_in.shape() == b_in.shape(), "add: shapes differ: ", a_in.shape(), " and ", b_in.shape());
  // Elementwise in memory order, so both operands must share a layout: mixed ones meet in plain.
  const bool mixed = a_in.layout() != b_in.layout();
  const Tensor a = mixed ? to_plain(a_in) : a_in;
  const Tensor b = mixed ? to_plain(b_in) : b_in;
  OpTimer timer("add");
  Tensor y = Tensor::empty_like(a);
  const float* ap = a.data();
  const float* bp = b.data();
  float* yp = y.data();
  const int64_t n = a.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yp[i] = ap[i] + bp[i];
  return record_fresh("add", y, {a, b}, [](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
    OpTimer timer("add.bwd");
    const float* g = gy.data();
    const int64_t n = gy.numel();
    for (size_t k = 0; k < gx.size(); ++k) {
      if (!gx[k].defined()) continue;
      float* dp = gx[k].data();
      if (fresh[k]) {
#pragma omp parallel for simd if (n > kParallelMin)
        for (int64_t i = 0; i < n; ++i) dp[i] = g[i];
        continue;
      }
#pragma omp parallel for simd if (n > kParallelMin)
      for (int64_t i = 0; i < n; ++i) dp[i] += g[i];
    }
  });
}

// y = max(a + b, 0), same shapes: a residual block's add and the ReLU after it in one pass each way.
Tensor add_relu(const Tensor& a_in, const Tensor& b_in) {
  check_f32("add_relu", a_in);
  check_f32("add_relu", b_in);
  QIL_CHECK(a_in.shape() == b_in.shape(), "add_relu: shapes differ: ", a_in.shape(), " and ", b_in.shape());
  const bool mixed = a_in.layout() != b_in.layout();  // as add: mixed layouts meet in plain
  const Tensor a = mixed ? to_plain(a_in) : a_in;
  const Tensor b = mixed ? to_plain(b_in) : b_in;
  OpTimer timer("add_relu");
  Tensor y = Tensor::empty_like(a);
  const float* ap = a.data();
  const float* bp = b.data();
  float* yp = y.data();
  const int64_t n = a.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = ap[i] + bp[i];
    yp[i] = v > 0.f ? v : 0.f;
  }
  return record_fresh("add_relu", y, {a, b},
                      [ys = y.detach()](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
                        OpTimer timer("add_relu.bwd");
                        // Both inputs get relu'(a + b)·gy; the mask is y > 0 (the kink counts as off, as relu).
                        for (size_t k = 0; k < gx.size(); ++k)
                          if (gx[k].defined()) relu_grad(gy, ys, gx[k], fresh[k]);
                      });
}

// y = x * s, s a one-element tensor.
Tensor mul_scalar(const Tensor& x, const Tensor& s) {
  OpTimer timer("mul_scalar");
  check_f32("mul_scalar", x);
  check_f32("mul_scalar", s);
  QIL_CHECK(s.numel() == 1, "mul_scalar: the scale must have one element, got shape ", s.shape());
  Tensor y = Tensor::empty_like(x);
  const float sv = s.item();
  const float* xp = x.data();
  float* yp = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] * sv;
  // A fresh dx (record_fresh) is written, not zero-filled by autograd and then added to. x is kept for ds only
  // when s needs a gradient (a constant scale keeps no copy of its operand alive).
  return record_fresh("mul_scalar", y, {x, s},
                      [xs = s.requires_grad() ? x.detach() : Tensor(), sv](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
                        OpTimer timer("mul_scalar.bwd");
                        const float* g = gy.data();
                        const int64_t n = gy.numel();
                        if (gx[0].defined()) {
                          float* dx = gx[0].data();
                          if (fresh[0]) {
#pragma omp parallel for simd if (n > kParallelMin)
                            for (int64_t i = 0; i < n; ++i) dx[i] = g[i] * sv;
                          } else {
#pragma omp parallel for simd if (n > kParallelMin)
                            for (int64_t i = 0; i < n; ++i) dx[i] += g[i] * sv;
                          }
                        }
                        if (gx[1].defined()) {
                          const float v = static_cast<float>(dot_blocks(g, xs.data(), n));
                          float* ds = gx[1].data();
                          ds[0] = fresh[1] ? v : ds[0] + v;
                        }
                      });
}

Tensor dropout(const Tensor& x, float p, bool training, Generator& gen) {
  OpTimer timer("dropout");
  check_f32("dropout", x);
  QIL_CHECK(p >= 0.f && p < 1.f, "dropout: probability must be in [0, 1), got ", p);
  if (!training || p == 0.f) return x;
  const int64_t n = x.numel();
  Tensor mask = Tensor::empty_like(x);  // 0 or 1/(1-p), in x's memory order
  Tensor y = Tensor::empty_like(x);
  const float keep_scale = 1.f / (1.f - p);
  float* m = mask.data();
  for (int64_t i = 0; i < n; ++i) m[i] = gen.uniform() < p ? 0.f : keep_scale;  // serial: reproducible
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] * m[i];
  return record("dropout", y, {x}, [mask](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("dropout.bwd");
    const float* g = gy.data();
    const float* m = mask.data();
    float* dx = gx[0].data();
    const int64_t n = gy.numel();
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dx[i] += g[i] * m[i];
  });
}

Tensor reshape(const Tensor& x_in, const Shape& shape) {
  check_f32("reshape", x_in);
  const Tensor x = to_plain(x_in);  // a view reinterprets memory order, which must be the shape's
  OpTimer timer("reshape");
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      QIL_CHECK(infer < 0, "reshape: more than one -1 in ", shape);
      infer = static_cast<int64_t>(i);
    } else {
      QIL_CHECK(s[i] >= 0, "reshape: negative dimension in ", shape);
      known *= s[i];
    }
  }
  if (infer >= 0) {
    QIL_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot reshape ", x.shape(), " into ", shape);
    s[infer] = x.numel() / known;
  }
  QIL_CHECK(shape_numel(s) == x.numel(), "reshape: cannot reshape ", x.shape(), " (", x.numel(),
            " elements) into ", shape);
  Tensor y = x.view(s);
  return record("reshape", y, {x}, [](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("reshape.bwd");
    const float* g = gy.data();
    float* dx = gx[0].data();
    const int64_t n = gy.numel();
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dx[i] += g[i];
  });
}

Tensor flatten(const Tensor& x) {
  QIL_CHECK(x.dim() >= 1, "flatten: needs at least one dimension, got ", x.shape());
  return reshape(x, {x.size(0), -1});
}

Tensor sum(const Tensor& x) {
  OpTimer timer("sum");
  check_f32("sum", x);
  const float* xp = x.data();
  const int64_t n = x.numel();
  double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) acc += xp[i];
  Tensor y = Tensor::scalar(static_cast<float>(acc));
  return record("sum", y, {x}, [](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("sum.bwd");
    const float g = gy.item();
    float* dx = gx[0].data();
    const int64_t n = gx[0].numel();
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dx[i] += g;
  });
}

Tensor mean(const Tensor& x) {
  QIL_CHECK(x.numel() > 0, "mean: empty tensor ", x);
  Tensor s = sum(x);
  return mul_scalar(s, Tensor::scalar(1.f / static_cast<float>(x.numel())));
}

}  // namespace engine::ops
