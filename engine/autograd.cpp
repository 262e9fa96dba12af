// The backward walk: iterative topological order over nodes, gradients accumulated, nodes freed as they run.
#include "engine/autograd.h"

#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace engine {

namespace {
thread_local bool t_grad_enabled = true;

void add_into(Tensor& dst, const Tensor& src) {
  float* d = dst.data();
  const float* s = src.data();
  const int64_t n = dst.numel();
#pragma omp parallel for simd if (n > 32768)
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

Tensor record(const char* name, Tensor y, std::vector<Tensor> inputs, BackwardFn fn) {
  if (!t_grad_enabled) return y;
  bool any = false;
  for (const Tensor& t : inputs) any = any || t.requires_grad();
  if (!any) return y;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(fn);
  y.set_grad_fn(std::move(node));
  return y;
}

void Tensor::backward() const {
  QIL_CHECK(defined() && numel() == 1, "backward: needs a one-element (scalar) tensor without a seed, got ",
            *this);
  backward(Tensor::full(shape(), 1.f));
}

void Tensor::backward(const Tensor& seed) const {
  QIL_CHECK(defined(), "backward: undefined tensor");
  QIL_CHECK(requires_grad(), "backward: ", *this, " does not require grad (no parameter reaches it)");
  QIL_CHECK(seed.shape() == shape(), "backward: seed shape ", seed.shape(), " does not match tensor shape ",
            shape());
  if (!grad_fn()) {  // a leaf: the seed is its gradient
    Tensor& g = const_cast<Tensor*>(this)->grad();
    if (!g.defined()) g = Tensor::zeros(shape());
    add_into(g, seed);
    return;
  }
  // Post-order DFS without recursion; reversed, it is a topological order from the root.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack;
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;
  stack.emplace_back(grad_fn().get(), 0);
  seen.insert(grad_fn().get());
  keep[grad_fn().get()] = grad_fn();
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const Tensor& in = node->inputs[next++];
      Node* child = in.grad_fn().get();
      if (child && seen.insert(child).second) {
        keep[child] = in.grad_fn();
        stack.emplace_back(child, 0);
      }
    } else {
      order.push_back(keep[node]);
      stack.pop_back();
    }
  }
  keep.clear();

  std::unordered_map<Node*, Tensor> grads;  // gradient of each node's output
  grads[grad_fn().get()] = seed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    std::shared_ptr<Node> node = std::move(*it);
    auto g = grads.find(node.get());
    if (g != grads.end() && node->backward) {
      Tensor gy = std::move(g->second);
      grads.erase(g);
      std::vector<Tensor> gx(node->inputs.size());
      for (size_t i = 0; i < node->inputs.size(); ++i) {
        Tensor& in = node->inputs[i];
        if (!in.requires_grad()) continue;
        if (in.grad_fn()) {
          Tensor& acc = grads[in.grad_fn().get()];
          if (!acc.defined()) acc = Tensor::zeros(in.shape());
          gx[i] = acc;
        } else {
          Tensor& acc = in.grad();
          if (!acc.defined()) acc = Tensor::zeros(in.shape());
          gx[i] = acc;
        }
      }
      NoGradGuard no_grad;  // backward closures never build graph
      node->backward(gy, gx);
    }
    node->inputs.clear();  // free the graph as we go
    node->backward = nullptr;
  }
}

}  // namespace engine
