// The stage and epoch loop of `qil train`.
#include "apps/training/stage_runner.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "apps/training/fault_injection.h"
#include "data/imagenet.h"
#include "engine/check.h"
#include "engine/dist.h"
#include "layers/basic.h"
#include "layers/quantize.h"

namespace apps::training {

namespace fs = std::filesystem;
using engine::str_cat;
using engine::Tensor;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

engine::LrSchedule make_schedule(const RunOptions& o, const Stage& st) {
  const float base = static_cast<float>(st.lr > 0 ? st.lr : o.lr);
  engine::LrSchedule s = engine::LrSchedule::constant(base);
  if (o.schedule == LrShape::cosine) {
    s = engine::LrSchedule::cosine(base, st.epochs);
  } else if (o.schedule == LrShape::multistep) {
    s = engine::LrSchedule::multistep(base, o.milestones, static_cast<float>(o.lr_gamma));
  }
  if (o.warmup_epochs > 0) s.with_warmup(o.warmup_epochs);
  return s;
}

std::string fixed2(double v) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << v;
  return os.str();
}

// Batch statistics are gathered per rank during training: evaluate and save their average.
void average_buffers_across_ranks(layers::Module& model) {
  std::vector<Tensor> bufs;
  for (auto& b : model.named_buffers())
    if (b.tensor.dtype() == engine::DType::f32) bufs.push_back(b.tensor);
  engine::dist::allreduce_mean(bufs);
}

// Runs `fn` (a checkpoint write) with the buffers averaged over ranks, then puts each rank's own back: a save in
// the middle of an epoch leaves the run itself as it was, whenever the save happens. The running statistics
// are linear in the batch statistics, so a run resumed from the average ends the epoch where this one does,
// up to rounding.
template <class Fn>
void with_rank_mean_buffers(layers::Module& model, int world, Fn fn) {
  if (world == 1) return fn();
  std::vector<Tensor> own;
  for (auto& b : model.named_buffers())
    if (b.tensor.dtype() == engine::DType::f32) own.push_back(b.tensor.clone());
  average_buffers_across_ranks(model);
  fn();
  size_t i = 0;
  for (auto& b : model.named_buffers())
    if (b.tensor.dtype() == engine::DType::f32) b.tensor.copy_from(own[i++]);
}

// Test-only (QIL_TEST_RANK_CHECKPOINTS=1): ranks other than 0 write their checkpoints too, as NAME.rank<r>, so
// that a test can compare what every rank holds.
bool every_rank_saves() {
  const char* v = std::getenv("QIL_TEST_RANK_CHECKPOINTS");
  return v && std::string(v) == "1";
}

}  // namespace

void require_same_on_all_ranks(layers::Module& model, bool with_buffers, const std::string& where) {
  std::vector<Tensor> tensors;
  std::vector<std::string> names;
  for (auto& p : model.named_parameters()) {
    tensors.push_back(p.tensor);
    names.push_back(p.name);
  }
  if (with_buffers)
    for (auto& b : model.named_buffers()) {
      tensors.push_back(b.tensor);
      names.push_back(b.name);
    }
  const engine::dist::Divergence d = engine::dist::find_divergence(tensors);
  QIL_CHECK(!d.found(), "ranks diverged: ", names[static_cast<size_t>(d.index)], " on rank ", d.rank,
            " differs from rank 0's ", where, " (every rank must hold the same model; nothing was saved)");
}

void install_stop_signals() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

StageRunner::StageRunner(TrainingRun& run, RunOptions options, RunState state, const RunLog& log)
    : run_(run), options_(std::move(options)), state_(std::move(state)), log_(log), t0_(std::chrono::steady_clock::now()) {
  // Test-only (docs/reliability.md): QIL_TEST_NAN_STEPS=5,9 puts a NaN into the first pixel of the batches of
  // steps 5 and 9 (1-based, within a stage), as a corrupt input would, to test --on-nan.
  if (const char* env = std::getenv("QIL_TEST_NAN_STEPS")) {
    std::istringstream is(env);
    for (std::string item; std::getline(is, item, ',');) test_nan_steps_.insert(std::atoll(item.c_str()));
  }
}

