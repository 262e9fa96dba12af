// Integer inference of single layers (QuantizableModule::set_int8, layers::set_int8_inference): for every quantizer
// kind, a quantized Conv2d (padding, stride) and Linear in int8 give the fake-quantized float layer's output within
// the bound f32 rounding allows; layers with one side quantized stay in f32 unchanged; a signed first-layer input
// runs as s8; levels that do not fit 8 bits are refused naming the layer; gradients are refused.
//
// The bound. Both paths sum the same terms t = x̄·(s·w̄) = S·k_x·k_w exactly defined by the integer levels
// (S = s·step_x·step_w). The float path holds x̄, s·w̄ rounded (3 roundings, ≤ 3u relative per term), sums K terms
// in f32 (≤ γ_K·Σ|t|, γ_K ≈ K·u) and adds the bias (≤ u·|y|); the integer path sums exactly, rounds S (u), the
// scaling (u) and the bias (u·|y|). With M = Σ|t| and u = 2^-24:
//     |y_int − y_float| ≤ (K + 8)·u·M + 2u·|y|.
#include <cmath>
#include <memory>
#include <string>

#include "gradcheck.h"
#include "level_fixtures.h"
#include "train_fixtures.h"

#include "engine/autograd.h"
#include "engine/ops.h"
#include "layers/basic.h"
#include "layers/quantize.h"

using namespace layers;
using engine::Generator;
using qiltest::abs_of;
using qiltest::randn;

namespace {

// The layer's output in f32 (fake-quantized) and in int8, and the bound between them, element by element.
// op(x, w) is the layer's own f32 op; k the number of terms each output sums.
template <class Op>
void check_int8_layer(QuantizableModule& layer, const Tensor& x, int64_t k, Op op, const std::string& what) {
  engine::NoGradGuard ng;
  const std::vector<float> yf = layer.forward(x).to_vector();
  REQUIRE(layer.set_int8(true));
  const std::vector<float> yi = layer.forward(x).to_vector();
  layer.set_int8(false);
  // M = Σ|x̄|·|s·w̄| per output, in f32 (its own rounding is K·u relative: inside the 8u slack).
  const Tensor xbar = (*layer.active_act_quantizer())(x);
  const Tensor sw = engine::ops::mul_scalar((*layer.active_weight_quantizer())(layer.weight()), layer.out_scale());
  const std::vector<float> m = op(abs_of(xbar), abs_of(sw)).to_vector();
  REQUIRE(yf.size() == yi.size());
  const double u = std::ldexp(1.0, -24);
  double worst = 0;  // largest |Δ| / bound
  for (size_t i = 0; i < yf.size(); ++i) {
    const double bound = (k + 8) * u * m[i] + 2 * u * std::fabs(yf[i]);
    const double diff = std::fabs(static_cast<double>(yi[i]) - yf[i]);
    worst = std::max(worst, bound > 0 ? diff / bound : (diff > 0 ? 1e30 : 0));
    if (!(diff <= bound)) {
      FAIL_CHECK(what << ": output " << i << " int8 " << yi[i] << ", float " << yf[i] << ", |diff| " << diff
                      << " > bound " << bound);
      return;
    }
  }
  MESSAGE(what << ": largest |int8 - float| is " << worst << " of the bound");
}

struct Widths {
  int wbits, abits;
  bool signed_input;
};

}  // namespace

