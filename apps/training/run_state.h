// Where a training run stands, as it travels in a checkpoint's "run_state" section: the next batch to run
// (stage, epoch, batch, optimizer step), the best validation accuracy of each stage, the running sums of the
// epoch in progress, and the layout of the steps that wrote it (micro-batch size, --accumulate, ranks), which
// lets a run resume on another number of ranks with the same global batch (resume_layout). JSON keys are
// those of every checkpoint written so far ({"position": {...}}), so old runs still resume; an older "rng"
// key (dropout generators) is ignored: stochastic layers are reseeded per micro-batch (layers::Stochastic).
// Not the model or optimizer tensors (those are checkpoint tensor sections, layers/model_io.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>


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
  // The layout of the steps that wrote `batch`: --batch, --accumulate and the number of ranks. The epoch sums
  // above are over all ranks. 0 in checkpoints older than these keys (layout unknown, sums of rank 0 only).
  int64_t micro_batch = 0, accumulate = 0, ranks = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RunPosition, stage, epoch, batch, step, global_epoch, best_val,
                                                loss_sum, correct, seen, nan_skips, micro_batch, accumulate, ranks)

struct RunState {
  RunPosition position;

  // A fresh run of `stages` stages.
  static RunState start(size_t stages);
  // Moves to the start of stage `stage` (epoch, batch and step 0; epoch sums cleared).
  void begin_stage(int stage);
  // Closes the current epoch: next epoch, batch 0, sums cleared.
  void end_epoch();
  void clear_epoch_sums();

  // A checkpoint's run_state text, every field checked against its meaning before it is narrowed: counters
  // are integers in 0..2^31-1 (stage, epoch) or 0..2^53 (the others), never wrapped; sums and accuracies are
  // finite (best_val -1 or 0..100); generators of older checkpoints (no longer used) are four unsigned words each. Errors name `file` and the
  // field. Whether the position fits the run's stages is the caller's check (apps/train.cpp).
  static RunState parse(const std::string& text, const std::string& file);
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RunState, position)

// A resumed checkpoint's position `p` (in `ck`) on a run of `ranks` ranks with --batch `batch` and
// --accumulate `accumulate`; `mid_stage`: the checkpoint is inside a stage, not at its end. Within a stage a step must keep its global batch (batch x accumulate x ranks):
// the learning rate, the steps per epoch and which samples form each step depend on it. When --batch and
// --accumulate are the checkpoint's own and only the number of ranks changed, the --accumulate that keeps the
// global batch is chosen; otherwise, or when no --accumulate can keep it, throws engine::Error naming the
// --batch / --accumulate (or number of ranks) to use. Moves p.batch onto the new layout (the same step of the
// epoch) and records the layout. Returns the --accumulate to run with and sets `note` to a line for the log
// when it changed. A checkpoint without a layout (older) must resume on its own --accumulate.
int64_t resume_layout(RunPosition& p, int64_t batch, int64_t accumulate, int64_t ranks, bool mid_stage,
                      const std::string& ck, std::string& note);

}  // namespace apps::training
