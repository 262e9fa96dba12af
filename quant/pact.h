// PACT, Parameterized Clipping Activation (Choi et al., 2018), beside QIL behind quant::Quantizer: the fused op
// x̄ = round(clip(x, 0, α)·q/α)·α/q with one learned clipping level α, its un-rounded surrogate clip(x, 0, α), and
// the activation quantizer that owns α (calibration, the floor on α, gradient scale, the L2 penalty's flag,
// statistics). A PACT layer's weights are DoReFa's (quant/dorefa.h), as in the paper; the factory pairs them.
// Not the weight rule, not the penalty's arithmetic (the optimizer's weight decay applies it), not the layer's
// output scale (α keeps the input in its own units; the least-squares fit in layers/ absorbs the weights').
#pragma once
#include <cstdint>
#include <vector>

#include "quant/quantizer.h"

namespace quant {

// x̄ = round(clip(x, 0, α)·q/α)·α/q, q = 2^bits − 1 (bits 2..8). x: any shape; alpha: a one-element tensor,
// α > 0. Gradients (the paper's straight-through estimator): ∂x̄/∂x = 1 where 0 ≤ x < α, else 0;
// ∂x̄/∂α = 1 where x ≥ α, else 0 (the dependence of the grid α/q on α is not differentiated).
// is_signed (a first conv's input, which can be negative; not in the paper): clip(x, −α, α) on a symmetric grid,
// q = 2^(bits−1) − 1, rounding half away from zero; ∂x̄/∂x = 1 where |x| < α; ∂x̄/∂α = sign(x) where |x| ≥ α.
Tensor pact_quantize(const Tensor& x, const Tensor& alpha, int bits, bool is_signed = false);
// The surrogate without the rounding, clip(x, 0, α) (or clip(x, −α, α)), with its exact gradients, which are the
// STE's above: finite differences can check them where they cannot check the staircase.
Tensor pact_transform(const Tensor& x, const Tensor& alpha, bool is_signed = false);
// Positive levels q: 2^bits − 1 (unsigned) or 2^(bits−1) − 1 (signed); bits outside 2..8 are an error naming op.
int pact_levels(int bits, bool is_signed, const char* op = "pact");

// One PACT activation quantizer (kind "pact_activation", or "pact_activation_signed" for a first conv's input).
// Calibration: α = the `percentile`-th percentile of the observed inputs (of |x| when signed), averaged over the
// observed batches (the max where a sparse input's percentile is 0): the same starting range as QIL's calibrated
// interval [0, p], rather than the paper's α = 10, which suits training from scratch but, fine-tuning a network
// whose activations are a few units, would round most of them to 0 at 2–4 bits. project(): α >= kAlphaFloor.
// scale_gradients: ∂L/∂α × 1/sqrt(N·q) under sqrt and relative alike (as LSQ's step); none leaves it raw.
// l2_penalized("alpha"): true, so that `--pact-alpha-decay λ` adds λ·α to α's gradient through its optimizer group.
// stats(): alpha = α, prune_threshold = α/(2q) (x below rounds to 0), clip_threshold = α·(1 − 1/(2q)) (x at or
// above rounds to α); QIL's c, d, γ stay 0, 0, 1.
class PactQuantizer : public Quantizer {
 public:
  // calib: percentile (α = the percentile above) | mse (α = mse_clip_point of a sample of the inputs, the
  // least-squares clip point QIL's --act-calib mse uses; PACT's grid on [0, α] is QIL's on [0, p]).
  PactQuantizer(int bits, bool is_signed = false, double percentile = 99.9, ActCalib calib = ActCalib::percentile);

  const char* kind() const override { return is_signed_ ? "pact_activation_signed" : "pact_activation"; }
  Tensor operator()(const Tensor& x) const override;
  Tensor transform(const Tensor& x) const override;
  int bits() const override { return bits_; }
  void set_bits(int bits) override;  // keeps α: progressive reduction starts from the wider width's α
  int positive_levels() const override { return pact_levels(bits_, is_signed_); }
  bool is_signed() const override { return is_signed_; }
  const char* kernel_isa() const override;  // its op's kernels: quant::qil_kernel_isa()
  double level_step() const override { return static_cast<double>(alpha_.item()) / positive_levels(); }
  LevelRule level_rule() const override;  // pact_level_rule(α, q, is_signed)
  NamedTensors named_parameters() const override { return {{"alpha", alpha_}}; }
  bool l2_penalized(const std::string& name) const override { return name == "alpha"; }
  void set_options(const QuantizerOptions& o) override { calib_ = o.pact_calib; }
  ActCalib calibration() const { return calib_; }
  void observe(const Tensor& x) override;
  void finish_calibration() override;
  bool calibrated() const override { return calibrated_; }
  void set_calibrated(bool calibrated) override { calibrated_ = calibrated; }
  void project() override;
  void scale_gradients(GradBalance mode, int64_t elements) override;
  QuantStats stats() const override;
  QuantStats stats(const Tensor& x) const override;

  Tensor& alpha() { return alpha_; }
  const Tensor& alpha() const { return alpha_; }
  // The floor project() keeps α above: α reaching 0 would divide by zero in the op.
  static constexpr float kAlphaFloor = 1e-8f;

 private:
  int bits_;
  bool is_signed_;
  ActCalib calib_;
  ActClipObserver clip_;  // what calibration has observed
  Tensor alpha_;  // one element, requires_grad
  bool calibrated_ = false;
};

// The integer rule of a clipping quantizer (PACT's, DoReFa's inputs with α = 1): k = round_nonneg(clip(m, 0, α)·(q/α)),
// m = |x| or x, a signed input's sign after rounding.
LevelRule pact_level_rule(float alpha, int q, bool is_signed);

// Statistics of a clipping quantizer's output y = k·α/q (k integer in [−q, q] or [0, q]) over one tensor: the
// share at 0, at the clipping level(s), and the levels present. Shared by PACT and DoReFa's activations.
void clip_level_stats(const Tensor& y, double alpha, int q, bool is_signed, QuantStats& st);

}  // namespace quant
