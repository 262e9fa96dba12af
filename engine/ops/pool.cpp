// Spatial pooling: max and average pooling on oneDNN (the max-pool workspace from a training forward is kept
// for backward), adaptive and global average pooling on plain OpenMP loops. Max pooling keeps its input's
// layout (plain or blocked); the others convert blocked input to plain first.
#include <algorithm>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/dnnl_common.h"

namespace engine::ops {

using namespace dnnl_glue;

namespace {

constexpr int64_t kParallelMin = 16384;

struct PoolSetup {
  memory::desc src, dst;  // plain NCHW
  memory::dims strides, kernel, pad_l, pad_r;
  dnnl::algorithm alg;
};

PoolSetup pool_setup(const char* op, const Tensor& x, const Pool2dGeom& g, dnnl::algorithm alg) {
  QIL_CHECK(x.defined() && x.dtype() == DType::f32 && x.dim() == 4, op, ": input must be f32 (N, C, H, W), got ", x);
  QIL_CHECK(g.kh >= 1 && g.kw >= 1 && g.stride_h >= 1 && g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0, op,
            ": invalid kernel (", g.kh, ", ", g.kw, "), stride (", g.stride_h, ", ", g.stride_w, ") or padding (",
            g.pad_h, ", ", g.pad_w, ")");
  // PyTorch's rule; it also guarantees every window sees at least one real input value.
  QIL_CHECK(2 * g.pad_h <= g.kh && 2 * g.pad_w <= g.kw, op, ": padding (", g.pad_h, ", ", g.pad_w,
            ") must be at most half the kernel (", g.kh, ", ", g.kw, ")");
  const int64_t h = x.size(2), w = x.size(3);
  const int64_t oh = conv_out_size(h, g.kh, g.stride_h, g.pad_h, 1, g.ceil_mode);
  const int64_t ow = conv_out_size(w, g.kw, g.stride_w, g.pad_w, 1, g.ceil_mode);
  QIL_CHECK(oh >= 1 && ow >= 1, op, ": output size (", oh, ", ", ow, ") < 1 for input ", x.shape(), ", kernel (",
            g.kh, ", ", g.kw, "), stride (", g.stride_h, ", ", g.stride_w, "), padding (", g.pad_h, ", ", g.pad_w,
            ")");
  PoolSetup s;
  const tag t = x.layout() == Layout::blocked ? blocked_tag() : tag::nchw;  // the output keeps x's layout
  s.src = plain_md(dims_of(x), t);
  s.dst = plain_md({x.size(0), x.size(1), oh, ow}, t);
  s.strides = {g.stride_h, g.stride_w};
  s.kernel = {g.kh, g.kw};
  s.pad_l = {g.pad_h, g.pad_w};
  // Ceil mode's extra windows reach past the right padding; oneDNN wants that reach as right padding.
  s.pad_r = {std::max<int64_t>(g.pad_h, (oh - 1) * g.stride_h + g.kh - h - g.pad_h),
             std::max<int64_t>(g.pad_w, (ow - 1) * g.stride_w + g.kw - w - g.pad_w)};
  s.alg = alg;
  return s;
}

dnnl::pooling_forward::primitive_desc pool_fwd_pd(const PoolSetup& s, dnnl::prop_kind pk) {
  dnnl::pooling_forward::desc desc(pk, s.alg, s.src, s.dst, s.strides, s.kernel, s.pad_l, s.pad_r);
  return dnnl::pooling_forward::primitive_desc(desc, cpu_engine());
}

// dx += pool_backward(gy), or dx = when dx is fresh (autograd.h); `ws` is the max-pool workspace (empty memory
// for average pooling).
void pool_backward(const PoolSetup& s, const Tensor& gy, const memory& ws, Tensor& dx, bool fresh) {
  auto fwd = pool_fwd_pd(s, dnnl::prop_kind::forward_training);
  dnnl::pooling_backward::desc desc(s.alg, s.src, s.dst, s.strides, s.kernel, s.pad_l, s.pad_r);
  dnnl::pooling_backward::primitive_desc pd(desc, cpu_engine(), fwd);
  const memory dx_user = wrap(dx, s.src);
  memory dx_m = grad_target(dx_user, s.src, fresh);  // oneDNN overwrites: a fresh dx directly, else scratch
  std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, wrap(gy, s.dst)}, {DNNL_ARG_DIFF_SRC, dx_m}};
  if (ws) args[DNNL_ARG_WORKSPACE] = ws;
  dnnl::pooling_backward(pd).execute(cpu_stream(), args);
  write_or_accumulate(dx_m, dx_user, fresh);
  cpu_stream().wait();
}

