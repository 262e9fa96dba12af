// What the fused quantizer kernels (qil_ops.cpp, lsq.cpp, pact.cpp, dorefa.cpp) share: the size below which a
// loop stays on one thread, the input and bit-width checks, the AVX2/baseline kernel pick, the
// per-thread split and its thread-ordered sum.
// Internal to quant/; not an op.
#pragma once
#include <omp.h>

#include <cstdint>
#include <vector>

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

// Backward reductions (Σ over a tensor, for a scalar parameter's gradient) sum in float lanes over blocks of this many
// elements and add the block sums in double: twice the lanes of a per-element double sum, with the rounding of a
// 1024-term float sum.
constexpr int64_t kSumBlock = 1024;

// Kernels compiled twice, for AVX2 and for the build's baseline (x86-64: SSE2), picked at run time by use_avx2()
// (quant::qil_kernel_isa() says which; set_qil_baseline_kernels(true) forces the baseline for tests). QIL_AVX2
// enables AVX2 without FMA, so no multiply-add is contracted and both builds give the same bits.
#if defined(__GNUC__) && defined(__x86_64__)
#define QIL_HAVE_AVX2_KERNELS 1
#define QIL_AVX2 __attribute__((target("avx2")))
#else
#define QIL_HAVE_AVX2_KERNELS 0
#define QIL_AVX2
#endif

inline bool force_baseline_kernels = false;

inline bool use_avx2() {
#if QIL_HAVE_AVX2_KERNELS
  static const bool cpu = __builtin_cpu_supports("avx2");
  return cpu && !force_baseline_kernels;
#else
  return false;
#endif
}

// Runs f(b, e) on each OpenMP thread's contiguous share of [0, n) (one thread below kParallelMin elements).
template <class F>
void split_range(int64_t n, F&& f) {
#pragma omp parallel if (n > kParallelMin)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    f(n * t / nt, n * (t + 1) / nt);
  }
}

// Σ over threads of f(b, e) on each thread's share (split_range), added in thread order: the same result for the
// same thread count. T: a sum (double, or a struct of sums with +=).
template <class T, class F>
T thread_sum(int64_t n, F&& f) {
  std::vector<T> part(static_cast<size_t>(omp_get_max_threads()), T{});
  split_range(n, [&](int64_t b, int64_t e) { part[static_cast<size_t>(omp_get_thread_num())] = f(b, e); });
  T sum{};
  for (const T& p : part) sum += p;
  return sum;
}

// A one-element gradient gets v: written when its buffer is fresh (engine::record_fresh: it holds no gradient
// yet), else added.
inline void put_scalar(engine::Tensor& g, bool fresh, double v) {
  if (!g.defined()) return;
  float* p = g.data();
  p[0] = fresh ? static_cast<float>(v) : p[0] + static_cast<float>(v);
}

}  // namespace quant::kernel
