// Shared by the layers suite's quantized-arithmetic tests (bf16, int8 inference, the integer forward in training):
// a precision scope, a quantizer's integer levels as f32, |t|, and post-ReLU (or signed) inputs.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/ops.h"
#include "gradcheck.h"
#include "quant/quantizer.h"

namespace qiltest {

// engine::ops::Precision p within the scope, f32 again after it (also when an assertion throws).
struct PrecisionScope {
  explicit PrecisionScope(engine::ops::Precision p) { engine::ops::set_precision(p); }
  ~PrecisionScope() { engine::ops::set_precision(engine::ops::Precision::f32); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;
};

// The integer levels k of v under q (u8 or s8), as f32, plain.
inline engine::Tensor levels_f32(const quant::Quantizer& q, const engine::Tensor& v) {
  const engine::Tensor k = q.levels(v).plain();
  engine::Tensor out = engine::Tensor::empty(k.shape());
  for (int64_t i = 0; i < k.numel(); ++i)
    out.data()[i] = k.dtype() == engine::DType::s8 ? k.data<int8_t>()[i] : k.data<uint8_t>()[i];
  return out;
}

// |t| element by element, plain.
inline engine::Tensor abs_of(const engine::Tensor& t) {
  engine::Tensor a = t.plain().clone();
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = std::fabs(a.data()[i]);
  return a;
}

// N(0, 1.5²) inputs, clamped at 0 (post-ReLU) unless signed_input (a first conv's input).
inline engine::Tensor relu_input(const engine::Shape& s, engine::Generator& g, bool signed_input = false) {
  engine::Tensor x = randn(s, g, 1.5f);
  if (!signed_input)
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::max(0.f, x.data()[i]);
  return x;
}

}  // namespace qiltest
