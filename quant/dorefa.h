// DoReFa-Net's quantizers (Zhou et al., 2016) beside QIL behind quant::Quantizer: the fused weight op
// w̄ = 2·q_k(tanh(w)/(2·max|tanh w|) + 1/2) − 1 with q_k(r) = round((2^k − 1)·r)/(2^k − 1), its un-rounded
// surrogate tanh(w)/max|tanh w|, and the weight and activation quantizers (activations q_k(clip(x, 0, 1)), PACT's
// op with α fixed at 1). Nothing is learned: no parameters, no calibration. PACT's layers use these weights.
// Not the activation op (quant/pact.h), not the layer's output scale: w̄ lies in [−1, 1], and the least-squares
// fit of out_scale in layers/ gives the layer its magnitude back.
#pragma once
#include "quant/quantizer.h"

namespace quant {

// w̄ = 2·round(q·r)/q − 1, r = tanh(w)/(2M) + 1/2, q = 2^bits − 1 (bits 2..8), M = max|tanh w| over the tensor.
// The levels are odd multiples of 1/q (no zero at any width: 2 bits give −1, −1/3, 1/3, 1). w: any shape.
// Gradient: straight through the rounding (∂w̄/∂r = 2), then exact through tanh and the max normalization, as
// the reference implementation's autograd gives it: ∂L/∂w_j = G_j·(1 − t_j²)/M, and for the element(s) holding
// the max (ties share it equally, as TensorFlow's reduce_max does) minus sign(w_j)·(1 − t_j²)·Σ_i G_i·t_i/(n·M²),
// t = tanh w, n the number of ties. All-zero weights (M = 0) map to r = 1/2 and receive no gradient.
// fixed_m > 0 normalizes by that M instead of the tensor's own (r clamped to [0, 1]; no gradient through M): a
// quantizer rebuilt from its statistics draws the rule a layer's weights saw.
Tensor dorefa_weight(const Tensor& w, int bits, float fixed_m = 0.f);
// The surrogate without the rounding, tanh(w)/M, with the same gradient (which is its exact one).
Tensor dorefa_weight_transform(const Tensor& w, float fixed_m = 0.f);
// q = 2^bits − 1; bits outside 2..8 are an error naming op.
int dorefa_weight_levels(int bits, const char* op = "dorefa_weight");

// Weights, kind "dorefa_weight". positive_levels() = q (the outputs are k/q, k odd in [−q, q]).
// stats(w): tanh_max = M of w; prune_threshold 0 (no level is 0, nothing is pruned); clip_threshold
// atanh(M·(1 − 1/q)), the |w| at and above which w̄ = ±1. stats() alone reports them for the fixed M, if any.
class DorefaWeightQuantizer : public Quantizer {
 public:
  explicit DorefaWeightQuantizer(int bits);
  const char* kind() const override { return "dorefa_weight"; }
  Tensor operator()(const Tensor& w) const override { return dorefa_weight(w, bits_, fixed_m_); }
  Tensor transform(const Tensor& w) const override { return dorefa_weight_transform(w, fixed_m_); }
  int bits() const override { return bits_; }
  void set_bits(int bits) override;
  int positive_levels() const override { return dorefa_weight_levels(bits_); }
  bool is_signed() const override { return true; }
  double level_step() const override { return 1.0 / positive_levels(); }  // k odd in [−q, q]
  const char* kernel_isa() const override;  // its op's kernels: quant::qil_kernel_isa()
  NamedTensors named_parameters() const override { return {}; }
  void observe(const Tensor& /*w*/) override {}
  void finish_calibration() override {}
  bool calibrated() const override { return true; }  // nothing to calibrate
  void set_calibrated(bool /*calibrated*/) override {}
  void project() override {}
  void scale_gradients(GradBalance /*mode*/, int64_t /*elements*/) override {}
  QuantStats stats() const override;
  QuantStats stats(const Tensor& w) const override;

  // Normalize by m (> 0) rather than by the input's own max|tanh w| (quantizer_from_stats); 0 restores the rule.
  void set_fixed_normalizer(float m) { fixed_m_ = m; }

 private:
  int bits_;
  float fixed_m_ = 0.f;
};

// Activations, kind "dorefa_activation": x̄ = q_k(clip(x, 0, 1)), q = 2^bits − 1, that is pact_quantize with
// α = 1 held constant (∂x̄/∂x = 1 where 0 <= x < 1). "dorefa_activation_signed" (a first conv's input; not in the
// paper): clip(x, −1, 1) on PACT's symmetric grid. stats(): alpha = 1, prune 1/(2q), clip 1 − 1/(2q).
class DorefaActQuantizer : public Quantizer {
 public:
  explicit DorefaActQuantizer(int bits, bool is_signed = false);
  const char* kind() const override { return is_signed_ ? "dorefa_activation_signed" : "dorefa_activation"; }
  Tensor operator()(const Tensor& x) const override;
  Tensor transform(const Tensor& x) const override;
  int bits() const override { return bits_; }
  void set_bits(int bits) override;
  int positive_levels() const override;
  bool is_signed() const override { return is_signed_; }
  double level_step() const override { return 1.0 / positive_levels(); }
  LevelRule level_rule() const override;  // PACT's with α = 1 (pact_level_rule)
  NamedTensors named_parameters() const override { return {}; }
  void observe(const Tensor& /*x*/) override {}
  void finish_calibration() override {}
  bool calibrated() const override { return true; }
  void set_calibrated(bool /*calibrated*/) override {}
  void project() override {}
  void scale_gradients(GradBalance /*mode*/, int64_t /*elements*/) override {}
  QuantStats stats() const override;
  QuantStats stats(const Tensor& x) const override;

 private:
  int bits_;
  bool is_signed_;
  Tensor one_;  // α = 1, no gradient
};

}  // namespace quant
