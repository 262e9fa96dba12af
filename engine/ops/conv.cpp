// 2-D convolution on oneDNN (forward, backward-data, backward-weights with the bias gradient) and the
// output-size rule shared with pooling. oneDNN picks its own (blocked) layouts; the input is taken in its own
// layout, and the output is returned blocked when set_keep_blocked is on and oneDNN chose nChw16c (nChw8c on
// AVX2: block_channels), else
// reordered to plain NCHW. Weights stay plain OIHW at the op boundary.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/dnnl_common.h"

namespace engine::ops {

using namespace dnnl_glue;

int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil, bool ceil_mode) {
  QIL_CHECK(in >= 1 && k >= 1 && stride >= 1 && pad >= 0 && dil >= 1, "conv_out_size: invalid input ", in,
            ", kernel ", k, ", stride ", stride, ", padding ", pad, ", dilation ", dil);
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;  // room left after the first window
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // PyTorch: in ceil mode the last window must start inside the input or its left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

namespace {

using dt = memory::data_type;
memory::desc any_md(const memory::dims& d, dt type = dt::f32) { return memory::desc(d, type, tag::any); }

// `op` is the operands' data type: f32, or bf16 on the native bf16 path (ops.h: Precision). The output, the
// bias and every gradient handed back stay f32.
dnnl::convolution_forward::primitive_desc conv_fwd_pd(const ConvDims& d, bool with_bias, dnnl::prop_kind pk,
                                                      dt op) {
  const memory::desc bias_md = with_bias ? plain_md(d.bias, tag::x) : memory::desc();
  dnnl::convolution_forward::desc desc(pk, dnnl::algorithm::convolution_direct, any_md(d.src, op),
                                       any_md(d.wei, op), bias_md, any_md(d.dst), d.strides, d.dilates, d.pad_l,
                                       d.pad_r);
  return dnnl::convolution_forward::primitive_desc(desc, cpu_engine());
}

// What conv2d's backward needs from its forward. x_m is the input as the forward primitive read it (x itself,
// or its reordered copy: bf16 on the native path), so backward-weights does not convert x a second time; xs keeps
// x's storage alive when x_m aliases it.
struct ConvSaved {
  Tensor xs, ws;  // ws: the weight as the forward used it (bf16-rounded under the emulation)
  memory x_m;
  memory::desc x_md, y_md;
  ConvDims d;
  bool with_bias;
  dt op;
  bool emulate;  // bf16 emulation: the output gradient is rounded too
};

void conv_backward(const ConvSaved& s, const Tensor& gy_in, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
  OpTimer timer("conv2d.bwd");
  const ConvDims& d = s.d;
  auto fwd = conv_fwd_pd(d, s.with_bias, dnnl::prop_kind::forward_training, s.op);
  const Tensor gy = s.emulate ? round_bf16(gy_in) : gy_in;
  const memory gy_user = wrap(gy, s.y_md);  // gradients come in their tensor's layout
  memory gy_m;  // gy reordered once when both passes want the same layout (they usually do)
  auto gy_as = [&](const memory::desc& md) {
    if (!gy_m || gy_m.get_desc() != md) gy_m = to_layout(gy_user, md);
    return gy_m;
  };
  if (gx[0].defined()) {  // dx = conv_transpose(gy, w)
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, any_md(d.src),
                                               any_md(d.wei, s.op), any_md(d.dst, s.op), d.strides, d.dilates,
                                               d.pad_l, d.pad_r);
    dnnl::convolution_backward_data::primitive_desc pd(desc, cpu_engine(), fwd);
    memory w_m = to_layout(wrap(s.ws, plain_md(d.wei, d.wei_tag)), pd.weights_desc());
    const memory dx_user = wrap(gx[0], s.x_md);  // oneDNN overwrites: a fresh one directly
    memory dx_m = grad_target(dx_user, pd.diff_src_desc(), fresh[0]);
    dnnl::convolution_backward_data(pd).execute(
        cpu_stream(), {{DNNL_ARG_DIFF_DST, gy_as(pd.diff_dst_desc())}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DIFF_SRC, dx_m}});
    write_or_accumulate(dx_m, dx_user, fresh[0]);
  }
  const bool need_w = gx[1].defined(), need_b = s.with_bias && gx[2].defined();
  if (need_w || need_b) {  // dw = corr(x, gy); db = sum of gy over N, H, W
    const memory::desc db_md = s.with_bias ? plain_md(d.bias, tag::x) : memory::desc();
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, any_md(d.src, s.op),
                                                  any_md(d.wei), db_md, any_md(d.dst, s.op), d.strides, d.dilates,
                                                  d.pad_l, d.pad_r);
    dnnl::convolution_backward_weights::primitive_desc pd(desc, cpu_engine(), fwd);
    memory xb_m = to_layout(s.x_m, pd.src_desc());
    const memory dw_user = need_w ? wrap(gx[1], plain_md(d.wei, d.wei_tag)) : memory();
    memory dw_m = grad_target(dw_user, pd.diff_weights_desc(), need_w && fresh[1]);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, xb_m}, {DNNL_ARG_DIFF_DST, gy_as(pd.diff_dst_desc())}, {DNNL_ARG_DIFF_WEIGHTS, dw_m}};
    memory db_m;
    if (s.with_bias) args[DNNL_ARG_DIFF_BIAS] = db_m = memory(db_md, cpu_engine());
    dnnl::convolution_backward_weights(pd).execute(cpu_stream(), args);
    if (need_w) write_or_accumulate(dw_m, dw_user, fresh[1]);
    if (need_b) write_or_accumulate(db_m, wrap(gx[2], db_md), fresh[2]);
  }
  cpu_stream().wait();
}

