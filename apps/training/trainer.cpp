// The training step.
#include "apps/training/trainer.h"

#include <cmath>
#include <set>

#include "engine/autograd.h"
#include "engine/check.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "layers/quantize.h"

namespace apps::training {

using engine::Tensor;

Trainer::Trainer(layers::Module& model, engine::SGD& optimizer, StepOptions options)
    : model_(model), opt_(optimizer), options_(options) {}

Tensor Trainer::loss_of(const Tensor& logits, const Tensor& images, const Tensor& labels) {
  if (!options_.teacher) return engine::ops::softmax_cross_entropy(logits, labels, options_.label_smoothing);
  Tensor soft;
  {
    engine::NoGradGuard ng;
    soft = engine::ops::softmax(options_.teacher->forward(images));
  }
  return engine::ops::soft_cross_entropy(logits, soft);
}

StepResult Trainer::step(const Tensor& images, const Tensor& labels, float lr) {
  const StepResult r = accumulate(images, labels);
  if (std::isfinite(r.loss)) {
    apply(lr);
  } else {
    pending_ = 0;  // stepping on NaN gradients would only spoil the weights
  }
  return r;
}

StepResult Trainer::accumulate(const Tensor& images, const Tensor& labels) {
  if (pending_ == 0) opt_.zero_grad();
  const Tensor logits = model_.forward(images);  // (N, classes)
  Tensor loss = loss_of(logits, images, labels);
  StepResult r;
  r.loss = loss.item();
  r.count = labels.size(0);
  r.correct = engine::ops::topk_correct(logits.detach(), labels, 1);
  if (!std::isfinite(r.loss)) return r;  // the caller names where it happened and stops
  loss.backward();
  ++pending_;
  return r;
}

void Trainer::apply(float lr) {
  QIL_CHECK(pending_ > 0, "Trainer::apply: no micro-batch was accumulated since the last step");
  std::vector<Tensor> grads;
  for (auto& g : opt_.groups())
    for (const Tensor& p : g.params)
      if (p.grad().defined()) grads.push_back(p.grad());
  if (pending_ > 1) {  // the sum of the micro-batches' mean gradients -> their mean
    const float inv = 1.f / static_cast<float>(pending_);
    for (Tensor& g : grads) {
      float* p = g.data<float>();
      const int64_t n = g.numel();
#pragma omp parallel for simd if (n > 16384)
      for (int64_t k = 0; k < n; ++k) p[k] *= inv;
    }
  }
  if (options_.allreduce) engine::dist::allreduce_mean(grads);
  if (options_.balance != layers::GradBalance::none) layers::scale_quantizer_gradients(model_, options_.balance);
  opt_.step(lr);
  layers::project_quantizers(model_);
  pending_ = 0;
}

std::vector<engine::ParamGroup> param_groups(layers::Module& model, double weight_decay, double quant_lr_scale,
                                             double act_quant_lr_scale) {
  engine::ParamGroup w("weights", {}, 1.f, static_cast<float>(weight_decay));
  engine::ParamGroup nd("no_decay", {}, 1.f, 0.f);
  engine::ParamGroup q("quant", {}, static_cast<float>(quant_lr_scale), 0.f);
  // Activation intervals get a group of their own only when their LR differs (old checkpoints name one group).
  engine::ParamGroup qa("quant_act", {}, static_cast<float>(quant_lr_scale * act_quant_lr_scale), 0.f);
  const bool own_act_group = act_quant_lr_scale != 1.0;
  // The activation quantizers' own parameters, by identity (not by name).
  std::set<const void*> act_params;
  for (auto& [name, l] : layers::quantizable_layers(model))
    if (const auto* a = l->act_quantizer())
      for (const auto& [n, t] : a->named_parameters()) act_params.insert(t.id());
  auto is_act_interval = [&](const engine::Tensor& t) { return act_params.count(t.id()) > 0; };
  for (auto& p : model.named_parameters()) {
    if (!p.tensor.requires_grad()) continue;
    engine::ParamGroup& g = p.kind == layers::ParamKind::weight  ? w
                            : p.kind != layers::ParamKind::quant ? nd
                            : own_act_group && is_act_interval(p.tensor) ? qa
                                                                       : q;
    g.params.push_back(p.tensor);
    g.param_names.push_back(p.name);
  }
  std::vector<engine::ParamGroup> out;
  for (auto* g : {&w, &nd, &q, &qa})
    if (!g->params.empty()) out.push_back(*g);
  return out;
}

}  // namespace apps::training
