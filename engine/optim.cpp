// SGD with momentum over parameter groups, and the LR schedules. The update follows torch.optim.SGD
// (dampening 0) step for step, so a PyTorch recipe's hyper-parameters mean the same thing here.
#include "engine/optim.h"

#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include "engine/autograd.h"

namespace engine {

namespace {
constexpr int64_t kParallelMin = 16384;  // below this, OpenMP thread start-up costs more than the loop

bool finite_nonneg(double v) { return std::isfinite(v) && v >= 0.0; }
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, float momentum, bool nesterov)
    : groups_(std::move(groups)), momentum_(momentum), nesterov_(nesterov) {
  QIL_CHECK(std::isfinite(momentum) && momentum >= 0.f && momentum < 1.f, "SGD: momentum ", momentum,
            " outside [0, 1)");
  QIL_CHECK(!nesterov || momentum > 0.f, "SGD: Nesterov momentum needs momentum > 0, got ", momentum);
  std::set<std::string> names;
  std::set<const void*> seen;
  for (const ParamGroup& g : groups_) {
    QIL_CHECK(names.insert(g.name).second, "SGD: parameter group name '", g.name, "' used twice");
    QIL_CHECK(finite_nonneg(g.lr_scale), "SGD: group '", g.name, "' has invalid lr_scale ", g.lr_scale);
    QIL_CHECK(finite_nonneg(g.weight_decay), "SGD: group '", g.name, "' has invalid weight_decay ",
              g.weight_decay);
    QIL_CHECK(g.param_names.empty() || g.param_names.size() == g.params.size(), "SGD: group '", g.name,
              "' has ", g.param_names.size(), " parameter names for ", g.params.size(), " parameters");
    for (size_t i = 0; i < g.params.size(); ++i) {
      const Tensor& p = g.params[i];
      QIL_CHECK(p.defined(), "SGD: parameter ", state_key(&g - groups_.data(), i), " is undefined");
      QIL_CHECK(p.dtype() == DType::f32, "SGD: parameter ", state_key(&g - groups_.data(), i),
                " is not f32: ", p);
      QIL_CHECK(seen.insert(p.id()).second, "SGD: parameter ", state_key(&g - groups_.data(), i),
                " appears more than once");
    }
  }
  buf_.resize(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) buf_[g].resize(groups_[g].params.size());
}

std::string SGD::state_key(size_t g, size_t i) const {
  const ParamGroup& grp = groups_.at(g);
  return grp.name + "." + (grp.param_names.empty() ? std::to_string(i) : grp.param_names.at(i));
}

namespace {

// One parameter's share of an SGD step: its values, gradient, momentum buffer and the group's settings.
struct UpdateItem {
  float* w;
  const float* g;
  float* b;  // null without momentum
  int64_t n;
  float lr, wd;
  bool first;  // the buffer is set to the gradient rather than decayed
};

}  // namespace

// Every parameter in one OpenMP region: each parameter's loop is split among the threads without a barrier
// between parameters (they are independent), so a step costs one fork and one join, not one per parameter.
void SGD::step(float base_lr) {
  QIL_CHECK(finite_nonneg(base_lr), "SGD::step: invalid learning rate ", base_lr);
  NoGradGuard no_grad;
  const float mu = momentum_;
  const bool nest = nesterov_;
  std::vector<UpdateItem> items;
  int64_t total = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& grp = groups_[gi];
    for (size_t i = 0; i < grp.params.size(); ++i) {
      Tensor& p = grp.params[i];
      const Tensor& gt = p.grad();
      if (!gt.defined()) continue;  // no gradient this step: neither decayed nor moved (as PyTorch)
      QIL_CHECK(gt.numel() == p.numel(), "SGD::step: gradient ", gt, " does not match parameter ",
                state_key(gi, i), " ", p);
      Tensor& bt = buf_[gi][i];
      const bool first = mu != 0.f && !bt.defined();
      if (first) bt = Tensor::empty(p.shape());
      items.push_back({p.data(), gt.data(), mu != 0.f ? bt.data() : nullptr, p.numel(), base_lr * grp.lr_scale,
                       grp.weight_decay, first});
      total += p.numel();
    }
  }
#pragma omp parallel if (total > kParallelMin)
  for (const UpdateItem& it : items) {
    float* w = it.w;
    const float* g = it.g;
    float* b = it.b;
    const float lr = it.lr, wd = it.wd;
    if (!b) {
#pragma omp for simd schedule(static) nowait
      for (int64_t k = 0; k < it.n; ++k) w[k] -= lr * (g[k] + wd * w[k]);
      continue;
    }
    const bool first = it.first;
#pragma omp for simd schedule(static) nowait
    for (int64_t k = 0; k < it.n; ++k) {
      const float d = g[k] + wd * w[k];
      const float bk = first ? d : mu * b[k] + d;
      b[k] = bk;
      w[k] -= lr * (nest ? d + mu * bk : bk);
    }
  }
}

void SGD::zero_grad(bool set_to_none) {
  std::vector<std::pair<float*, int64_t>> grads;  // existing gradients; a parameter without one stays without
  int64_t total = 0;
  for (ParamGroup& grp : groups_)
    for (Tensor& p : grp.params) {
      Tensor& g = p.grad();
      if (!g.defined()) continue;  // step keeps skipping it
      if (set_to_none) {
        g = Tensor();
        continue;
      }
      grads.emplace_back(g.data(), g.numel());
      total += g.numel();
    }
#pragma omp parallel if (total > kParallelMin)
  for (const auto& item : grads) {
    float* gp = item.first;
    const int64_t n = item.second;
#pragma omp for simd schedule(static) nowait
    for (int64_t k = 0; k < n; ++k) gp[k] = 0.f;
  }
}

