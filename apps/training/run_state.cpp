// RunState transitions and the dropout generators.
#include "apps/training/run_state.h"

#include "layers/basic.h"

namespace apps::training {

RunState RunState::start(size_t stages) {
  RunState s;
  s.position.best_val.assign(stages, -1.0);
  return s;
}

void RunState::begin_stage(int stage) {
  position.stage = stage;
  position.epoch = 0;
  position.batch = 0;
  position.step = 0;
  clear_epoch_sums();
}

void RunState::end_epoch() {
  ++position.epoch;
  ++position.global_epoch;
  position.batch = 0;
  clear_epoch_sums();
}

void RunState::clear_epoch_sums() {
  position.loss_sum = 0;
  position.correct = 0;
  position.seen = 0;
}

void RunState::capture_rng(layers::Module& model) {
  rng.clear();
  for (auto& [name, mod] : model.named_modules())
    if (auto* d = dynamic_cast<layers::Dropout*>(mod)) {
      const uint64_t* s = d->generator().state();
      rng[name] = {s[0], s[1], s[2], s[3]};
    }
}

void RunState::restore_rng(layers::Module& model) const {
  for (auto& [name, mod] : model.named_modules()) {
    auto* d = dynamic_cast<layers::Dropout*>(mod);
    const auto it = rng.find(name);
    if (d && it != rng.end()) d->generator().set_state(it->second.data());
  }
}

}  // namespace apps::training
