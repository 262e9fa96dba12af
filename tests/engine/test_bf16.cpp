// Mixed precision (ops::Precision::bf16): round_bf16 against an independent round-to-nearest-even; conv2d and
// linear under the emulation equal, bit for bit, the f32 ops run on bf16-rounded operands (input, weight and
// output gradient), and differ from the unrounded f32 ops; integer levels (2-5 bits, K·q_X·q_W < 2^24) give
// bit for bit the f32 result; where the CPU is native, the native kernels agree with the emulation.
#include <cmath>
#include <cstring>
#include <limits>

#include "op_check.h"

#include "engine/ops.h"
#include "skip.h"

using namespace engine;
using namespace qiltest;

namespace {

// Sets the precision (and whether the emulation is forced) for one scope, f32 again at its end.
struct PrecisionScope {
  PrecisionScope(ops::Precision p, bool emulate) {
    ops::set_precision(p);
    ops::set_bf16_emulation(emulate);
  }
  ~PrecisionScope() {
    ops::set_precision(ops::Precision::f32);
    ops::set_bf16_emulation(false);
  }
};

// The nearest bf16 by its definition: the two bf16 neighbours of f (truncation and the next one up in
// magnitude), compared in double; on a tie the one whose last kept bit is 0.
float nearest_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t lo_bits = u & 0xffff0000u, hi_bits = lo_bits + 0x10000u;
  float lo, hi;
  std::memcpy(&lo, &lo_bits, 4);
  std::memcpy(&hi, &hi_bits, 4);  // may be ±inf: the next binade's top
  const double dl = std::fabs(static_cast<double>(f) - lo), dh = std::fabs(static_cast<double>(f) - hi);
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo_bits & 0x10000u) ? hi : lo;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  const Tensor pa = a.plain(), pb = b.plain();
  return pa.numel() == pb.numel() && std::memcmp(pa.data(), pb.data(), pa.nbytes()) == 0;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(va[i]) - vb[i]));
  return m;
}

struct Grads {
  Tensor y, dx, dw, db;
  bool blocked = false;  // the op's output came in the blocked layout
};

// conv2d (or linear when conv is false) forward and backward on copies of x, w, b with output gradient gy.
Grads run_op(bool conv, const Tensor& x0, const Tensor& w0, const Tensor& b0, const Tensor& gy,
             const ops::Conv2dGeom& g) {
  Tensor x = x0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
  Tensor b = b0.clone().set_requires_grad(true);
  Tensor y = conv ? ops::conv2d(x, w, b, g) : ops::linear(x, w, b);
  y.backward(y.layout() == Layout::blocked ? to_blocked(gy) : gy);  // gy plain: given in y's layout
  return {y.plain(), x.grad().plain(), w.grad().plain(), b.grad().plain(), y.layout() == Layout::blocked};
}

}  // namespace

TEST_CASE("round_bf16 rounds to the nearest bf16, ties to even, and keeps inf and NaN") {
  const float one = 1.f, ulp = std::ldexp(1.f, -7);  // bf16 keeps 7 fraction bits
  const std::vector<std::pair<float, float>> cases = {
      {one, one},
      {one + ulp / 2, one},                    // tie, 1.0 is even
      {one + 3 * ulp / 2, one + 2 * ulp},      // tie, 1 + ulp is odd: up
      {one + ulp / 2 + std::ldexp(1.f, -20), one + ulp},  // just past the tie
      {-(one + 3 * ulp / 2), -(one + 2 * ulp)},
      {std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity()},
      {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()},
      {0.f, 0.f},
      {std::ldexp(1.f, -130), std::ldexp(1.f, -130)},  // a subnormal bf16 holds
  };
  Tensor x = Tensor::empty({static_cast<int64_t>(cases.size())});
  for (size_t i = 0; i < cases.size(); ++i) x.data()[i] = cases[i].first;
  const Tensor r = ops::round_bf16(x);
  for (size_t i = 0; i < cases.size(); ++i) CHECK_MESSAGE(r.data()[i] == cases[i].second, "case " << i << ": "
                                                          << cases[i].first << " -> " << r.data()[i]);
  Tensor nan = Tensor::full({1}, std::numeric_limits<float>::quiet_NaN());
  CHECK(std::isnan(ops::round_bf16(nan).data()[0]));

  Generator g(5);  // and many values of every size against the definition
  Tensor v = randn({1 << 16}, g, 100.f);
  for (int64_t i = 0; i < v.numel(); i += 3) v.data()[i] = std::ldexp(v.data()[i], static_cast<int>(i % 60) - 30);
  const Tensor rv = ops::round_bf16(v);
  int64_t wrong = 0;
  for (int64_t i = 0; i < v.numel(); ++i) wrong += rv.data()[i] != nearest_bf16(v.data()[i]);
  CHECK(wrong == 0);
}

