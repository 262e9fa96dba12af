// Where a training run stands, as it travels in a checkpoint's "run_state" section: the next batch to run
// (stage, epoch, batch, optimizer step), the best validation accuracy of each stage, the running sums of the
// epoch in progress and the model's random generators (dropout). JSON keys are those of every checkpoint
// written so far ({"position": {...}, "rng": {"<module>": [s0, s1, s2, s3]}}), so old runs still resume.
// Not the model or optimizer tensors (those are checkpoint tensor sections, layers/model_io.h).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "layers/module.h"

namespace apps::training {

struct RunPosition {
  int stage = 0;
  int epoch = 0;            // within the stage
  int64_t batch = 0;        // within the epoch: the next batch (micro-batch, with --accumulate) to run
  int64_t step = 0;         // optimizer steps within the stage (drives the LR schedule)
  int64_t global_epoch = 0;  // epochs over all stages (seeds the data order)
  std::vector<double> best_val;  // per stage, -1 = none yet
  // The running training statistics of the current epoch, so a resumed epoch reports the whole epoch.
  // Checkpoints older than these keys read them as 0.
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;  // of the steps taken (a skipped step counts in neither)
  int64_t nan_skips = 0;  // steps of the whole run skipped by --on-nan skip
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RunPosition, stage, epoch, batch, step, global_epoch, best_val,
                                                loss_sum, correct, seen, nan_skips)

struct RunState {
  RunPosition position;
  // Dropout generators by module name: the only model-side randomness.
  std::map<std::string, std::array<uint64_t, 4>> rng;

  // A fresh run of `stages` stages.
  static RunState start(size_t stages);
  // Moves to the start of stage `stage` (epoch, batch and step 0; epoch sums cleared).
  void begin_stage(int stage);
  // Closes the current epoch: next epoch, batch 0, sums cleared.
  void end_epoch();
  void clear_epoch_sums();

  void capture_rng(layers::Module& model);
  void restore_rng(layers::Module& model) const;

  // A checkpoint's run_state text, every field checked against its meaning before it is narrowed: counters
  // are integers in 0..2^31-1 (stage, epoch) or 0..2^53 (the others), never wrapped; sums and accuracies are
  // finite (best_val -1 or 0..100); the generators are four unsigned words each. Errors name `file` and the
  // field. Whether the position fits the run's stages is the caller's check (apps/train.cpp).
  static RunState parse(const std::string& text, const std::string& file);
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RunState, position, rng)

}  // namespace apps::training
