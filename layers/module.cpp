// Module bookkeeping: registration, hierarchical names, train/eval, summaries.
#include "layers/module.h"

#include "engine/check.h"
#include "layers/basic.h"

namespace layers {

Tensor Module::register_parameter(const std::string& name, Tensor t, ParamKind kind) {
  QIL_CHECK(t.defined(), "register_parameter: undefined tensor for '", name, "'");
  for (const auto& p : params_) QIL_CHECK(p.name != name, "register_parameter: '", name, "' registered twice");
  t.set_requires_grad(true);
  params_.push_back({name, t, kind});
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  QIL_CHECK(t.defined(), "register_buffer: undefined tensor for '", name, "'");
  buffers_.push_back({name, t, ParamKind::no_decay});
  return t;
}

void Module::add_child(const std::string& name, std::unique_ptr<Module> m) {
  QIL_CHECK(m != nullptr, "register_module: null module '", name, "'");
  for (const auto& c : children_) QIL_CHECK(c.first != name, "register_module: '", name, "' registered twice");
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, bool params, std::vector<NamedTensor>& out) const {
  for (const auto& p : params ? params_ : buffers_) out.push_back({prefix + p.name, p.tensor, p.kind});
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, out);
}

std::vector<NamedTensor> Module::named_parameters() const {
  std::vector<NamedTensor> out;
  collect("", true, out);
  return out;
}

std::vector<NamedTensor> Module::named_buffers() const {
  std::vector<NamedTensor> out;
  collect("", false, out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [name, child] : children_)
    for (auto& [sub, m] : child->named_modules()) out.emplace_back(sub.empty() ? name : name + "." + sub, m);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::children() const {
  std::vector<std::pair<std::string, Module*>> out;
  for (const auto& [name, child] : children_) out.emplace_back(name, child.get());
  return out;
}

Module* Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_)
    if (n == name) return c.get();
  return nullptr;
}

void Module::train(bool on) {
  training_ = on;
  on_train(on);
  for (auto& c : children_) c.second->train(on);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : named_parameters()) n += p.tensor.numel();
  return n;
}

void Module::summary_into(std::string& out, const std::string& name, int depth) const {
  out += std::string(2 * depth, ' ') + (name.empty() ? "" : "(" + name + "): ") + describe() + "\n";
  for (const auto& [n, c] : children_) c->summary_into(out, n, depth + 1);
}

std::string Module::summary() const {
  std::string out;
  summary_into(out, "", 0);
  return out;
}

// A BatchNorm2d directly followed by a ReLU runs as one fused op (the same values and gradients, one pass
// fewer each way); the modules stay as they are, so names, checkpoints and exports do not change.
Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  const auto mods = children();
  for (size_t i = 0; i < mods.size(); ++i) {
    auto* bn = dynamic_cast<BatchNorm2d*>(mods[i].second);
    if (bn && i + 1 < mods.size() && dynamic_cast<ReLU*>(mods[i + 1].second)) {
      h = bn->forward_relu(h);
      ++i;
      continue;
    }
    h = mods[i].second->forward(h);
  }
  return h;
}

}  // namespace layers
