// The training job. One stage after another; within a stage, epochs of SGD with the stage's LR schedule,
// quantizer constraints after every step, evaluation after every epoch, and an atomic `last` checkpoint
// (plus `best` by validation accuracy) that `--resume` continues from, mid-epoch if need be.
#include "apps/train.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <nlohmann/json.hpp>

#include "apps/data_setup.h"
#include "apps/model_io.h"
#include "apps/progress.h"
#include "apps/report.h"
#include "apps/stages.h"
#include "data/imagenet.h"
#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/serialize.h"
#include "layers/basic.h"
#include "layers/quantize.h"

namespace apps {

namespace fs = std::filesystem;
using engine::Error;
using engine::str_cat;
using engine::Tensor;
using nlohmann::json;

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Where a run stands: the next batch to run.
struct Position {
  int stage = 0;
  int epoch = 0;          // within the stage
  int64_t batch = 0;      // within the epoch
  int64_t step = 0;       // optimizer steps within the stage
  int64_t global_epoch = 0;
  std::vector<double> best_val;  // per stage, -1 = none yet
  // The running training statistics of the current epoch, so a resumed epoch reports the whole epoch.
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
};

json position_json(const Position& p) {
  return json{{"stage", p.stage}, {"epoch", p.epoch}, {"batch", p.batch}, {"step", p.step},
              {"global_epoch", p.global_epoch}, {"best_val", p.best_val}, {"loss_sum", p.loss_sum},
              {"correct", p.correct}, {"seen", p.seen}};
}
Position position_from_json(const json& j) {
  Position p;
  p.stage = j.at("stage").get<int>();
  p.epoch = j.at("epoch").get<int>();
  p.batch = j.at("batch").get<int64_t>();
  p.step = j.at("step").get<int64_t>();
  p.global_epoch = j.at("global_epoch").get<int64_t>();
  p.best_val = j.at("best_val").get<std::vector<double>>();
  p.loss_sum = j.value("loss_sum", 0.0);
  p.correct = j.value("correct", int64_t{0});
  p.seen = j.value("seen", int64_t{0});
  return p;
}

// Dropout generators are the only model-side randomness; they travel with the checkpoint.
json rng_json(layers::Module& m) {
  json out = json::object();
  for (auto& [name, mod] : m.named_modules())
    if (auto* d = dynamic_cast<layers::Dropout*>(mod)) {
      const uint64_t* s = d->generator().state();
      out[name] = {s[0], s[1], s[2], s[3]};
    }
  return out;
}
void rng_restore(layers::Module& m, const json& j) {
  for (auto& [name, mod] : m.named_modules())
    if (auto* d = dynamic_cast<layers::Dropout*>(mod); d && j.contains(name)) {
      uint64_t s[4];
      for (int i = 0; i < 4; ++i) s[i] = j[name][i].get<uint64_t>();
      d->generator().set_state(s);
    }
}

struct Run {
  TrainConfig cfg;
  std::vector<Stage> stages;
  RunData data;
  ModelMeta meta;
  std::unique_ptr<layers::Module> model;
  std::string dir;
  bool lead = true;  // rank 0: logs and writes
  int rank = 0, world = 1;
};

void save_checkpoint(Run& r, const std::string& name, const engine::SGD* opt, const Position& pos) {
  if (!r.lead) return;
  engine::Checkpoint ck;
  add_model(ck, *r.model, r.meta);
  if (opt) ck.add_tensors(opt->export_state(), "optim.");
  ck.add_json("run_state", json{{"position", position_json(pos)}, {"rng", rng_json(*r.model)}}.dump());
  ck.add_text("config", to_toml(r.cfg));
  engine::write_checkpoint((fs::path(r.dir) / name).string(), ck);
}

std::vector<engine::ParamGroup> param_groups(layers::Module& m, const TrainConfig& cfg) {
  engine::ParamGroup w("weights", {}, 1.f, static_cast<float>(cfg.weight_decay));
  engine::ParamGroup nd("no_decay", {}, 1.f, 0.f);
  engine::ParamGroup q("quant", {}, static_cast<float>(cfg.quant_lr_scale), 0.f);
  // Activation intervals get a group of their own only when their LR differs (old checkpoints name one group).
  engine::ParamGroup qa("quant_act", {}, static_cast<float>(cfg.quant_lr_scale * cfg.act_quant_lr_scale), 0.f);
  const bool own_act_group = cfg.act_quant_lr_scale != 1.0;
  auto is_act_interval = [](const std::string& n) {
    return n.rfind("act_quant.", 0) == 0 || n.find(".act_quant.") != std::string::npos;
  };
  for (auto& p : m.named_parameters()) {
    if (!p.tensor.requires_grad()) continue;
    engine::ParamGroup& g = p.kind == layers::ParamKind::weight ? w
                            : p.kind != layers::ParamKind::quant ? nd
                            : own_act_group && is_act_interval(p.name) ? qa
                                                                       : q;
    g.params.push_back(p.tensor);
    g.param_names.push_back(p.name);
  }
  std::vector<engine::ParamGroup> out;
  for (auto* g : {&w, &nd, &q, &qa})
    if (!g->params.empty()) out.push_back(*g);
  return out;
}

engine::LrSchedule make_schedule(const TrainConfig& cfg, const Stage& st) {
  const int epochs = st.epochs;
  const float base = static_cast<float>(st.lr > 0 ? st.lr : cfg.lr);
  engine::LrSchedule s = engine::LrSchedule::constant(base);
  if (cfg.schedule == "cosine") {
    s = engine::LrSchedule::cosine(base, epochs);
  } else if (cfg.schedule == "multistep") {
    std::vector<double> ms;
    std::stringstream ss(cfg.milestones);
    for (std::string t; std::getline(ss, t, ',');)
      if (!t.empty()) ms.push_back(std::stod(t));
    QIL_CHECK(!ms.empty(), "--schedule multistep needs --milestones (e.g. 30,60)");
    s = engine::LrSchedule::multistep(base, ms, static_cast<float>(cfg.lr_gamma));
  }
  if (cfg.warmup_epochs > 0) s.with_warmup(cfg.warmup_epochs);
  return s;
}

std::string fmt_pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

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

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  QIL_CHECK(f.good(), "cannot append to ", path);
  f << line << '\n';
}

