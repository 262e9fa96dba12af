// The setup of a training run, up to the first stage.
#include "apps/train.h"

#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/machine.h"
#include "apps/quant_flags.h"
#include "apps/training/stage_runner.h"
#include "engine/check.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/serialize.h"

namespace apps {

namespace fs = std::filesystem;
using engine::str_cat;
using engine::Tensor;
using nlohmann::json;
using training::RunState;
using training::TrainingRun;

namespace {

void check_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  QIL_CHECK(!ec, "--out: cannot create run directory '", dir, "': ", ec.message());
  const fs::path probe = fs::path(dir) / ".write-test";
  std::ofstream f(probe);
  QIL_CHECK(f.good(), "--out: run directory '", dir, "' is not writable");
  f.close();
  fs::remove(probe, ec);
}

// Where the network's weights come from before the data is known.
struct ModelSource {
  std::optional<layers::LoadedModel> init;   // --init with a qil checkpoint
  engine::NamedTensors init_safetensors;     // --init with a safetensors file
};

ModelSource read_model_source(const TrainConfig& cfg, TrainingRun& run, bool resume) {
  ModelSource src;
  if (resume) {
    const std::string path = (fs::path(cfg.resume) / "last.ckpt").string();
    run.resume = engine::read_checkpoint(path);
    QIL_CHECK(run.resume->has("model_meta"), "--resume: ", path, " is not a model checkpoint (no model_meta)");
    run.meta = layers::meta_from_json(json::parse(run.resume->text("model_meta")), path);
    // As --init: the network of the checkpoint is the one configured, or the run would silently train another.
    QIL_CHECK(run.meta.model == cfg.model, "--resume: ", path, " holds a '", run.meta.model,
              "' network, but --model is '", cfg.model, "' (from the command line or ", cfg.resume,
              "/config.toml)");
  } else if (!cfg.init.empty()) {
    QIL_CHECK(fs::exists(cfg.init), "--init: no such file '", cfg.init, "'");
    if (layers::is_safetensors_path(cfg.init)) {
      src.init_safetensors = engine::read_safetensors(cfg.init).tensors;
    } else {
      src.init = layers::load_model_checkpoint(cfg.init);
      run.meta = src.init->meta;
      QIL_CHECK(src.init->meta.model == cfg.model, "--init ", cfg.init, " holds a '", src.init->meta.model,
                "' network, but --model is '", cfg.model, "'");
    }
  }
  if (cfg.targets == "teacher" || cfg.distill > 0) {  // the --init network as it was, in eval mode, never trained
    QIL_CHECK(!cfg.init.empty() && !layers::is_safetensors_path(cfg.init), cfg.distill > 0 ? "--distill" : "--targets teacher",
              " needs --init with a qil checkpoint (the teacher), got '", cfg.init, "'");
    run.teacher = layers::load_model_checkpoint(cfg.init).model;
    run.teacher->eval();
  }
  return src;
}

// The network's meta (architecture, normalization) against the data: a loaded network must fit it, a fresh
// one is built for it. Either way the checkpoints of this run record how this run makes its inputs (side,
// evaluation transform, data kind), which is what `qil eval` and the other commands then reproduce.
void fit_meta_to_data(const TrainConfig& cfg, TrainingRun& run, bool loaded) {
  if (loaded) {
    QIL_CHECK(run.meta.spec.in_channels == run.data.in_channels && run.meta.spec.num_classes >= run.data.num_classes,
              "the network (", run.meta.spec.in_channels, " channels, ", run.meta.spec.num_classes,
              " classes) does not fit the data (", run.data.in_channels, " channels, ", run.data.num_classes,
              " classes)");
  } else {
    run.meta.model = cfg.model;
    run.meta.spec = layers::ModelSpec{run.data.in_channels, run.data.num_classes, run.data.image_size, cfg.seed};
    run.meta.mean = run.data.mean;
    run.meta.std = run.data.std;
  }
  run.meta.spec.image_size = run.data.image_size;
  run.meta.input.recorded = true;
  run.meta.input.data = cfg.data;
  run.meta.input.resize = run.data.eval_resize;
}

// Training a loaded network on another kind of data than it was trained on is allowed (quantizer-only training
// on other images), and said.
void note_other_data(const TrainConfig& cfg, const InputGeometry& net, const std::string& from) {
  if (!net.recorded || net.data.empty() || net.data == cfg.data || engine::dist::rank() != 0) return;
  std::cerr << "--data " << cfg.data << ": the network of " << from << " was trained on " << net.data
            << " data; this run trains it on " << cfg.data << std::endl;
}

// Builds the network and loads its starting point; a resumed run also returns where it stood.
RunState build_model(const TrainConfig& cfg, TrainingRun& run, ModelSource& src) {
  RunState state = RunState::start(run.stages.size());
  if (src.init) {
    run.model = std::move(src.init->model);
  } else {
    run.model = layers::build_model(run.meta.model, run.meta.spec);
    if (!src.init_safetensors.empty()) layers::load_model_tensors(*run.model, src.init_safetensors, cfg.init, true);
  }
  if (run.resume) {
    QIL_CHECK(run.resume->has("quant_layout"), run.dir, "/last.ckpt: no quant_layout section");
    layers::apply_quant_layout(*run.model, json::parse(run.resume->text("quant_layout")), run.dir + "/last.ckpt");
    layers::load_model_tensors(*run.model, run.resume->tensors("model."), run.dir + "/last.ckpt", false);
    const std::string ck = run.dir + "/last.ckpt";
    QIL_CHECK(run.resume->has("run_state"), ck, ": not a training checkpoint (no run_state section)");
    state = RunState::parse(run.resume->text("run_state"), ck);
    const training::RunPosition& p = state.position;
    // A checksum proves the bytes are the ones written, not that they make sense: check what indexes memory.
    QIL_CHECK(p.stage >= 0 && p.epoch >= 0 && p.batch >= 0 && p.step >= 0 && p.global_epoch >= 0 && p.seen >= 0 &&
                  p.correct >= 0 && p.correct <= p.seen && p.nan_skips >= 0,
              ck, ": run_state holds an impossible position (stage ", p.stage, ", epoch ", p.epoch, ", batch ", p.batch,
              ", step ", p.step, ")");
    QIL_CHECK(p.stage <= static_cast<int>(run.stages.size()), ck, ": run_state is at stage ", p.stage + 1,
              " but the run has ", run.stages.size());
    QIL_CHECK(p.stage == static_cast<int>(run.stages.size()) || p.epoch <= run.stages[p.stage].epochs, ck,
              ": run_state is at epoch ", p.epoch + 1, " of stage ", p.stage + 1, ", which has ",
              run.stages[static_cast<size_t>(std::min<int>(p.stage, static_cast<int>(run.stages.size()) - 1))].epochs);
    QIL_CHECK(state.position.stage < static_cast<int>(run.stages.size()),
              "--resume: the run has finished all its stages");
    state.position.best_val.resize(run.stages.size(), -1.0);
  }
  return state;
}

void broadcast_from_rank0(layers::Module& model) {  // every rank starts from rank 0's parameters
  std::vector<Tensor> all;
  for (auto& p : model.named_parameters()) all.push_back(p.tensor);
  for (auto& b : model.named_buffers()) all.push_back(b.tensor);
  engine::dist::broadcast(all, 0);
}

std::string run_header(const TrainConfig& cfg, const TrainingRun& run) {
  const std::string batch =
      cfg.accumulate == 1 && run.world == 1
          ? str_cat("batch ", cfg.batch)
          : str_cat("batch ", cfg.batch * cfg.accumulate * run.world, " (", cfg.batch, " x ", cfg.accumulate,
                    " micro-batches x ", run.world, " ranks)");
  const std::string reduce = run.world == 1               ? ""
                             : cfg.allreduce == "overlap" ? str_cat(", gradients all-reduced during backward in ",
                                                                    "buckets of up to ", cfg.bucket_mb, " MiB")
                                                          : ", gradients all-reduced after backward";
  return str_cat("qil train: ", run.meta.model, " (", run.model->num_parameters(), " parameters) on ",
                 run.data.train_name, ": ", run.data.train->size(), " train, ", run.data.val ? run.data.val->size() : 0,
                 " val, ", run.data.test ? run.data.test->size() : 0, " test (", run.data.test_name, "); stages ",
                 cfg.stages_text(), "; ", batch, reduce, "; run directory ", run.dir, run.resume ? " (resumed)" : "");
}

}  // namespace

