// Quantized layers under bf16 (QuantizableModule::forward_levels): for every quantizer kind at 2-5 bits, a
// Conv2d and a Linear feed their operation the integer levels and scale in f32 afterwards, so their bf16 forward
// equals bit for bit the f32 operation of the same levels with the same scaling, and differs from the f32 layer
// only by f32 rounding; their gradients stay within bf16's rounding of the f32 layer's.
#include <cmath>
#include <cstring>
#include <map>
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
using qiltest::levels_f32;
using qiltest::randn;
using qiltest::relu_input;

namespace {

// The layer under bf16 against (1) the f32 op of its levels, scaled as the layer scales, bit for bit, and (2) the
// f32 layer, within f32 rounding of the largest output. op is the layer's operation without bias.
template <class Op>
void check_layer(QuantizableModule& layer, const Tensor& x, const Tensor& bias, Op op, const std::string& what) {
  engine::NoGradGuard ng;
  const Tensor y32 = layer.forward(x).plain();
  Tensor ybf;
  {
    qiltest::PrecisionScope bf16(engine::ops::Precision::bf16);
    ybf = layer.forward(x).plain();
  }
  const quant::Quantizer& aq = *layer.active_act_quantizer();
  const quant::Quantizer& wq = *layer.active_weight_quantizer();
  const Tensor c = engine::ops::mul_scalar(layer.out_scale(),
                                           Tensor::scalar(static_cast<float>(aq.level_step() * wq.level_step())));
  const Tensor ref = engine::ops::add_bias(
      engine::ops::mul_scalar(op(levels_f32(aq, x), levels_f32(wq, layer.weight())), c), bias).plain();
  REQUIRE(ref.numel() == ybf.numel());
  CHECK_MESSAGE(std::memcmp(ref.data(), ybf.data(), ref.nbytes()) == 0,
                what << ": the bf16 layer is not the f32 op of its levels");
  double ymax = 0;
  for (int64_t i = 0; i < y32.numel(); ++i) ymax = std::max(ymax, std::fabs(static_cast<double>(y32.data()[i])));
  qiltest::check_close(ybf, y32, 1e-5f, static_cast<float>(1e-5 * ymax), what + ": bf16 vs f32 layer");
}

// 8 -> 16 channels, 3x3, padding 1.
Conv2dOptions conv3x3(bool bias) {
  Conv2dOptions co;
  co.in_channels = 8;
  co.out_channels = 16;
  co.kernel = 3;
  co.padding = 1;
  co.bias = bias;
  return co;
}

double rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> va = a.to_vector(), vb = b.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    num += (static_cast<double>(va[i]) - vb[i]) * (static_cast<double>(va[i]) - vb[i]);
    den += static_cast<double>(vb[i]) * vb[i];
  }
  return den > 0 ? std::sqrt(num / den) : (num > 0 ? 1e30 : 0);
}

}  // namespace

TEST_CASE("bf16 quantized layers: the f32 op of the integer levels, bit for bit, every kind, 2 to 5 bits") {
  Generator g(41);
  for (const std::string& kind : quant::quantizer_names()) {
    for (int bits = 2; bits <= 5; ++bits) {
      const std::string what = std::string(kind) + " " + std::to_string(bits) + "-bit";
      CAPTURE(what);
      LayerQuantSpec spec;
      spec.wbits = spec.abits = bits;
      spec.quantizer = kind;
      const Tensor x = relu_input({2, 8, 7, 7}, g);
      Conv2d conv(conv3x3(true), g);
      for (int64_t i = 0; i < 16; ++i) conv.bias().data()[i] = 0.05f * static_cast<float>(i) - 0.3f;
      conv.set_quant(spec);
      qiltest::calibrate_once(conv, x);
      engine::ops::Conv2dGeom geom;
      geom.pad_h = geom.pad_w = 1;
      check_layer(conv, x, conv.bias(), [&](const Tensor& a, const Tensor& w) {
        return engine::ops::conv2d(a, w, Tensor(), geom);
      }, what + " conv");

      const Tensor xf = engine::ops::flatten(x);
      Linear fc(xf.size(1), 10, true, g);
      fc.set_quant(spec);
      qiltest::calibrate_once(fc, xf);
      check_layer(fc, xf, fc.bias(), [](const Tensor& a, const Tensor& w) { return engine::ops::linear(a, w, Tensor()); },
                  what + " linear");
    }
  }
}

TEST_CASE("bf16 quantized layers: gradients within bf16 rounding of the f32 layer's, interval parameters too") {
  Generator g(42);
  LayerQuantSpec spec;
  spec.wbits = spec.abits = 3;
  const Tensor x0 = relu_input({4, 8, 6, 6}, g);
  Conv2d conv(conv3x3(false), g);
  conv.set_quant(spec);
  qiltest::calibrate_once(conv, x0);
  const Tensor gy = randn({4, 16, 6, 6}, g);
  auto grads = [&](bool bf16) {
    engine::ops::set_precision(bf16 ? engine::ops::Precision::bf16 : engine::ops::Precision::f32);
    Tensor x = x0.clone().set_requires_grad(true);
    for (auto& p : conv.named_parameters()) p.tensor.grad() = Tensor();
    conv.forward(x).backward(gy);
    engine::ops::set_precision(engine::ops::Precision::f32);
    std::map<std::string, Tensor> out{{"x", x.grad().plain().clone()}};
    for (auto& p : conv.named_parameters())
      if (p.tensor.grad().defined()) out[p.name] = p.tensor.grad().plain().clone();
    return out;
  };
  const auto f32 = grads(false), bf = grads(true);
  REQUIRE(f32.size() == bf.size());
  REQUIRE(f32.count("act_quant.c") == 1);
  REQUIRE(f32.count("weight_quant.d") == 1);
  for (const auto& [name, t] : f32) {
    const double d = rel_diff(bf.at(name), t);
    MESSAGE(name << ": |bf16 - f32| / |f32| = " << d);
    // The output gradient rounded to bf16 (2^-9 relative per element) is what separates them.
    CHECK_MESSAGE(d < 2e-2, name);
  }
  CHECK(rel_diff(bf.at("weight"), f32.at("weight")) > 0);  // bf16 did round something
}
