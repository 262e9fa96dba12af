// The loop of a training run: stage after stage (quantize, calibrate, a fresh optimizer and LR schedule),
// epoch after epoch (Trainer steps over the training loader, `--accumulate` micro-batches each, then
// evaluation, logging and checkpoints), with an atomic `last` checkpoint that `--resume` continues from
// (mid-epoch if need be) and `best` by validation accuracy (also every --checkpoint-every-steps steps and
// every 10 minutes within an epoch). A signal (SIGINT/SIGTERM) or --stop-after-steps saves `last` and stops; a
// non-finite loss or gradient stops the run or skips the step (--on-nan). Under MPI: the ranks' parameters
// are compared now and then (the divergence guard) and every rank takes the same stop and save decisions.
// Not the setup of a run (where the model and data come from: apps/train.cpp, which also makes RunOptions from
// the command line) and not the step itself.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "apps/training/progress.h"
#include "apps/training/run_data.h"
#include "apps/training/run_log.h"
#include "apps/training/run_state.h"
#include "apps/training/stages.h"
#include "apps/training/trainer.h"
#include "data/loader.h"
#include "engine/optim.h"
#include "engine/serialize.h"
#include "layers/model_io.h"
#include "layers/module.h"
#include "layers/quantize.h"

namespace apps::training {

// The LR's course within a stage (engine::LrSchedule), from the stage's base LR.
enum class LrShape { cosine, multistep, constant };

// How a run trains: what the loop reads of `qil train`'s flags, typed. The numbers default to the flags'
// defaults; `quant` and `step` keep their own types' (layers::QuantPlan, StepOptions), and `progress` is none.
struct RunOptions {
  // Every stage's quantization plan but its widths, which the runner sets per stage.
  layers::QuantPlan quant;
  bool freeze_weights = false;           // in quantized stages: weights and BatchNorm frozen (quantizer-only)
  bool freeze_weight_intervals = false;  // the weight quantizers' parameters kept at calibration
  bool freeze_act_intervals = false;     // the activation quantizers' parameters kept at calibration
  bool freeze_output_scales = false;     // the paper's recipe: output scales fixed at their least-squares fit
  int64_t calib_batches = 8;             // batches that calibrate a quantized stage's new intervals
  bool int8_forward = false;             // quantized layers' training forward in integers (layers::set_int8_forward)
  // The step. `balance` applies to quantized stages only; `teacher` and `allreduce` are the run's (TrainingRun)
  // and set by the runner.
  StepOptions step;
  // The optimizer (param_groups, SGD).
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  double quant_lr_scale = 1.0, act_quant_lr_scale = 1.0;
  double pact_alpha_decay = 0;
  // The LR schedule, restarted each stage from the stage's LR, or `lr` where the stage has none.
  double lr = 0.1;
  LrShape schedule = LrShape::cosine;
  std::vector<double> milestones;  // multistep: epochs within a stage
  double lr_gamma = 0.1;           // multistep: the factor at each milestone
  double warmup_epochs = 0;
  // Batches: micro-batch size per process, micro-batches per optimizer step, decode threads, the data order's
  // seed.
  int64_t batch = 128, accumulate = 1, workers = 1;
  uint64_t seed = 0;
  // The run itself.
  int64_t checkpoint_every_steps = 0;  // also save `last` every N optimizer steps (0 = every 10 minutes only)
  int64_t stop_after_steps = 0;        // stop as if interrupted after N steps of this process (0 = never)
  int64_t rank_check_every = 100;      // optimizer steps between cross-rank parameter checks (0 = epoch ends)
  bool skip_nonfinite = false;         // a non-finite loss or gradient skips the step instead of stopping the run
  ProgressMode progress = ProgressMode::none;  // the lead process's bars (the others show none)
  int64_t max_bad_files = 100;         // ImageFolderDataset's limit, named when files were skipped
};

// Everything a run trains, set up before the first stage.
struct TrainingRun {
  std::vector<Stage> stages;
  RunData data;
  layers::ModelMeta meta;
  std::unique_ptr<layers::Module> model;
  std::unique_ptr<layers::Module> teacher;  // --targets teacher: the --init network, in eval mode, never trained
  std::string dir;                          // run directory
  std::string config_toml;                  // the resolved configuration, stored in every checkpoint
  std::optional<engine::Checkpoint> resume;  // --resume: the checkpoint whose stage is continued
  int rank = 0, world = 1;
  bool lead() const { return rank == 0; }
};

// SIGINT and SIGTERM stop a run after the current step (saving `last`) instead of killing it.
void install_stop_signals();

// Throws engine::Error naming the first parameter or buffer (BatchNorm running statistics) that is not finite,
// at the end of `epoch` (1-based) or, when step >= 0, after that step of it.
void require_finite_state(layers::Module& model, const std::string& stage, int epoch, int64_t step = -1);

// The divergence guard: throws engine::Error naming the first parameter (and with_buffers, buffer) that differs
// between MPI ranks, the rank that holds another value, and `where`. Every rank must call it; a no-op alone.
void require_same_on_all_ranks(layers::Module& model, bool with_buffers, const std::string& where);

class StageRunner {
 public:
  StageRunner(TrainingRun& run, RunOptions options, RunState state, const RunLog& log);
  // Runs the remaining stages. Returns the exit code: 0 when finished or stopped by --stop-after-steps,
  // 128 + signal when stopped by a signal.
  int run();

 private:
  struct EpochTotals {
    float lr = 0;                // LR of the last step
    int64_t seen_before = 0;     // images of this epoch run before a resume
    int64_t steps = 0, skipped = 0;  // of this epoch in this process; skipped by --on-nan skip
    double seconds = 0;
  };
  bool run_stage(int si);
  std::vector<std::string> prepare_stage(int si, const Stage& st, bool resumed_mid_stage);
  // Runs the rest of the current epoch; false when stopped.
  bool run_epoch(Trainer& trainer, data::Loader& loader, const engine::LrSchedule& sched, const Stage& st,
                 EpochTotals& totals);
  void finish_epoch(const Stage& st, const EpochTotals& totals, StageSummary& summary, engine::SGD& opt);
  void on_nonfinite(const std::string& nonfinite, float loss, const Stage& st, int64_t batch);
  bool save_or_stop(engine::SGD& opt, const Stage& st, bool epoch_done);
  void save(const std::string& name, const engine::SGD* opt, const RunState& state) const;
  RunState state_over_ranks() const;  // every rank must call it

  TrainingRun& run_;
  const RunOptions options_;
  RunState state_;
  const RunLog& log_;
  std::vector<StageSummary> summaries_;
  std::chrono::steady_clock::time_point t0_, last_save_;
  int64_t steps_this_process_ = 0;
  std::set<int64_t> test_nan_steps_;  // QIL_TEST_NAN_STEPS (test-only)
  int exit_code_ = 0;
};

}  // namespace apps::training