DataOptions data_options(const TrainConfig& cfg) {
  DataOptions d;
  d.data = cfg.data;
  d.data_dir = cfg.data_dir;
  d.eval_data = cfg.eval_data;
  d.eval_data_dir = cfg.eval_data_dir;
  d.val_size = cfg.val_size;
  d.seed = cfg.seed;
  d.train_subset = cfg.train_subset;
  d.test_subset = cfg.test_subset;
  d.image_size = cfg.image_size;
  const auto has = [&](const char* name) {
    return std::find(cfg.augment.begin(), cfg.augment.end(), name) != cfg.augment.end();
  };
  d.crop = has("crop");
  d.flip = has("flip");
  d.crop_padding = cfg.crop_padding;
  d.max_bad_files = cfg.max_bad_files;
  d.max_idx_mb = cfg.max_idx_mb;
  return d;
}

Int8ForwardChoice resolve_int8_forward(const std::string& mode, const std::string& precision, int64_t image_side,
                                       bool vnni) {
  if (mode != "auto") return {mode == "true", str_cat("--int8-forward ", mode)};
  auto off = [](const std::string& why) { return Int8ForwardChoice{false, "--int8-forward auto: off (" + why + ")"}; };
  if (precision != "fp32") return off(str_cat("--precision ", precision, ": the float forward is faster there"));
  if (!vnni) return off("no VNNI in the int8 kernels of every rank: not measured faster there");
  if (image_side < kInt8ForwardMinSide)
    return off(str_cat(image_side, "-pixel images: measured faster from ", kInt8ForwardMinSide, " up"));
  return {true, str_cat("--int8-forward auto: on (fp32, VNNI, ", image_side, "-pixel images: measured faster)")};
}

