// LSQ, Learned Step Size Quantization (Esser et al., ICLR 2020), beside QIL behind quant::Quantizer: the fused
// op v̄ = round(clip(v/s, −Q_N, Q_P))·s with one learned step s, its un-rounded surrogate, and the weight and
// activation quantizers that own s (calibration, the floor on s, gradient scale, statistics).
// Not QIL (qil.h, qil_ops.h), not the factory (quantizer.cpp), not the layer's output scale: LSQ's output
// is in value units, so the least-squares fit in layers/ settles near 1 by itself.
#pragma once
#include <cstdint>

#include "quant/quantizer.h"

namespace quant {

// The integer range [−Q_N, Q_P] of a b-bit LSQ code (bits 2..8; the error names op).
struct LsqRange {
  int qn = 0, qp = 0;
};
LsqRange lsq_signed_range(int bits, const char* op = "lsq");    // Q_N = 2^(b−1), Q_P = 2^(b−1) − 1
LsqRange lsq_unsigned_range(int bits, const char* op = "lsq");  // Q_N = 0, Q_P = 2^b − 1 (post-ReLU)
// Q_N = Q_P = 2^(b−1) − 1: a symmetric grid with the level count of QIL's weights (ternary at 2 bits), for
// comparisons at equal levels (`--lsq-symmetric`; not in the LSQ paper).
LsqRange lsq_symmetric_range(int bits, const char* op = "lsq");

// v̄ = round(clip(v/s, −Q_N, Q_P))·s. v: any shape; s: a one-element tensor, s > 0. Gradients (the paper's):
// ∂v̄/∂v = 1 where −Q_N < v/s < Q_P, else 0 (STE); ∂v̄/∂s = round(v/s) − v/s inside, −Q_N below, Q_P above.
Tensor lsq_quantize(const Tensor& v, const Tensor& s, LsqRange r);
// The surrogate without the rounding, clip(v/s, −Q_N, Q_P)·s, with its own exact gradients (∂/∂v as above,
// ∂/∂s = 0 inside, −Q_N / Q_P clipped). Its ∂/∂s differs from lsq_quantize's inside by round(v/s) − v/s, the
// term the STE adds; finite differences can check it where they cannot check the staircase.
Tensor lsq_transform(const Tensor& v, const Tensor& s, LsqRange r);

// One LSQ quantizer: weights (signed range, or the symmetric one), post-ReLU activations (unsigned) or a first
// conv's input (signed).
// Calibration: s = 2·mean|v|/sqrt(Q_P), the mean over every observed element. project(): s >= kStepFloor.
// scale_gradients: ∂L/∂s × g, g = 1/sqrt(N·Q_P) (the paper's gradient scale), under sqrt and relative alike;
// none leaves the gradient raw.
// stats(): step = s, prune_threshold = s/2 (|v| below rounds to 0), clip_threshold = (Q_P − 1/2)·s (v at or
// above rounds to the top level Q_P·s); c, d, γ are QIL's and stay 0, 0, 1.
class LsqQuantizer : public Quantizer {
 public:
  enum class Role { weight, activation, activation_signed, weight_symmetric };
  LsqQuantizer(Role role, int bits);

  const char* kind() const override;
  Tensor operator()(const Tensor& v) const override;
  Tensor transform(const Tensor& v) const override;
  int bits() const override { return bits_; }
  void set_bits(int bits) override;  // keeps s: progressive reduction starts from the wider width's step
  int positive_levels() const override { return range().qp; }
  bool is_signed() const override { return role_ != Role::activation; }
  const char* kernel_isa() const override;  // its op's kernels: quant::qil_kernel_isa()
  double level_step() const override { return s_.item(); }
  int min_level() const override { return -range().qn; }
  // k = round half away (clip(v·(1/s), −Q_N, Q_P)), in f32.
  LevelRule level_rule() const override;
  NamedTensors named_parameters() const override { return {{"s", s_}}; }
  void observe(const Tensor& v) override;
  void finish_calibration() override;
  bool calibrated() const override { return calibrated_; }
  void set_calibrated(bool calibrated) override { calibrated_ = calibrated; }
  void project() override;
  void scale_gradients(GradBalance mode, int64_t elements) override;
  QuantStats stats() const override;
  QuantStats stats(const Tensor& v) const override;

  LsqRange range() const;
  Tensor& step() { return s_; }
  const Tensor& step() const { return s_; }
  // The floor project() keeps s above: s reaching 0 would divide by zero in the op.
  static constexpr float kStepFloor = 1e-8f;

 private:
  void require_calibrated(const char* op) const;

  Role role_;
  int bits_;
  Tensor s_;  // one element, requires_grad
  bool calibrated_ = false;
  double abs_sum_ = 0.0;  // Σ|v| and the element count over observed tensors
  int64_t abs_count_ = 0;
};

}  // namespace quant
