// Fully connected layer y = x wᵀ + b on oneDNN's inner product (forward, backward-data, backward-weights with
// the bias gradient). Plain (N, in) / (out, in) layouts throughout: for 2-D data oneDNN runs a GEMM either way.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/dnnl_common.h"

namespace engine::ops {

using namespace dnnl_glue;

namespace {

struct LinearDims {
  memory::desc src, wei, bias, dst;
};

// `op` is the operands' data type (f32, or bf16 on the native bf16 path): x and w are read in it, the output,
// bias and the gradients handed back stay f32.
LinearDims linear_dims(int64_t n, int64_t in, int64_t out, bool with_bias, memory::data_type op) {
  return {memory::desc({n, in}, op, tag::nc), memory::desc({out, in}, op, tag::oi),
          with_bias ? plain_md({out}, tag::x) : memory::desc(), plain_md({n, out}, tag::nc)};
}

dnnl::inner_product_forward::primitive_desc linear_fwd_pd(const LinearDims& d, dnnl::prop_kind pk) {
  dnnl::inner_product_forward::desc desc(pk, d.src, d.wei, d.bias, d.dst);
  return dnnl::inner_product_forward::primitive_desc(desc, cpu_engine());
}

// The f32 (N, K) tensor t as memory of `md` (a converting copy when md is bf16, t itself when it is f32).
memory as_operand(const Tensor& t, const memory::desc& md) {
  return to_layout(wrap(t, memory::desc(md.dims(), memory::data_type::f32, tag::ab)), md);
}

void linear_backward(const Tensor& xs, const Tensor& ws, const LinearDims& d, bool emulate, const Tensor& gy_in,
                     std::vector<Tensor>& gx, const std::vector<bool>& fresh) {
  OpTimer timer("linear.bwd");
  auto fwd = linear_fwd_pd(d, dnnl::prop_kind::forward_training);
  const Tensor gy = emulate ? round_bf16(gy_in) : gy_in;
  const memory::desc gy_md(d.dst.dims(), d.src.data_type(), tag::nc);  // read in the operands' type
  const memory gy_m = as_operand(gy, gy_md);
  const memory::desc x_f32 = plain_md(d.src.dims(), tag::nc), w_f32 = plain_md(d.wei.dims(), tag::oi);
  const bool with_bias = !d.bias.is_zero();
  if (gx[0].defined()) {  // dx = gy w; into a fresh buffer, else to scratch and then added
    dnnl::inner_product_backward_data::desc desc(x_f32, d.wei, gy_md);
    dnnl::inner_product_backward_data::primitive_desc pd(desc, cpu_engine(), fwd);
    const memory dx_user = wrap(gx[0], x_f32);
    memory dx_m = grad_target(dx_user, x_f32, fresh[0]);
    dnnl::inner_product_backward_data(pd).execute(
        cpu_stream(), {{DNNL_ARG_DIFF_DST, gy_m}, {DNNL_ARG_WEIGHTS, as_operand(ws, d.wei)}, {DNNL_ARG_DIFF_SRC, dx_m}});
    write_or_accumulate(dx_m, dx_user, fresh[0]);
  }
  const bool need_w = gx[1].defined(), need_b = with_bias && gx[2].defined();
  if (need_w || need_b) {  // dw = gyᵀ x; db = column sums of gy
    dnnl::inner_product_backward_weights::desc desc(d.src, w_f32, d.bias, gy_md);
    dnnl::inner_product_backward_weights::primitive_desc pd(desc, cpu_engine(), fwd);
    const memory dw_user = need_w ? wrap(gx[1], w_f32) : memory();
    memory dw_m = grad_target(dw_user, w_f32, need_w && fresh[1]);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, as_operand(xs, d.src)}, {DNNL_ARG_DIFF_DST, gy_m}, {DNNL_ARG_DIFF_WEIGHTS, dw_m}};
    memory db_m;
    if (with_bias) args[DNNL_ARG_DIFF_BIAS] = db_m = memory(d.bias, cpu_engine());
    dnnl::inner_product_backward_weights(pd).execute(cpu_stream(), args);
    if (need_w) write_or_accumulate(dw_m, dw_user, fresh[1]);
    if (need_b) write_or_accumulate(db_m, wrap(gx[2], d.bias), fresh[2]);
  }
  cpu_stream().wait();
}

}  // namespace