int StageRunner::run() {
  for (int si = state_.position.stage; si < static_cast<int>(run_.stages.size()); ++si)
    if (!run_stage(si)) return exit_code_;
  save("last.ckpt", nullptr, state_);  // a finished run's `last` says so: resuming it has nothing to do
  log_.summary(summaries_, *run_.model);
  if (state_.position.nan_skips > 0)
    log_.line(str_cat(state_.position.nan_skips, " optimizer step(s) of this run were skipped for a non-finite ",
                      "loss or gradient (--on-nan skip; named above)"));
  return 0;
}

// The stage's quantization plan, what is frozen (weights and BN for quantizer-only training, intervals, output
// scales for the paper's recipe) and calibration of new intervals, logged as the stage's epoch 0.
std::vector<std::string> StageRunner::prepare_stage(int si, const Stage& st, bool resumed_mid_stage) {
  layers::QuantPlan plan = options_.quant;
  plan.wbits = st.wbits;
  plan.abits = st.abits;
  const auto qnames = layers::apply_quant_plan(*run_.model, plan);
  QIL_CHECK(!st.quantized() || !qnames.empty(), "stage ", st.name(), ": the model has no layer to quantize");
  layers::freeze_weights(*run_.model, options_.freeze_weights && st.quantized());
  layers::freeze_intervals(*run_.model, options_.freeze_weight_intervals, options_.freeze_act_intervals);
  layers::freeze_output_scales(*run_.model, options_.freeze_output_scales);
  const layers::Int8Layers ints = layers::set_int8_forward(*run_.model, options_.int8_forward);
  if (options_.int8_forward && !qnames.empty()) {
    std::string floats;
    for (const std::string& n : ints.floating) floats += (floats.empty() ? " (float: " : ", ") + n;
    log_.line(str_cat("stage ", st.name(), ": integer forward in ", ints.integer.size(), " of ",
                      ints.integer.size() + ints.floating.size(), " quantized layers", floats,
                      floats.empty() ? "" : ")"));
  }
  // New quantizers get their intervals from a few training batches: in a quantized stage, and in a full-precision
  // one whose per-layer table (`[layers.NAME]`) quantizes some layer anyway.
  if (!qnames.empty()) {
    calibrate_on(*run_.model, run_.data.calib, options_.batch, options_.calib_batches, options_.workers);
    // Where this stage's intervals start (calibration, or the previous stage's): epoch 0 of the stage.
    if (!resumed_mid_stage) log_.interval_rows(*run_.model, si + 1, st.name(), 0);
  }
  return qnames;
}

bool StageRunner::run_stage(int si) {
  const Stage& st = run_.stages[static_cast<size_t>(si)];
  RunPosition& pos = state_.position;
  const bool resuming = run_.resume.has_value() && si == pos.stage;
  const bool mid_stage = resuming && (pos.epoch > 0 || pos.batch > 0);
  const auto qnames = prepare_stage(si, st, mid_stage);
  engine::SGD opt(param_groups(*run_.model, options_.weight_decay, options_.quant_lr_scale, options_.act_quant_lr_scale,
                               options_.pact_alpha_decay),
                  static_cast<float>(options_.momentum), options_.nesterov);
  if (resuming) {
    // The momentum buffers are checked like the model's tensors (layers/model_io.h): they must fit the
    // optimizer and be finite; errors name the file.
    const std::string ck = run_.dir + "/last.ckpt";
    const engine::NamedTensors buffers = run_.resume->tensors("optim.");
    for (const auto& [name, t] : buffers) {
      if (t.dtype() != engine::DType::f32) continue;  // import_state refuses it, below
      const std::vector<float> v = t.to_vector();
      for (size_t i = 0; i < v.size(); ++i)
        QIL_CHECK(std::isfinite(v[i]), ck, ": optimizer buffer 'optim.", name, "' holds ", v[i], " at element ", i,
                  " (every value must be finite)");
    }
    try {
      opt.import_state(buffers);
    } catch (const engine::Error& e) {
      throw engine::Error(str_cat(ck, ": ", e.what()));
    }
  } else {
    state_.begin_stage(si);
  }
  const engine::LrSchedule sched = make_schedule(options_, st);
  data::Loader loader(run_.data.train, loader_options(LoaderUse::train, options_.batch, options_.workers, options_.seed,
                                                      run_.rank, run_.world, options_.accumulate));
  QIL_CHECK(loader.batches_per_epoch() >= options_.accumulate, "--batch ", options_.batch, " x --accumulate ",
            options_.accumulate, " is more than the ", loader.samples_per_rank(), " training images of each of the ",
            run_.world, " process(es)");
  StageSummary summary{st.name(), st.epochs, {}, {}, pos.best_val[static_cast<size_t>(si)], -1};
  log_.line(str_cat("== stage ", si + 1, "/", run_.stages.size(), ": ", st.name(), ", ", st.epochs, " epochs, ",
                    qnames.size(), " quantized layers",
                    options_.freeze_weights && st.quantized() ? ", quantizer-only" : "",
                    mid_stage ? str_cat(", resuming at epoch ", pos.epoch + 1, " batch ", pos.batch) : ""));
  StepOptions so = options_.step;
  if (qnames.empty()) so.balance = layers::GradBalance::none;
  so.teacher = run_.teacher.get();
  so.allreduce = run_.world > 1;
  Trainer trainer(*run_.model, opt, so);
  while (pos.epoch < st.epochs) {
    EpochTotals totals;
    if (!run_epoch(trainer, loader, sched, st, totals)) return false;
    finish_epoch(st, totals, summary, opt);
  }
  summaries_.push_back(summary);
  state_.begin_stage(si + 1);
  run_.resume.reset();
  return true;
}

