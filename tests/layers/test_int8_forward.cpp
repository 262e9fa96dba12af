// Integer forward in training (QuantizableModule::set_int8_forward, layers::set_int8_forward). For every quantizer
// kind with integer levels, 2 to 8 bits, a Conv2d (padding, stride, groups, odd shapes, batch 1) and a Linear:
// - under bf16 the integer forward equals, bit for bit, the float path that feeds its op the same levels
//   (forward_levels) and the f32 op of those levels scaled as the layer scales (every sum here < 2^24);
// - under f32 it is within f32 rounding of the float layer (the bound of test_int8_layers.cpp);
// - the gradients of the input, the weight, the bias, the output scale and every quantizer parameter are bit for
//   bit the float layer's, for the same output gradient (backward reads the same operands);
// and evaluation (no gradients), calibration, one-side-quantized layers and levels beyond 8 bits keep the float
// path, which the network switch reports.
#include <cmath>
#include <cstring>
#include <map>
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
using qiltest::levels_f32;
using qiltest::randn;
using qiltest::relu_input;

namespace {

// The layer's output and the gradients of its input and of every parameter, for the output gradient r, with the
// integer forward on or off.
struct Pass {
  Tensor y;
  std::map<std::string, Tensor> grads;
};
Pass run(QuantizableModule& layer, const Tensor& x0, const Tensor& r, bool int8_forward) {
  layer.set_int8_forward(int8_forward);
  Tensor x = x0.clone().set_requires_grad(true);
  for (auto& p : layer.named_parameters()) p.tensor.grad() = Tensor();
  Tensor y = layer.forward(x);
  y.backward(r);
  layer.set_int8_forward(false);
  Pass out{y.plain().clone(), {{"x", x.grad().plain().clone()}}};
  for (auto& p : layer.named_parameters())
    if (p.tensor.grad().defined()) out.grads[p.name] = p.tensor.grad().plain().clone();
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// |v − k·step|·factor element by element, in double, as f32: how far a quantizer's f32 output is from its level.
Tensor off_level(const Tensor& v, const Tensor& k, double step, double factor) {
  const Tensor vp = v.plain();
  Tensor out = Tensor::empty(vp.shape());
  for (int64_t i = 0; i < vp.numel(); ++i)
    out.data()[i] = static_cast<float>(std::fabs(static_cast<double>(vp.data()[i]) - k.data()[i] * step) * factor);
  return out;
}

// op(x, w) is the layer's f32 op without bias, k the number of terms each output sums.
template <class Op>
void check_layer(QuantizableModule& layer, const Tensor& x, const Tensor& bias, int64_t k, Op op,
                 const std::string& what, Generator& g) {
  layer.set_int8_forward(true);
  REQUIRE_MESSAGE(layer.runs_int8_forward(true), what);
  REQUIRE_MESSAGE(!layer.runs_int8_forward(false), what);
  layer.set_int8_forward(false);
  const quant::Quantizer& aq = *layer.active_act_quantizer();
  const quant::Quantizer& wq = *layer.active_weight_quantizer();
  Tensor r;
  {
    engine::NoGradGuard ng;
    r = randn(layer.forward(x).plain().shape(), g);
  }
  for (const auto p : {engine::ops::Precision::f32, engine::ops::Precision::bf16}) {
    const bool bf16 = p == engine::ops::Precision::bf16;
    const std::string where = what + (bf16 ? " bf16" : " f32");
    CAPTURE(where);
    qiltest::PrecisionScope scope(p);
    const Pass fl = run(layer, x, r, false), in = run(layer, x, r, true);
    // The gradients: the same operands read by the same backward.
    REQUIRE(fl.grads.size() == in.grads.size());
    REQUIRE(fl.grads.count("out_scale") == 1);
    for (const auto& [name, t] : fl.grads) {
      REQUIRE_MESSAGE(in.grads.count(name) == 1, where << ": no gradient for " << name);
      CHECK_MESSAGE(same_bits(in.grads.at(name), t), where << ": the gradient of " << name << " changed");
    }
    if (bf16) {  // both are the op of the levels, scaled after: bit for bit, and the f32 op of the levels too
      CHECK_MESSAGE(same_bits(in.y, fl.y), where << ": the integer forward is not forward_levels'");
      engine::NoGradGuard ng;
      const Tensor c = engine::ops::mul_scalar(layer.out_scale(),
                                               Tensor::scalar(static_cast<float>(aq.level_step() * wq.level_step())));
      engine::ops::set_precision(engine::ops::Precision::f32);
      Tensor ref = engine::ops::mul_scalar(op(levels_f32(aq, x), levels_f32(wq, layer.weight())), c);
      if (bias.defined()) ref = engine::ops::add_bias(ref, bias);
      CHECK_MESSAGE(same_bits(in.y, ref.plain()), where << ": not the f32 op of the levels");
      continue;
    }
    // f32: the bound of test_int8_layers.cpp, |y_int − y_float| ≤ (K + 8)·u·Σ|x̄|·|s·w̄| + 2u·|y|, plus what
    // the float operands' own distance from their levels adds: Σ|x̄ − k_x·step_x|·|s·w̄| + |x̄|·|s|·|w̄ − k_w·step_w|
    // (DoReFa's weights, 2·(j/q) − 1 in f32, are off their level by up to an ulp of 1, not of the level).
    engine::NoGradGuard ng;
    const Tensor xbar = aq(x), wbar = wq(layer.weight());
    const Tensor swbar = engine::ops::mul_scalar(wbar, layer.out_scale());
    const std::vector<float> m = op(abs_of(xbar), abs_of(swbar)).to_vector();
    const std::vector<float> e =
        engine::ops::add(op(off_level(xbar, levels_f32(aq, x), aq.level_step(), 1.0), abs_of(swbar)),
                         op(abs_of(xbar), off_level(wbar, levels_f32(wq, layer.weight()), wq.level_step(),
                                                    std::fabs(static_cast<double>(layer.out_scale().item())))))
            .to_vector();
    const std::vector<float> yf = fl.y.to_vector(), yi = in.y.to_vector();
    const double u = std::ldexp(1.0, -24);
    int64_t differ = 0;
    for (size_t i = 0; i < yf.size(); ++i) {
      const double bound = (k + 8) * u * m[i] + 2 * u * std::fabs(yf[i]) + 1.001 * e[i];
      const double diff = std::fabs(static_cast<double>(yi[i]) - yf[i]);
      differ += diff > 0;
      if (!(diff <= bound)) {
        FAIL_CHECK(where << ": output " << i << " int " << yi[i] << ", float " << yf[i] << ", |diff| " << diff
                         << " > bound " << bound);
        break;
      }
    }
    MESSAGE(where << ": " << differ << " of " << yf.size() << " outputs differ in their last bits");
  }
}

struct ConvCase {
  int64_t n, c, h, w, o, kernel, stride, padding, groups;
};

}  // namespace

TEST_CASE("int8 forward: outputs as the float path's, gradients bit for bit, every kind, 2 to 8 bits") {
  Generator g(51);
  const std::vector<ConvCase> convs{{2, 8, 7, 7, 16, 3, 1, 1, 1},   // 3x3 pad 1
                                    {1, 6, 9, 8, 12, 3, 2, 1, 2},   // batch 1, stride 2, groups 2, odd sizes
                                    {3, 5, 5, 5, 7, 1, 1, 0, 1}};   // 1x1, odd channel counts
  for (const std::string& kind : quant::quantizer_names()) {
    for (int bits : {2, 3, 4, 5, 8}) {
      for (bool signed_input : {false, true}) {
        const std::string what =
            kind + " " + std::to_string(bits) + "-bit" + (signed_input ? " signed input" : "");
        CAPTURE(what);
        LayerQuantSpec spec;
        spec.wbits = spec.abits = bits;
        spec.signed_input = signed_input;
        spec.quantizer = kind;
        for (const ConvCase& k : convs) {
          const Tensor x = relu_input({k.n, k.c, k.h, k.w}, g, signed_input);
          Conv2dOptions co;
          co.in_channels = k.c;
          co.out_channels = k.o;
          co.kernel = k.kernel;
          co.stride = k.stride;
          co.padding = k.padding;
          co.groups = k.groups;
          co.bias = true;
          Conv2d conv(co, g);
          for (int64_t i = 0; i < k.o; ++i) conv.bias().data()[i] = 0.05f * static_cast<float>(i) - 0.3f;
          conv.set_quant(spec);
          qiltest::calibrate_once(conv, x);
          if (!conv.weight_quantizer()->levels_fit()) {  // 8-bit DoReFa (and PACT) weights reach ±255
            CHECK_FALSE(conv.runs_int8_forward(true));
            break;
          }
          engine::ops::Conv2dGeom geom;
          geom.stride_h = geom.stride_w = k.stride;
          geom.pad_h = geom.pad_w = k.padding;
          geom.groups = k.groups;
          check_layer(conv, x, conv.bias(), k.c / k.groups * k.kernel * k.kernel,
                      [&](const Tensor& a, const Tensor& w) { return engine::ops::conv2d(a, w, Tensor(), geom); },
                      what + " conv " + std::to_string(k.c) + "->" + std::to_string(k.o), g);
        }
        const Tensor xf = relu_input({3, 75}, g, signed_input);
        Linear fc(75, 10, true, g);
        fc.set_quant(spec);
        qiltest::calibrate_once(fc, xf);
        if (!fc.weight_quantizer()->levels_fit()) continue;
        check_layer(fc, xf, fc.bias(), 75,
                    [](const Tensor& a, const Tensor& w) { return engine::ops::linear(a, w, Tensor()); },
                    what + " linear", g);
      }
    }
  }
}

TEST_CASE("int8 forward: evaluation keeps the float path, and the network switch says which layers run integers") {
  Generator g(52);
  Sequential net;
  Conv2dOptions co;
  co.in_channels = 4;
  co.out_channels = 4;
  co.padding = 1;
  auto* both = net.add("both", std::make_unique<Conv2d>(co, g));
  auto* wonly = net.add("wonly", std::make_unique<Conv2d>(co, g));
  auto* wide = net.add("wide", std::make_unique<Conv2d>(co, g));
  auto* fp = net.add("fp", std::make_unique<Conv2d>(co, g));
  both->set_quant({4, 4});
  wonly->set_quant({4, 32});
  LayerQuantSpec dorefa8{8, 8};
  dorefa8.quantizer = "dorefa";
  wide->set_quant(dorefa8);
  Tensor x = randn({2, 4, 6, 6}, g);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::fabs(x.data()[i]);
  qiltest::calibrate_once(net, x);
  std::vector<float> y_eval;
  {
    engine::NoGradGuard ng;
    y_eval = both->forward(x).to_vector();
  }
  const Int8Layers on = set_int8_forward(net, true);
  CHECK(on.integer == std::vector<std::string>{"both"});
  CHECK(on.floating == std::vector<std::string>{"wonly", "wide"});  // fp is not quantized: not listed
  CHECK(both->int8_forward());
  CHECK(fp->int8_forward());  // on, and without effect until it is quantized
  CHECK_FALSE(fp->runs_int8_forward(true));
  CHECK(both->runs_int8_forward(true));
  CHECK_FALSE(both->runs_int8_forward(false));
  {
    engine::NoGradGuard ng;
    CHECK(both->forward(x).to_vector() == y_eval);  // evaluation: the float path, bit for bit
  }
  // Training: the integer path, which differs from the float one in the last bits somewhere (else this test could
  // not tell the paths apart).
  const std::vector<float> y_train = both->forward(x.clone().set_requires_grad(true)).to_vector();
  double max_rel = 0;
  for (size_t i = 0; i < y_eval.size(); ++i)
    max_rel = std::max(max_rel, std::fabs(static_cast<double>(y_train[i]) - y_eval[i]) /
                                    std::max(1e-6, std::fabs(static_cast<double>(y_eval[i]))));
  CHECK(max_rel < 1e-5);
  CHECK(y_train != y_eval);
  CHECK(set_int8_forward(net, false).integer.empty());
  CHECK_FALSE(both->int8_forward());
  CHECK(both->forward(x.clone().set_requires_grad(true)).to_vector() == y_eval);
}