// One intervals.jsonl row per quantized layer; epoch 0 is the state at the start of the stage.
void append_interval_rows(const std::string& path, layers::Module& model, int stage, const std::string& stage_name,
                          int epoch) {
  for (const auto& rep : layers::quant_report(model)) {
    json j = layer_report_json(rep);
    j["stage"] = stage + 1;
    j["stage_name"] = stage_name;
    j["epoch"] = epoch;
    append_line(path, j.dump());
  }
}

}  // namespace

EvalResult evaluate(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                    int64_t workers, const std::string& progress, const std::string& label) {
  engine::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = false;
  lo.workers = workers;
  data::Loader loader(ds, lo);
  loader.start_epoch(0);
  Progress bar(label, ds->size(), progress_mode(progress));
  EvalResult r;
  double loss_sum = 0;
  int64_t c1 = 0, c5 = 0;
  data::Batch b;
  while (loader.next(b)) {
    Tensor logits = model.forward(b.images);
    const int64_t n = b.labels.size(0);
    loss_sum += engine::ops::softmax_cross_entropy(logits, b.labels).item() * n;
    c1 += engine::ops::topk_correct(logits, b.labels, 1);
    c5 += engine::ops::topk_correct(logits, b.labels, std::min<int64_t>(5, logits.size(1)));
    r.count += n;
    bar.update(r.count, "");
  }
  bar.finish();
  model.train(was_training);
  if (r.count) {
    r.loss = loss_sum / r.count;
    r.top1 = 100.0 * c1 / r.count;
    r.top5 = 100.0 * c5 / r.count;
  }
  return r;
}

void calibrate_on(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                  int64_t batches, int64_t workers) {
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.shuffle = false;
  lo.workers = workers;
  data::Loader calib(ds, lo);
  calib.start_epoch(0);
  layers::calibrate(model, batches, [&](Tensor& x) {
    data::Batch b;
    if (!calib.next(b)) return false;
    x = b.images;
    return true;
  });
}

