// 2-D batch normalization on oneDNN: training mode (batch statistics, running buffers updated in place) and
// eval mode (running statistics via oneDNN's use_global_stats flag), each with its backward. Eval-mode
// backward is real, not an error: quantizer-only training runs BN frozen in eval mode and still needs the
// gradient to flow through it (to x, and to gamma/beta if they ask). Not a layout-propagating implementation.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/dnnl_common.h"

namespace engine::ops {

using namespace dnnl_glue;
using dnnl::normalization_flags;

namespace {

struct BnSetup {
  memory::desc data;   // (N, C, H, W) plain
  memory::desc chan;   // (C) plain: scale, shift, mean, variance
  normalization_flags flags;
  float eps;
};

// The forward pd used for training and as the hint for backward (which must agree on the flags).
dnnl::batch_normalization_forward::primitive_desc bn_fwd_pd(const BnSetup& s, dnnl::prop_kind pk) {
  dnnl::batch_normalization_forward::desc desc(pk, s.data, s.eps, s.flags);
  return dnnl::batch_normalization_forward::primitive_desc(desc, cpu_engine());
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

  BnSetup s;
  s.data = plain_md(dims_of(x), tag::nchw);
  s.chan = plain_md({c}, tag::x);
  s.flags = affine ? normalization_flags::use_scale | normalization_flags::use_shift : normalization_flags::none;
  if (!training) s.flags = s.flags | normalization_flags::use_global_stats;
  s.eps = eps;

  // Statistics the output was normalized with; captured by backward. Eval copies the running buffers so a
  // later in-place update cannot change what backward sees.
  Tensor mean = training ? Tensor::empty({c}) : running_mean.clone();  // (C)
  Tensor var = training ? Tensor::empty({c}) : running_var.clone();    // (C), biased in training
  Tensor y = Tensor::empty(x.shape());                                 // (N, C, H, W)
  auto pd = bn_fwd_pd(s, training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, wrap(x, s.data)},
                                       {DNNL_ARG_DST, wrap(y, s.data)},
                                       {DNNL_ARG_MEAN, wrap(mean, s.chan)},
                                       {DNNL_ARG_VARIANCE, wrap(var, s.chan)}};
  if (affine) {
    args[DNNL_ARG_SCALE] = wrap(gamma, s.chan);
    args[DNNL_ARG_SHIFT] = wrap(beta, s.chan);
  }
  dnnl::batch_normalization_forward(pd).execute(cpu_stream(), args);
  cpu_stream().wait();

  if (training && track) {  // PyTorch: the running variance is the unbiased one, var * m / (m - 1)
    float* rm = running_mean.data();
    float* rv = running_var.data();
    const float* bm = mean.data();
    const float* bv = var.data();
    const float unbias = static_cast<float>(m) / static_cast<float>(m - 1);
    for (int64_t i = 0; i < c; ++i) {
      rm[i] = (1.f - momentum) * rm[i] + momentum * bm[i];
      rv[i] = (1.f - momentum) * rv[i] + momentum * bv[i] * unbias;
    }
  }

  return record("batch_norm2d", y, {x, gamma, beta},
                [xs = x.detach(), gs = affine ? gamma.detach() : Tensor(), bs = affine ? beta.detach() : Tensor(), mean,
                 var, s](
                    const Tensor& gy, std::vector<Tensor>& gx) {
                  OpTimer timer("batch_norm2d.bwd");
                  const bool affine = gs.defined();
                  auto fwd = bn_fwd_pd(s, dnnl::prop_kind::forward_training);
                  // With use_global_stats oneDNN treats mean/var as constants, which is exactly eval mode.
                  dnnl::batch_normalization_backward::desc desc(
                      affine ? dnnl::prop_kind::backward : dnnl::prop_kind::backward_data, s.data, s.data, s.eps,
                      s.flags);
                  dnnl::batch_normalization_backward::primitive_desc pd(desc, cpu_engine(), fwd);
                  memory dx_m(s.data, cpu_engine());  // oneDNN overwrites: scratch, then add
                  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, wrap(xs, s.data)},
                                                       {DNNL_ARG_DIFF_DST, wrap(gy, s.data)},
                                                       {DNNL_ARG_MEAN, wrap(mean, s.chan)},
                                                       {DNNL_ARG_VARIANCE, wrap(var, s.chan)},
                                                       {DNNL_ARG_DIFF_SRC, dx_m}};
                  memory dg_m, db_m;
                  if (affine) {
                    args[DNNL_ARG_SCALE] = wrap(gs, s.chan);
                    args[DNNL_ARG_SHIFT] = wrap(bs, s.chan);  // oneDNN 2.6 lists shift as a backward input too
                    args[DNNL_ARG_DIFF_SCALE] = dg_m = memory(s.chan, cpu_engine());
                    args[DNNL_ARG_DIFF_SHIFT] = db_m = memory(s.chan, cpu_engine());
                  }
                  dnnl::batch_normalization_backward(pd).execute(cpu_stream(), args);
                  if (gx[0].defined()) accumulate(dx_m, wrap(gx[0], s.data));
                  if (affine && gx[1].defined()) accumulate(dg_m, wrap(gx[1], s.chan));
                  if (affine && gx[2].defined()) accumulate(db_m, wrap(gx[2], s.chan));
                  cpu_stream().wait();
                });
}

}  // namespace engine::ops