// One optimizer step per `accumulate` micro-batches of the loader; an epoch's micro-batches that cannot fill a
// whole step are not read. Checkpoints are written at step boundaries only, so pos.batch (in micro-batches) is
// always a multiple of `accumulate` in a checkpoint.
bool StageRunner::run_epoch(Trainer& trainer, data::Loader& loader, const engine::LrSchedule& sched,
                            const Stage& st, EpochTotals& totals) {
  RunPosition& pos = state_.position;
  const int64_t k = options_.accumulate;
  const int64_t steps_per_epoch = loader.batches_per_epoch() / k;  // optimizer steps: what the LR schedule counts
  const int64_t end = steps_per_epoch * k;
  run_.model->train();
  loader.start_epoch(pos.global_epoch, pos.batch);
  Progress bar(str_cat(st.name(), " ", pos.epoch + 1, "/", st.epochs), (end - pos.batch) * options_.batch,
               run_.lead() ? options_.progress : ProgressMode::none);
  totals.seen_before = pos.seen;
  last_save_ = std::chrono::steady_clock::now();
  int64_t images = 0;  // of this process, for the progress bar
  const std::vector<layers::Stochastic*> stochastic = layers::stochastic_layers(*run_.model);
  data::Batch b;
  // Sums over the micro-batches of the step being accumulated: they count once the step is taken.
  double step_loss = 0;
  int64_t step_correct = 0, step_seen = 0;
  while (pos.batch < end && loader.next(b)) {
    if (test_nan_steps_.count(pos.step + 1)) b.images.data()[0] = std::nanf("");  // test-only, see the constructor
    // Each micro-batch's random numbers (dropout) from (epoch, its number among all ranks' micro-batches): the
    // ranks draw different ones, and the same whatever their number or a resume (layers::Stochastic).
    for (layers::Stochastic* l : stochastic) l->reseed(static_cast<uint64_t>(pos.global_epoch), static_cast<uint64_t>(b.micro));
    const StepResult r = trainer.accumulate(b.images, b.labels, (b.index + 1) % k == 0);
    step_loss += r.loss * r.count;
    step_correct += r.correct;
    step_seen += r.count;
    images += r.count;
    pos.batch = b.index + 1;
    if (pos.batch % k != 0) continue;
    totals.lr = sched.lr(pos.step, steps_per_epoch);
    const std::string nonfinite = trainer.apply(totals.lr);
    if (nonfinite.empty()) {
      pos.loss_sum += step_loss;
      pos.correct += step_correct;
      pos.seen += step_seen;
    } else {
      on_nonfinite(nonfinite, static_cast<float>(step_loss / std::max<int64_t>(step_seen, 1)), st, b.index);
      ++totals.skipped;
    }
    step_loss = 0;
    step_correct = step_seen = 0;
    ++totals.steps;
    ++pos.step;
    bar.update(images, pos.seen ? str_cat("loss ", fixed2(pos.loss_sum / pos.seen), " acc ",
                                          fixed2(100.0 * pos.correct / pos.seen), "%")
                                : std::string());
    ++steps_this_process_;
    inject_test_fault(run_.rank, steps_this_process_, *run_.model);
    if (run_.world > 1 && options_.rank_check_every > 0 && pos.step % options_.rank_check_every == 0)
      require_same_on_all_ranks(*run_.model, false, str_cat("after step ", pos.step, " of stage ", st.name()));
    if (save_or_stop(trainer.optimizer(), st, pos.batch == end)) {
      bar.finish();
      return false;
    }
  }
  bar.finish();
  totals.seconds = bar.elapsed_seconds();
  return true;
}

