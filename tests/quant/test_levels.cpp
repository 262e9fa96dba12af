// Quantizer::levels and level_step, what integer inference computes with: for every kind and side, the levels
// times the step give the fake-quantized output back, they lie in [min_level, positive_levels] in the right 8-bit
// type, level 0 is exactly the value 0 (so zero padding is level 0), the layout is kept, and levels that do not
// fit 8 bits are refused by name.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "gradcheck.h"
#include "kernel_builds.h"

#include "engine/ops.h"
#include "quant/dorefa.h"
#include "quant/quantizer.h"
#include "quant/registry.h"

using namespace engine;
using namespace qiltest;
using namespace quant;

namespace {

struct LevelCase {
  std::string kind;
  bool weight;     // a weight quantizer (else activations)
  bool is_signed;  // activations: a first conv's signed input
  int bits;
};

// A calibrated quantizer of the case, observed on v.
std::unique_ptr<Quantizer> calibrated(const LevelCase& k, const Tensor& v) {
  QuantizerOptions o;
  o.is_signed = k.is_signed;
  auto q = k.weight ? make_weight_quantizer(k.kind, k.bits, o) : make_activation_quantizer(k.kind, k.bits, o);
  q->observe(v);
  q->finish_calibration();
  return q;
}

// Inputs spread over the whole range (some clipped, many small, exact zeros): weights N(0, 0.3); activations
// post-ReLU N(0, 1) (half of them 0), or the raw N(0, 1) for a signed input.
Tensor inputs(const LevelCase& k, Generator& g) {
  Tensor v = randn({4, 16, 5, 5}, g, k.weight ? 0.3f : 1.f);
  if (!k.weight && !k.is_signed)
    for (int64_t i = 0; i < v.numel(); ++i) v.data()[i] = std::max(0.f, v.data()[i]);
  for (int64_t i = 0; i < v.numel(); i += 17) v.data()[i] = 0.f;
  return v;
}

int level_at(const Tensor& k, int64_t i) {
  return k.dtype() == DType::u8 ? k.data<uint8_t>()[i] : k.data<int8_t>()[i];
}

}  // namespace

TEST_CASE("levels: k·level_step is the fake-quantized value, in range, level 0 is value 0, for every kind") {
  std::vector<LevelCase> cases;
  for (const char* kind : {"qil", "lsq", "pact", "dorefa"})
    for (int bits : {2, 4, 8}) {
      // PACT's weights are DoReFa's: 8-bit ones do not fit (the next case).
      const bool dorefa_weights = std::string(kind) == "dorefa" || std::string(kind) == "pact";
      if (!(dorefa_weights && bits == 8)) cases.push_back({kind, true, false, bits});
      cases.push_back({kind, false, false, bits});
      cases.push_back({kind, false, true, bits});
    }
  Generator g(21);
  for (const LevelCase& c : cases) {
    CAPTURE(c.kind);
    CAPTURE(c.weight);
    CAPTURE(c.is_signed);
    CAPTURE(c.bits);
    const Tensor v = inputs(c, g);
    auto q = calibrated(c, v);
    const Tensor vbar = (*q)(v);
    const Tensor k = q->levels(v);
    REQUIRE(k.shape() == v.shape());
    CHECK(k.dtype() == (q->min_level() < 0 ? DType::s8 : DType::u8));
    const int want_min = !q->is_signed() ? 0 : c.kind == "lsq" ? -(1 << (c.bits - 1)) : -q->positive_levels();
    CHECK(q->min_level() == want_min);
    const double step = q->level_step();
    int lo = 1 << 10, hi = -(1 << 10);
    for (int64_t i = 0; i < v.numel(); ++i) {
      const int ki = level_at(k, i);
      const float want = vbar.data()[i];
      lo = std::min(lo, ki);
      hi = std::max(hi, ki);
      // k·step equals v̄ up to the rounding of the float path's own arithmetic: a few ulps of the range's top
      // (DoReFa's 2·k/q − 1 cancels), far below one step.
      const double tol = 4e-7 * step * std::max(q->positive_levels(), -q->min_level());
      if (!(std::fabs(ki * step - want) <= tol) || (ki == 0) != (want == 0.f)) {
        FAIL_CHECK("element " << i << ": level " << ki << " x step " << step << " = " << ki * step
                              << ", fake-quantized value " << want);
        break;
      }
    }
    CHECK(lo >= q->min_level());
    CHECK(hi <= q->positive_levels());
    CHECK(hi > lo);  // the inputs reach several levels
    if (!c.weight) {  // a zero input (zero padding) is level 0
      const Tensor z = q->levels(Tensor::zeros({2, 3}));
      for (int64_t i = 0; i < z.numel(); ++i) CHECK(level_at(z, i) == 0);
    }
  }
}

