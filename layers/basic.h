// The standard layers: Conv2d, Linear, BatchNorm2d, ReLU, pools, Dropout, Flatten. Each owns its parameters
// and calls engine ops in forward; none holds oneDNN types or backward code.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"
#include "layers/module.h"
#include "layers/quantizable.h"

namespace layers {

struct Conv2dOptions {
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel = 3, stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = false;
};

class Conv2d : public QuantizableModule {
 public:
  // Weights: Kaiming-normal, fan-out, ReLU gain (torchvision's ResNet init); bias zero.
  Conv2d(const Conv2dOptions& o, engine::Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, C_in, H, W) -> (N, C_out, H', W')
  std::string describe() const override;
  const Conv2dOptions& options() const { return opt_; }
  Tensor weight() const override { return w_; }
  Tensor bias() const { return b_; }
  // Multiply-accumulates of the last forward, per image (for FLOP counts).
  int64_t last_macs() const { return last_macs_; }
  // PyTorch's default init instead (kaiming-uniform a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))), as
  // torchvision's AlexNet keeps.
  void reset_pytorch_default(engine::Generator& gen);

 private:
  Conv2dOptions opt_;
  engine::ops::Conv2dGeom geom_;
  Tensor w_, b_;  // (O, I/groups, KH, KW), (O)
  int64_t last_macs_ = 0;
};

class Linear : public QuantizableModule {
 public:
  // PyTorch's default: weight and bias U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in, int64_t out, bool bias, engine::Generator& gen);
  Tensor forward(const Tensor& x) override;  // (N, in) -> (N, out)
  std::string describe() const override;
  Tensor weight() const override { return w_; }
  Tensor bias() const { return b_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t last_macs() const { return in_ * out_; }

 private:
  int64_t in_, out_;
  Tensor w_, b_;  // (out, in), (out)
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, float momentum = 0.1f, float eps = 1e-5f);
  Tensor forward(const Tensor& x) override;
  // relu(forward(x)) in one fused op (engine::ops::batch_norm2d_relu): what a BN followed by a ReLU calls.
  Tensor forward_relu(const Tensor& x);
  std::string describe() const override;
  // Frozen: always normalizes with the running statistics and never updates them, whatever train() says
  // (quantizer-only training keeps BN on its full-precision statistics).
  void set_frozen(bool f) { frozen_ = f; }
  bool frozen() const { return frozen_; }
  float eps() const { return eps_; }

 private:
  int64_t c_;
  float momentum_, eps_;
  bool frozen_ = false;
  Tensor gamma_, beta_, mean_, var_;  // (C) each
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return engine::ops::relu(x); }
  std::string describe() const override { return "ReLU"; }
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int64_t kernel, int64_t stride, int64_t padding = 0);
  Tensor forward(const Tensor& x) override { return engine::ops::max_pool2d(x, geom_); }
  std::string describe() const override;
  const engine::ops::Pool2dGeom& geom() const { return geom_; }

 private:
  engine::ops::Pool2dGeom geom_;
};

class AvgPool2d : public Module {
 public:
  AvgPool2d(int64_t kernel, int64_t stride, int64_t padding = 0);
  Tensor forward(const Tensor& x) override { return engine::ops::avg_pool2d(x, geom_); }
  std::string describe() const override;

 private:
  engine::ops::Pool2dGeom geom_;
};

class AdaptiveAvgPool2d : public Module {
 public:
  AdaptiveAvgPool2d(int64_t oh, int64_t ow) : oh_(oh), ow_(ow) {}
  Tensor forward(const Tensor& x) override { return engine::ops::adaptive_avg_pool2d(x, oh_, ow_); }
  std::string describe() const override;
  int64_t out_h() const { return oh_; }
  int64_t out_w() const { return ow_; }

 private:
  int64_t oh_, ow_;
};

// (N, C, H, W) -> (N, C): torchvision's avgpool(1, 1) + flatten in one.
class GlobalAvgPool : public Module {
 public:
  Tensor forward(const Tensor& x) override { return engine::ops::global_avg_pool(x); }
  std::string describe() const override { return "GlobalAvgPool"; }
};

// A layer that draws random numbers in training. Training sets its generator before every micro-batch from
// (the layer's own seed, a, b) — `qil train` passes (epoch, the micro-batch's number among every rank's
// micro-batches of the epoch, data::Batch::micro) — so each rank draws its own numbers, the draws do not depend
// on how many ranks share a step, and a resumed run draws what an uninterrupted one would, with no generator
// state to save. Outside training (bench, tests) the generator simply runs on from its seed.
class Stochastic {
 public:
  virtual ~Stochastic() = default;
  virtual void reseed(uint64_t a, uint64_t b) = 0;
};

// Every Stochastic layer of `model`, in module order.
std::vector<Stochastic*> stochastic_layers(Module& model);

class Dropout : public Module, public Stochastic {
 public:
  Dropout(float p, uint64_t seed) : p_(p), seed_(seed), gen_(seed) {}
  Tensor forward(const Tensor& x) override { return engine::ops::dropout(x, p_, training_, gen_); }
  std::string describe() const override;
  engine::Generator& generator() { return gen_; }
  void reseed(uint64_t a, uint64_t b) override { gen_ = engine::Generator::derive(seed_, a, b); }

 private:
  float p_;
  uint64_t seed_;
  engine::Generator gen_;
};

class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override { return engine::ops::flatten(x); }
  std::string describe() const override { return "Flatten"; }
};

}  // namespace layers
