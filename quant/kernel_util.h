// What the fused quantizer kernels (qil_ops.cpp, lsq.cpp, pact.cpp, dorefa.cpp) share: the size below which a
// loop stays on one thread, the input and bit-width checks, and the run-time flag -> template argument switch.
// Internal to quant/; not an op.
#pragma once
#include <cstdint>
#include <type_traits>

#include "engine/check.h"
#include "engine/tensor.h"

namespace quant::kernel {

// Large loops only: thread start-up costs more than a few thousand floats.
constexpr int64_t kParallelMin = 16384;

inline void check_input(const char* op, const engine::Tensor& t) {
  QIL_CHECK(t.defined(), op, ": undefined input");
  QIL_CHECK(t.dtype() == engine::DType::f32, op, ": expected an f32 tensor, got ", t);
}

inline void check_bits(int bits, const char* op) {
  QIL_CHECK(bits >= 2 && bits <= 8, op, ": bits must be in 2..8, got ", bits);
}

// Calls f(std::true_type) or f(std::false_type): turns run-time flags into template arguments.
template <class F>
auto dispatch(bool b, F&& f) {
  return b ? f(std::true_type{}) : f(std::false_type{});
}

// Backward reductions (Σ over a tensor, for a scalar parameter's gradient) sum in float lanes over blocks of this many
// elements and add the block sums in double: twice the lanes of a per-element double sum, with the rounding of a
// 1024-term float sum.
constexpr int64_t kSumBlock = 1024;

// A one-element gradient gets v: written when its buffer is fresh (engine::record_fresh: it holds no gradient
// yet), else added.
inline void put_scalar(engine::Tensor& g, bool fresh, double v) {
  if (!g.defined()) return;
  float* p = g.data();
  p[0] = fresh ? static_cast<float>(v) : p[0] + static_cast<float>(v);
}

}  // namespace quant::kernel
