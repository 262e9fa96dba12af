// What a training run reports, and where: metrics.csv (one row per epoch), intervals.jsonl (one JSON record
// per quantized layer per epoch) and the console lines (run header, stage header, epoch line, stop notice,
// summary). Only the lead process (rank 0) writes; on the other ranks every call does nothing.
// Not the progress bar (progress.h) and not checkpoints (stage_runner.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "apps/training/evaluate.h"
#include "layers/module.h"

namespace apps::training {

// One finished epoch.
struct EpochRecord {
  int stage = 0;  // 1-based
  std::string stage_name;
  int epoch = 0, epochs = 0;  // 1-based within the stage
  int64_t global_epoch = 0;   // 1-based over all stages
  float lr = 0;               // the LR of the epoch's last step
  double train_loss = 0, train_top1 = 0;
  EvalResult val, test;  // count 0: the run has no such split (printed "—", empty cells in metrics.csv)
  double img_per_s = 0, wall_s = 0;
};

// One finished stage, for the summary table.
struct StageSummary {
  std::string name;
  int epochs = 0;
  EvalResult val, test;  // after the last epoch; count 0: the run has no such split
  double best_val = -1, test_at_best = -1;  // -1: none (no validation split, or no test split)
};

class RunLog {
 public:
  // Creates metrics.csv with its header unless it exists (a resumed run appends).
  RunLog(std::string dir, bool lead);

  bool lead() const { return lead_; }
  const std::string& dir() const { return dir_; }

  // On resume: drops the metrics.csv rows and intervals.jsonl records that the checkpoint does not cover
  // (written after it, before a kill), so no epoch is logged twice. `stage` is 1-based; `epochs_done` of it
  // are kept; the stage's epoch-0 records are kept only when the stage had started (they are not rewritten).
  void keep_until(int stage, int epochs_done, bool stage_started) const;

  void line(const std::string& text) const;  // one console line
  // metrics.csv row, intervals.jsonl records of `model`'s quantized layers, console line.
  void epoch(const EpochRecord& e, layers::Module& model) const;
  // One intervals.jsonl record per quantized layer of `model`; epoch 0 is the state at the start of a stage.
  void interval_rows(layers::Module& model, int stage, const std::string& stage_name, int epoch) const;
  // The end-of-run table, the final stage's learned intervals and how far they moved from calibration.
  void summary(const std::vector<StageSummary>& stages, layers::Module& model) const;

  static const char* metrics_header();

 private:
  std::string dir_, metrics_path_, intervals_path_;
  bool lead_;
};

}  // namespace apps::training