NamedTensors SGD::export_state() const {
  NamedTensors out;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i)
      if (buf_[g][i].defined()) out.emplace_back(state_key(g, i), buf_[g][i].clone());
  return out;
}

void SGD::import_state(const NamedTensors& state) {
  std::vector<std::vector<Tensor>> fresh(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) fresh[g].resize(groups_[g].params.size());
  for (const auto& [key, t] : state) {
    bool found = false;
    for (size_t g = 0; g < groups_.size() && !found; ++g)
      for (size_t i = 0; i < groups_[g].params.size() && !found; ++i) {
        if (state_key(g, i) != key) continue;
        found = true;
        const Tensor& p = groups_[g].params[i];
        QIL_CHECK(t.defined() && t.dtype() == DType::f32 && t.shape() == p.shape(), "SGD::import_state: buffer '",
                  key, "' is ", t, " but the parameter is ", p);
        QIL_CHECK(!fresh[g][i].defined(), "SGD::import_state: buffer '", key, "' given twice");
        fresh[g][i] = t.clone();
      }
    QIL_CHECK(found, "SGD::import_state: buffer '", key, "' names no parameter of this optimizer");
  }
  buf_ = std::move(fresh);  // only after every key checked: a bad state leaves the optimizer as it was
}

// ---- schedules ----

LrSchedule::LrSchedule(Kind k, float base_lr) : kind_(k), base_lr_(base_lr) {
  QIL_CHECK(finite_nonneg(base_lr), "LrSchedule: invalid base learning rate ", base_lr);
}

LrSchedule LrSchedule::constant(float base_lr) { return LrSchedule(Kind::constant, base_lr); }

LrSchedule LrSchedule::multistep(float base_lr, std::vector<double> milestones, float gamma) {
  LrSchedule s(Kind::multistep, base_lr);
  QIL_CHECK(std::isfinite(gamma) && gamma > 0.f, "LrSchedule::multistep: gamma ", gamma, " must be > 0");
  for (size_t i = 0; i < milestones.size(); ++i) {
    QIL_CHECK(std::isfinite(milestones[i]) && milestones[i] > 0.0, "LrSchedule::multistep: milestone ",
              milestones[i], " must be a positive epoch");
    QIL_CHECK(i == 0 || milestones[i] > milestones[i - 1], "LrSchedule::multistep: milestones not increasing: ",
              milestones[i - 1], " then ", milestones[i]);
  }
  s.milestones_ = std::move(milestones);
  s.gamma_ = gamma;
  return s;
}

LrSchedule LrSchedule::cosine(float base_lr, double total_epochs, float floor_lr) {
  LrSchedule s(Kind::cosine, base_lr);
  QIL_CHECK(std::isfinite(total_epochs) && total_epochs > 0.0, "LrSchedule::cosine: total epochs ",
            total_epochs, " must be > 0");
  QIL_CHECK(finite_nonneg(floor_lr) && floor_lr <= base_lr, "LrSchedule::cosine: floor ", floor_lr,
            " must be within [0, base LR ", base_lr, "]");
  s.total_epochs_ = total_epochs;
  s.floor_lr_ = floor_lr;
  return s;
}

LrSchedule& LrSchedule::with_warmup(double warmup_epochs, float start_factor) {
  QIL_CHECK(finite_nonneg(warmup_epochs), "LrSchedule: invalid warm-up length ", warmup_epochs, " epochs");
  QIL_CHECK(std::isfinite(start_factor) && start_factor >= 0.f && start_factor <= 1.f,
            "LrSchedule: warm-up start factor ", start_factor, " outside [0, 1]");
  warmup_epochs_ = warmup_epochs;
  warmup_start_ = start_factor;
  return *this;
}

float LrSchedule::value(double epoch, double warmup_progress) const {
  double v = base_lr_;
  switch (kind_) {
    case Kind::constant: break;
    case Kind::multistep:
      for (double m : milestones_)
        if (epoch >= m) v *= gamma_;
      break;
    case Kind::cosine: {
      const double t = std::min(epoch / total_epochs_, 1.0);
      v = floor_lr_ + (static_cast<double>(base_lr_) - floor_lr_) * 0.5 * (1.0 + std::cos(M_PI * t));
      break;
    }
  }
  if (warmup_epochs_ > 0.0) {
    const double p = std::min(warmup_progress, 1.0);
    v *= warmup_start_ + (1.0 - warmup_start_) * p;
  }
  return static_cast<float>(v);
}

float LrSchedule::lr(double epoch) const {
  QIL_CHECK(std::isfinite(epoch) && epoch >= 0.0, "LrSchedule::lr: invalid epoch ", epoch);
  return value(epoch, warmup_epochs_ > 0.0 ? epoch / warmup_epochs_ : 1.0);
}

float LrSchedule::lr(int64_t step, int64_t steps_per_epoch) const {
  QIL_CHECK(step >= 0, "LrSchedule::lr: negative step ", step);
  QIL_CHECK(steps_per_epoch > 0, "LrSchedule::lr: steps per epoch ", steps_per_epoch, " must be > 0");
  const double spe = static_cast<double>(steps_per_epoch);
  const double epoch = static_cast<double>(step) / spe;
  const double progress = warmup_epochs_ > 0.0 ? (static_cast<double>(step) + 1.0) / (warmup_epochs_ * spe) : 1.0;
  return value(epoch, progress);
}

}  // namespace engine
