// QIL's two fused autograd ops (docs/qil.md §1-§2, after Jung et al., CVPR 2019): the weight quantizer (transformer with learnable exponent γ, then
// the discretizer) and the activation quantizer (linear transformer, then the discretizer). Each is one
// OpenMP pass forward and one backward; the discretizer passes gradients straight through (STE).
// Not the parameter-owning quantizer objects (qil.h), not calibration, not constraints.
#pragma once
#include "engine/tensor.h"

namespace quant {

using engine::Tensor;

// Floor on u inside the interval where ln u and u^(γ−1) would blow up (|w| at c − d); gradients only.
constexpr float kQilUFloor = 1e-4f;

// Number of positive levels: weights q_W = 2^(bits−1) − 1 (2 bits -> ternary), activations q_X = 2^bits − 1.
// Both check bits in 2..8 and name the op in the error.
int qil_weight_levels(int bits, const char* op = "qil_weight");
int qil_activation_levels(int bits, const char* op = "qil_activation");

// w̄ = round(ŵ·q_W)/q_W with ŵ = 0 (|w| < c−d), sign(w) (|w| > c+d), sign(w)·u(|w|)^γ otherwise;
// u(v) = (v − c)/(2d) + 0.5. w: any shape; c, d, gamma: one-element tensors. Gradients to w, c, d, gamma.
Tensor qil_weight(const Tensor& w, const Tensor& c, const Tensor& d, const Tensor& gamma, int bits);

// x̄ = round(x̂·q_X)/q_X with x̂ = clamp(u(x), 0, 1) (q_X = 2^bits − 1); gradients to x, c, d.
// is_signed (a first conv's input, which can be negative): the weights' symmetric rule with γ = 1 and
// q = 2^(bits−1) − 1, so x̄ in [−1, 1].
Tensor qil_activation(const Tensor& x, const Tensor& c, const Tensor& d, int bits, bool is_signed = false);

// The integer levels k of qil_activation's output, x̄ = k/q, computed as its forward computes them (so the same k),
// in one pass: u8 in [0, q] (q = 2^bits − 1), or s8 in [−q, q] when is_signed (q = 2^(bits−1) − 1); x's shape and
// layout. Integer inference's input levels (QilActQuantizer::levels). No autograd.
Tensor qil_activation_codes(const Tensor& x, const Tensor& c, const Tensor& d, int bits, bool is_signed = false);

// The transformers alone (ŵ, x̂ before the discretizer), same gradients. For finite-difference tests and
// inspection: the discretized ops' gradients are the STE, which finite differences cannot see.
Tensor qil_weight_transform(const Tensor& w, const Tensor& c, const Tensor& d, const Tensor& gamma);
Tensor qil_activation_transform(const Tensor& x, const Tensor& c, const Tensor& d, bool is_signed = false);

// The instruction set of the quantizer kernels compiled twice (QIL's, LSQ's, PACT's and DoReFa's ops):
// "avx2" where the CPU has it, else "baseline (sse2)". Both give the same elementwise bits (sums: within float
// rounding); AVX2 is twice as wide. set_qil_baseline_kernels(true) forces the baseline (tests compare the two).
const char* qil_kernel_isa();
void set_qil_baseline_kernels(bool force);

}  // namespace quant
