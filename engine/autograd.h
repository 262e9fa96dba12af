// Reverse-mode autograd: the graph node, how an op records itself, the backward walk and the no-grad guard.
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