int run_train(TrainConfig cfg) {
  validate(cfg);
  Run r;
  r.rank = engine::dist::rank();
  r.world = engine::dist::world_size();
  r.lead = r.rank == 0;
  if (cfg.threads > 0) omp_set_num_threads(static_cast<int>(cfg.threads));
  // Activations stay in oneDNN's blocked layout between the ops that support it (docs/performance.md).
  engine::ops::set_keep_blocked(true);
  r.stages = parse_stages(cfg.stages, cfg.stage_epochs.empty() ? std::to_string(cfg.epochs) : cfg.stage_epochs,
                          cfg.stage_lr);
  if (cfg.out.empty()) {
    std::string s = cfg.stages;
    for (char& ch : s)
      if (ch == ',') ch = '-';
    cfg.out = "runs/" + cfg.model + "-" + s;
  }
  r.dir = cfg.resume.empty() ? cfg.out : cfg.resume;
  if (r.lead) check_writable_dir(r.dir);

  // Where the network comes from: a run to resume, an --init file, or fresh initialization.
  std::optional<engine::Checkpoint> resume_ck;
  std::optional<LoadedModel> init;
  engine::NamedTensors init_safetensors;
  if (!cfg.resume.empty()) {
    const std::string path = (fs::path(cfg.resume) / "last.ckpt").string();
    QIL_CHECK(fs::exists(path), "--resume: no checkpoint ", path, " to continue from");
    resume_ck = engine::read_checkpoint(path);
    r.meta = meta_from_json(json::parse(resume_ck->text("model_meta")), path);
  } else if (!cfg.init.empty()) {
    QIL_CHECK(fs::exists(cfg.init), "--init: no such file '", cfg.init, "'");
    if (is_safetensors_path(cfg.init)) {
      init_safetensors = engine::read_safetensors(cfg.init).tensors;
    } else {
      init = load_model_checkpoint(cfg.init);
      r.meta = init->meta;
      QIL_CHECK(init->meta.model == cfg.model, "--init ", cfg.init, " holds a '", init->meta.model,
                "' network, but --model is '", cfg.model, "'");
    }
  }
  // The teacher (--targets teacher): the --init network as it was, in eval mode, never trained.
  std::unique_ptr<layers::Module> teacher;
  if (cfg.targets == "teacher") {
    QIL_CHECK(!cfg.init.empty() && !is_safetensors_path(cfg.init),
              "--targets teacher needs --init with a qil checkpoint (the teacher), got '", cfg.init, "'");
    teacher = load_model_checkpoint(cfg.init).model;
    teacher->eval();
  }
  r.data = load_run_data(cfg, r.meta.mean, r.meta.std);
  r.cfg = cfg;
  if (resume_ck || init) {
    QIL_CHECK(r.meta.spec.in_channels == r.data.in_channels && r.meta.spec.num_classes >= r.data.num_classes,
              "the network (", r.meta.spec.in_channels, " channels, ", r.meta.spec.num_classes,
              " classes) does not fit the data (", r.data.in_channels, " channels, ", r.data.num_classes,
              " classes)");
  } else {
    r.meta.model = cfg.model;
    r.meta.spec = layers::ModelSpec{r.data.in_channels, r.data.num_classes, r.data.image_size, cfg.seed};
    r.meta.mean = r.data.mean;
    r.meta.std = r.data.std;
  }
  Position pos;
  pos.best_val.assign(r.stages.size(), -1.0);
  if (init) {
    r.model = std::move(init->model);
  } else {
    r.model = layers::build_model(r.meta.model, r.meta.spec);
    if (!init_safetensors.empty()) load_model_tensors(*r.model, init_safetensors, cfg.init, true);
  }
  json resume_rng;
  if (resume_ck) {
    apply_quant_layout(*r.model, json::parse(resume_ck->text("quant_layout")), r.dir);
    load_model_tensors(*r.model, resume_ck->tensors("model."), r.dir + "/last.ckpt", false);
    json rs = json::parse(resume_ck->text("run_state"));
    pos = position_from_json(rs.at("position"));
    resume_rng = rs.value("rng", json::object());
    rng_restore(*r.model, resume_rng);
    QIL_CHECK(pos.stage < static_cast<int>(r.stages.size()), "--resume: the run has finished all its stages");
    pos.best_val.resize(r.stages.size(), -1.0);
  }
  {  // every rank starts from rank 0's parameters
    std::vector<Tensor> all;
    for (auto& p : r.model->named_parameters()) all.push_back(p.tensor);
    for (auto& b : r.model->named_buffers()) all.push_back(b.tensor);
    engine::dist::broadcast(all, 0);
  }

  const std::string metrics_path = (fs::path(r.dir) / "metrics.csv").string();
  const std::string intervals_path = (fs::path(r.dir) / "intervals.jsonl").string();
  if (r.lead) {
    std::ofstream(fs::path(r.dir) / "config.toml") << to_toml(cfg);
    if (!fs::exists(metrics_path))
      append_line(metrics_path,
                  "stage,stage_name,epoch,global_epoch,lr,train_loss,train_top1,val_loss,val_top1,val_top5,"
                  "test_loss,test_top1,test_top5,img_per_s,wall_s");
    std::cout << "qil train: " << r.meta.model << " (" << r.model->num_parameters() << " parameters) on "
              << r.data.train_name << ": " << r.data.train->size() << " train, "
              << (r.data.val ? r.data.val->size() : 0) << " val, " << (r.data.test ? r.data.test->size() : 0)
              << " test (" << r.data.test_name << "); stages " << cfg.stages << "; run directory " << r.dir
              << (resume_ck ? " (resumed)" : "") << std::endl;
  }
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);

  struct StageResult {
    std::string name;
    int epochs = 0;
    EvalResult val, test;
    double best_val = -1, test_at_best = -1;
  };
  std::vector<StageResult> results;
  const auto t0 = std::chrono::steady_clock::now();
  int64_t steps_this_process = 0;

  for (int si = pos.stage; si < static_cast<int>(r.stages.size()); ++si) {
    const Stage& st = r.stages[si];
    const bool resumed_here = resume_ck && si == pos.stage && (pos.epoch > 0 || pos.batch > 0);
    layers::QuantPlan plan;
    plan.wbits = st.wbits;
    plan.abits = st.abits;
    plan.first_last_8bit = cfg.first_last == "8";
    plan.fix_gamma = cfg.fix_gamma;
    plan.overrides = cfg.layers;
    const auto qnames = layers::apply_quant_plan(*r.model, plan);
    QIL_CHECK(!st.quantized() || !qnames.empty(), "stage ", st.name(), ": the model has no layer to quantize");
    layers::freeze_weights(*r.model, cfg.freeze_weights && st.quantized());
    layers::freeze_intervals(*r.model, cfg.freeze_intervals);
    layers::freeze_output_scales(*r.model, cfg.quant_recipe == "paper");
    if (st.quantized()) {  // new quantizers get their intervals from a few training batches
      calibrate_on(*r.model, r.data.calib, cfg.batch, cfg.calib_batches, cfg.workers);
      // Where this stage's intervals start (calibration, or the previous stage's): epoch 0 of the stage.
      if (r.lead && !resumed_here) append_interval_rows(intervals_path, *r.model, si, st.name(), 0);
    }
    engine::SGD opt(param_groups(*r.model, cfg), static_cast<float>(cfg.momentum), cfg.nesterov);
    if (resume_ck && si == pos.stage) opt.import_state(resume_ck->tensors("optim."));
    if (!(resume_ck && si == pos.stage)) {
      pos.epoch = 0;
      pos.batch = 0;
      pos.step = 0;
    }
    const engine::LrSchedule sched = make_schedule(cfg, st);
    data::LoaderOptions lo;
    lo.batch_size = cfg.batch;
    lo.shuffle = true;
    lo.drop_last = true;
    lo.seed = cfg.seed;
    lo.workers = cfg.workers;
    lo.rank = r.rank;
    lo.world_size = r.world;
    data::Loader loader(r.data.train, lo);
    const int64_t steps_per_epoch = loader.batches_per_epoch();
    QIL_CHECK(steps_per_epoch > 0, "--batch ", cfg.batch, " is larger than the training set (",
              r.data.train->size(), " images)");
    StageResult sr;
    sr.name = st.name();
    sr.epochs = st.epochs;
    sr.best_val = pos.best_val[si];
    if (r.lead)
      std::cout << "== stage " << si + 1 << "/" << r.stages.size() << ": " << st.name() << ", " << st.epochs
                << " epochs, " << qnames.size() << " quantized layers"
                << (cfg.freeze_weights && st.quantized() ? ", quantizer-only" : "")
                << (resumed_here ? str_cat(", resuming at epoch ", pos.epoch + 1, " batch ", pos.batch) : "")
                << std::endl;

    for (; pos.epoch < st.epochs; ++pos.epoch, ++pos.global_epoch) {
      r.model->train();
      loader.start_epoch(pos.global_epoch, pos.batch);
      Progress bar(str_cat(st.name(), " ", pos.epoch + 1, "/", st.epochs), (steps_per_epoch - pos.batch) * cfg.batch,
                   r.lead ? progress_mode(cfg.progress) : ProgressMode::none);
      double& loss_sum = pos.loss_sum;
      int64_t& correct = pos.correct;
      int64_t& seen = pos.seen;
      const int64_t seen_before = seen;  // images of this epoch run before a resume
      float lr = 0;
      auto last_save = std::chrono::steady_clock::now();
      data::Batch b;
      while (loader.next(b)) {
        lr = sched.lr(pos.step, steps_per_epoch);
        opt.zero_grad();
        Tensor logits = r.model->forward(b.images);
        Tensor loss;
        if (teacher) {
          Tensor soft;
          {
            engine::NoGradGuard ng;
            soft = engine::ops::softmax(teacher->forward(b.images));
          }
          loss = engine::ops::soft_cross_entropy(logits, soft);
        } else {
          loss = engine::ops::softmax_cross_entropy(logits, b.labels, static_cast<float>(cfg.label_smoothing));
        }
        const float lv = loss.item();
        QIL_CHECK(std::isfinite(lv), "training diverged: loss is ", lv, " at stage ", st.name(), " epoch ",
                  pos.epoch + 1, " batch ", b.index, " (try a lower --lr)");
        loss.backward();
        if (r.world > 1) {
          std::vector<Tensor> grads;
          for (auto& g : opt.groups())
            for (const Tensor& p : g.params)
              if (p.grad().defined()) grads.push_back(p.grad());
          engine::dist::allreduce_mean(grads);
        }
        if (st.quantized() && cfg.quant_recipe != "paper")
          layers::scale_quantizer_gradients(*r.model, layers::parse_grad_balance(cfg.quant_grad_scale));
        opt.step(lr);
        layers::project_quantizers(*r.model);
        const int64_t n = b.labels.size(0);
        loss_sum += lv * n;
        correct += engine::ops::topk_correct(logits.detach(), b.labels, 1);
        seen += n;
        ++pos.step;
        pos.batch = b.index + 1;
        bar.update(seen - seen_before, str_cat("loss ", fmt_pct(loss_sum / seen), " acc ", fmt_pct(100.0 * correct / seen), "%"));
        ++steps_this_process;
        const bool stop_requested = cfg.stop_after_steps > 0 && steps_this_process >= cfg.stop_after_steps;
        const bool stop = g_stop_signal != 0 || stop_requested;
        if (stop || std::chrono::steady_clock::now() - last_save > std::chrono::minutes(10)) {
          save_checkpoint(r, "last.ckpt", &opt, pos);
          last_save = std::chrono::steady_clock::now();
        }
        if (stop) {
          bar.finish();
          if (r.lead)
            std::cout << "stopped "
                      << (stop_requested ? str_cat("after ", steps_this_process, " steps")
                                         : str_cat("by signal ", g_stop_signal.load()))
                      << "; saved " << r.dir << "/last.ckpt; continue with: qil train --resume " << r.dir << "\n";
          return stop_requested ? 0 : 128 + g_stop_signal;
        }
      }
      bar.finish();
      if (r.world > 1) {  // BN statistics were gathered per rank: evaluate and save their average
        std::vector<Tensor> bufs;
        for (auto& b2 : r.model->named_buffers())
          if (b2.tensor.dtype() == engine::DType::f32) bufs.push_back(b2.tensor);
        engine::dist::allreduce_mean(bufs);
      }
      const double img_s = r.world * (seen - seen_before) / std::max(1e-9, bar.elapsed_seconds());  // all ranks
      const double epoch_loss = seen ? loss_sum / seen : 0.0, epoch_acc = seen ? 100.0 * correct / seen : 0.0;
      pos.batch = 0;
      pos.loss_sum = 0;
      pos.correct = pos.seen = 0;
      EvalResult val, test;
      if (r.data.val) val = evaluate(*r.model, r.data.val, cfg.batch, cfg.workers, r.lead ? cfg.progress : "none", "val");
      if (r.data.test) test = evaluate(*r.model, r.data.test, cfg.batch, cfg.workers, r.lead ? cfg.progress : "none", "test");
      sr.val = val;
      sr.test = test;
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      Position next = pos;
      ++next.epoch;
      ++next.global_epoch;
      bool is_best = false;
      if (r.data.val && val.top1 > pos.best_val[si]) {
        pos.best_val[si] = next.best_val[si] = val.top1;
        sr.best_val = val.top1;
        sr.test_at_best = test.top1;
        is_best = true;
      }
      if (r.lead) {
        char line[512];
        std::snprintf(line, sizeof line, "%d,%s,%d,%lld,%.6g,%.6f,%.4f,%.6f,%.4f,%.4f,%.6f,%.4f,%.4f,%.1f,%.1f", si + 1,
                      st.name().c_str(), pos.epoch + 1, static_cast<long long>(pos.global_epoch + 1), lr,
                      epoch_loss, epoch_acc, val.loss, val.top1,
                      val.top5, test.loss, test.top1, test.top5, img_s, wall);
        append_line(metrics_path, line);
        append_interval_rows(intervals_path, *r.model, si, st.name(), pos.epoch + 1);
        std::snprintf(line, sizeof line,
                      "[%s] epoch %d/%d  train loss %.4f acc %.2f%%  val %.2f%%  test %.2f%% (top-5 %.2f%%)  lr %.4g  "
                      "%.0f img/s  %s",
                      st.name().c_str(), pos.epoch + 1, st.epochs, epoch_loss, epoch_acc, val.top1, test.top1, test.top5,
                      lr, img_s,
                      format_duration(wall).c_str());
        std::cout << line << std::endl;
        if (auto* f = dynamic_cast<const data::ImageFolderDataset*>(r.data.train.get()); f && f->bad_files() > 0)
          std::cout << "  " << f->bad_files() << " undecodable training file(s) skipped so far (named above); "
                    << "the run stops past --max-bad-files " << cfg.max_bad_files << std::endl;
      }
      save_checkpoint(r, "last.ckpt", &opt, next);
      if (is_best) {
        save_checkpoint(r, "best-" + st.name() + ".ckpt", nullptr, next);
        save_checkpoint(r, "best.ckpt", nullptr, next);
      }
    }
    results.push_back(sr);
    pos.stage = si + 1;
    pos.epoch = 0;
    pos.batch = 0;
    pos.step = 0;
    resume_ck.reset();
  }
  // A finished run's `last` says so: resuming it has nothing to do.
  save_checkpoint(r, "last.ckpt", nullptr, pos);

  if (r.lead) {
    std::cout << "\n== summary (" << r.dir << ")\n";
    std::printf("%-10s %7s %10s %10s %10s\n", "stage", "epochs", "best val", "test@best", "final test");
    for (const auto& s : results)
      std::printf("%-10s %7d %9.2f%% %9.2f%% %9.2f%%\n", s.name.c_str(), s.epochs, s.best_val, s.test_at_best,
                  s.test.top1);
    const auto rep = layers::quant_report(*r.model);
    if (!rep.empty()) {
      std::cout << "\nlearned intervals (final stage):\n" << interval_table(rep);
      const auto calib = first_interval_rows(intervals_path);
      if (!calib.empty())
        std::cout << "\nmoved from calibration (each value: at calibration -> learned):\n" << movement_table(rep, calib);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace apps
