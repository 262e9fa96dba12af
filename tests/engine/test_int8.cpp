// conv2d_int8 and linear_int8 against plain-loop integer twins: the s32 sums must be exact (scale 1, no bias,
// sums below 2^24, so the f32 output is the sum itself) and the scaled output with bias must be
// fl(fl(scale·acc) + b) to within half an ulp of scale·acc (0 in practice; the bound admits an implementation that
// fuses the multiply and the add). Shapes cover stride, padding, dilation, groups, 1x1, one input channel,
// blocked inputs, and the operands that make oneDNN's non-VNNI kernels saturate (u8 255 × s8 ±127) or halve the
// weights (any s8 source).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "op_check.h"

#include "engine/autograd.h"
#include "engine/ops.h"

using namespace engine;
using namespace qiltest;

namespace {

struct Int8ConvCase {
  int64_t n, c, h, w, o, k;
  ops::Conv2dGeom g;
  DType src;
  int src_lo, src_hi;  // source levels drawn uniformly from [lo, hi] (lo = hi: every element that value)
  int w_lo, w_hi;      // weight codes likewise
};

int draw(Generator& gen, int lo, int hi) {
  return lo + static_cast<int>(gen.below(static_cast<uint64_t>(hi - lo + 1)));
}

// Integer levels of dtype t, uniform in [lo, hi].
Tensor levels(const Shape& s, DType t, int lo, int hi, Generator& gen) {
  Tensor k = Tensor::empty(s, t);
  for (int64_t i = 0; i < k.numel(); ++i) {
    const int v = draw(gen, lo, hi);
    if (t == DType::u8) k.data<uint8_t>()[i] = static_cast<uint8_t>(v);
    else k.data<int8_t>()[i] = static_cast<int8_t>(v);
  }
  return k;
}

int level_at(const Tensor& k, int64_t i) {
  return k.dtype() == DType::u8 ? k.data<uint8_t>()[i] : k.data<int8_t>()[i];
}

// The direct definition in integers: every (output, input tap) pair once. acc (N, O, OH, OW).
std::vector<int64_t> conv_sums(const Int8ConvCase& k, const Tensor& x, const Tensor& w, int64_t oh, int64_t ow) {
  const auto& g = k.g;
  const int64_t cg = k.c / g.groups, og = k.o / g.groups;
  std::vector<int64_t> acc(static_cast<size_t>(k.n * k.o * oh * ow), 0);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t o = 0; o < k.o; ++o)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          int64_t s = 0;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t p = 0; p < k.k; ++p)
              for (int64_t q = 0; q < k.k; ++q) {
                const int64_t hh = i * g.stride_h - g.pad_h + p * g.dil_h;
                const int64_t ww = j * g.stride_w - g.pad_w + q * g.dil_w;
                if (hh < 0 || hh >= k.h || ww < 0 || ww >= k.w) continue;  // zero padding: level 0
                const int64_t c = (o / og) * cg + ci;
                s += level_at(x, ((n * k.c + c) * k.h + hh) * k.w + ww) *
                     static_cast<int64_t>(w.data<int8_t>()[((o * cg + ci) * k.k + p) * k.k + q]);
              }
          acc[static_cast<size_t>(((n * k.o + o) * oh + i) * ow + j)] = s;
        }
  return acc;
}

// y against the twin: exactly acc (exact_sums), else fl(fl(scale·acc) + b[o]) within half an ulp of scale·acc.
void check_int8_output(const std::vector<float>& y, const std::vector<int64_t>& acc, float scale, const Tensor& b,
                       int64_t channels, int64_t inner, bool exact_sums, const std::string& what) {
  REQUIRE(y.size() == acc.size());
  for (size_t i = 0; i < acc.size(); ++i) {
    if (exact_sums) {
      REQUIRE_MESSAGE(std::fabs(static_cast<double>(acc[i])) < 16777216.0, what << ": test sum beyond 2^24");
      if (y[i] != static_cast<float>(acc[i])) {
        FAIL_CHECK(what << ": element " << i << " is " << y[i] << ", the exact sum is " << acc[i]);
        return;
      }
      continue;
    }
    const float prod = scale * static_cast<float>(acc[i]);
    const float bias = b.defined() ? b.data()[(static_cast<int64_t>(i) / inner) % channels] : 0.f;
    const float want = prod + bias;
    const double tol = std::ldexp(std::fabs(static_cast<double>(prod)), -24);
    if (!(std::fabs(static_cast<double>(y[i]) - want) <= tol)) {
      FAIL_CHECK(what << ": element " << i << " is " << y[i] << ", expected " << want << " (sum " << acc[i]
                      << ", tol " << tol << ")");
      return;
    }
  }
}