// y[n, o] = b[o] + sum_i x[n, i] * w[o, i]
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  OpTimer timer("linear");
  QIL_CHECK(x.defined() && w.defined(), "linear: undefined input or weight");
  QIL_CHECK(x.dtype() == DType::f32 && w.dtype() == DType::f32, "linear: expected f32 tensors, got ", x, " and ", w);
  QIL_CHECK(x.dim() == 2, "linear: input must be (N, in), got ", x.shape());
  QIL_CHECK(w.dim() == 2, "linear: weight must be (out, in), got ", w.shape());
  QIL_CHECK(x.size(1) == w.size(1), "linear: input ", x.shape(), " has ", x.size(1), " features, weight ", w.shape(),
            " expects ", w.size(1));
  QIL_CHECK(x.size(0) >= 1 && w.size(0) >= 1 && w.size(1) >= 1, "linear: empty input ", x.shape(), " or weight ",
            w.shape());
  const bool with_bias = b.defined();
  if (with_bias) {
    QIL_CHECK(b.dtype() == DType::f32 && b.dim() == 1 && b.size(0) == w.size(0), "linear: bias must be (",
              w.size(0), "), got ", b.shape());
  }
  const int64_t n = x.size(0), in = x.size(1), out = w.size(0);
  const bool emulate = bf16_emulated();
  const auto op = precision() == Precision::bf16 && !emulate ? memory::data_type::bf16 : memory::data_type::f32;
  const LinearDims d = linear_dims(n, in, out, with_bias, op);
  const bool training = grad_enabled() && (x.requires_grad() || w.requires_grad() || b.requires_grad());
  auto pd = linear_fwd_pd(d, training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference);
  const Tensor xv = emulate ? round_bf16(x) : x, wv = emulate ? round_bf16(w) : w;  // the operands as used

  Tensor y = Tensor::empty({n, out});  // (N, out)
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, as_operand(xv, d.src)}, {DNNL_ARG_WEIGHTS, as_operand(wv, d.wei)}, {DNNL_ARG_DST, wrap(y, d.dst)}};
  if (with_bias) args[DNNL_ARG_BIAS] = wrap(b, d.bias);
  dnnl::inner_product_forward(pd).execute(cpu_stream(), args);
  cpu_stream().wait();

  return record_fresh("linear", y, {x, w, b},
                      [xs = xv.detach(), ws = wv.detach(), d, emulate](const Tensor& gy, std::vector<Tensor>& gx,
                                                                       const std::vector<bool>& fresh) {
                        linear_backward(xs, ws, d, emulate, gy, gx, fresh);
                      });
}

// The forward of linear_int8, the backward of linear, from x and w as given.
Tensor linear_int_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& xk, const Tensor& wk,
                          float scale) {
  const bool training = grad_enabled() && x.defined() && w.defined() &&
                        (x.requires_grad() || w.requires_grad() || b.requires_grad());
  Tensor y;
  {
    NoGradGuard ng;
    y = linear_int8(xk, wk, b, scale);
  }
  if (!training) return y;
  QIL_CHECK(x.dtype() == DType::f32 && w.dtype() == DType::f32 && x.shape() == xk.shape() && w.shape() == wk.shape(),
            "linear_int_forward: operands ", x, " and ", w, " do not match their levels ", xk.shape(), " and ",
            wk.shape());
  const bool emulate = bf16_emulated();
  const auto op = precision() == Precision::bf16 && !emulate ? memory::data_type::bf16 : memory::data_type::f32;
  const LinearDims d = linear_dims(x.size(0), x.size(1), w.size(0), b.defined(), op);
  const Tensor xv = emulate ? round_bf16(x) : x, wv = emulate ? round_bf16(w) : w;  // the operands backward reads
  return record_fresh("linear_int_forward", y, {x, w, b},
                      [xs = xv.detach(), ws = wv.detach(), d, emulate](const Tensor& gy, std::vector<Tensor>& gx,
                                                                       const std::vector<bool>& fresh) {
                        linear_backward(xs, ws, d, emulate, gy, gx, fresh);
                      });
}

}  // namespace engine::ops
