// Standard layers: construction (torchvision's initializers), forward, one-line descriptions.
#include "layers/basic.h"

#include <cmath>

#include "engine/check.h"

namespace layers {

using engine::str_cat;

namespace {
void fill_normal(Tensor& t, engine::Generator& gen, float stddev) {
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = gen.normal() * stddev;
}
void fill_uniform(Tensor& t, engine::Generator& gen, float bound) {
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = gen.uniform(-bound, bound);
}
}  // namespace

Conv2d::Conv2d(const Conv2dOptions& o, engine::Generator& gen) : opt_(o) {
  QIL_CHECK(o.in_channels > 0 && o.out_channels > 0, "Conv2d: channels must be positive, got ", o.in_channels,
            " -> ", o.out_channels);
  QIL_CHECK(o.groups > 0 && o.in_channels % o.groups == 0 && o.out_channels % o.groups == 0, "Conv2d: groups ",
            o.groups, " must divide in_channels ", o.in_channels, " and out_channels ", o.out_channels);
  QIL_CHECK(o.kernel > 0 && o.stride > 0 && o.padding >= 0 && o.dilation > 0,
            "Conv2d: bad geometry kernel=", o.kernel, " stride=", o.stride, " padding=", o.padding,
            " dilation=", o.dilation);
  geom_.stride_h = geom_.stride_w = o.stride;
  geom_.pad_h = geom_.pad_w = o.padding;
  geom_.dil_h = geom_.dil_w = o.dilation;
  geom_.groups = o.groups;
  w_ = Tensor::empty({o.out_channels, o.in_channels / o.groups, o.kernel, o.kernel});
  // kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (O * KH * KW)).
  fill_normal(w_, gen, std::sqrt(2.f / static_cast<float>(o.out_channels * o.kernel * o.kernel)));
  register_parameter("weight", w_);
  if (o.bias) b_ = register_parameter("bias", Tensor::zeros({o.out_channels}), ParamKind::no_decay);
}

void Conv2d::reset_pytorch_default(engine::Generator& gen) {
  const float fan_in = static_cast<float>(w_.numel() / w_.size(0));
  const float bound = 1.f / std::sqrt(fan_in);
  fill_uniform(w_, gen, bound);
  if (b_.defined()) fill_uniform(b_, gen, bound);
}

Tensor Conv2d::forward(const Tensor& x) {  // x: (N, C_in, H, W)
  QIL_CHECK(x.dim() == 4 && x.size(1) == opt_.in_channels, "Conv2d: expected (N, ", opt_.in_channels,
            ", H, W) input, got ", x.shape());
  Tensor y = forward_quantized(
      x, b_,
      [this](const Tensor& xin, const Tensor& w, const Tensor& b) { return engine::ops::conv2d(xin, w, b, geom_); },
      [this](const Tensor& xin, const Tensor& w, const Tensor& b, const Tensor& xk, const Tensor& wk, float scale) {
        return engine::ops::conv2d_int_forward(xin, w, b, xk, wk, scale, geom_);
      });
  last_macs_ = y.size(1) * y.size(2) * y.size(3) * (w_.numel() / w_.size(0));
  return y;
}

std::string Conv2d::describe() const {
  return str_cat("Conv2d(", opt_.in_channels, ", ", opt_.out_channels, ", kernel=", opt_.kernel,
                 ", stride=", opt_.stride, ", padding=", opt_.padding,
                 opt_.dilation != 1 ? str_cat(", dilation=", opt_.dilation) : std::string(),
                 opt_.groups != 1 ? str_cat(", groups=", opt_.groups) : std::string(),
                 ", bias=", opt_.bias ? "true" : "false", ")");
}

Linear::Linear(int64_t in, int64_t out, bool bias, engine::Generator& gen) : in_(in), out_(out) {
  QIL_CHECK(in > 0 && out > 0, "Linear: features must be positive, got ", in, " -> ", out);
  const float bound = 1.f / std::sqrt(static_cast<float>(in));
  w_ = Tensor::empty({out, in});
  fill_uniform(w_, gen, bound);
  register_parameter("weight", w_);
  if (bias) {
    b_ = Tensor::empty({out});
    fill_uniform(b_, gen, bound);
    register_parameter("bias", b_, ParamKind::no_decay);
  }
}

Tensor Linear::forward(const Tensor& x) {
  QIL_CHECK(x.dim() == 2 && x.size(1) == in_, "Linear: expected (N, ", in_, ") input, got ", x.shape());
  return forward_quantized(
      x, b_, [](const Tensor& xin, const Tensor& w, const Tensor& b) { return engine::ops::linear(xin, w, b); },
      [](const Tensor& xin, const Tensor& w, const Tensor& b, const Tensor& xk, const Tensor& wk, float scale) {
        return engine::ops::linear_int_forward(xin, w, b, xk, wk, scale);
      });
}

std::string Linear::describe() const {
  return str_cat("Linear(", in_, ", ", out_, ", bias=", b_.defined() ? "true" : "false", ")");
}

BatchNorm2d::BatchNorm2d(int64_t channels, float momentum, float eps)
    : c_(channels), momentum_(momentum), eps_(eps) {
  QIL_CHECK(channels > 0, "BatchNorm2d: channels must be positive, got ", channels);
  gamma_ = register_parameter("weight", Tensor::full({channels}, 1.f), ParamKind::no_decay);
  beta_ = register_parameter("bias", Tensor::zeros({channels}), ParamKind::no_decay);
  mean_ = register_buffer("running_mean", Tensor::zeros({channels}));
  var_ = register_buffer("running_var", Tensor::full({channels}, 1.f));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  QIL_CHECK(x.dim() == 4 && x.size(1) == c_, "BatchNorm2d: expected (N, ", c_, ", H, W) input, got ",
            x.shape());
  return engine::ops::batch_norm2d(x, gamma_, beta_, mean_, var_, training_ && !frozen_, momentum_, eps_);
}

Tensor BatchNorm2d::forward_relu(const Tensor& x) {
  QIL_CHECK(x.dim() == 4 && x.size(1) == c_, "BatchNorm2d: expected (N, ", c_, ", H, W) input, got ",
            x.shape());
  return engine::ops::batch_norm2d_relu(x, gamma_, beta_, mean_, var_, training_ && !frozen_, momentum_, eps_);
}

std::string BatchNorm2d::describe() const {
  return str_cat("BatchNorm2d(", c_, ", eps=", eps_, ", momentum=", momentum_, frozen_ ? ", frozen" : "", ")");
}

namespace {
engine::ops::Pool2dGeom square_pool(int64_t kernel, int64_t stride, int64_t padding) {
  engine::ops::Pool2dGeom g;
  g.kh = g.kw = kernel;
  g.stride_h = g.stride_w = stride;
  g.pad_h = g.pad_w = padding;
  return g;
}
std::string pool_describe(const char* name, const engine::ops::Pool2dGeom& g) {
  return str_cat(name, "(kernel=", g.kh, ", stride=", g.stride_h, ", padding=", g.pad_h, ")");
}
}  // namespace

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t padding) : geom_(square_pool(kernel, stride, padding)) {}
std::string MaxPool2d::describe() const { return pool_describe("MaxPool2d", geom_); }

AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t padding) : geom_(square_pool(kernel, stride, padding)) {}
std::string AvgPool2d::describe() const { return pool_describe("AvgPool2d", geom_); }

std::string AdaptiveAvgPool2d::describe() const { return str_cat("AdaptiveAvgPool2d(", oh_, ", ", ow_, ")"); }
std::string Dropout::describe() const { return str_cat("Dropout(p=", p_, ")"); }

std::vector<Stochastic*> stochastic_layers(Module& model) {
  std::vector<Stochastic*> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* s = dynamic_cast<Stochastic*>(m)) out.push_back(s);
  return out;
}

}  // namespace layers