std::vector<Int8ConvCase> int8_conv_cases() {
  return {
      {2, 16, 7, 6, 16, 3, geom(1, 1, 1, 1), DType::u8, 0, 15, -7, 7},        // 4-bit levels, 3x3 pad 1
      {1, 3, 9, 8, 8, 3, geom(2, 1, 1, 1), DType::u8, 0, 3, -1, 1},           // 2-bit, stride 2, odd channels
      {2, 1, 12, 12, 6, 5, geom(1, 2, 1, 1), DType::u8, 0, 15, -7, 7},        // one input channel, 5x5
      {2, 8, 9, 9, 12, 3, geom(1, 2, 2, 2), DType::u8, 0, 15, -7, 7},         // dilation 2, groups 2
      {2, 16, 8, 8, 32, 1, geom(2, 0, 1, 1), DType::u8, 0, 15, -7, 7},        // 1x1 stride 2 (shortcut)
      {1, 16, 5, 5, 16, 3, geom(1, 1, 1, 1), DType::u8, 255, 255, 127, 127},  // saturating pairs without VNNI
      {2, 16, 5, 5, 16, 3, geom(1, 1, 1, 1), DType::u8, 0, 255, -127, 127},   // 8-bit levels and codes
      {2, 3, 8, 8, 16, 3, geom(1, 1, 1, 1), DType::s8, -127, 127, -127, 127}, // signed first-layer input
      {1, 16, 5, 5, 16, 3, geom(1, 1, 1, 1), DType::s8, -128, -128, -128, -128},  // LSQ's extreme codes
      {2, 5, 7, 7, 4, 3, geom(1, 1, 1, 1), DType::s8, -7, 7, -7, 7},         // odd codes: oneDNN halves s8 weights
  };
}

}  // namespace

TEST_CASE("conv2d_int8: exact s32 sums and the scaled, biased output equal the integer twin") {
  Generator gen(11);
  for (const Int8ConvCase& k : int8_conv_cases()) {
    CAPTURE(k.c);
    CAPTURE(k.o);
    CAPTURE(k.src_hi);
    CAPTURE(k.w_hi);
    const Tensor x = levels({k.n, k.c, k.h, k.w}, k.src, k.src_lo, k.src_hi, gen);
    const Tensor w = levels({k.o, k.c / k.g.groups, k.k, k.k}, DType::s8, k.w_lo, k.w_hi, gen);
    Tensor b = randn({k.o}, gen, 2.f);
    const int64_t oh = ops::conv_out_size(k.h, k.k, k.g.stride_h, k.g.pad_h, k.g.dil_h);
    const int64_t ow = ops::conv_out_size(k.w, k.k, k.g.stride_w, k.g.pad_w, k.g.dil_w);
    const std::vector<int64_t> acc = conv_sums(k, x, w, oh, ow);
    check_int8_output(ops::conv2d_int8(x, w, Tensor(), 1.f, k.g).to_vector(), acc, 1.f, Tensor(), k.o, oh * ow,
                      true, "exact sums");
    const float scale = 0.0173f;  // not a power of two: the scaling rounds
    check_int8_output(ops::conv2d_int8(x, w, b, scale, k.g).to_vector(), acc, scale, b, k.o, oh * ow, false,
                      "scaled with bias");
  }
}