// PyTorch's average-pool divisor counts the explicit padding but not ceil mode's extra reach, which oneDNN's
// include_padding counts too. Returns per-output factors kh*kw / PyTorch's divisor (all 1 when they agree),
// or an empty vector when no output window reaches past the explicit padding.
std::vector<float> ceil_mode_correction(const Tensor& x, const Pool2dGeom& g, int64_t oh, int64_t ow) {
  const int64_t h = x.size(2), w = x.size(3);
  if ((oh - 1) * g.stride_h + g.kh <= h + 2 * g.pad_h && (ow - 1) * g.stride_w + g.kw <= w + 2 * g.pad_w) return {};
  std::vector<float> f(static_cast<size_t>(oh * ow));  // (OH, OW)
  for (int64_t i = 0; i < oh; ++i)
    for (int64_t j = 0; j < ow; ++j) {
      const int64_t hs = i * g.stride_h - g.pad_h, ws = j * g.stride_w - g.pad_w;
      const int64_t hn = std::min(hs + g.kh, h + g.pad_h) - hs, wn = std::min(ws + g.kw, w + g.pad_w) - ws;
      f[i * ow + j] = static_cast<float>(g.kh * g.kw) / static_cast<float>(hn * wn);
    }
  return f;
}

// t (N, C, OH, OW) *= f (OH, OW), in place.
void scale_planes(Tensor& t, const std::vector<float>& f) {
  const int64_t plane = static_cast<int64_t>(f.size()), planes = t.numel() / plane;
  float* p = t.data();
#pragma omp parallel for if (t.numel() > kParallelMin)
  for (int64_t k = 0; k < planes; ++k)
    for (int64_t i = 0; i < plane; ++i) p[k * plane + i] *= f[i];
}

}  // namespace

// y[n,c,i,j] = max over the window; padding never wins (it counts as -inf).
Tensor max_pool2d(const Tensor& x, const Pool2dGeom& g) {
  OpTimer timer("max_pool2d");
  const PoolSetup s = pool_setup("max_pool2d", x, g, dnnl::algorithm::pooling_max);
  const bool training = grad_enabled() && x.requires_grad();
  auto pd = pool_fwd_pd(s, training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference);
  Tensor y = Tensor::empty({s.dst.dims()[0], s.dst.dims()[1], s.dst.dims()[2], s.dst.dims()[3]}, DType::f32,
                           x.layout());  // (N, C, OH, OW)
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, wrap(x, s.src)}, {DNNL_ARG_DST, wrap(y, s.dst)}};
  memory ws;  // where each maximum came from; backward routes the gradient there without re-reading x
  if (training) args[DNNL_ARG_WORKSPACE] = ws = memory(pd.workspace_desc(), cpu_engine());
  dnnl::pooling_forward(pd).execute(cpu_stream(), args);
  cpu_stream().wait();
  return record_fresh("max_pool2d", y, {x},
                      [s, ws](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
                        OpTimer timer("max_pool2d.bwd");
                        pool_backward(s, gy, ws, gx[0], fresh[0]);
                      });
}

// y = mean over the window; the divisor counts padding when count_include_pad (PyTorch's default).
Tensor avg_pool2d(const Tensor& x_in, const Pool2dGeom& g) {
  QIL_CHECK(x_in.defined(), "avg_pool2d: undefined input");
  const Tensor x = to_plain(x_in);  // the ceil-mode correction works on plain planes
  OpTimer timer("avg_pool2d");
  const PoolSetup s = pool_setup("avg_pool2d", x, g,
                                 g.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                                     : dnnl::algorithm::pooling_avg_exclude_padding);
  const int64_t oh = s.dst.dims()[2], ow = s.dst.dims()[3];
  const std::vector<float> fix = g.count_include_pad ? ceil_mode_correction(x, g, oh, ow) : std::vector<float>{};
  const bool training = grad_enabled() && x.requires_grad();
  auto pd = pool_fwd_pd(s, training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference);
  Tensor y = Tensor::empty({x.size(0), x.size(1), oh, ow});  // (N, C, OH, OW)
  dnnl::pooling_forward(pd).execute(cpu_stream(), {{DNNL_ARG_SRC, wrap(x, s.src)}, {DNNL_ARG_DST, wrap(y, s.dst)}});
  cpu_stream().wait();
  if (!fix.empty()) scale_planes(y, fix);
  return record("avg_pool2d", y, {x}, [s, fix](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("avg_pool2d.bwd");
    if (fix.empty()) return pool_backward(s, gy, memory(), gx[0], false);
    Tensor g2 = gy.clone();  // y = fix * pool(x)  =>  dx = pool_backward(fix * gy)
    scale_planes(g2, fix);
    pool_backward(s, g2, memory(), gx[0], false);
  });
}