// --on-nan stop: the run ends here, before anything of this step is saved; skip: the step was not taken
// (Trainer::apply), it is counted and reported. `nonfinite` is "loss" or "gradient of <parameter>".
void StageRunner::on_nonfinite(const std::string& nonfinite, float loss, const Stage& st, int64_t batch) {
  RunPosition& pos = state_.position;
  const std::string what = nonfinite == "loss" ? str_cat("the loss is ", loss) : str_cat("the ", nonfinite,
                                                                                        " is not finite");
  const std::string where = str_cat("step ", pos.step + 1, " of stage ", st.name(), " (epoch ", pos.epoch + 1,
                                    ", batch ", batch + 1, ")");
  QIL_CHECK(options_.skip_nonfinite, "training diverged: ", what, " at ", where,
            "; the checkpoints hold the state before it (try a lower --lr, or --on-nan skip)");
  ++pos.nan_skips;
  log_.line(str_cat("skipped ", where, ": ", what, " (", pos.nan_skips, " step(s) skipped in this run)"));
}

// Saves `last` every --checkpoint-every-steps steps, every 10 minutes and when stopping (not on the epoch's
// last step: finish_epoch saves right after it); true when the run must stop now. Under MPI every rank takes
// the same decision: a signal or a save that is due on one rank counts for all (the save averages the running
// statistics across ranks, and a rank that stopped alone would leave the others waiting in the next step).
bool StageRunner::save_or_stop(engine::SGD& opt, const Stage& st, bool epoch_done) {
  const RunPosition& pos = state_.position;
  const bool stop_requested = options_.stop_after_steps > 0 && steps_this_process_ >= options_.stop_after_steps;
  std::vector<int64_t> due{g_stop_signal.load(),
                           std::chrono::steady_clock::now() - last_save_ > std::chrono::minutes(10) ? 1 : 0};
  if (run_.world > 1) engine::dist::allreduce_max_i64(due);
  const int signal = static_cast<int>(due[0]);
  const bool stop = signal != 0 || stop_requested;
  const bool every_n = options_.checkpoint_every_steps > 0 && pos.step % options_.checkpoint_every_steps == 0;
  double save_s = 0;
  if (stop || (!epoch_done && (every_n || due[1]))) {
    const auto t = std::chrono::steady_clock::now();
    require_finite_state(*run_.model, st.name(), pos.epoch + 1, pos.step);  // every rank: same parameters
    const RunState all = state_over_ranks();
    with_rank_mean_buffers(*run_.model, run_.world, [&] { save("last.ckpt", &opt, all); });
    last_save_ = std::chrono::steady_clock::now();
    save_s = std::chrono::duration<double>(last_save_ - t).count();
  }
  if (!stop) return false;
  // The save's time is what a launcher's grace between SIGTERM and SIGKILL must cover, with the step in progress
  // (docs/cluster.md, "Signals under launchers").
  log_.line(str_cat("stopped ",
                    stop_requested ? str_cat("after ", steps_this_process_, " steps") : str_cat("by signal ", signal),
                    "; saved ", run_.dir, "/last.ckpt in ", fixed2(save_s), " s; continue with: qil train --resume ",
                    run_.dir));
  exit_code_ = stop_requested ? 0 : 128 + signal;
  return true;
}