TEST_CASE("conv2d_int8: blocked input levels, and a blocked output under keep_blocked") {
  Generator gen(12);
  const Int8ConvCase k{2, 32, 6, 6, 16, 3, geom(1, 1, 1, 1), DType::u8, 0, 15, -7, 7};
  const Tensor x = levels({k.n, k.c, k.h, k.w}, DType::u8, 0, 15, gen);
  const Tensor w = levels({k.o, k.c, 3, 3}, DType::s8, -7, 7, gen);
  const Tensor b = randn({k.o}, gen, 1.f);
  // The same levels in the blocked order: element (n, c, s) at ((n * C/B + c/B) * H*W + s) * B + c % B.
  const int64_t kb = block_channels();
  Tensor xb = Tensor::empty(x.shape(), DType::u8, Layout::blocked);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t c = 0; c < k.c; ++c)
      for (int64_t s = 0; s < k.h * k.w; ++s)
        xb.data<uint8_t>()[((n * (k.c / kb) + c / kb) * k.h * k.w + s) * kb + c % kb] =
            x.data<uint8_t>()[(n * k.c + c) * k.h * k.w + s];
  const Tensor xbp = xb.plain();
  REQUIRE(std::vector<uint8_t>(xbp.data<uint8_t>(), xbp.data<uint8_t>() + x.numel()) ==
          std::vector<uint8_t>(x.data<uint8_t>(), x.data<uint8_t>() + x.numel()));
  const std::vector<int64_t> acc = conv_sums(k, x, w, 6, 6);
  ops::set_keep_blocked(true);
  const Tensor y = ops::conv2d_int8(xb, w, b, 0.05f, k.g);
  ops::set_keep_blocked(false);
  CHECK(y.layout() == Layout::blocked);
  check_int8_output(y.to_vector(), acc, 0.05f, b, k.o, 36, false, "blocked");
  check_int8_output(ops::conv2d_int8(xb, w, b, 0.05f, k.g).to_vector(), acc, 0.05f, b, k.o, 36, false,
                    "blocked input, plain output");
}

TEST_CASE("linear_int8: exact s32 sums and the scaled, biased output equal the integer twin") {
  Generator gen(13);
  struct Case {
    int64_t n, in, out;
    DType src;
    int src_lo, src_hi, w_lo, w_hi;
  };
  for (const Case& k : std::vector<Case>{{5, 64, 10, DType::u8, 0, 15, -7, 7},
                                         {3, 400, 17, DType::u8, 0, 3, -1, 1},
                                         {2, 64, 10, DType::u8, 255, 255, 127, 127},
                                         {4, 50, 9, DType::u8, 0, 255, -127, 127},
                                         {4, 33, 8, DType::s8, -128, 127, -128, 127}}) {
    CAPTURE(k.in);
    CAPTURE(k.src_hi);
    const Tensor x = levels({k.n, k.in}, k.src, k.src_lo, k.src_hi, gen);
    const Tensor w = levels({k.out, k.in}, DType::s8, k.w_lo, k.w_hi, gen);
    const Tensor b = randn({k.out}, gen, 2.f);
    std::vector<int64_t> acc(static_cast<size_t>(k.n * k.out), 0);
    for (int64_t n = 0; n < k.n; ++n)
      for (int64_t o = 0; o < k.out; ++o)
        for (int64_t i = 0; i < k.in; ++i)
          acc[static_cast<size_t>(n * k.out + o)] += level_at(x, n * k.in + i) *
                                                     static_cast<int64_t>(w.data<int8_t>()[o * k.in + i]);
    check_int8_output(ops::linear_int8(x, w, Tensor(), 1.f).to_vector(), acc, 1.f, Tensor(), k.out, 1, true,
                      "exact sums");
    check_int8_output(ops::linear_int8(x, w, b, 0.0173f).to_vector(), acc, 0.0173f, b, k.out, 1, false,
                      "scaled with bias");
  }
}

TEST_CASE("conv2d_int8 and linear_int8: misuse is an error naming the operand") {
  const Tensor x8 = Tensor::zeros({1, 4, 5, 5}, DType::u8);
  const Tensor w8 = Tensor::zeros({2, 4, 3, 3}, DType::s8);
  check_error([&] { ops::conv2d_int8(Tensor::zeros({1, 4, 5, 5}), w8, Tensor(), 1.f, geom(1, 1, 1, 1)); },
              {"conv2d_int8", "input levels must be u8 or s8"});
  check_error([&] { ops::conv2d_int8(x8, Tensor::zeros({2, 4, 3, 3}, DType::u8), Tensor(), 1.f, geom(1, 1, 1, 1)); },
              {"conv2d_int8", "weight codes must be s8"});
  check_error([&] { ops::conv2d_int8(x8, Tensor::zeros({2, 3, 3, 3}, DType::s8), Tensor(), 1.f, geom(1, 1, 1, 1)); },
              {"conv2d_int8", "does not fit input"});
  check_error([&] { ops::conv2d_int8(x8, w8, Tensor::zeros({3}), 1.f, geom(1, 1, 1, 1)); },
              {"conv2d_int8", "bias must be f32 (2)"});
  const Tensor x2 = Tensor::zeros({2, 5}, DType::u8);
  check_error([&] { ops::linear_int8(x2, Tensor::zeros({3, 4}, DType::s8), Tensor(), 1.f); },
              {"linear_int8", "has 5 features"});
}

