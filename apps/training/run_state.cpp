// RunState transitions and resuming on another layout.
#include "apps/training/run_state.h"

#include <cmath>
#include <limits>

#include "engine/check.h"

namespace apps::training {

using engine::str_cat;

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

int64_t resume_layout(RunPosition& p, int64_t batch, int64_t accumulate, int64_t ranks, bool mid_stage,
                      const std::string& ck, std::string& note) {
  note.clear();
  if (p.ranks <= 0 || p.micro_batch <= 0 || p.accumulate <= 0) {  // written before the layout was recorded
    QIL_CHECK(p.batch % accumulate == 0, ck, " stopped at batch ", p.batch,
              " of its epoch, which is not a step boundary of --accumulate ", accumulate,
              " (resume with the --accumulate the run was saved with)");
  } else if (mid_stage) {
    // Checkpoints are written at step boundaries only (stage_runner.h).
    QIL_CHECK(p.batch % p.accumulate == 0, ck, ": run_state's batch ", p.batch, " is not a step boundary of its ",
              "--accumulate ", p.accumulate);
    const int64_t global = p.micro_batch * p.accumulate * p.ranks;
    const std::string was = str_cat("a global batch of ", global, " (", p.micro_batch, " x ", p.accumulate,
                                    " micro-batches x ", p.ranks, " ranks)");
    if (batch == p.micro_batch && accumulate == p.accumulate && global % (batch * ranks) == 0) {
      accumulate = global / (batch * ranks);  // only the number of ranks changed: keep the global batch
    }
    if (batch * accumulate * ranks != global) {
      std::string fix;
      if (global % (batch * ranks) == 0)
        fix = str_cat("resume with --accumulate ", global / (batch * ranks));
      else if (global % ranks == 0)
        fix = str_cat("resume with --batch and --accumulate whose product is ", global / ranks, " (e.g. --batch ",
                      global / ranks, " --accumulate 1)");
      else
        fix = str_cat("no --batch and --accumulate keep it on ", ranks, " ranks; resume on a number of ranks that ",
                      "divides ", global);
      throw engine::Error(str_cat(ck, " was written with ", was, "; --batch ", batch, " x --accumulate ",
                                  accumulate, " x ", ranks, " ranks = ", batch * accumulate * ranks,
                                  " would change it in the middle of a stage (its learning rate, steps per epoch ",
                                  "and the samples of each step): ", fix));
    }
    if (accumulate != p.accumulate || ranks != p.ranks || batch != p.micro_batch)
      note = str_cat("resuming ", was, " on ", ranks, " rank(s) as ", batch, " x ", accumulate,
                     " micro-batches: the same global batch and samples per step",
                     batch == p.micro_batch ? "" : " (BatchNorm sees micro-batches of another size)");
    p.batch = p.batch / p.accumulate * accumulate;  // the same step of the epoch
  }
  p.micro_batch = batch;
  p.accumulate = accumulate;
  p.ranks = ranks;
  return accumulate;
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
                                                          {"seen", big},      {"nan_skips", big},
                                                          {"micro_batch", big}, {"accumulate", big}, {"ranks", big}};
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
