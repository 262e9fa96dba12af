// The setup of a training run, up to the first stage.
#include "apps/train.h"

#include <omp.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/training/stage_runner.h"
#include "engine/check.h"
#include "engine/dist.h"
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
  run.data = load_run_data(cfg, from_file ? &net : nullptr);
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
  if (!layout_note.empty()) log.line(layout_note);
  if (const std::string hint = wait_policy_hint(load); !hint.empty()) log.line(hint);
  training::install_stop_signals();
  return training::StageRunner(run, cfg, std::move(state), log).run();
}

}  // namespace apps