training::RunOptions run_options(const TrainConfig& cfg) {
  training::RunOptions o;
  o.quant = quant_plan(cfg.quantizer, cfg.first_last, cfg.weight_calib, cfg.act_calib);
  o.quant.no_pruning = cfg.no_pruning;
  o.quant.lsq_symmetric = cfg.lsq_symmetric;
  o.quant.pact_calib = quant::parse_act_calib(cfg.pact_calib);
  o.quant.fix_gamma = cfg.fix_gamma;
  o.quant.recalibrate_weights = cfg.recalibrate_weights;
  o.quant.recalibrate_activations = cfg.recalibrate_activations;
  o.quant.overrides = cfg.layers;
  o.int8_forward = cfg.int8_forward == "true";  // run_train resolves auto first
  o.freeze_weights = cfg.freeze_weights;
  o.freeze_weight_intervals = cfg.freeze_intervals || cfg.freeze_weight_intervals;
  o.freeze_act_intervals = cfg.freeze_intervals || cfg.freeze_act_intervals;
  const bool paper = cfg.quant_recipe == "paper";  // the paper's rule alone: raw interval gradients, fixed scales
  o.freeze_output_scales = paper;
  o.calib_batches = cfg.calib_batches;
  o.step.balance = paper ? layers::GradBalance::none : layers::parse_grad_balance(cfg.quant_grad_scale);
  o.step.label_smoothing = static_cast<float>(cfg.label_smoothing);
  o.step.distill_t = static_cast<float>(cfg.distill);
  o.step.distill_weight = static_cast<float>(cfg.distill_weight);
  o.step.overlap = cfg.allreduce == "overlap";
  o.step.bucket_bytes = training::bucket_bytes(cfg.bucket_mb);
  o.momentum = cfg.momentum;
  o.nesterov = cfg.nesterov;
  o.weight_decay = cfg.weight_decay;
  o.quant_lr_scale = cfg.quant_lr_scale;
  o.act_quant_lr_scale = cfg.act_quant_lr_scale;
  o.pact_alpha_decay = cfg.pact_alpha_decay;
  o.lr = cfg.lr;
  o.schedule = cfg.schedule == "multistep" ? training::LrShape::multistep
               : cfg.schedule == "cosine"  ? training::LrShape::cosine
                                           : training::LrShape::constant;
  o.milestones = cfg.milestones;
  o.lr_gamma = cfg.lr_gamma;
  o.warmup_epochs = cfg.warmup_epochs;
  o.batch = cfg.batch;
  o.accumulate = cfg.accumulate;
  o.workers = cfg.workers;
  o.seed = cfg.seed;
  o.checkpoint_every_steps = cfg.checkpoint_every_steps;
  o.stop_after_steps = cfg.stop_after_steps;
  o.rank_check_every = cfg.rank_check_every;
  o.skip_nonfinite = cfg.on_nan == "skip";
  o.progress = training::progress_mode(cfg.progress);
  o.max_bad_files = cfg.max_bad_files;
  return o;
}

