// The optimizer and learning-rate schedules: SGD with momentum (optionally Nesterov) over parameter groups
// that each scale the scheduled LR and carry their own weight decay, with PyTorch's torch.optim.SGD update
// rule (dampening 0); and LR schedules (constant, multistep, cosine) with an optional linear warm-up.
// Not a general optimizer zoo (no Adam), and it knows nothing of modules: callers build the groups.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// (name, tensor) pairs in a fixed order; the currency of checkpoints and optimizer state.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct ParamGroup {
  ParamGroup() = default;
  ParamGroup(std::string name_, std::vector<Tensor> params_, float lr_scale_ = 1.f, float weight_decay_ = 0.f,
             std::vector<std::string> param_names_ = {})
      : name(std::move(name_)), params(std::move(params_)), lr_scale(lr_scale_), weight_decay(weight_decay_),
        param_names(std::move(param_names_)) {}

  std::string name;            // e.g. "weights", "no_decay", "quant"; unique among the optimizer's groups
  std::vector<Tensor> params;  // f32 leaves; updated in place
  float lr_scale = 1.f;        // this group's LR = lr_scale × the scheduled base LR
  float weight_decay = 0.f;    // L2 term added to the gradient (PyTorch's coupled weight_decay)
  // Optional stable names for the parameters (same length as params), used to key the momentum buffers in
  // checkpoints ("<group>.<name>"); when empty the key is "<group>.<index>".
  std::vector<std::string> param_names;
};

// torch.optim.SGD with dampening 0. Per parameter with a gradient g (parameters without one are skipped):
//   g = g + weight_decay·p
//   b = g on the first step, else b = μ·b + g          (only when μ > 0)
//   g = g + μ·b if nesterov, else g = b
//   p = p − lr·g,   lr = base_lr × group.lr_scale
class SGD {
 public:
  SGD(std::vector<ParamGroup> groups, float momentum, bool nesterov = false);

  // One update of every parameter that has a gradient. Runs with graph recording off.
  void step(float base_lr);
  // Zeroes every existing gradient (set_to_none: drops them instead, so a parameter that receives no
  // gradient in the next backward is skipped by step rather than decayed on a zero gradient).
  void zero_grad(bool set_to_none = false);

  const std::vector<ParamGroup>& groups() const { return groups_; }
  float momentum() const { return momentum_; }
  bool nesterov() const { return nesterov_; }

  // Momentum buffers for checkpoints, keyed "<group>.<param name or index>". A parameter that has never
  // been stepped has no buffer and is absent.
  NamedTensors export_state() const;
  // Restores buffers written by export_state. Every key must name a parameter of this optimizer and match
  // its shape; parameters absent from the state start without a buffer (the next step sets b = g).
  void import_state(const NamedTensors& state);
  // The key under which parameter i of group g is exported.
  std::string state_key(size_t g, size_t i) const;

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<Tensor>> buf_;  // [group][param]: momentum buffer, undefined until the first step
  float momentum_;
  bool nesterov_;
};

// The base LR as a function of training progress. Time is measured in epochs (a double: 2.5 = halfway
// through the third epoch); lr(step, steps_per_epoch) evaluates it at every optimizer step.
class LrSchedule {
 public:
  static LrSchedule constant(float base_lr);
  // base_lr × gamma^(number of milestones ≤ epoch); milestones in epochs, strictly increasing, > 0.
  static LrSchedule multistep(float base_lr, std::vector<double> milestones, float gamma);
  // floor + (base_lr − floor)·(1 + cos(π·epoch/total_epochs))/2, and floor after total_epochs.
  static LrSchedule cosine(float base_lr, double total_epochs, float floor_lr = 0.f);

  // Multiplies the schedule by a linear ramp over the first warmup_epochs: factor = start_factor +
  // (1 − start_factor)·progress, progress = min(1, epoch/warmup_epochs). Composes with any of the above.
  LrSchedule& with_warmup(double warmup_epochs, float start_factor = 0.f);

  // The LR at fractional epoch `epoch` (≥ 0).
  float lr(double epoch) const;
  // The LR for optimizer step `step` (0-based, counted from the start of the schedule). The schedule is
  // evaluated at the step's start, epoch = step/steps_per_epoch, so a milestone at epoch m takes effect on
  // the first step of epoch m. The warm-up counts the step being taken (progress = (step+1) / warm-up
  // steps): the first step does not run at start_factor·0 when start_factor is 0, and the last warm-up step
  // reaches the full LR.
  float lr(int64_t step, int64_t steps_per_epoch) const;

  enum class Kind { constant, multistep, cosine };
  Kind kind() const { return kind_; }
  float base_lr() const { return base_lr_; }
  double warmup_epochs() const { return warmup_epochs_; }

 private:
  LrSchedule(Kind k, float base_lr);
  float value(double epoch, double warmup_progress) const;

  Kind kind_;
  float base_lr_;
  std::vector<double> milestones_;
  float gamma_ = 1.f;
  double total_epochs_ = 0.0;
  float floor_lr_ = 0.f;
  double warmup_epochs_ = 0.0;
  float warmup_start_ = 0.f;
};

}  // namespace engine
