// Explicit random generators. Every consumer (initializers, dropout, data order, augmentation) owns a
// Generator seeded from explicit values — never the rank, the thread or a hidden global — so runs, resumes
// and N-rank runs reproduce. Not cryptographic.
#pragma once
#include <cmath>
#include <cstdint>

namespace engine {

inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256** seeded through splitmix64.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { reseed(seed); }
  // A generator for one (seed, a, b) tuple, e.g. (seed, epoch, global sample index).
  static Generator derive(uint64_t seed, uint64_t a, uint64_t b = 0) {
    uint64_t s = seed;
    uint64_t h = splitmix64(s) ^ (a * 0xD1B54A32D192ED03ull);
    h = splitmix64(h) ^ (b * 0xAEF17502108EF2D9ull);
    return Generator(splitmix64(h));
  }
  void reseed(uint64_t seed) {
    uint64_t s = seed;
    for (auto& w : s_) w = splitmix64(s);
  }
  uint64_t next_u64() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
    s_[2] ^= t; s_[3] = rotl(s_[3], 45);
    return r;
  }
  // Uniform in [0, 1).
  float uniform() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
  double uniform_double() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return n ? next_u64() % n : 0; }
  // Standard normal (Box-Muller, one value per call).
  float normal() {
    double u1 = uniform_double(), u2 = uniform_double();
    if (u1 < 1e-300) u1 = 1e-300;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  // State, for checkpoints.
  const uint64_t* state() const { return s_; }
  void set_state(const uint64_t s[4]) { for (int i = 0; i < 4; ++i) s_[i] = s[i]; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace engine