// Output bin i covers rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1 (PyTorch's adaptive edges; bins may overlap).
Tensor adaptive_avg_pool2d(const Tensor& x_in, int64_t oh, int64_t ow) {
  QIL_CHECK(x_in.defined(), "adaptive_avg_pool2d: undefined input");
  const Tensor x = to_plain(x_in);
  OpTimer timer("adaptive_avg_pool2d");
  QIL_CHECK(x.defined() && x.dtype() == DType::f32 && x.dim() == 4,
            "adaptive_avg_pool2d: input must be f32 (N, C, H, W), got ", x);
  QIL_CHECK(oh >= 1 && ow >= 1, "adaptive_avg_pool2d: output size (", oh, ", ", ow, ") < 1 for input ", x.shape());
  QIL_CHECK(x.size(2) >= 1 && x.size(3) >= 1, "adaptive_avg_pool2d: empty spatial size in ", x.shape());
  const int64_t planes = x.size(0) * x.size(1), h = x.size(2), w = x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), oh, ow});  // (N, C, OH, OW)
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel for if (x.numel() > kParallelMin)
  for (int64_t k = 0; k < planes; ++k) {
    const float* xk = xp + k * h * w;
    for (int64_t i = 0; i < oh; ++i) {
      const int64_t h0 = i * h / oh, h1 = ((i + 1) * h + oh - 1) / oh;
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t w0 = j * w / ow, w1 = ((j + 1) * w + ow - 1) / ow;
        float acc = 0.f;
        for (int64_t r = h0; r < h1; ++r)
          for (int64_t c = w0; c < w1; ++c) acc += xk[r * w + c];
        yp[(k * oh + i) * ow + j] = acc / static_cast<float>((h1 - h0) * (w1 - w0));
      }
    }
  }
  return record("adaptive_avg_pool2d", y, {x}, [h, w, oh, ow, planes](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("adaptive_avg_pool2d.bwd");
    const float* g = gy.data();
    float* dx = gx[0].data();
    // One thread per plane: overlapping bins then never race on a dx element.
#pragma omp parallel for if (planes * h * w > kParallelMin)
    for (int64_t k = 0; k < planes; ++k) {
      float* dk = dx + k * h * w;
      for (int64_t i = 0; i < oh; ++i) {
        const int64_t h0 = i * h / oh, h1 = ((i + 1) * h + oh - 1) / oh;
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t w0 = j * w / ow, w1 = ((j + 1) * w + ow - 1) / ow;
          const float share = g[(k * oh + i) * ow + j] / static_cast<float>((h1 - h0) * (w1 - w0));
          for (int64_t r = h0; r < h1; ++r)
            for (int64_t c = w0; c < w1; ++c) dk[r * w + c] += share;
        }
      }
    }
  });
}

// y[n, c] = mean of x[n, c, :, :]
Tensor global_avg_pool(const Tensor& x_in) {
  QIL_CHECK(x_in.defined(), "global_avg_pool: undefined input");
  const Tensor x = to_plain(x_in);
  OpTimer timer("global_avg_pool");
  QIL_CHECK(x.defined() && x.dtype() == DType::f32 && x.dim() == 4,
            "global_avg_pool: input must be f32 (N, C, H, W), got ", x);
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  QIL_CHECK(hw >= 1, "global_avg_pool: empty spatial size in ", x.shape());
  Tensor y = Tensor::empty({x.size(0), x.size(1)});  // (N, C)
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel for if (x.numel() > kParallelMin)
  for (int64_t k = 0; k < planes; ++k) {
    float acc = 0.f;
    for (int64_t i = 0; i < hw; ++i) acc += xp[k * hw + i];
    yp[k] = acc / static_cast<float>(hw);
  }
  return record("global_avg_pool", y, {x}, [planes, hw](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("global_avg_pool.bwd");
    const float* g = gy.data();
    float* dx = gx[0].data();
#pragma omp parallel for if (planes * hw > kParallelMin)
    for (int64_t k = 0; k < planes; ++k) {
      const float share = g[k] / static_cast<float>(hw);
      for (int64_t i = 0; i < hw; ++i) dx[k * hw + i] += share;
    }
  });
}

}  // namespace engine::ops