TEST_CASE("int8 layers: Conv2d and Linear equal the fake-quantized layer within f32 rounding, every kind") {
  Generator g(31);
  for (const char* kind : {"qil", "lsq", "pact", "dorefa"}) {
    for (const Widths& wd : {Widths{4, 4, false}, Widths{2, 2, false}, Widths{3, 5, false}, Widths{6, 8, true},
                             Widths{8, 8, true}}) {
      // 8-bit DoReFa weights (PACT's too) are refused (below).
      if ((std::string(kind) == "dorefa" || std::string(kind) == "pact") && wd.wbits == 8) continue;
      const std::string what = std::string(kind) + " w" + std::to_string(wd.wbits) + "a" + std::to_string(wd.abits) +
                               (wd.signed_input ? " signed input" : "");
      CAPTURE(what);
      LayerQuantSpec spec;
      spec.wbits = wd.wbits;
      spec.abits = wd.abits;
      spec.signed_input = wd.signed_input;
      spec.quantizer = kind;
      // Inputs post-ReLU (a few units, so DoReFa's clip at 1 and PACT's α both act), or signed N(0, 1).
      Tensor x = randn({3, 8, 9, 9}, g, 1.5f);
      if (!wd.signed_input)
        for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::max(0.f, x.data()[i]);

      Conv2dOptions co;
      co.in_channels = 8;
      co.out_channels = 12;
      co.kernel = 3;
      co.stride = 2;
      co.padding = 1;
      co.bias = true;
      Conv2d conv(co, g);
      for (int64_t i = 0; i < conv.bias().numel(); ++i) conv.bias().data()[i] = 0.1f * static_cast<float>(i) - 0.5f;
      conv.set_quant(spec);
      qiltest::calibrate_once(conv, x);
      engine::ops::Conv2dGeom geom;
      geom.stride_h = geom.stride_w = 2;
      geom.pad_h = geom.pad_w = 1;
      check_int8_layer(conv, x, 8 * 9, [&](const Tensor& a, const Tensor& w) {
        return engine::ops::conv2d(a, w, Tensor(), geom);
      }, what + " conv");

      const Tensor xf = engine::ops::flatten(x);  // (3, 648)
      Linear fc(xf.size(1), 10, true, g);
      fc.set_quant(spec);
      qiltest::calibrate_once(fc, xf);
      check_int8_layer(fc, xf, xf.size(1), [](const Tensor& a, const Tensor& w) {
        return engine::ops::linear(a, w, Tensor());
      }, what + " linear");
    }
  }
}

TEST_CASE("int8 layers: one side quantized stays f32, unchanged, and the network switch says which run int8") {
  Generator g(32);
  Sequential net;
  Conv2dOptions co;
  co.in_channels = 4;
  co.out_channels = 4;
  co.padding = 1;
  auto* both = net.add("both", std::make_unique<Conv2d>(co, g));
  auto* wonly = net.add("wonly", std::make_unique<Conv2d>(co, g));
  auto* aonly = net.add("aonly", std::make_unique<Conv2d>(co, g));
  net.add("fp", std::make_unique<Conv2d>(co, g));
  both->set_quant({4, 4});
  wonly->set_quant({4, 32});
  aonly->set_quant({32, 4});
  Tensor x = randn({2, 4, 6, 6}, g);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::fabs(x.data()[i]);
  qiltest::calibrate_once(net, x);
  engine::NoGradGuard ng;
  const std::vector<float> wy = wonly->forward(x).to_vector(), ay = aonly->forward(x).to_vector();
  const Int8Layers on = set_int8_inference(net, true);
  CHECK(on.integer == std::vector<std::string>{"both"});
  CHECK(on.floating == std::vector<std::string>{"wonly", "aonly", "fp"});
  CHECK(both->int8());
  CHECK_FALSE(wonly->int8());
  CHECK(wonly->forward(x).to_vector() == wy);
  CHECK(aonly->forward(x).to_vector() == ay);
  CHECK(set_int8_inference(net, false).integer.empty());
  CHECK_FALSE(both->int8());
}

TEST_CASE("int8 layers: 8-bit DoReFa weights are refused naming the layer, and gradients are refused") {
  Generator g(33);
  Sequential net;
  Conv2dOptions co;
  co.in_channels = 4;
  co.out_channels = 4;
  auto* ok = net.add("ok", std::make_unique<Conv2d>(co, g));
  auto* wide = net.add("wide", std::make_unique<Conv2d>(co, g));
  ok->set_quant({4, 4});
  LayerQuantSpec spec{8, 8};
  spec.quantizer = "dorefa";
  wide->set_quant(spec);
  Tensor x = randn({2, 4, 8, 8}, g);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::fabs(x.data()[i]);
  qiltest::calibrate_once(net, x);
  CHECK_THROWS_WITH_AS(set_int8_inference(net, true),
                       doctest::Contains("integer inference: layer 'wide': dorefa_weight: 8-bit levels span "
                                         "[-255, 255] and do not fit int8"),
                       engine::Error);
  CHECK_FALSE(ok->int8());  // all or nothing
  REQUIRE(ok->set_int8(true));
  CHECK_THROWS_WITH_AS(ok->forward(x), doctest::Contains("integer inference runs without gradients"), engine::Error);
}
