// Reverse-mode autograd: the graph node, how an op records itself, the backward walk (with optional hooks that
// observe it) and the no-grad guard.
// Contract (every op in engine/ and quant/ keeps it): backward closures ACCUMULATE into every gradient buffer they are handed, inputs and
// parameters alike, except into a buffer autograd marks fresh for an op recorded with record_fresh, which
// they overwrite; closures capture data (detached tensors), never the output's own handle.
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
// The same for an op that can overwrite: fresh[i] is true when gx[i] was allocated for this call and holds no
// values yet (uninitialized memory), and the op must then write every element of it (=) instead of adding
// (+=). That saves zero-filling the buffer and reading it back: one write and one read of every activation
// gradient. A buffer another op already wrote is never fresh, so accumulation still works.
using FreshBackwardFn = std::function<void(const Tensor& gy, std::vector<Tensor>& gx, const std::vector<bool>& fresh)>;

// What the walk needs of one input of a node: where its gradient goes and its shape. It holds no input's data:
// an intermediate tensor's storage lives only as long as some backward closure captured it (or its owner keeps
// it), so what no backward reads (a residual add's operands, an input that needs no gradient) is freed after the
// forward, as PyTorch's saved-tensor rule does.
struct Edge {
  bool needs_grad = false;
  std::shared_ptr<Node> fn;  // the op that made a non-leaf input (null for a leaf)
  Tensor leaf;               // a leaf that needs a gradient (e.g. a parameter): its grad() receives it
  Shape shape;               // the input's shape (its gradient buffer's)
  const void* id() const { return leaf.id(); }
};

struct Node {
  const char* name = "";
  std::vector<Edge> inputs;
  BackwardFn backward;             // one of the two is set
  FreshBackwardFn backward_fresh;
};

// Attaches a node to y when gradients are enabled and some input requires one; returns y.
Tensor record(const char* name, Tensor y, std::vector<Tensor> inputs, BackwardFn fn);
// The same for a backward that overwrites fresh gradient buffers (FreshBackwardFn).
Tensor record_fresh(const char* name, Tensor y, std::vector<Tensor> inputs, FreshBackwardFn fn);

bool grad_enabled();

// Tests: fill every fresh gradient buffer with NaN before the op runs (process-wide, off by default), so an op
// that leaves an element of a fresh buffer unwritten shows it. Costs a pass over each fresh buffer.
void set_poison_fresh_grads(bool on);

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
