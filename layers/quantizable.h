// QuantizableModule: what Conv2d and Linear share to run quantized. When enabled, forward quantizes the layer's
// input (act_quant) and weight (weight_quant) and multiplies the weight by a learnable output scale, since
// conv(x̄, s·w̄) = s·conv(x̄, w̄) and the weight is the smaller tensor. Parameters are registered as
// `weight_quant.<name>` and `act_quant.<name>` for each of the quantizers' named_parameters() (QIL:
// `weight_quant.{c,d,gamma}`, `act_quant.{c,d}`) and `out_scale`. The layer reaches its quantizers only through
// quant::Quantizer; which family it holds is LayerQuantSpec::quantizer, made by quant's registry.
// Calibration is a mode of forward: observe inputs and weights, then fit the output scale by least squares
// against the full-precision output; it is driven by quantize.h, never by the layer itself.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"
#include "quant/registry.h"

namespace layers {

struct LayerQuantSpec {
  int wbits = 32;  // 32 = full precision
  int abits = 32;
  bool signed_input = false;  // the first conv's input can be negative: symmetric rule
  // What the family reads beyond the widths (fix_gamma, no_pruning, symmetric, the calibration rules), passed to
  // its factories and, at every stage, to Quantizer::set_options. The input quantizer's is_signed is signed_input.
  quant::QuantizerOptions options{};
  std::string quantizer = quant::kDefaultQuantizer;  // the family (quant/registry.h) whose quantizers it holds
  bool quantized() const { return wbits < 32 || abits < 32; }
};

enum class CalibPhase { none, observe, fit_scale };

// How quantizer-parameter gradients are rescaled before a step (QuantizableModule::scale_quant_grads); the
// quantizers own the rule (quant::Quantizer::scale_gradients), layers and its callers name it from here.
using quant::GradBalance;
using quant::grad_balance_name;
using quant::parse_grad_balance;

class QuantizableModule : public Module {
 public:
  // Creates the quantizers on first use (registering their parameters), or changes their widths; a later
  // stage keeps the intervals and scale it had. Width 32 switches that side off (its parameters remain).
  void set_quant(const LayerQuantSpec& spec);
  const LayerQuantSpec& quant_spec() const { return spec_; }
  bool quantized() const { return spec_.quantized(); }
  // Null until set_quant first asks for that side; kept (with its parameters) when a stage switches it off.
  quant::Quantizer* weight_quantizer() const { return w_q_.get(); }
  quant::Quantizer* act_quantizer() const { return a_q_.get(); }
  // The quantizers the layer is applying now (null for a side at full precision).
  quant::Quantizer* active_weight_quantizer() const { return spec_.wbits < 32 ? w_q_.get() : nullptr; }
  quant::Quantizer* active_act_quantizer() const { return spec_.abits < 32 ? a_q_.get() : nullptr; }
  Tensor out_scale() const { return scale_; }
  // The weight the layer trains (full precision).
  virtual Tensor weight() const = 0;

  void set_calib_phase(CalibPhase p) { phase_ = p; }
  // After CalibPhase::observe: set the intervals of uncalibrated quantizers. After fit_scale: set out_scale,
  // the least-squares s in ||(y_fp − b) − s·z||² with z = op(x̄, w̄) before the bias (the layer computes
  // op(x̄, s·w̄) + b, so the bias is not scaled).
  void finish_observe();
  void finish_fit_scale();
  // Forget the weight (activation) interval and the output scale fitted with it: the next calibration sets both
  // again.
  void recalibrate_weights();
  void recalibrate_activations();
  // False until the output scale is fitted, and again whenever set_quant adds a quantizer to the layer (the
  // quantized output it must match has changed).
  bool scale_fitted() const { return scale_fitted_; }
  void set_scale_fitted(bool f) { scale_fitted_ = f; }
  // Constraints of the quantizer parameters (after each optimizer step).
  void project();
  // Rescales the gradients of this layer's quantizer parameters before an optimizer step (the rule and its
  // gradients are unchanged; only the step each parameter takes is). Each quantizer balances its own
  // parameters (quant::Quantizer::scale_gradients; N: elements quantized per weight tensor for weights, per
  // image for activations); the layer balances out_scale:
  // - sqrt: out_scale by 1/sqrt(N_w); QIL's c, d, γ by 1/sqrt(N·q).
  // - relative: out_scale by its value squared, so its step is relative to its size; QIL's c and d by d² (so
  //   activation intervals, values ~1 with gradients diluted over every element of the batch, learn at the
  //   rate weight intervals, values ~0.05, do).
  // - none: the plain gradients.
  void scale_quant_grads(GradBalance mode);
  // Integer inference (`qil eval --int8`, layers::set_int8_inference). When on, a layer whose weights and input
  // are both quantized computes op_int(k_x, k_w, b, s·step_x·step_w) instead of op(x̄, s·w̄) + b: the input's
  // levels k_x (x̄ = k_x·step_x; u8, or s8 for a signed input) times the weight codes k_w (w̄ = k_w·step_w; s8,
  // the codes `qil export --format int` writes), summed exactly in s32, the one scale folding the output scale s
  // and both steps. The codes are taken when it is switched on, so weights and quantizer parameters must not
  // change while it is on; it runs without gradients only. Returns whether this layer now runs in integers (a
  // layer with one side or neither quantized runs as before); levels that do not fit 8 bits are an error.
  bool set_int8(bool on);
  bool int8() const { return int8_codes_.defined(); }
  // Integer forward in training (`qil train --int8-forward`, layers::set_int8_forward). When on, a layer whose
  // weights and input are both quantized, with levels that fit 8 bits, computes its quantized forward from the
  // levels of x̄ and w̄ (Quantizer::levels_of) in integers — op_int(k_x, k_w)·(s·step_x·step_w) + b, exact s32
  // sums — while its backward is the float op's, reading x̄ and s·w̄ (under bf16, the levels and the scale applied
  // after, as forward_levels). The quantizers, their gradients and calibration are unchanged; outputs equal the
  // float forward's up to the rounding of its f32 sums, bit for bit where the float path sums levels exactly
  // (bf16, K·q_X·q_W < 2^24). Only forwards that record gradients (training steps) take it: evaluation, and
  // every layer during calibration, run the float path as `qil eval` does, so a run's accuracies are the ones
  // `qil eval` reports for its checkpoints.
  void set_int8_forward(bool on) { int8_forward_ = on; }
  bool int8_forward() const { return int8_forward_; }
  // Whether a quantized forward runs in integers: int8_forward(), a forward that records gradients (`training`;
  // forward_quantized passes engine::grad_enabled()), and both sides quantized with levels that fit 8 bits.
  bool runs_int8_forward(bool training) const;

