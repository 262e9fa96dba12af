// Integer convolution and inner product for integer inference (ops.h: conv2d_int8, linear_int8) on oneDNN's
// int8 primitives: u8 source × s8 weights, s32 accumulation, f32 output through the output-scale attribute and
// the bias added after it by a binary post-op (oneDNN 2.x adds a bias *argument* before the output scale:
// dst = scale·(acc + bias), which is not the layer's scale·acc + bias). No autograd: inference only.
//
// Two things oneDNN's int8 kernels do on CPUs without VNNI (measured on AVX2, jit_uni_int8:avx2 and
// gemm_s8u8s32:jit; tests/engine/test_int8.cpp) would break exactness, so the source is split into u8 "planes"
// x = Σ coef·plane whose convolutions are exact, and their s32 results combined here:
// - vpmaddubsw adds two u8×s8 products into a saturating s16, so 2·max|x|·max|w| must stay ≤ 32767 (255 × 127
//   does not): a u8 source beyond that is split into its low 7 bits and its top bit;
// - an s8 source makes oneDNN halve the weights (scale_adjust 0.5) to avoid the same saturation, rounding odd
//   codes: an s8 source is always split into its positive and negative parts, both u8.
// Level 0 is the value 0 in every plane, so zero padding stays exact.
#include <algorithm>
#include <cstdlib>

#include "engine/ops.h"
#include "engine/ops/dnnl_common.h"

namespace engine::ops {

using namespace dnnl_glue;

namespace {

using dt = memory::data_type;

bool cpu_has_vnni() {
  const int isa = static_cast<int>(dnnl::get_effective_cpu_isa());
  const int avx512_vnni = static_cast<int>(dnnl::cpu_isa::avx512_core_vnni);
  return isa == static_cast<int>(dnnl::cpu_isa::avx2_vnni) || (isa & avx512_vnni) == avx512_vnni;
}

// Whether a u8 source of values up to max_src times weights up to max_w in magnitude can saturate a pair sum.
bool pairs_saturate(int64_t max_src, int64_t max_w) {
  static const bool vnni = cpu_has_vnni();
  return !vnni && 2 * max_src * max_w > 32767;
}

int64_t max_abs_code(const Tensor& wk) {
  const int8_t* w = wk.data<int8_t>();
  const int64_t n = wk.numel();
  int m = 0;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(static_cast<int>(w[i])));
  return m;
}

int64_t max_u8(const Tensor& x) {
  const uint8_t* p = x.data<uint8_t>();
  const int64_t n = x.numel();
  uint8_t m = 0;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = std::max(m, p[i]);
  return m;
}

// One u8 source and the integer weight of its convolution in the sum.
struct Plane {
  Tensor k;
  int32_t coef;
};

// A u8 tensor (same shape and layout as x) of f(x) for each element, x of type T.
template <class T, class F>
Tensor map_to_u8(const Tensor& x, F f) {
  Tensor out = Tensor::empty(x.shape(), DType::u8, x.layout());
  const T* s = x.data<T>();
  uint8_t* d = out.data<uint8_t>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(f(static_cast<int>(s[i])));
  return out;
}

// m (u8, values up to `bound`) with weight coef, split into low 7 bits and top bit where pair sums could saturate
// (the values are scanned only when the bound alone cannot rule it out).
void add_magnitude(std::vector<Plane>& planes, const Tensor& m, int32_t coef, int64_t bound, int64_t max_w) {
  if (!pairs_saturate(bound, max_w) || !pairs_saturate(max_u8(m), max_w)) {
    planes.push_back({m, coef});
    return;
  }
  planes.push_back({map_to_u8<uint8_t>(m, [](int v) { return v & 127; }), coef});
  planes.push_back({map_to_u8<uint8_t>(m, [](int v) { return v >> 7; }), coef * 128});
}

// xk = Σ coef·plane, every plane u8 and safe from saturation against weights up to max_w in magnitude.
std::vector<Plane> source_planes(const Tensor& xk, int64_t max_w) {
  std::vector<Plane> planes;
  if (xk.dtype() == DType::u8) {
    add_magnitude(planes, xk, 1, 255, max_w);
  } else {
    add_magnitude(planes, map_to_u8<int8_t>(xk, [](int v) { return v > 0 ? v : 0; }), 1, 127, max_w);
    add_magnitude(planes, map_to_u8<int8_t>(xk, [](int v) { return v < 0 ? -v : 0; }), -1, 128, max_w);
  }
  return planes;
}

// y[n, o, i] = fl(fl(scale·acc) + b[o]) from plain s32 sums acc (N, O, inner).
void scale_and_bias(const Tensor& acc, const Tensor& b, float scale, Tensor& y) {
  const int64_t n = acc.size(0), o = acc.size(1), inner = acc.numel() / std::max<int64_t>(n * o, 1);
  const int32_t* a = acc.data<int32_t>();
  float* yp = y.data();
  const float* bp = b.defined() ? b.data() : nullptr;
#pragma omp parallel for if (acc.numel() > 16384)
  for (int64_t r = 0; r < n * o; ++r) {
    const float bias = bp ? bp[r % o] : 0.f;
    for (int64_t i = 0; i < inner; ++i) yp[r * inner + i] = scale * static_cast<float>(a[r * inner + i]) + bias;
  }
}

// The f32 path's attribute: output scale, then the bias (1, O, 1...) added by a binary post-op.
dnnl::primitive_attr scaled_attr(float scale, const memory::desc& bias_md) {
  dnnl::primitive_attr attr;
  attr.set_output_scales(0, {scale});
  if (!bias_md.is_zero()) {
    dnnl::post_ops po;
    po.append_binary(dnnl::algorithm::binary_add, bias_md);
    attr.set_post_ops(po);
  }
  return attr;
}

void check_int8(const char* op, const Tensor& xk, const Tensor& wk, const Tensor& b, int64_t dims) {
  QIL_CHECK(xk.defined() && wk.defined(), op, ": undefined input or weight");
  QIL_CHECK(xk.dtype() == DType::u8 || xk.dtype() == DType::s8, op, ": input levels must be u8 or s8, got ", xk);
  QIL_CHECK(wk.dtype() == DType::s8, op, ": weight codes must be s8, got ", wk);
  QIL_CHECK(xk.dim() == dims && wk.dim() == dims, op, ": expected ", dims, "-d input and weight, got ", xk.shape(),
            " and ", wk.shape());
  if (b.defined())
    QIL_CHECK(b.dtype() == DType::f32 && b.dim() == 1 && b.size(0) == wk.size(0), op, ": bias must be f32 (",
              wk.size(0), "), got ", b);
}

}  // namespace

