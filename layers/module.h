// Module: the unit networks are built from. A module owns its parameters and buffers, names them
// hierarchically exactly as PyTorch's state_dict does (`layer1.0.conv1.weight`, `bn1.running_mean`), switches
// between train and eval, and computes forward. It has no backward code: autograd records the ops it calls.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace layers {

using engine::Shape;
using engine::Tensor;

// How the optimizer treats a parameter: weights decay; BN affine parameters and biases do not; quantizer
// parameters (interval c, d, gamma and output scales) have their own group and learning rate.
enum class ParamKind { weight, no_decay, quant };

struct NamedTensor {
  std::string name;
  Tensor tensor;
  ParamKind kind = ParamKind::weight;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
  // One line, PyTorch-repr style: "Conv2d(64, 128, kernel=3, stride=2, padding=1, bias=false)".
  virtual std::string describe() const = 0;

  std::vector<NamedTensor> named_parameters() const;  // recursive, with dotted prefixes
  std::vector<NamedTensor> named_buffers() const;
  // Every module below and including this one, with its dotted name ("" for this one).
  std::vector<std::pair<std::string, Module*>> named_modules();
  std::vector<std::pair<std::string, Module*>> children() const;
  Module* child(const std::string& name) const;  // nullptr if absent

  void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }
  int64_t num_parameters() const;
  // A multi-line tree of describe() lines, indented by depth.
  std::string summary() const;

 protected:
  Tensor register_parameter(const std::string& name, Tensor t, ParamKind kind = ParamKind::weight);
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  M* register_module(const std::string& name, std::unique_ptr<M> m) {
    M* raw = m.get();
    add_child(name, std::unique_ptr<Module>(std::move(m)));
    return raw;
  }
  virtual void on_train(bool on) {}
  bool training_ = true;

 private:
  void add_child(const std::string& name, std::unique_ptr<Module> m);
  void collect(const std::string& prefix, bool params, std::vector<NamedTensor>& out) const;
  void summary_into(std::string& out, const std::string& name, int depth) const;
  std::vector<NamedTensor> params_, buffers_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// Children run in order; named "0", "1", ... unless given names.
class Sequential : public Module {
 public:
  Sequential() = default;
  template <class M>
  M* add(std::unique_ptr<M> m) { return register_module(std::to_string(size_++), std::move(m)); }
  template <class M>
  M* add(const std::string& name, std::unique_ptr<M> m) { ++size_; return register_module(name, std::move(m)); }
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Sequential"; }

 private:
  int size_ = 0;
};

}  // namespace layers
