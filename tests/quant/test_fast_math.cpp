// The vectorizable log, exp and rounding behind the QIL kernels, against the standard library.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

#include "quant/fast_math.h"

using namespace quant;

TEST_CASE("fast_log and fast_exp agree with std::log and std::exp to a few float ulps") {
  // Over the range the kernels use: u in [1e-30, 1] for ln, arguments of exp in [-87, 0] (and a little above).
  double worst_log = 0.0, worst_exp = 0.0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = std::pow(10.f, -30.f + 30.f * static_cast<float>(i) / 200000.f);
    const double want = std::log(static_cast<double>(x));
    // Relative error, with an absolute floor where ln x passes through 0.
    worst_log = std::max(worst_log, std::fabs(fast_log(x) - want) / std::max(std::fabs(want), 1.0));
  }
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.f + 90.f * static_cast<float>(i) / 200000.f;
    const double want = std::exp(static_cast<double>(x));
    worst_exp = std::max(worst_exp, std::fabs(fast_exp(x) - want) / want);
  }
  CHECK(worst_log < 2e-7);  // under 2 ulp of float (measured ~8e-8)
  CHECK(worst_exp < 2e-7);
  // Exact where the quantizer relies on it: ln 1 = 0 and e^0 = 1, so u = 1 gives u^γ = 1 exactly.
  CHECK(fast_log(1.f) == 0.f);
  CHECK(fast_exp(0.f) == 1.f);
  // Clamped arguments stay finite.
  CHECK(std::isfinite(fast_exp(-1000.f)));
  CHECK(fast_exp(-1000.f) >= 0.f);
  CHECK(std::isfinite(fast_exp(1000.f)));
}

TEST_CASE("round_nonneg rounds half away from zero like std::round") {
  // 0.49999997f is the float just below 0.5: a float v + 0.5f would round up to 1.0f; the double sum does not.
  const float below_half = std::nextafter(0.5f, 0.f);
  CHECK(round_nonneg(below_half) == 0);
  CHECK(round_nonneg(0.5f) == 1);
  CHECK(round_nonneg(2.5f) == 3);
  CHECK(round_nonneg(14.25f) == 14);
  CHECK(round_nonneg(0.f) == 0);
  for (int i = 0; i <= 255 * 64; ++i) {
    const float v = static_cast<float>(i) / 64.f;
    CHECK(round_nonneg(v) == static_cast<int32_t>(std::round(v)));
  }
}