// conv2d_int_forward and linear_int_forward (integer forward in training): the output is the integer op's, bit for
// bit, and the gradients of x, w and b are the float op's, bit for bit, for the same output gradient. Their
// gradient is conv2d's and linear's by construction (those have their finite-difference checks in test_conv.cpp
// and test_norm_pool_linear.cpp); what is tested here is that the recorded backward reads x and w, not the levels.
namespace {

// f32 values k·step of integer levels k.
Tensor scaled(const Tensor& k, float step) {
  Tensor out = Tensor::empty(k.shape());
  for (int64_t i = 0; i < k.numel(); ++i) out.data()[i] = static_cast<float>(level_at(k, i)) * step;
  return out;
}

template <class IntOp, class FloatOp>
void check_int_forward(const Tensor& xk, const Tensor& wk, float sx, float sw, const Tensor& b0, IntOp int_op,
                       FloatOp float_op, Generator& gen, const std::string& what) {
  CAPTURE(what);
  auto leaf = [](const Tensor& t) { return t.clone().set_requires_grad(true); };
  Tensor x = leaf(scaled(xk, sx)), w = leaf(scaled(wk, sw)), b = leaf(b0);
  const Tensor y = int_op(x, w, b, xk, wk, sx * sw);
  Tensor ref;
  {
    NoGradGuard ng;
    ref = int_op(Tensor(), Tensor(), b0, xk, wk, sx * sw);  // no operands: the integer op alone, nothing recorded
  }
  REQUIRE(y.to_vector() == ref.to_vector());
  const Tensor r = randn(y.shape(), gen);
  y.backward(r);
  Tensor xf = leaf(scaled(xk, sx)), wf = leaf(scaled(wk, sw)), bf = leaf(b0);
  float_op(xf, wf, bf).backward(r);
  CHECK(x.grad().to_vector() == xf.grad().to_vector());
  CHECK(w.grad().to_vector() == wf.grad().to_vector());
  CHECK(b.grad().to_vector() == bf.grad().to_vector());
  CHECK_FALSE(x.grad().to_vector() == std::vector<float>(static_cast<size_t>(x.numel()), 0.f));
}

}  // namespace

TEST_CASE("conv2d_int_forward and linear_int_forward: the integer op's output, the float op's gradients") {
  Generator gen(14);
  for (const Int8ConvCase& k : int8_conv_cases()) {
    const Tensor xk = levels({k.n, k.c, k.h, k.w}, k.src, k.src_lo, k.src_hi, gen);
    const Tensor wk = levels({k.o, k.c / k.g.groups, k.k, k.k}, DType::s8, k.w_lo, k.w_hi, gen);
    check_int_forward(
        xk, wk, 0.37f, 0.021f, randn({k.o}, gen),
        [&](const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& a, const Tensor& c, float s) {
          return ops::conv2d_int_forward(x, w, b, a, c, s, k.g);
        },
        [&](const Tensor& x, const Tensor& w, const Tensor& b) { return ops::conv2d(x, w, b, k.g); }, gen,
        "conv " + std::to_string(k.c) + "->" + std::to_string(k.o) + " levels up to " + std::to_string(k.src_hi));
  }
  for (DType src : {DType::u8, DType::s8}) {
    const Tensor xk = levels({3, 40}, src, src == DType::u8 ? 0 : -7, 7, gen);
    const Tensor wk = levels({9, 40}, DType::s8, -3, 3, gen);
    check_int_forward(
        xk, wk, 0.5f, 0.13f, randn({9}, gen),
        [](const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& a, const Tensor& c, float s) {
          return ops::linear_int_forward(x, w, b, a, c, s);
        },
        [](const Tensor& x, const Tensor& w, const Tensor& b) { return ops::linear(x, w, b); }, gen,
        src == DType::u8 ? "linear u8" : "linear s8");
  }
  // Operands that are not the levels' shape are an error naming both.
  const Tensor xk = levels({1, 4, 5, 5}, DType::u8, 0, 3, gen), wk = levels({2, 4, 3, 3}, DType::s8, -1, 1, gen);
  const Tensor w = Tensor::zeros({2, 4, 3, 3}).set_requires_grad(true);
  check_error([&] { ops::conv2d_int_forward(Tensor::zeros({1, 4, 6, 6}), w, Tensor(), xk, wk, 1.f, geom(1, 1, 1, 1)); },
              {"conv2d_int_forward", "do not match their levels"});
}