void check_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dGeom& g) {
  QIL_CHECK(x.defined() && w.defined(), "conv2d: undefined input or weight");
  QIL_CHECK(x.dtype() == DType::f32 && w.dtype() == DType::f32, "conv2d: expected f32 tensors, got ", x, " and ",
            w);
  QIL_CHECK(x.dim() == 4, "conv2d: input must be (N, C, H, W), got ", x.shape());
  QIL_CHECK(w.dim() == 4, "conv2d: weight must be (O, C/groups, KH, KW), got ", w.shape());
  QIL_CHECK(g.groups >= 1, "conv2d: groups must be >= 1, got ", g.groups);
  QIL_CHECK(x.size(1) % g.groups == 0 && w.size(0) % g.groups == 0, "conv2d: groups ", g.groups,
            " must divide the input channels ", x.size(1), " and output channels ", w.size(0), " (input ",
            x.shape(), ", weight ", w.shape(), ")");
  QIL_CHECK(w.size(1) * g.groups == x.size(1), "conv2d: weight ", w.shape(), " with groups ", g.groups,
            " expects ", w.size(1) * g.groups, " input channels, input is ", x.shape());
  QIL_CHECK(g.stride_h >= 1 && g.stride_w >= 1 && g.dil_h >= 1 && g.dil_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0,
            "conv2d: invalid stride (", g.stride_h, ", ", g.stride_w, "), dilation (", g.dil_h, ", ", g.dil_w,
            ") or padding (", g.pad_h, ", ", g.pad_w, ")");
  if (b.defined()) {
    QIL_CHECK(b.dtype() == DType::f32 && b.dim() == 1 && b.size(0) == w.size(0), "conv2d: bias must be (",
              w.size(0), "), got ", b.shape());
  }
}

}  // namespace

