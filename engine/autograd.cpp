// The backward walk: iterative topological order over nodes, gradients accumulated, nodes freed as they run;
// with hooks, each leaf reported once its last contributing node has run.
#include "engine/autograd.h"

#include <atomic>
#include <cmath>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace engine {

namespace {
thread_local bool t_grad_enabled = true;
std::atomic<bool> g_poison_fresh{false};

void add_into(Tensor& dst, const Tensor& src) {
  float* d = dst.data();
  const float* s = src.data();
  const int64_t n = dst.numel();
#pragma omp parallel for simd if (n > 32768)
  for (int64_t i = 0; i < n; ++i) d[i] += s[i];
}
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
void set_poison_fresh_grads(bool on) { g_poison_fresh.store(on, std::memory_order_relaxed); }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

namespace {
// A node for y when gradients are on and some input needs one, else null.
std::shared_ptr<Node> make_node(const char* name, std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return nullptr;
  bool any = false;
  for (const Tensor& t : inputs) any = any || t.requires_grad();
  if (!any) return nullptr;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    Edge& e = node->inputs[i];
    if (!t.requires_grad()) continue;  // nothing flows there: neither its data nor its history is kept
    e.needs_grad = true;
    e.shape = t.shape();
    e.fn = t.grad_fn();
    if (!e.fn) e.leaf = t;
  }
  return node;
}
}  // namespace

Tensor record(const char* name, Tensor y, std::vector<Tensor> inputs, BackwardFn fn) {
  if (auto node = make_node(name, inputs)) {
    node->backward = std::move(fn);
    y.set_grad_fn(std::move(node));
  }
  return y;
}

Tensor record_fresh(const char* name, Tensor y, std::vector<Tensor> inputs, FreshBackwardFn fn) {
  if (auto node = make_node(name, inputs)) {
    node->backward_fresh = std::move(fn);
    y.set_grad_fn(std::move(node));
  }
  return y;
}

namespace {

// Post-order DFS without recursion from `root`; reversed, it is a topological order from the root.
std::vector<std::shared_ptr<Node>> topological_order(const std::shared_ptr<Node>& root) {
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack;
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;
  stack.emplace_back(root.get(), 0);
  seen.insert(root.get());
  keep[root.get()] = root;
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const Edge& in = node->inputs[next++];
      Node* child = in.fn.get();
      if (child && seen.insert(child).second) {
        keep[child] = in.fn;
        stack.emplace_back(child, 0);
      }
    } else {
      order.push_back(keep[node]);
      stack.pop_back();
    }
  }
  return order;
}

bool is_leaf(const Edge& e) { return e.needs_grad && !e.fn; }

// How many inputs of the walk's nodes are each leaf (a node that takes a leaf twice counts twice): the leaf is
// final once that many have been processed.
std::unordered_map<const void*, int64_t> leaf_uses(const std::vector<std::shared_ptr<Node>>& order) {
  std::unordered_map<const void*, int64_t> uses;
  for (const auto& node : order)
    for (const Edge& in : node->inputs)
      if (is_leaf(in)) ++uses[in.id()];
  return uses;
}

// The gradient buffers node's backward accumulates into: its inputs' nodes' output gradients, or the leaves'
// grad(); undefined for inputs that need no gradient. A buffer allocated here is zero-filled, or, when
// `fresh` is given (a record_fresh node), left uninitialized and marked fresh: the op overwrites it. A buffer
// handed twice in one call (an op that takes the same tensor twice) is zero-filled and never fresh.
std::vector<Tensor> input_grads(Node& node, std::unordered_map<Node*, Tensor>& grads, std::vector<bool>* fresh) {
  const size_t n = node.inputs.size();
  std::vector<Tensor> gx(n);
  if (fresh) fresh->assign(n, false);
  for (size_t i = 0; i < n; ++i) {
    Edge& in = node.inputs[i];
    if (!in.needs_grad) continue;
    Tensor& acc = in.fn ? grads[in.fn.get()] : in.leaf.grad();
    if (!acc.defined()) {
      acc = fresh ? Tensor::empty(in.shape) : Tensor::zeros(in.shape);
      if (fresh) (*fresh)[i] = true;
      if (fresh && g_poison_fresh.load(std::memory_order_relaxed)) acc.fill_(std::nanf(""));
    }
    gx[i] = acc;
  }
  if (fresh)
    for (size_t i = 0; i < n; ++i)
      for (size_t j = i + 1; j < n; ++j)
        if ((*fresh)[i] && gx[j].defined() && gx[j].same(gx[i])) {
          gx[i].fill_(0.f);
          (*fresh)[i] = false;
        }
  return gx;
}

}  // namespace

void Tensor::backward() const {
  QIL_CHECK(defined() && numel() == 1, "backward: needs a one-element (scalar) tensor without a seed, got ",
            *this);
  engine::backward(*this, Tensor::full(shape(), 1.f), BackwardHooks{});
}

void Tensor::backward(const Tensor& seed) const { engine::backward(*this, seed, BackwardHooks{}); }

void backward(const Tensor& root, const BackwardHooks& hooks) {
  QIL_CHECK(root.defined() && root.numel() == 1,
            "backward: needs a one-element (scalar) tensor without a seed, got ", root);
  backward(root, Tensor::full(root.shape(), 1.f), hooks);
}

void backward(const Tensor& root, const Tensor& seed, const BackwardHooks& hooks) {
  QIL_CHECK(root.defined(), "backward: undefined tensor");
  QIL_CHECK(root.requires_grad(), "backward: ", root, " does not require grad (no parameter reaches it)");
  QIL_CHECK(seed.shape() == root.shape(), "backward: seed shape ", seed.shape(), " does not match tensor shape ",
            root.shape());
  if (!root.grad_fn()) {  // a leaf: the seed is its gradient
    Tensor& g = const_cast<Tensor&>(root).grad();
    if (!g.defined()) g = Tensor::zeros(root.shape());
    add_into(g, seed);
    if (hooks.on_leaf_ready) hooks.on_leaf_ready(root);
    return;
  }
  std::vector<std::shared_ptr<Node>> order = topological_order(root.grad_fn());
  std::unordered_map<const void*, int64_t> uses;  // counted only for a hook that wants them
  if (hooks.on_leaf_ready) uses = leaf_uses(order);

  std::unordered_map<Node*, Tensor> grads;  // gradient of each node's output
  grads[root.grad_fn().get()] = seed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    std::shared_ptr<Node> node = std::move(*it);
    auto g = grads.find(node.get());
    if (g != grads.end() && (node->backward || node->backward_fresh)) {
      Tensor gy = std::move(g->second);
      grads.erase(g);
      NoGradGuard no_grad;  // backward closures never build graph
      if (node->backward_fresh) {
        std::vector<bool> fresh;
        std::vector<Tensor> gx = input_grads(*node, grads, &fresh);
        node->backward_fresh(gy, gx, fresh);
      } else {
        std::vector<Tensor> gx = input_grads(*node, grads, nullptr);
        node->backward(gy, gx);
      }
    }
    if (hooks.on_leaf_ready)
      for (const Edge& in : node->inputs)
        if (is_leaf(in) && --uses[in.id()] == 0) hooks.on_leaf_ready(in.leaf);
    node->inputs.clear();  // free the graph as we go
    node->backward = nullptr;
    node->backward_fresh = nullptr;
    if (hooks.after_node) hooks.after_node();
  }
}

}  // namespace engine