int run_train(TrainConfig cfg) {
  validate(cfg);
  if (cfg.threads > 0) omp_set_num_threads(static_cast<int>(cfg.threads));
  const HostLoad load = load_at_start();  // before the loader's and OpenMP's threads exist
  TrainingRun run;
  run.rank = engine::dist::rank();
  run.world = engine::dist::world_size();
  run.stages = cfg.stage_list();
  if (cfg.out.empty()) cfg.out = "runs/" + cfg.model + "-" + cfg.stages_text('-');
  run.dir = cfg.resume.empty() ? cfg.out : cfg.resume;
  std::vector<std::string> stale;
  if (run.lead()) {
    check_writable_dir(run.dir);
    stale = engine::remove_stale_temp_files(run.dir);  // left by a process killed while writing them
  }
  // A new run never appends to another run's history or replaces its checkpoints.
  for (const char* f : {"metrics.csv", "last.ckpt"})
    QIL_CHECK(!cfg.resume.empty() || !fs::exists(fs::path(run.dir) / f), "--out: '", run.dir,
              "' already holds a run (", f, "); continue it with --resume ", run.dir,
              ", or choose another --out (or delete it)");
  // A run stopped (killed, or by an error) before its first checkpoint has nothing to continue: --resume
  // starts it again from the beginning, with its config.toml.
  const bool restart = !cfg.resume.empty() && !fs::exists(fs::path(run.dir) / "last.ckpt");

  ModelSource src = read_model_source(cfg, run, !cfg.resume.empty() && !restart);
  const bool from_file = run.resume || src.init;  // a qil checkpoint, which records the network's inputs
  const InputGeometry net = network_input(run.meta);
  if (from_file) note_other_data(cfg, net, run.resume ? run.dir + "/last.ckpt" : cfg.init);
  run.data = load_run_data(data_options(cfg), from_file ? &net : nullptr);
  fit_meta_to_data(cfg, run, from_file);
  RunState state = build_model(cfg, run, src);
  broadcast_from_rank0(*run.model);
  // The step layout: a resumed run keeps its global batch on any number of ranks (or is refused here, before
  // anything is written), and every checkpoint records the layout it was written with.
  std::string layout_note;
  {
    training::RunPosition& p = state.position;
    const bool mid_stage = run.resume && (p.epoch > 0 || p.batch > 0) &&
                           p.epoch < run.stages[static_cast<size_t>(p.stage)].epochs;
    cfg.accumulate = training::resume_layout(p, cfg.batch, cfg.accumulate, run.world, mid_stage,
                                             run.dir + "/last.ckpt", layout_note);
    // The epoch sums are over all ranks; rank 0 carries them, the others add what they see from here on.
    if (!run.lead()) state.clear_epoch_sums();
  }

  // The integer forward's auto resolved once, the same on every rank, and recorded: a resumed run keeps it.
  const bool vnni = engine::dist::allreduce_sum_i64(engine::ops::int8_kernels_have_vnni() ? 1 : 0) == run.world;
  const bool int8_auto = cfg.int8_forward == "auto";
  const Int8ForwardChoice int8 = resolve_int8_forward(cfg.int8_forward, cfg.precision, run.data.image_size, vnni);
  cfg.int8_forward = int8.on ? "true" : "false";
  run.config_toml = to_toml(cfg);
  // Atomic: a kill while writing it must not leave a half config for the next --resume to read.
  if (run.lead()) engine::write_file_atomic((fs::path(run.dir) / "config.toml").string(), run.config_toml, "config");
  const training::RunLog log(run.dir, run.lead());
  for (const std::string& f : stale)
    log.line(str_cat("removed ", run.dir, "/", f, ", left by a process killed while writing it"));
  if (run.resume) {
    const auto& p = state.position;
    log.keep_until(p.stage + 1, p.epoch, p.epoch > 0 || p.batch > 0);
  } else if (restart) {
    log.keep_until(1, 0, false);
    log.line(str_cat("no last.ckpt in ", run.dir, ": the run stopped before its first checkpoint; starting it again"));
  }
  log.line(run_header(cfg, run));
  if (int8_auto) log.line(int8.why);  // what auto chose and why (config.toml records the choice)
  if (!layout_note.empty()) log.line(layout_note);
  if (const std::string hint = wait_policy_hint(load); !hint.empty()) log.line(hint);
  training::install_stop_signals();
  return training::StageRunner(run, run_options(cfg), std::move(state), log).run();
}

}  // namespace apps
