// RunState transitions and the dropout generators.
#include "apps/training/run_state.h"

#include <cmath>
#include <limits>

#include "engine/check.h"
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

RunState RunState::parse(const std::string& text, const std::string& file) {
  using nlohmann::json;
  const std::string where = file + ": run_state";
  try {
    const json j = json::parse(text);
    QIL_CHECK(j.is_object(), where, " is not a JSON object");
    if (j.contains("position")) {
      const json& p = j.at("position");
      QIL_CHECK(p.is_object(), where, ": position is not a JSON object");
      const int64_t int_max = std::numeric_limits<int>::max(), big = int64_t(1) << 53;
      const std::pair<const char*, int64_t> counters[] = {{"stage", int_max}, {"epoch", int_max}, {"batch", big},
                                                          {"step", big},      {"global_epoch", big}, {"correct", big},
                                                          {"seen", big},      {"nan_skips", big}};
      for (const auto& [key, hi] : counters) {
        if (!p.contains(key)) continue;
        const json& v = p.at(key);
        QIL_CHECK(v.is_number_integer() && (v.is_number_unsigned() || v.get<int64_t>() >= 0) &&
                      v.get<uint64_t>() <= static_cast<uint64_t>(hi),
                  where, ": ", key, " is ", v.dump(), " (an integer in 0..", hi, ")");
      }
      if (p.contains("loss_sum")) {
        const json& v = p.at("loss_sum");
        QIL_CHECK(v.is_number() && std::isfinite(v.get<double>()) && v.get<double>() >= 0, where, ": loss_sum is ",
                  v.dump(), " (a finite sum of losses, >= 0)");
      }
      if (p.contains("best_val")) {
        const json& b = p.at("best_val");
        QIL_CHECK(b.is_array() && b.size() <= 4096, where, ": best_val is not a list of accuracies");
        for (const json& v : b)
          QIL_CHECK(v.is_number() && (v.get<double>() == -1 || (v.get<double>() >= 0 && v.get<double>() <= 100)),
                    where, ": best_val holds ", v.dump(), " (an accuracy in 0..100, or -1 for none)");
      }
    }
    if (j.contains("rng")) {
      QIL_CHECK(j.at("rng").is_object(), where, ": rng is not a JSON object");
      for (const auto& [name, v] : j.at("rng").items()) {
        QIL_CHECK(v.is_array() && v.size() == 4, where, ": rng of '", name, "' is not four words");
        for (const json& w : v)
          QIL_CHECK(w.is_number_unsigned(), where, ": rng of '", name, "' holds ", w.dump(), " (an unsigned word)");
      }
    }
    return j.get<RunState>();
  } catch (const json::exception& e) {
    throw engine::Error(engine::str_cat(where, " is not readable (", e.what(), ")"));
  }
}

}  // namespace apps::training
