// Quantized forward, calibration phases and parameter registration shared by Conv2d and Linear.
#include "layers/quantizable.h"

#include "engine/autograd.h"
#include "engine/check.h"
#include "engine/ops.h"

#include <algorithm>
#include <cmath>

namespace layers {

void QuantizableModule::set_quant(const LayerQuantSpec& spec) {
  if (spec.wbits < 32) {
    if (!w_q_) {
      w_q_ = quant::make_weight_quantizer(spec.quantizer, spec.wbits, spec.options);
      for (auto& [n, t] : w_q_->named_parameters()) register_parameter("weight_quant." + n, t, ParamKind::quant);
      scale_fitted_ = false;
    } else {
      w_q_->set_bits(spec.wbits);
    }
    // The plan's setting wins over the one a checkpoint was saved with (`--init` then `--fix-gamma`).
    if (w_q_->fix_gamma() != spec.options.fix_gamma) w_q_->set_fix_gamma(spec.options.fix_gamma);
    w_q_->set_options(spec.options);
  }
  if (spec.abits < 32) {
    quant::QuantizerOptions o = spec.options;
    o.is_signed = spec.signed_input;
    if (!a_q_) {
      a_q_ = quant::make_activation_quantizer(spec.quantizer, spec.abits, o);
      for (auto& [n, t] : a_q_->named_parameters()) register_parameter("act_quant." + n, t, ParamKind::quant);
      scale_fitted_ = false;
    } else {
      a_q_->set_bits(spec.abits);
    }
    a_q_->set_options(o);
  }
  if (spec.quantized() && !scale_.defined())
    scale_ = register_parameter("out_scale", Tensor::scalar(1.f), ParamKind::quant);
  spec_ = spec;
}

bool QuantizableModule::set_int8(bool on) {
  int8_codes_ = Tensor();
  if (!on || !active_weight_quantizer() || !active_act_quantizer()) return false;
  a_q_->check_levels_fit();
  engine::NoGradGuard ng;
  Tensor codes = w_q_->levels(weight().detach());
  int8_w_step_ = w_q_->level_step();
  int8_codes_ = codes;
  return true;
}

Tensor QuantizableModule::forward_quantized(const Tensor& x, const Tensor& bias, const LayerOp& op,
                                            const IntLayerOp& int_op) {
  const Tensor w = weight();
  if (!quantized()) return op(x, w, bias);
  if (x.dim() > 0 && x.size(0) > 0) input_per_image_ = x.numel() / x.size(0);
  for (const auto& [id, observe] : input_observers_) observe(x);
  if (int8()) {
    QIL_CHECK(phase_ == CalibPhase::none && !engine::grad_enabled(),
              "integer inference runs without gradients and outside calibration (switch it off to train)");
    // x̄·(s·w̄) summed = (s·step_x·step_w)·Σ k_x·k_w: one scale per layer.
    const double scale = static_cast<double>(scale_.item()) * a_q_->level_step() * int8_w_step_;
    return int_op(Tensor(), Tensor(), bias, a_q_->levels(x), int8_codes_, static_cast<float>(scale));
  }
  const bool wq = spec_.wbits < 32, aq = spec_.abits < 32;
  if (phase_ == CalibPhase::observe) {
    if (wq) w_q_->observe(w);
    if (aq) a_q_->observe(x);
    return op(x, w, bias);  // the network stays full precision while its statistics are gathered
  }
  if (phase_ == CalibPhase::fit_scale) {
    engine::NoGradGuard ng;
    // Both outputs before the bias: the scale multiplies the weight, so the layer computes op(x̄, s·w̄) + b.
    Tensor y_fp = op(x, w, Tensor());
    Tensor y_q = op(aq ? (*a_q_)(x) : x, wq ? (*w_q_)(w) : w, Tensor());
    // Fit s in ||y_fp - s*y_q||^2 over every calibration batch: accumulate the two inner products.
    const float* a = y_fp.data();
    const float* b = y_q.data();
    double num = 0, den = 0;
    for (int64_t i = 0; i < y_fp.numel(); ++i) {
      num += static_cast<double>(a[i]) * b[i];
      den += static_cast<double>(b[i]) * b[i];
    }
    fit_num_ += num;
    fit_den_ += den;
    return op(x, w, bias);
  }
  Tensor xin = aq ? (*a_q_)(x) : x;
  Tensor wbar = wq ? (*w_q_)(w) : w;
  if (runs_int8_forward(engine::grad_enabled())) return forward_int(xin, wbar, bias, int_op);
  if (engine::ops::precision() == engine::ops::Precision::bf16)
    return forward_levels(xin, wbar, bias, [&](const Tensor& kx, const Tensor& kw) { return op(kx, kw, Tensor()); });
  return op(xin, engine::ops::mul_scalar(wbar, scale_), bias);
}

Tensor QuantizableModule::forward_levels(const Tensor& xbar, const Tensor& wbar, const Tensor& bias,
                                         const LevelsOp& op_of_levels) const {
  using engine::ops::mul_scalar;
  const bool wq = spec_.wbits < 32, aq = spec_.abits < 32;
  const double sx = aq ? a_q_->level_step() : 1.0, sw = wq ? w_q_->level_step() : 1.0;
  // x̄/step is the level k up to an f32 rounding of the division; the bf16 conversion of the operands rounds it to
  // k exactly (|k| <= 256). The same constant divides here and multiplies below, so the gradients are the f32
  // path's: d/dx̄ of (x̄/step)·step is 1, whatever step is (LSQ's and PACT's steps are learned).
  const Tensor kx = aq ? mul_scalar(xbar, Tensor::scalar(static_cast<float>(1.0 / sx))) : xbar;
  const Tensor kw = wq ? mul_scalar(wbar, Tensor::scalar(static_cast<float>(1.0 / sw))) : wbar;
  const Tensor c = mul_scalar(scale_, Tensor::scalar(static_cast<float>(sx * sw)));
  const Tensor y = mul_scalar(op_of_levels(kx, kw), c);
  return bias.defined() ? engine::ops::add_bias(y, bias) : y;
}

bool QuantizableModule::runs_int8_forward(bool training) const {
  return int8_forward_ && training && active_weight_quantizer() && active_act_quantizer() && w_q_->levels_fit() &&
         a_q_->levels_fit();
}

Tensor QuantizableModule::forward_int(const Tensor& xbar, const Tensor& wbar, const Tensor& bias,
                                      const IntLayerOp& int_op) const {
  const double sx = a_q_->level_step(), sw = w_q_->level_step();
  Tensor kx, kw;
  {
    engine::NoGradGuard ng;
    kx = a_q_->levels_of(xbar);
    kw = w_q_->levels_of(wbar);
  }
  if (engine::ops::precision() == engine::ops::Precision::bf16)  // backward reads the levels (exact in bf16)
    return forward_levels(xbar, wbar, bias, [&](const Tensor& kxf, const Tensor& kwf) {
      return int_op(kxf, kwf, Tensor(), kx, kw, 1.f);
    });
  // x̄·(s·w̄) summed = (s·step_x·step_w)·Σ k_x·k_w; backward reads x̄ and s·w̄ as the float path's conv does.
  const float scale = static_cast<float>(static_cast<double>(scale_.item()) * sx * sw);
  return int_op(xbar, engine::ops::mul_scalar(wbar, scale_), bias, kx, kw, scale);
}

int QuantizableModule::add_input_observer(std::function<void(const Tensor&)> fn) {
  input_observers_.emplace_back(next_observer_id_, std::move(fn));
  return next_observer_id_++;
}

void QuantizableModule::remove_input_observer(int id) {
  auto& v = input_observers_;
  v.erase(std::remove_if(v.begin(), v.end(), [id](const auto& o) { return o.first == id; }), v.end());
}

void QuantizableModule::finish_observe() {
  if (w_q_ && spec_.wbits < 32) w_q_->finish_calibration();
  if (a_q_ && spec_.abits < 32) a_q_->finish_calibration();
}

void QuantizableModule::recalibrate_weights() {
  if (!w_q_) return;
  w_q_->set_calibrated(false);
  scale_fitted_ = false;
}

void QuantizableModule::recalibrate_activations() {
  if (!a_q_) return;
  a_q_->set_calibrated(false);
  scale_fitted_ = false;
}

void QuantizableModule::finish_fit_scale() {
  if (!quantized() || scale_fitted_) return;
  scale_.data()[0] = fit_den_ > 0 ? static_cast<float>(fit_num_ / fit_den_) : 1.f;
  fit_num_ = fit_den_ = 0;
  scale_fitted_ = true;
}

void QuantizableModule::scale_quant_grads(GradBalance mode) {
  if (mode == GradBalance::none) return;
  const int64_t nw = weight().numel();
  if (auto* w = active_weight_quantizer()) w->scale_gradients(mode, nw);
  // Under relative an activation quantizer needs no element count; under sqrt, none seen yet leaves it alone.
  if (auto* a = active_act_quantizer()) a->scale_gradients(mode, input_per_image_);
  if (!scale_.defined() || !scale_.requires_grad() || !scale_.grad().defined()) return;
  Tensor g = scale_.grad();
  const double f = mode == GradBalance::relative ? static_cast<double>(scale_.item()) * scale_.item()
                                                 : 1.0 / std::sqrt(static_cast<double>(nw));
  g.data()[0] = static_cast<float>(g.data()[0] * f);
}

void QuantizableModule::project() {
  if (w_q_) w_q_->project();
  if (a_q_) a_q_->project();
}

}  // namespace layers