void StageRunner::finish_epoch(const Stage& st, const EpochTotals& totals, StageSummary& summary, engine::SGD& opt) {
  RunPosition& pos = state_.position;
  const size_t si = static_cast<size_t>(pos.stage);
  if (run_.world > 1) {
    average_buffers_across_ranks(*run_.model);
    require_same_on_all_ranks(*run_.model, true, str_cat("at the end of stage ", st.name(), " epoch ", pos.epoch + 1));
  }
  const int64_t seen_here = pos.seen - totals.seen_before;  // this rank's images of this process
  if (run_.world > 1) state_ = state_over_ranks();
  EpochRecord e;
  e.stage = pos.stage + 1;
  e.stage_name = st.name();
  e.epoch = pos.epoch + 1;
  e.epochs = st.epochs;
  e.global_epoch = pos.global_epoch + 1;
  e.lr = totals.lr;
  e.img_per_s = run_.world * seen_here / std::max(1e-9, totals.seconds);  // all ranks
  e.train_loss = pos.seen ? pos.loss_sum / pos.seen : 0.0;
  e.train_top1 = pos.seen ? 100.0 * pos.correct / pos.seen : 0.0;
  QIL_CHECK(totals.steps == 0 || totals.skipped < totals.steps, "training diverged: every step of stage ",
            st.name(), " epoch ", pos.epoch + 1, " had a non-finite loss or gradient and was skipped (--on-nan ",
            "skip); try a lower --lr");
  const ProgressMode progress = run_.lead() ? options_.progress : ProgressMode::none;
  if (run_.data.val) e.val = evaluate(*run_.model, run_.data.val, options_.batch, options_.workers, progress, "val");
  if (run_.data.test) e.test = evaluate(*run_.model, run_.data.test, options_.batch, options_.workers, progress, "test");
  e.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  summary.val = e.val;
  summary.test = e.test;
  const bool is_best = run_.data.val && e.val.top1 > pos.best_val[si];
  if (is_best) {
    pos.best_val[si] = summary.best_val = e.val.top1;
    summary.test_at_best = e.test.count > 0 ? e.test.top1 : -1;
  }
  require_finite_state(*run_.model, st.name(), pos.epoch + 1);
  state_.end_epoch();
  log_.epoch(e, *run_.model);
  if (auto* f = dynamic_cast<const data::ImageFolderDataset*>(run_.data.train.get()); f && f->bad_files() > 0)
    log_.line(str_cat("  ", f->bad_files(), " undecodable training file(s) skipped so far (named above); ",
                      "the run stops past --max-bad-files ", options_.max_bad_files));
  // `best` before `last`: `last` records that this epoch was the best, so a kill between the two writes must
  // find the best files already current (the other order left best-*.ckpt an epoch behind for good).
  if (is_best) {
    save("best-" + st.name() + ".ckpt", nullptr, state_);
    save("best.ckpt", nullptr, state_);
  }
  save("last.ckpt", &opt, state_);
}

// A loss can stay finite while BatchNorm's running statistics overflow (measured: --lr 100 ran to the end with
// every running_var infinite, saved as `best`). Nothing non-finite is ever saved: the run stops, naming it.
void require_finite_state(layers::Module& model, const std::string& stage, int epoch, int64_t step) {
  auto check = [&](const layers::NamedTensor& t) {
    if (t.tensor.dtype() != engine::DType::f32) return;
    const float* p = t.tensor.data();
    for (int64_t i = 0; i < t.tensor.numel(); ++i)
      QIL_CHECK(std::isfinite(p[i]), "training diverged: ", t.name, " holds ", p[i], " after stage ", stage,
                " epoch ", epoch, step >= 0 ? str_cat(" step ", step) : std::string(),
                "; it was not saved: the checkpoints hold the last finite state (try a lower --lr)");
  };
  for (const auto& p : model.named_parameters()) check(p);
  for (const auto& b : model.named_buffers()) check(b);
}

// The epoch's sums over every rank, held by rank 0 (each rank adds its own images; rank 0 also what a resumed
// checkpoint carried): what a checkpoint records and the epoch reports, whatever the number of ranks.
RunState StageRunner::state_over_ranks() const {
  RunState s = state_;
  if (run_.world == 1) return s;
  std::vector<double> sums{s.position.loss_sum, static_cast<double>(s.position.correct),
                           static_cast<double>(s.position.seen)};
  engine::dist::allreduce_sum_f64(sums);
  s.position.loss_sum = sums[0];
  s.position.correct = static_cast<int64_t>(sums[1]);
  s.position.seen = static_cast<int64_t>(sums[2]);
  return s;
}

void StageRunner::save(const std::string& name, const engine::SGD* opt, const RunState& state) const {
  if (!run_.lead() && !every_rank_saves()) return;
  engine::Checkpoint ck;
  layers::add_model(ck, *run_.model, run_.meta);
  if (opt) ck.add_tensors(opt->export_state(), "optim.");
  const RunState& s = state;
  ck.add_json("run_state", nlohmann::json(s).dump());
  ck.add_text("config", run_.config_toml);
  const std::string file = run_.lead() ? name : str_cat(name, ".rank", run_.rank);
  engine::write_checkpoint((fs::path(run_.dir) / file).string(), ck);
}

}  // namespace apps::training