TEST_CASE("levels_of: the levels of the quantizer's own output are levels(), both kernel builds, off-range refused") {
  Generator g(22);
  for (const char* kind : {"qil", "lsq", "pact", "dorefa"})
    for (int bits : {2, 3, 5, 8})
      for (const LevelCase& c : {LevelCase{kind, true, false, bits}, LevelCase{kind, false, false, bits},
                                LevelCase{kind, false, true, bits}}) {
        CAPTURE(c.kind);
        CAPTURE(c.weight);
        CAPTURE(c.is_signed);
        CAPTURE(c.bits);
        const Tensor v = inputs(c, g);
        auto q = calibrated(c, v);
        if (!q->levels_fit()) {
          CHECK_THROWS_WITH_AS(q->levels_of((*q)(v)), doctest::Contains("do not fit"), engine::Error);
          continue;
        }
        const Tensor want = q->levels(v);  // QIL's activations: their own one-pass kernel
        for (bool baseline : {false, true}) {
          qiltest::BaselineKernels scope(baseline);
          const Tensor k = q->levels_of((*q)(v));
          REQUIRE(k.dtype() == want.dtype());
          CHECK_MESSAGE(std::memcmp(k.bytes(), want.bytes(), static_cast<size_t>(k.numel())) == 0,
                        (baseline ? "baseline" : "cpu's pick") << " build");
        }
        // A value beyond the top level by three steps, and one below the bottom: not this quantizer's output.
        Tensor off = (*q)(v).clone();
        off.data()[3] = static_cast<float>((q->positive_levels() + 3) * q->level_step());
        off.data()[7] = static_cast<float>((q->min_level() - 2) * q->level_step());
        CHECK_THROWS_WITH_AS(q->levels_of(off), doctest::Contains("2 levels fell outside"), engine::Error);
      }
}

TEST_CASE("levels: DoReFa weight codes are odd, and 8-bit ones do not fit int8") {
  Generator g(22);
  DorefaWeightQuantizer q4(4);
  const Tensor w = randn({8, 8, 3, 3}, g, 0.3f);
  const Tensor k = q4.levels(w);
  for (int64_t i = 0; i < k.numel(); ++i) CHECK(std::abs(k.data<int8_t>()[i]) % 2 == 1);  // odd in [−15, 15]
  DorefaWeightQuantizer q8(8);
  CHECK_THROWS_WITH_AS(q8.levels(w),
                       doctest::Contains("dorefa_weight: 8-bit levels span [-255, 255] and do not fit int8"), Error);
  CHECK_THROWS_WITH_AS(q8.check_levels_fit(), doctest::Contains("do not fit int8"), Error);
}

TEST_CASE("levels: a blocked activation gives blocked levels in the same order") {
  Generator g(23);
  Tensor x = randn({2, 16, 3, 3}, g);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::fabs(x.data()[i]);
  auto q = make_activation_quantizer("qil", 4);
  q->observe(x);
  q->finish_calibration();
  Tensor xb = Tensor::empty(x.shape(), DType::f32, Layout::blocked);  // the same values in the blocked order
  const int64_t b = engine::block_channels();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 16; ++c)
      for (int64_t s = 0; s < 9; ++s)
        xb.data()[((n * (16 / b) + c / b) * 9 + s) * b + c % b] = x.data()[(n * 16 + c) * 9 + s];
  const Tensor kb = q->levels(xb), kp = q->levels(x);
  CHECK(kb.layout() == Layout::blocked);
  const Tensor kbp = kb.plain();
  for (int64_t i = 0; i < x.numel(); ++i) CHECK(kbp.data<uint8_t>()[i] == kp.data<uint8_t>()[i]);
}
