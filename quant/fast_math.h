// Vectorizable float log, exp, tanh and rounding for the quantizer kernels. std::log, std::exp, std::tanh,
// std::pow and std::round are library calls that keep an OpenMP simd loop scalar (glibc's vector math is only
// declared under -ffast-math); these inline versions (Cephes' logf/expf/tanhf, ~2 ulp) let the compiler vectorize
// the quantizer loops.
// Not a general math library: inputs outside the documented ranges are not handled.
#pragma once
#include <cstdint>
#include <cstring>

namespace quant {

inline int32_t float_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}
inline float bits_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

// ln x for a positive normal float x (no zero, denormal, infinity or NaN handling).
inline float fast_log(float x) {
  const int32_t b = float_bits(x);
  float e = static_cast<float>(((b >> 23) & 0xff) - 126);
  float m = bits_float((b & 0x007fffff) | 0x3f000000);  // x = m·2^e, m in [0.5, 1)
  // Recentre m on [sqrt(1/2), sqrt(2)) - 1. Arithmetic on a 0/1 mask instead of a select: GCC does not
  // if-convert selects on another value's comparison (trapping math), which would keep the loop scalar.
  const float low = static_cast<float>(m < 0.707106781186547524f);
  e -= low;
  m = m - 1.f + low * m;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// e^x, x clamped to [-87, 88] (results from ~1.6e-38 to ~1.65e38).
inline float fast_exp(float x) {
  x = x < -87.f ? -87.f : x;
  x = x > 88.f ? 88.f : x;
  // n = floor(x / ln 2 + 0.5): the argument is above -126, so truncating it + 128 floors it.
  const int32_t n = static_cast<int32_t>(x * 1.44269504088896341f + 128.5f) - 128;
  const float fn = static_cast<float>(n);
  x = x - fn * 0.693359375f + fn * 2.12194440e-4f;  // x - n·ln 2 in two parts
  const float z = x * x;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.f;
  return y * bits_float((n + 127) << 23);
}

// tanh x for any finite x (Cephes' tanhf: an odd polynomial below |x| = 0.625, 1 − 2/(e^(2|x|) + 1) above).
// Both branches are computed and mixed by a 0/1 mask, which keeps a loop around it vectorized; |x| is capped
// at 44 first (tanh 44 is 1 in float), so that the polynomial stays finite and the mask never multiplies inf.
inline float fast_tanh(float x) {
  float a = x < 0.f ? -x : x;
  a = a > 44.f ? 44.f : a;
  const float z = a * a;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * a + a;
  const float large = 1.f - 2.f / (fast_exp(2.f * a) + 1.f);
  const float big = static_cast<float>(a >= 0.625f);
  const float t = big * large + (1.f - big) * small;
  return x < 0.f ? -t : t;
}

// round(v) half away from zero for 0 <= v < 2^31, as std::round does: v + 0.5 is exact in double, and a
// truncating conversion vectorizes.
inline int32_t round_nonneg(float v) { return static_cast<int32_t>(static_cast<double>(v) + 0.5); }

}  // namespace quant