TEST_CASE("bf16 emulation: conv2d and linear are the f32 ops on bf16-rounded input, weight and output gradient") {
  for (bool blocked : {false, true}) {
    CAPTURE(blocked);
    ops::set_keep_blocked(blocked);
    Generator g(11);
    const ops::Conv2dGeom geom2 = geom(1, 1, 1, 1);
    const Tensor x = randn({2, 16, 6, 5}, g), w = randn({16, 16, 3, 3}, g, 0.2f), b = randn({16}, g);
    const Tensor xl = randn({5, 37}, g), wl = randn({9, 37}, g, 0.2f), bl = randn({9}, g);
    const Tensor gy = randn({2, 16, 6, 5}, g), gyl = randn({5, 9}, g);
    for (bool conv : {true, false}) {
      CAPTURE(conv);
      const Tensor& xx = conv ? x : xl;
      const Tensor& ww = conv ? w : wl;
      const Tensor& bb = conv ? b : bl;
      const Tensor& gg = conv ? gy : gyl;
      Grads emu;
      {
        PrecisionScope bf16(ops::Precision::bf16, true);
        REQUIRE(ops::bf16_emulated());
        emu = run_op(conv, xx, ww, bb, gg, geom2);
      }
      CHECK(emu.blocked == (blocked && conv));  // the blocked case runs the blocked path
      // The twin: the f32 op on operands rounded beforehand (the gradient with respect to the rounded operands
      // is the one mixed precision hands back for the originals).
      const Grads ref = run_op(conv, ops::round_bf16(xx), ops::round_bf16(ww), bb, ops::round_bf16(gg), geom2);
      CHECK(bit_equal(emu.y, ref.y));
      CHECK(bit_equal(emu.dx, ref.dx));
      CHECK(bit_equal(emu.dw, ref.dw));
      CHECK(bit_equal(emu.db, ref.db));
      // And it is not the f32 op: bf16 keeps 8 significant bits, so outputs move by ~1e-3 of their size.
      const Grads f32 = run_op(conv, xx, ww, bb, gg, geom2);
      CHECK(max_abs_diff(emu.y, f32.y) > 1e-4);
      CHECK(max_abs_diff(emu.dw, f32.dw) > 1e-4);
    }
  }
  ops::set_keep_blocked(false);
}

TEST_CASE("bf16: a convolution of integer levels equals the f32 one bit for bit, 2 to 5 bits") {
  Generator g(3);
  for (int bits = 2; bits <= 5; ++bits) {
    CAPTURE(bits);
    const int qx = (1 << bits) - 1, qw = (1 << (bits - 1)) - 1;  // activations 0..q_X, weights −q_W..q_W
    const int64_t c = 32, k = c * 9;
    REQUIRE(k * qx * qw < (int64_t{1} << 24));  // every partial sum is an integer f32 holds exactly
    Tensor x = Tensor::empty({2, c, 7, 7}), w = Tensor::empty({16, c, 3, 3});
    Tensor u = rand_uniform(x.shape(), g, 0.f, 1.f), v = rand_uniform(w.shape(), g, 0.f, 1.f);
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::floor(u.data()[i] * (qx + 1));
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = std::floor(v.data()[i] * (2 * qw + 1)) - qw;
    const Tensor y32 = ops::conv2d(x, w, Tensor(), geom(1, 1, 1, 1));
    for (bool emulate : {true, false}) {
      if (!emulate && !ops::bf16_native()) {
        MESSAGE("no native bf16 on this CPU (" << ops::bf16_isa_note() << "): the native kernels are not run here");
        continue;
      }
      PrecisionScope bf16(ops::Precision::bf16, emulate);
      CHECK_MESSAGE(bit_equal(ops::conv2d(x, w, Tensor(), geom(1, 1, 1, 1)), y32), (emulate ? "emulated" : "native"));
    }
  }
}

TEST_CASE("bf16: the native kernels agree with the emulation (where the CPU has them)") {
  if (!ops::bf16_native()) {
    qiltest::skip("isa", "no native bf16 on this CPU (" + std::string(ops::bf16_isa_note()) + "): nothing to compare");
    return;
  }
  Generator g(12);
  const Tensor x = randn({2, 16, 6, 6}, g), w = randn({32, 16, 3, 3}, g, 0.2f), b = randn({32}, g);
  const Tensor gy = randn({2, 32, 6, 6}, g);
  Grads nat, emu;
  {
    PrecisionScope s(ops::Precision::bf16, false);
    nat = run_op(true, x, w, b, gy, geom(1, 1, 1, 1));
  }
  {
    PrecisionScope s(ops::Precision::bf16, true);
    emu = run_op(true, x, w, b, gy, geom(1, 1, 1, 1));
  }
  // The same exact products summed in f32 in two orders: apart by a few f32 roundings of the sums.
  check_close(nat.y, emu.y, 1e-5f, 1e-4f, "native vs emulated forward");
  check_close(nat.dx, emu.dx, 1e-5f, 1e-4f, "native vs emulated dx");
  check_close(nat.dw, emu.dw, 1e-5f, 1e-4f, "native vs emulated dw");
}

TEST_CASE("add_bias: plain and blocked, its gradients by finite differences, misuse named") {
  Generator g(4);
  const Tensor y = randn({2, 16, 3, 3}, g), b = randn({16}, g);
  const Tensor plain_out = ops::add_bias(y, b);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 16; ++c)
      for (int64_t i = 0; i < 9; ++i) {
        const int64_t at = (n * 16 + c) * 9 + i;
        REQUIRE(plain_out.data()[at] == y.data()[at] + b.data()[c]);
      }
  ops::set_keep_blocked(true);
  CHECK(bit_equal(ops::add_bias(to_blocked(y), b), plain_out));
  ops::set_keep_blocked(false);
  auto f = [](const std::vector<Tensor>& in) { return ops::add_bias(in[0], in[1]); };
  gradcheck(f, {randn({2, 3, 2, 2}, g).set_requires_grad(true), randn({3}, g).set_requires_grad(true)}, {},
            "add_bias (N, C, H, W)");
  gradcheck(f, {randn({4, 5}, g).set_requires_grad(true), randn({5}, g).set_requires_grad(true)}, {},
            "add_bias (N, C)");
  check_error([&] { ops::add_bias(y, randn({15}, g)); }, {"add_bias", "bias [15]", "[2, 16, 3, 3]"});
  check_error([] { ops::parse_precision("fp16"); }, {"precision", "fp16", "bf16"});
}
