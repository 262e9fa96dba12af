// For the suites that compare the quantizer kernels' AVX2 build with the baseline one (quant::qil_kernel_isa):
// whether this CPU runs the AVX2 build at all, and a scope that runs the baseline.
#pragma once
#include <string>

#include <doctest/doctest.h>
#include "quant/qil_ops.h"
#include "skip.h"

namespace qiltest {

// True where the AVX2 kernels run; elsewhere marks the case skipped and returns false (nothing to compare).
inline bool avx2_kernels_run() {
  if (std::string(quant::qil_kernel_isa()) == "avx2") return true;
  qiltest::skip("isa", "this CPU runs the baseline kernels (" + std::string(quant::qil_kernel_isa()) +
                          "): nothing to compare");
  return false;
}

// Within its scope the quantizer ops run their baseline build (baseline = true) or the CPU's pick; the CPU's pick
// again afterwards, also when an assertion throws.
struct BaselineKernels {
  explicit BaselineKernels(bool baseline) { quant::set_qil_baseline_kernels(baseline); }
  ~BaselineKernels() { quant::set_qil_baseline_kernels(false); }
  BaselineKernels(const BaselineKernels&) = delete;
  BaselineKernels& operator=(const BaselineKernels&) = delete;
};

}  // namespace qiltest
