// Reverse-mode autograd: the graph node, how an op records itself, the backward walk (with optional hooks that
// observe it) and the no-grad guard.
// Contract (DESIGN §2): backward closures ACCUMULATE into every gradient buffer they are handed, inputs and
// parameters alike; closures capture data (detached tensors), never the output's own handle.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// gy: gradient of the op's output. gx[i]: gradient buffer of input i, to be accumulated into (+=);
// undefined when input i does not need a gradient.
using BackwardFn = std::function<void(const Tensor& gy, std::vector<Tensor>& gx)>;

struct Node {
  const char* name = "";
  std::vector<Tensor> inputs;
  BackwardFn backward;
};

// Attaches a node to y when gradients are enabled and some input requires one; returns y.
Tensor record(const char* name, Tensor y, std::vector<Tensor> inputs, BackwardFn fn);

bool grad_enabled();

// Observers of one backward walk, both optional, called on the thread that runs it, between nodes (never inside
// an op). What they are for: starting the all-reduce of gradients that are already final while the rest of
// backward runs, and letting that communication progress (dist::GradAverager). Without hooks the walk costs
// what Tensor::backward always did.
struct BackwardHooks {
  // A leaf (a tensor without grad_fn that requires a gradient, e.g. a parameter) has received the last
  // contribution of this walk: every node that has it as an input has run, so its grad() is final until the
  // next backward (undefined if no node wrote it). Called once per leaf the walk reaches; leaves it does not
  // reach are not reported. A leaf root is reported after its seed is added.
  std::function<void(const Tensor& leaf)> on_leaf_ready;
  // After each node of the walk (and after the leaves it finished were reported).
  std::function<void()> after_node;
};

// Tensor::backward with hooks: `root` a one-element tensor (seed 1), or any tensor with an explicit seed.
void backward(const Tensor& root, const BackwardHooks& hooks);
void backward(const Tensor& root, const Tensor& seed, const BackwardHooks& hooks);

// Switches graph recording off on this thread for its lifetime (evaluation, optimizer steps).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;
 private:
  bool prev_;
};

}  // namespace engine
