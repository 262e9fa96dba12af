// The training step, written once: zero_grad -> forward -> loss (labels, or a teacher's softmax) -> backward
// [-> forward and backward of further micro-batches, gradients adding up] -> mean over micro-batches and
// all-reduce across ranks (at the end, or in buckets started during the last micro-batch's backward) ->
// quantizer gradient balancing -> SGD step -> quantizer constraints.
// `qil train`, `qil bench` and the layer tests all step through it. Also the optimizer's parameter groups.
// Not the loop around it (stage_runner.h), not data loading, not evaluation (evaluate.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist.h"
#include "engine/optim.h"
#include "engine/tensor.h"
#include "layers/module.h"
#include "layers/quantizable.h"

namespace apps::training {

struct StepOptions {
  // How each quantized layer's quantizer gradients are balanced before the step (sqrt: 1/sqrt(N * levels),
  // docs/qil.md §4; relative: steps in log-space); a no-op on layers without quantizers.
  layers::GradBalance balance = layers::GradBalance::none;
  float label_smoothing = 0;
  // A teacher network (run without gradients, in the mode its owner left it; not owned). With distill_t = 0
  // the loss is the cross-entropy to its softmax instead of the labels (`--targets teacher`); with
  // distill_t > 0 it is distillation_loss() at temperature distill_t and weight distill_weight (`--distill`).
  layers::Module* teacher = nullptr;
  float distill_t = 0;
  float distill_weight = 0.5f;
  // Average gradients over the MPI ranks before the step (data-parallel training).
  bool allreduce = false;
  // How (docs/cluster.md): false = one all-reduce of all gradients after backward; true = in buckets of at most
  // bucket_bytes, each started during the last micro-batch's backward as soon as its gradients are final
  // (dist::GradAverager). Both give the same parameters (bit for bit with 2 ranks).
  bool overlap = false;
  int64_t bucket_bytes = int64_t(25) << 20;
};

// Knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015):
//   (1 − w)·CE(logits, labels) + w·T²·CE(softmax(teacher_logits / T), softmax(logits / T))
// logits, teacher_logits: (N, K); labels: (N). The T² keeps the soft term's gradient on the scale of the hard
// one's as T changes. No gradient flows to the teacher's logits.
engine::Tensor distillation_loss(const engine::Tensor& logits, const engine::Tensor& teacher_logits,
                                 const engine::Tensor& labels, float t, float w,
                                 float label_smoothing = 0);

// --bucket-mb (MiB) in bytes, at least one.
int64_t bucket_bytes(double mib);

// Where a trainer's time went, summed over the steps since reset_times() (seconds): forward (and the loss),
// backward (with the packing and polling of overlapped buckets), the all-reduce's wait in apply() (all of it at
// the end, or what overlap did not hide) and the update (balancing, finiteness check, SGD, constraints).
struct StepTimes {
  double forward = 0, backward = 0, reduce = 0, update = 0;
  int64_t steps = 0;  // apply() calls
};

struct StepResult {
  float loss = 0;       // the batch's mean loss, before the update
  int64_t correct = 0;  // top-1 hits of the batch, before the update
  int64_t count = 0;    // images in the batch
  // Empty when the step was taken. Otherwise what was not finite — "loss", or "gradient of <parameter>" (the
  // first in optimizer order) — and the step was not taken: parameters, optimizer state and BatchNorm
  // statistics are as they were before it.
  std::string nonfinite;
  bool stepped() const { return nonfinite.empty(); }
};

class Trainer {
 public:
  // model and optimizer are not owned and must outlive the trainer.
  Trainer(layers::Module& model, engine::SGD& optimizer, StepOptions options);

  // One optimizer step on a batch: images (N, C, H, W) f32, labels (N) s32, at learning rate `lr`.
  // A non-finite loss or gradient is not stepped on: the result names it (the caller stops or skips).
  StepResult step(const engine::Tensor& images, const engine::Tensor& labels, float lr);

  // Gradient accumulation: step() split in two. accumulate() runs forward and backward of one micro-batch
  // (the first after an apply() clears the gradients, later ones add to them); apply() steps on the mean of
  // the accumulated gradients (then averaged over ranks), so K micro-batches of B images with equal sizes step
  // as one batch of K·B would, up to rounding. BatchNorm layers see each micro-batch alone (batch statistics
  // over B images, running statistics updated K times per step). A non-finite loss skips the backward (alone;
  // across ranks the backward runs, so that every rank sees the NaN). apply() returns "" when it stepped, or
  // what was not finite ("loss", "gradient of <parameter>"): then nothing was stepped and the BatchNorm
  // statistics are put back to what they were before the step's first micro-batch.
  // `last`: this is the step's last micro-batch, so with StepOptions::overlap its backward starts the
  // all-reduce (a further accumulate() before apply() is then an error). Without it apply() averages at the end.
  StepResult accumulate(const engine::Tensor& images, const engine::Tensor& labels, bool last = false);
  std::string apply(float lr);
  int64_t pending() const { return pending_; }  // micro-batches accumulated since the last apply()

  const StepTimes& times() const { return times_; }
  void reset_times() { times_ = {}; }
  // The bucketed average of StepOptions::overlap (built at the first step that uses it); null until then.
  const engine::dist::GradAverager* averager() const { return averager_.get(); }

  layers::Module& model() { return model_; }
  engine::SGD& optimizer() { return opt_; }

 private:
  engine::Tensor loss_of(const engine::Tensor& logits, const engine::Tensor& images, const engine::Tensor& labels);
  // The first parameter (in optimizer order) whose gradient holds a NaN or an infinity; "" when none does.
  std::string first_nonfinite_gradient() const;
  void backward_and_reduce(const engine::Tensor& loss, int64_t micro);
  void average_gradients(int64_t micro);
  engine::dist::GradAverager& grad_averager();

  layers::Module& model_;
  engine::SGD& opt_;
  StepOptions options_;
  int64_t pending_ = 0;
  std::string nonfinite_;               // what was not finite among this step's micro-batches so far
  std::vector<engine::Tensor> buffers_;  // BatchNorm statistics before this step's first micro-batch
  std::unique_ptr<engine::dist::GradAverager> averager_;
  StepTimes times_;
};

// Parameter groups: conv/linear weights with weight decay; BN and biases without; quantizer parameters
// without, at quant_lr_scale times the LR. Frozen parameters (requires_grad off) are left out.
// Optimizer groups: weights (decayed), no_decay (biases, BN), quant (interval parameters and output scales), and
// quant_act (activation intervals) when act_quant_lr_scale != 1. When quant_l2 > 0, the quantizer parameters
// their method penalizes (quant::Quantizer::l2_penalized: PACT's α) move to quant_l2 (or quant_act_l2, at the
// activation LR) with weight decay quant_l2: SGD adds quant_l2·p to their gradient (`--pact-alpha-decay`).
std::vector<engine::ParamGroup> param_groups(layers::Module& model, double weight_decay, double quant_lr_scale,
                                             double act_quant_lr_scale = 1.0, double quant_l2 = 0.0);

}  // namespace apps::training