bool int8_kernels_have_vnni() { return cpu_has_vnni(); }

// y[n,o,i,j] = scale · Σ_{c in group(o), p, q} xk[n, c, i*s - pad + p*dil, j*s - pad + q*dil] · wk[o, c', p, q]
//              + b[o], the sum exact in s32.
Tensor conv2d_int8(const Tensor& xk, const Tensor& wk, const Tensor& b, float scale, const Conv2dGeom& g) {
  OpTimer timer("conv2d_int8");
  check_int8("conv2d_int8", xk, wk, b, 4);
  QIL_CHECK(g.groups >= 1 && wk.size(0) % g.groups == 0 && wk.size(1) * g.groups == xk.size(1), "conv2d_int8: weight ",
            wk.shape(), " with groups ", g.groups, " does not fit input ", xk.shape());
  const int64_t oh = conv_out_size(xk.size(2), wk.size(2), g.stride_h, g.pad_h, g.dil_h);
  const int64_t ow = conv_out_size(xk.size(3), wk.size(3), g.stride_w, g.pad_w, g.dil_w);
  QIL_CHECK(oh >= 1 && ow >= 1, "conv2d_int8: output size (", oh, ", ", ow, ") < 1 for input ", xk.shape(),
            ", weight ", wk.shape());
  const ConvDims d = conv_dims(xk, wk, g, oh, ow);
  const std::vector<Plane> planes = source_planes(xk, max_abs_code(wk));
  const bool one = planes.size() == 1 && planes[0].coef == 1;
  // One plane: f32 out with scale and bias fused; several: exact s32 sums, combined and scaled below.
  const memory::desc bias_md = one && b.defined() ? memory::desc({1, d.dst[1], 1, 1}, dt::f32, tag::nchw)
                                                  : memory::desc();
  dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, memory::desc(d.src, dt::u8, tag::any),
      memory::desc(d.wei, dt::s8, tag::any), memory::desc(), memory::desc(d.dst, one ? dt::f32 : dt::s32, tag::any),
      d.strides, d.dilates, d.pad_l, d.pad_r);
  dnnl::convolution_forward::primitive_desc pd(desc, one ? scaled_attr(scale, bias_md) : dnnl::primitive_attr(),
                                               cpu_engine());
  memory w_m = to_layout(wrap(wk, memory::desc(d.wei, dt::s8, d.wei_tag)), pd.weights_desc());
  const dnnl::convolution_forward conv(pd);
  auto run = [&](const Plane& p, const memory& dst) {
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, to_layout(wrap(p.k, act_md(p.k)), pd.src_desc())}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DST, dst}};
    if (!bias_md.is_zero()) args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] = wrap(b, bias_md);
    conv.execute(cpu_stream(), args);
  };
  if (one) {
    const bool out_blocked = keep_blocked() && wk.size(0) % block_channels() == 0;
    Tensor y = Tensor::empty({d.dst[0], d.dst[1], oh, ow}, DType::f32, out_blocked ? Layout::blocked : Layout::plain);
    memory y_user = wrap(y, act_md(y));
    memory y_m = output_in(y_user, pd.dst_desc());  // (N, O, OH, OW)
    run(planes[0], y_m);
    copy_back(y_m, y_user);
    cpu_stream().wait();
    return y;
  }
  Tensor acc = Tensor::zeros({d.dst[0], d.dst[1], oh, ow}, DType::s32);  // (N, O, OH, OW) exact sums
  memory part(pd.dst_desc(), cpu_engine()), part_plain(memory::desc(d.dst, dt::s32, tag::nchw), cpu_engine());
  for (const Plane& p : planes) {
    run(p, part);
    copy_back(part, part_plain);
    cpu_stream().wait();
    const int32_t* s = static_cast<const int32_t*>(part_plain.get_data_handle());
    int32_t* a = acc.data<int32_t>();
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] += p.coef * s[i];
  }
  Tensor y = Tensor::empty(acc.shape());  // (N, O, OH, OW)
  scale_and_bias(acc, b, scale, y);
  return y;
}

