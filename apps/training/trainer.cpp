// The training step.
#include "apps/training/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>

#include "engine/autograd.h"
#include "engine/check.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "layers/quantize.h"

namespace apps::training {

using engine::Tensor;

int64_t bucket_bytes(double mib) { return std::max<int64_t>(1, std::llround(mib * 1048576.0)); }

Trainer::Trainer(layers::Module& model, engine::SGD& optimizer, StepOptions options)
    : model_(model), opt_(optimizer), options_(options) {}

Tensor distillation_loss(const Tensor& logits, const Tensor& teacher_logits, const Tensor& labels, float t, float w,
                         float label_smoothing) {
  namespace ops = engine::ops;
  QIL_CHECK(t > 0 && w >= 0 && w <= 1, "distillation: temperature must be positive and weight in [0, 1], got T = ",
            t, ", weight = ", w);
  Tensor soft;
  {
    engine::NoGradGuard ng;
    soft = ops::softmax(ops::mul_scalar(teacher_logits, Tensor::scalar(1.f / t)));
  }
  const Tensor hard = ops::softmax_cross_entropy(logits, labels, label_smoothing);
  const Tensor kd = ops::soft_cross_entropy(ops::mul_scalar(logits, Tensor::scalar(1.f / t)), soft);
  return ops::add(ops::mul_scalar(hard, Tensor::scalar(1.f - w)), ops::mul_scalar(kd, Tensor::scalar(w * t * t)));
}

Tensor Trainer::loss_of(const Tensor& logits, const Tensor& images, const Tensor& labels) {
  if (!options_.teacher) return engine::ops::softmax_cross_entropy(logits, labels, options_.label_smoothing);
  Tensor teacher_logits;
  {
    engine::NoGradGuard ng;
    teacher_logits = options_.teacher->forward(images);
  }
  if (options_.distill_t > 0)
    return distillation_loss(logits, teacher_logits, labels, options_.distill_t, options_.distill_weight,
                             options_.label_smoothing);
  Tensor soft;
  {
    engine::NoGradGuard ng;
    soft = engine::ops::softmax(teacher_logits);
  }
  return engine::ops::soft_cross_entropy(logits, soft);
}

namespace {

// True when every element is finite: x * 0 is 0 for a finite x and NaN for an infinity or a NaN, and a sum
// keeps a NaN (a loop the compiler can vectorize, without a branch per element).
bool all_finite(const Tensor& t) {
  const float* p = t.data();
  const int64_t n = t.numel();
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += p[i] * 0.f;
  return acc == 0.f;
}

// The forward pass of a step that is then skipped has already moved BatchNorm's running statistics (towards
// NaN, when the batch is what was not finite): they are put back.
std::vector<Tensor> copy_buffers(layers::Module& model) {
  std::vector<Tensor> out;
  for (const auto& b : model.named_buffers()) out.push_back(b.tensor.clone());
  return out;
}
void restore_buffers(layers::Module& model, const std::vector<Tensor>& saved) {
  size_t i = 0;
  for (auto& b : model.named_buffers()) b.tensor.copy_from(saved[i++]);
}

// The factor that turns the sum of `micro` micro-batches' mean gradients into their mean.
float micro_scale(int64_t micro) { return micro > 1 ? 1.f / static_cast<float>(micro) : 1.f; }

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

std::string Trainer::first_nonfinite_gradient() const {
  for (const auto& g : opt_.groups())
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& grad = g.params[i].grad();
      if (grad.defined() && grad.dtype() == engine::DType::f32 && !all_finite(grad))
        return i < g.param_names.size() ? g.param_names[i] : opt_.state_key(&g - opt_.groups().data(), i);
    }
  return "";
}

StepResult Trainer::step(const Tensor& images, const Tensor& labels, float lr) {
  StepResult r = accumulate(images, labels, true);
  r.nonfinite = apply(lr);
  return r;
}

StepResult Trainer::accumulate(const Tensor& images, const Tensor& labels, bool last) {
  QIL_CHECK(!(averager_ && averager_->in_round()), "Trainer::accumulate: the step's last micro-batch was ",
            "accumulated already and its gradients are being all-reduced; call apply() first");
  if (pending_ == 0 && nonfinite_.empty()) {  // the first micro-batch of a step
    opt_.zero_grad();
    buffers_ = copy_buffers(model_);
  }
  const Clock::time_point t0 = Clock::now();
  const Tensor logits = model_.forward(images);  // (N, classes)
  Tensor loss = loss_of(logits, images, labels);
  StepResult r;
  r.loss = loss.item();
  r.count = labels.size(0);
  r.correct = engine::ops::topk_correct(logits.detach(), labels, 1);
  // Stepping on NaN gradients would only spoil the weights. Across ranks the backward and the all-reduce run
  // anyway: the NaN then reaches every rank's gradients, and all ranks stop or skip together.
  if (!std::isfinite(r.loss)) {
    r.nonfinite = "loss";
    if (nonfinite_.empty()) nonfinite_ = "loss";
    if (!options_.allreduce) return r;
  }
  const Clock::time_point t1 = Clock::now();
  times_.forward += std::chrono::duration<double>(t1 - t0).count();
  if (options_.allreduce && options_.overlap && last)
    backward_and_reduce(loss, pending_ + 1);
  else
    loss.backward();
  times_.backward += seconds_since(t1);
  ++pending_;
  return r;
}

// The bucketed average, built at first use from the optimizer's parameters in the model's registration order
// (backward finishes the last-registered ones first, and the buckets are filled from there).
engine::dist::GradAverager& Trainer::grad_averager() {
  if (averager_) return *averager_;
  std::set<const void*> in_optimizer;
  for (const auto& g : opt_.groups())
    for (const Tensor& p : g.params) in_optimizer.insert(p.id());
  std::vector<Tensor> params;
  for (auto& p : model_.named_parameters())
    if (in_optimizer.erase(p.tensor.id())) params.push_back(p.tensor);
  for (const auto& g : opt_.groups())  // any the model does not name (none today), after the model's own
    for (const Tensor& p : g.params)
      if (in_optimizer.erase(p.id())) params.push_back(p);
  averager_ = std::make_unique<engine::dist::GradAverager>(std::move(params), options_.bucket_bytes);
  return *averager_;
}

// The step's last backward, reporting each parameter whose gradient it has finished to the averager, which
// starts the all-reduce of every bucket that is complete while the rest of backward runs, and polling MPI
// between nodes so that the buckets in flight progress.
void Trainer::backward_and_reduce(const Tensor& loss, int64_t micro) {
  engine::dist::GradAverager& avg = grad_averager();
  avg.begin(micro_scale(micro));
  engine::BackwardHooks hooks;
  hooks.on_leaf_ready = [&avg](const Tensor& leaf) { avg.ready(leaf); };
  hooks.after_node = [&avg] { avg.poll(); };
  engine::backward(loss, hooks);
}

// The sum of the micro-batches' mean gradients -> their mean, averaged over ranks.
void Trainer::average_gradients(int64_t micro) {
  if (options_.allreduce && options_.overlap) {
    engine::dist::GradAverager& avg = grad_averager();
    if (!avg.in_round()) avg.begin(micro_scale(micro));  // no micro-batch was marked last: all buckets now
    avg.finish();
    return;
  }
  std::vector<Tensor> grads;
  for (auto& g : opt_.groups())
    for (const Tensor& p : g.params)
      if (p.grad().defined()) grads.push_back(p.grad());
  if (micro > 1) {
    const float inv = micro_scale(micro);
    for (Tensor& g : grads) {
      float* p = g.data<float>();
      const int64_t n = g.numel();
#pragma omp parallel for simd if (n > 16384)
      for (int64_t k = 0; k < n; ++k) p[k] *= inv;
    }
  }
  if (options_.allreduce) engine::dist::allreduce_mean(grads);
}

std::string Trainer::apply(float lr) {
  QIL_CHECK(pending_ > 0 || !nonfinite_.empty(), "Trainer::apply: no micro-batch was accumulated since the last step");
  std::string bad = std::move(nonfinite_);
  nonfinite_.clear();
  const int64_t micro = pending_;
  pending_ = 0;
  const Clock::time_point t0 = Clock::now();
  average_gradients(micro);
  const Clock::time_point t1 = Clock::now();
  times_.reduce += std::chrono::duration<double>(t1 - t0).count();
  ++times_.steps;
  if (options_.balance != layers::GradBalance::none) layers::scale_quantizer_gradients(model_, options_.balance);
  // A finite loss can still have non-finite gradients (an overflow in a backward pass, a NaN pixel that
  // BatchNorm spreads and ReLU hides from the loss).
  if (bad.empty()) {
    if (std::string g = first_nonfinite_gradient(); !g.empty()) bad = "gradient of " + g;
  }
  if (!bad.empty()) {
    restore_buffers(model_, buffers_);
    times_.update += seconds_since(t1);
    return bad;
  }
  opt_.step(lr);
  layers::project_quantizers(model_);
  times_.update += seconds_since(t1);
  return "";
}

std::vector<engine::ParamGroup> param_groups(layers::Module& model, double weight_decay, double quant_lr_scale,
                                             double act_quant_lr_scale, double quant_l2) {
  engine::ParamGroup w("weights", {}, 1.f, static_cast<float>(weight_decay));
  engine::ParamGroup nd("no_decay", {}, 1.f, 0.f);
  engine::ParamGroup q("quant", {}, static_cast<float>(quant_lr_scale), 0.f);
  // Activation intervals get a group of their own only when their LR differs (old checkpoints name one group).
  engine::ParamGroup qa("quant_act", {}, static_cast<float>(quant_lr_scale * act_quant_lr_scale), 0.f);
  // Penalized quantizer parameters likewise only when there is a penalty, at their side's LR.
  engine::ParamGroup ql("quant_l2", {}, q.lr_scale, static_cast<float>(quant_l2));
  engine::ParamGroup qal("quant_act_l2", {}, qa.lr_scale, static_cast<float>(quant_l2));
  const bool own_act_group = act_quant_lr_scale != 1.0;
  // The activation quantizers' own parameters and the penalized ones, by identity (not by name).
  std::set<const void*> act_params, penalized;
  for (auto& [name, l] : layers::quantizable_layers(model))
    for (const quant::Quantizer* qz : {l->weight_quantizer(), l->act_quantizer()})
      if (qz)
        for (const auto& [n, t] : qz->named_parameters()) {
          if (qz == l->act_quantizer()) act_params.insert(t.id());
          if (quant_l2 > 0 && qz->l2_penalized(n)) penalized.insert(t.id());
        }
  for (auto& p : model.named_parameters()) {
    if (!p.tensor.requires_grad()) continue;
    const bool act = own_act_group && act_params.count(p.tensor.id()) > 0;
    const bool l2 = penalized.count(p.tensor.id()) > 0;
    engine::ParamGroup& g = p.kind == layers::ParamKind::weight  ? w
                            : p.kind != layers::ParamKind::quant ? nd
                            : act                                ? (l2 ? qal : qa)
                                                                 : (l2 ? ql : q);
    g.params.push_back(p.tensor);
    g.param_names.push_back(p.name);
  }
  std::vector<engine::ParamGroup> out;
  for (auto* g : {&w, &nd, &q, &qa, &ql, &qal})
    if (!g->params.empty()) out.push_back(*g);
  return out;
}

}  // namespace apps::training
