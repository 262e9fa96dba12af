// The FP32 FMA peak of this CPU on N threads: each thread runs independent chains of 256-bit (AVX2) or
// 512-bit (AVX-512) fused multiply-adds on registers, nothing from memory, and the GFLOP/s it reaches
// (2 FLOPs per lane per FMA) is the ceiling a convolution can approach. The yardstick behind "% of peak" in
// docs/performance.md and `qil bench --peak-gflops`. Not part of qil: built and run by scripts/fma_peak.sh.
// Usage: fma_peak [threads...]   (default: 1 and all of OpenMP's threads); prints the CPU's SIMD flags first.
#include <immintrin.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

// 12 independent accumulators: FMA latency (4-5 cycles) x 2 FMA pipes needs at least 8-10 in flight.
constexpr int kChains = 12;

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
inline Vec vset(float v) { return _mm512_set1_ps(v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vfirst(Vec v) { return _mm512_cvtss_f32(v); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
#else
using Vec = __m256;
constexpr int kLanes = 8;
inline Vec vset(float v) { return _mm256_set1_ps(v); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vfirst(Vec v) { return _mm256_cvtss_f32(v); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
#endif

// iters x kChains FMAs; a = a*m + k stays bounded (m < 1), so no denormals or infinities slow it down. The
// accumulators are named variables, not an array: GCC -O2 keeps an array in memory and every FMA then waits
// for a store and a load.
float fma_chains(long iters, float seed) {
  Vec a0 = vset(seed), a1 = vset(seed + .01f), a2 = vset(seed + .02f), a3 = vset(seed + .03f);
  Vec a4 = vset(seed + .04f), a5 = vset(seed + .05f), a6 = vset(seed + .06f), a7 = vset(seed + .07f);
  Vec a8 = vset(seed + .08f), a9 = vset(seed + .09f), a10 = vset(seed + .10f), a11 = vset(seed + .11f);
  const Vec m = vset(0.999f), k = vset(0.001f);
  for (long i = 0; i < iters; ++i) {
    a0 = vfma(a0, m, k), a1 = vfma(a1, m, k), a2 = vfma(a2, m, k), a3 = vfma(a3, m, k);
    a4 = vfma(a4, m, k), a5 = vfma(a5, m, k), a6 = vfma(a6, m, k), a7 = vfma(a7, m, k);
    a8 = vfma(a8, m, k), a9 = vfma(a9, m, k), a10 = vfma(a10, m, k), a11 = vfma(a11, m, k);
  }
  const Vec s = vadd(vadd(vadd(a0, a1), vadd(a2, a3)), vadd(vadd(a4, a5), vadd(a6, a7)));
  return vfirst(vadd(s, vadd(vadd(a8, a9), vadd(a10, a11))));  // returned so the loop is not optimized away
}

// GFLOP/s of `threads` threads, each running the chains for the same count: best of 5 timed rounds.
double peak_gflops(int threads, long iters) {
  double best = 0;
  volatile float sink = 0;
  for (int round = 0; round < 6; ++round) {  // round 0 warms up (clocks, thread start)
    float part = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : part)
    part += fma_chains(iters, 0.5f + omp_get_thread_num());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + part;
    const double flops = 2.0 * kLanes * kChains * static_cast<double>(iters) * threads;
    if (round > 0 && flops / s / 1e9 > best) best = flops / s / 1e9;
  }
  return best;
}

std::string cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, out;
  while (std::getline(in, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;)
      if (w == "avx2" || w == "fma" || w.rfind("avx512", 0) == 0) out += (out.empty() ? "" : " ") + w;
    break;
  }
  return model + " [" + out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> threads;
  for (int i = 1; i < argc; ++i) {
    const int t = std::atoi(argv[i]);
    if (t < 1) {
      std::fprintf(stderr, "fma_peak: thread count must be >= 1, got '%s'\n", argv[i]);
      return 2;
    }
    threads.push_back(t);
  }
  if (threads.empty()) threads = {1, omp_get_max_threads()};
  std::printf("cpu: %s; kernel: %d-bit FMA, %d chains\n", cpu_flags().c_str(), 32 * kLanes, kChains);
  const long iters = 50'000'000;
  for (int t : threads) std::printf("threads=%d fma_peak_gflops=%.1f\n", t, peak_gflops(t, iters));
  return 0;
}