// y[n, o] = scale · Σ_i xk[n, i] · wk[o, i] + b[o], the sum exact in s32.
Tensor linear_int8(const Tensor& xk, const Tensor& wk, const Tensor& b, float scale) {
  OpTimer timer("linear_int8");
  check_int8("linear_int8", xk, wk, b, 2);
  QIL_CHECK(xk.size(1) == wk.size(1), "linear_int8: input ", xk.shape(), " has ", xk.size(1), " features, weight ",
            wk.shape(), " expects ", wk.size(1));
  const int64_t n = xk.size(0), in = xk.size(1), out = wk.size(0);
  const std::vector<Plane> planes = source_planes(xk, max_abs_code(wk));
  const bool one = planes.size() == 1 && planes[0].coef == 1;
  const memory::desc bias_md = one && b.defined() ? memory::desc({1, out}, dt::f32, tag::ab) : memory::desc();
  dnnl::inner_product_forward::desc desc(dnnl::prop_kind::forward_inference, memory::desc({n, in}, dt::u8, tag::nc),
                                         memory::desc({out, in}, dt::s8, tag::any), memory::desc(),
                                         memory::desc({n, out}, one ? dt::f32 : dt::s32, tag::nc));
  dnnl::inner_product_forward::primitive_desc pd(desc, one ? scaled_attr(scale, bias_md) : dnnl::primitive_attr(),
                                                 cpu_engine());
  memory w_m = to_layout(wrap(wk, memory::desc({out, in}, dt::s8, tag::oi)), pd.weights_desc());
  const dnnl::inner_product_forward ip(pd);
  auto run = [&](const Plane& p, const Tensor& dst) {
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, wrap(p.k, pd.src_desc())},
                                         {DNNL_ARG_WEIGHTS, w_m},
                                         {DNNL_ARG_DST, wrap(dst, pd.dst_desc())}};
    if (!bias_md.is_zero()) args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] = wrap(b, bias_md);
    ip.execute(cpu_stream(), args);
    cpu_stream().wait();
  };
  Tensor y = Tensor::empty({n, out});  // (N, out)
  if (one) {
    run(planes[0], y);
    return y;
  }
  Tensor acc = Tensor::zeros({n, out}, DType::s32), part = Tensor::empty({n, out}, DType::s32);  // exact sums
  for (const Plane& p : planes) {
    run(p, part);
    int32_t* a = acc.data<int32_t>();
    const int32_t* s = part.data<int32_t>();
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] += p.coef * s[i];
  }
  scale_and_bias(acc, b, scale, y);
  return y;
}

}  // namespace engine::ops