  // The slots behind layers/observe.h (use observe_inputs there, which names the layer and removes the
  // observer for you): each observer is called with the layer's input, before quantization, on every
  // quantized forward. remove_input_observer ignores an id it does not hold.
  int add_input_observer(std::function<void(const Tensor&)> fn);
  void remove_input_observer(int id);

 protected:
  // The layer's compute: y = op(x, w, b) (b may be undefined). forward_quantized wraps it with quantization
  // and calibration; the output scale multiplies the weight, so it scales the pre-bias output only.
  using LayerOp = std::function<Tensor(const Tensor& x, const Tensor& w, const Tensor& b)>;
  // The integer twin of op (engine::ops::conv2d_int_forward, linear_int_forward): y = scale·op(xk, wk) + b, exact
  // sums, with op(x, w, b)'s gradients; x and w undefined (inference) record none.
  using IntLayerOp = std::function<Tensor(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& xk,
                                          const Tensor& wk, float scale)>;
  Tensor forward_quantized(const Tensor& x, const Tensor& bias, const LayerOp& op, const IntLayerOp& int_op);

 private:
  // The quantized forward under bf16 (engine::ops::Precision): op is fed the levels k_x = x̄/step_x (0…q_X) and
  // k_w = w̄/step_w (−q_W…q_W), integers bf16 holds exactly, and the steps and the output scale are applied in
  // f32 afterwards: y = (s·step_x·step_w)·op(k_x, k_w) + b. The products and their f32 sums are then exact (while
  // K·q_X·q_W < 2^24), so the layer computes in bf16 what an f32 convolution of the levels computes. A side at
  // full precision is fed as is (step 1; op rounds it to bf16).
  // op_of_levels(k_x, k_w) is the layer's op without bias on the levels as f32: op itself, or (forward_int) the
  // integer op on the same levels.
  using LevelsOp = std::function<Tensor(const Tensor& kx, const Tensor& kw)>;
  Tensor forward_levels(const Tensor& xbar, const Tensor& wbar, const Tensor& bias, const LevelsOp& op_of_levels) const;
  // The quantized forward in integers (set_int8_forward): the same value and gradients as the float path's.
  Tensor forward_int(const Tensor& xbar, const Tensor& wbar, const Tensor& bias, const IntLayerOp& int_op) const;

 private:
  LayerQuantSpec spec_;
  std::unique_ptr<quant::Quantizer> w_q_;
  std::unique_ptr<quant::Quantizer> a_q_;
  Tensor scale_;  // one element
  bool scale_fitted_ = false;
  CalibPhase phase_ = CalibPhase::none;
  double fit_num_ = 0, fit_den_ = 0;
  int64_t input_per_image_ = 0;  // elements of one image's input, seen by the last forward
  std::vector<std::pair<int, std::function<void(const Tensor&)>>> input_observers_;  // (id, callback)
  Tensor int8_codes_;         // s8 weight codes while integer inference is on (undefined otherwise)
  double int8_w_step_ = 0.0;  // their step: w̄ = code·step
  int next_observer_id_ = 0;
  bool int8_forward_ = false;
};

}  // namespace layers