// y[n,o,i,j] = b[o] + sum_{c in group(o), p, q} x[n, c, i*s - pad + p*dil, j*s - pad + q*dil] * w[o, c', p, q]
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dGeom& g) {
  OpTimer timer("conv2d");
  check_conv(x, w, b, g);
  const int64_t oh = conv_out_size(x.size(2), w.size(2), g.stride_h, g.pad_h, g.dil_h);
  const int64_t ow = conv_out_size(x.size(3), w.size(3), g.stride_w, g.pad_w, g.dil_w);
  QIL_CHECK(oh >= 1 && ow >= 1, "conv2d: output size (", oh, ", ", ow, ") < 1 for input ", x.shape(),
            ", weight ", w.shape(), ", stride (", g.stride_h, ", ", g.stride_w, "), padding (", g.pad_h, ", ",
            g.pad_w, "), dilation (", g.dil_h, ", ", g.dil_w, ")");
  const ConvDims d = conv_dims(x, w, g, oh, ow);
  const bool with_bias = b.defined();
  const bool training = grad_enabled() && (x.requires_grad() || w.requires_grad() || b.requires_grad());
  const bool emulate = bf16_emulated();
  const dt op = precision() == Precision::bf16 && !emulate ? dt::bf16 : dt::f32;
  const Tensor xv = emulate ? round_bf16(x) : x, wv = emulate ? round_bf16(w) : w;  // the operands as used
  auto pd = conv_fwd_pd(d, with_bias,
                        training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, op);
  // In and out in the tensors' own layouts; reorders only where oneDNN wants another one.
  const memory::desc x_md = act_md(x);
  memory x_m = to_layout(wrap(xv, x_md), pd.src_desc());
  memory w_m = to_layout(wrap(wv, plain_md(d.wei, d.wei_tag)), pd.weights_desc());
  const bool out_blocked = keep_blocked() && w.size(0) % block_channels() == 0 && pd.dst_desc() == blocked_md(d.dst);
  Tensor y = Tensor::empty({x.size(0), w.size(0), oh, ow}, DType::f32,
                           out_blocked ? Layout::blocked : Layout::plain);  // (N, O, OH, OW)
  const memory::desc y_md = act_md(y);
  memory y_user = wrap(y, y_md);
  memory y_m = output_in(y_user, pd.dst_desc());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x_m}, {DNNL_ARG_WEIGHTS, w_m}, {DNNL_ARG_DST, y_m}};
  if (with_bias) args[DNNL_ARG_BIAS] = wrap(b, plain_md(d.bias, tag::x));
  dnnl::convolution_forward(pd).execute(cpu_stream(), args);
  copy_back(y_m, y_user);
  cpu_stream().wait();

  const bool aliases = x_m.get_data_handle() == xv.bytes();
  ConvSaved saved{aliases ? xv.detach() : Tensor(), wv.detach(), x_m, x_md, y_md, d, with_bias, op, emulate};
  return record_fresh("conv2d", y, {x, w, b},
                      [saved](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
                        conv_backward(saved, gy, gx, fresh);
                      });
}

// The forward of conv2d_int8, the backward of conv2d: the same ConvSaved conv2d keeps, from x and w as given.
Tensor conv2d_int_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& xk, const Tensor& wk,
                          float scale, const Conv2dGeom& g) {
  const bool training = grad_enabled() && x.defined() && w.defined() &&
                        (x.requires_grad() || w.requires_grad() || b.requires_grad());
  Tensor y;
  {
    NoGradGuard ng;
    y = conv2d_int8(xk, wk, b, scale, g);
  }
  if (!training) return y;
  check_conv(x, w, b, g);
  QIL_CHECK(x.shape() == xk.shape() && w.shape() == wk.shape(), "conv2d_int_forward: operands ", x.shape(), " and ",
            w.shape(), " do not match their levels ", xk.shape(), " and ", wk.shape());
  OpTimer timer("conv2d_int_forward.save");
  const ConvDims d = conv_dims(x, w, g, y.size(2), y.size(3));
  const bool emulate = bf16_emulated();
  const dt op = precision() == Precision::bf16 && !emulate ? dt::bf16 : dt::f32;
  const Tensor xv = emulate ? round_bf16(x) : x, wv = emulate ? round_bf16(w) : w;  // the operands backward reads
  const memory::desc x_md = act_md(xv), y_md = act_md(y);
  // Backward-weights reorders x_m into its own layout when it needs to. On the native bf16 path x is kept as
  // conv2d keeps it, converted to the bf16 source its forward would have read, so the f32 x is not held until
  // backward (half the bytes; the conversion backward would otherwise do, done here).
  memory x_m = wrap(xv, x_md);
  if (op == dt::bf16)
    x_m = to_layout(x_m, conv_fwd_pd(d, b.defined(), dnnl::prop_kind::forward_training, op).src_desc());
  const bool aliases = x_m.get_data_handle() == xv.bytes();
  ConvSaved saved{aliases ? xv.detach() : Tensor(), wv.detach(), x_m, x_md, y_md, d, b.defined(), op, emulate};
  return record_fresh("conv2d_int_forward", y, {x, w, b},
                      [saved](const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
                        conv_backward(saved, gy, gx, fresh);
                      });
}

}  // namespace engine::ops
