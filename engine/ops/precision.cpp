// The process's compute precision for convolutions and linear layers (ops.h: Precision), the bf16 rounding
// the emulation uses, and add_bias, which quantized layers under bf16 apply after their f32 rescale.
#include <cstring>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/dnnl_common.h"

namespace engine::ops {

namespace {
Precision g_precision = Precision::f32;
bool g_force_emulation = false;
constexpr int64_t kParallelMin = 16384;

// Round to nearest even on the 16 bits a bf16 drops; NaN keeps its sign and stays a (quiet) NaN.
inline float round_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const bool nan = (u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0;
  const uint32_t r = nan ? ((u | 0x00400000u) & 0xffff0000u) : ((u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
  float out;
  std::memcpy(&out, &r, 4);
  return out;
}
}  // namespace

void set_precision(Precision p) { g_precision = p; }
Precision precision() { return g_precision; }

Precision parse_precision(const std::string& s) {
  if (s == "fp32" || s == "f32") return Precision::f32;
  if (s == "bf16") return Precision::bf16;
  QIL_CHECK(false, "unknown precision '", s, "' (expected fp32 or bf16)");
  return Precision::f32;
}

// oneDNN 2.6 runs bf16 convolutions on avx512_core and up, but below AVX512_BF16 it emulates the bf16
// dot-product instructions in software: only the CPUs that have them count as native.
bool bf16_native() {
  static const bool native = [] {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
  }();
  return native;
}

std::string bf16_isa_note() {
  return "AVX512_BF16 or AMX: the avx512_bf16 or amx_bf16 flag in /proc/cpuinfo";
}

void set_bf16_emulation(bool force) { g_force_emulation = force; }
bool bf16_emulated() { return g_precision == Precision::bf16 && (g_force_emulation || !bf16_native()); }

Tensor round_bf16(const Tensor& x) {
  QIL_CHECK(x.defined() && x.dtype() == DType::f32, "round_bf16: expected an f32 tensor, got ", x);
  Tensor y = Tensor::empty_like(x);
  const float* xp = x.data();
  float* yp = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yp[i] = round_to_bf16(xp[i]);
  return y;
}

namespace {
// Channel c of element i: plain (N, C, inner) or blocked (N, C/B, inner, B).
struct ChannelIndex {
  int64_t channels, inner, block;  // block 0: plain
  int64_t operator()(int64_t i) const {
    if (block == 0) return (i / inner) % channels;
    return ((i / (inner * block)) % (channels / block)) * block + i % block;
  }
};
}  // namespace

Tensor add_bias(const Tensor& y, const Tensor& b) {
  OpTimer timer("add_bias");
  QIL_CHECK(y.defined() && b.defined() && y.dtype() == DType::f32 && b.dtype() == DType::f32,
            "add_bias: expected f32 tensors, got ", y, " and ", b);
  QIL_CHECK((y.dim() == 2 || y.dim() == 4) && b.dim() == 1 && b.size(0) == y.size(1), "add_bias: bias ",
            b.shape(), " does not match the channels of ", y.shape());
  const int64_t inner = y.dim() == 4 ? y.size(2) * y.size(3) : 1;
  const ChannelIndex ch{y.size(1), inner, y.layout() == Layout::blocked ? block_channels() : 0};
  Tensor out = Tensor::empty_like(y);
  const float* yp = y.data();
  const float* bp = b.data();
  float* op = out.data();
  const int64_t n = y.numel();
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) op[i] = yp[i] + bp[ch(i)];
  return record("add_bias", out, {y, b}, [ch](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("add_bias.bwd");
    const float* g = gy.data();
    const int64_t n = gy.numel();
    if (gx[0].defined()) {
      float* dy = gx[0].data();
#pragma omp parallel for simd if (n > kParallelMin)
      for (int64_t i = 0; i < n; ++i) dy[i] += g[i];
    }
    if (gx[1].defined()) {  // one pass, in double: a few channels, many elements each
      std::vector<double> s(static_cast<size_t>(ch.channels), 0.0);
      for (int64_t i = 0; i < n; ++i) s[static_cast<size_t>(ch(i))] += g[i];
      float* db = gx[1].data();
      for (int64_t c = 0; c < ch.channels; ++c) db[c] += static_cast<float>(s[static_cast<size_t>(c)]);
    }
  });
}

}  // namespace engine::ops
