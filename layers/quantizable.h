// QuantizableModule: what Conv2d and Linear share to run quantized. When enabled, forward quantizes the layer's
// input (act_quant) and weight (weight_quant) and multiplies the weight by a learnable output scale, since
// conv(x̄, s·w̄) = s·conv(x̄, w̄) and the weight is the smaller tensor. Parameters are registered as
// `weight_quant.{c,d,gamma}`, `act_quant.{c,d}` and `out_scale`.
// Calibration is a mode of forward: observe inputs and weights, then fit the output scale by least squares
// against the full-precision output; it is driven by quantize.h, never by the layer itself.
#pragma once
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "layers/module.h"
#include "quant/quantizer.h"

namespace layers {

struct LayerQuantSpec {
  int wbits = 32;  // 32 = full precision
  int abits = 32;
  bool signed_input = false;  // the first conv's input can be negative: symmetric rule
  bool fix_gamma = false;
  bool quantized() const { return wbits < 32 || abits < 32; }
};

enum class CalibPhase { none, observe, fit_scale };

// How quantizer-parameter gradients are rescaled before a step (QuantizableModule::scale_quant_grads).
enum class GradBalance { none, sqrt, relative };
GradBalance parse_grad_balance(const std::string& name);  // "none" | "sqrt" | "relative"; throws naming it
const char* grad_balance_name(GradBalance mode);

class QuantizableModule : public Module {
 public:
  // Creates the quantizers on first use (registering their parameters), or changes their widths; a later
  // stage keeps the intervals and scale it had. Width 32 switches that side off (its parameters remain).
  void set_quant(const LayerQuantSpec& spec);
  const LayerQuantSpec& quant_spec() const { return spec_; }
  bool quantized() const { return spec_.quantized(); }
  quant::QilWeightQuantizer* weight_quantizer() const { return w_q_.get(); }
  quant::QilActQuantizer* act_quantizer() const { return a_q_.get(); }
  Tensor out_scale() const { return scale_; }
  // The weight the layer trains (full precision).
  virtual Tensor weight() const = 0;

  void set_calib_phase(CalibPhase p) { phase_ = p; }
  // After CalibPhase::observe: set the intervals of uncalibrated quantizers. After fit_scale: set out_scale,
  // the least-squares s in ||(y_fp − b) − s·z||² with z = op(x̄, w̄) before the bias (the layer computes
  // op(x̄, s·w̄) + b, so the bias is not scaled).
  void finish_observe();
  void finish_fit_scale();
  // False until the output scale is fitted, and again whenever set_quant adds a quantizer to the layer (the
  // quantized output it must match has changed).
  bool scale_fitted() const { return scale_fitted_; }
  void set_scale_fitted(bool f) { scale_fitted_ = f; }
  // Constraints of the quantizer parameters (after each optimizer step).
  void project();
  // Rescales the gradients of this layer's quantizer parameters before an optimizer step (the rule and its
  // gradients are unchanged; only the step each parameter takes is):
  // - sqrt: c, d, γ by 1/sqrt(N·q) (N: elements quantized per image for activations, per weight tensor for
  //   weights; q: positive levels), out_scale by 1/sqrt(N_w). A quantizer parameter's gradient is a sum over
  //   N elements, so one LR cannot suit a 2k-weight conv and an 800k-weight linear alike (as LSQ does).
  // - relative: c, d and out_scale by their own value squared, so that SGD takes steps in log-space:
  //   Δc/c = −lr·(c·∂L/∂c). c·∂L/∂c is the loss's sensitivity to a relative change of the interval, which is
  //   the same whatever the scale of the values quantized, the layer's size or the batch, so activation
  //   intervals (values ~1, gradients diluted over every element of the batch) learn at the rate weight
  //   intervals (values ~0.05) do. γ is already dimensionless and keeps its gradient.
  // - none: the plain gradients.
  void scale_quant_grads(GradBalance mode);
  // The slots behind layers/observe.h (use observe_inputs there, which names the layer and removes the
  // observer for you): each observer is called with the layer's input, before quantization, on every
  // quantized forward. remove_input_observer ignores an id it does not hold.
  int add_input_observer(std::function<void(const Tensor&)> fn);
  void remove_input_observer(int id);

 protected:
  // The layer's compute: y = op(x, w, b) (b may be undefined). forward_quantized wraps it with quantization
  // and calibration; the output scale multiplies the weight, so it scales the pre-bias output only.
  using LayerOp = std::function<Tensor(const Tensor& x, const Tensor& w, const Tensor& b)>;
  Tensor forward_quantized(const Tensor& x, const Tensor& bias, const LayerOp& op);

 private:
  LayerQuantSpec spec_;
  std::unique_ptr<quant::QilWeightQuantizer> w_q_;
  std::unique_ptr<quant::QilActQuantizer> a_q_;
  Tensor scale_;  // one element
  bool scale_fitted_ = false;
  CalibPhase phase_ = CalibPhase::none;
  double fit_num_ = 0, fit_den_ = 0;
  int64_t input_per_image_ = 0;  // elements of one image's input, seen by the last forward
  std::vector<std::pair<int, std::function<void(const Tensor&)>>> input_observers_;  // (id, callback)
  int next_observer_id_ = 0;
};

}  // namespace layers
