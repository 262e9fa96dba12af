// The `qil` command: subcommands train, eval, models, inspect, bench, bench-data, export, predict, compare. Every error
// is reported on one line naming the bad value or file, with a non-zero exit code; under mpirun the line names
// the rank and the error ends every rank of the job at once. The process-wide settings of the engine
// (allocator, activation layout, op profiler, collective watchdog) are set here, once, and nowhere else.
#include <CLI/CLI.hpp>

#include <iostream>
#include <string>

#include "apps/bench.h"
#include "apps/bench_data.h"
#include "apps/commands.h"
#include "apps/compare.h"
#include "apps/config.h"
#include "apps/export.h"
#include "apps/train.h"
#include "engine/check.h"
#include "engine/dist.h"
#include "engine/ops.h"

namespace {

// MPI only under a launcher (or QIL_MPI=1): a single process needs no MPI runtime.
struct DistScope {
  DistScope(int* argc, char*** argv) {
    if (engine::dist::launched_by_mpi()) engine::dist::init(argc, argv);
  }
  ~DistScope() { engine::dist::finalize(); }
};

// Reports an error on one line. Under MPI with several ranks the line names this rank, and the whole job ends
// here: the other ranks would otherwise wait for this one in their next collective.
int fail(const std::string& kind, const std::string& message, int code) {
  const int world = engine::dist::world_size();
  const std::string where =
      world > 1 ? " (rank " + std::to_string(engine::dist::rank()) + " of " + std::to_string(world) + ")" : "";
  std::cerr << "qil: " << kind << where << ": " << message << std::endl;
  if (world > 1) engine::dist::abort_job(code);
  return code;
}

// Every subcommand's options, bound to its flags.
struct Commands {
  apps::TrainConfig train_cfg;
  apps::EvalOptions eval_opt;
  apps::ModelsOptions models_opt;
  apps::InspectOptions inspect_opt;
  apps::BenchOptions bench_opt;
  apps::BenchDataOptions bench_data_opt;
  apps::ExportOptions export_opt;
  apps::PredictOptions predict_opt;
  apps::CompareOptions compare_opt;
  CLI::App *train = nullptr, *eval = nullptr, *models = nullptr, *inspect = nullptr, *bench = nullptr,
           *bench_data = nullptr, *export_cmd = nullptr, *predict = nullptr, *compare = nullptr;

  explicit Commands(CLI::App& app) {
    train = app.add_subcommand("train", "train a network (full precision and/or quantized stages)");
    apps::add_train_flags(*train, train_cfg);
    eval = app.add_subcommand("eval", "top-1/top-5 accuracy of a checkpoint on a dataset");
    apps::add_eval_flags(*eval, eval_opt);
    models = app.add_subcommand("models", "list the model zoo: parameters and FLOPs");
    apps::add_models_flags(*models, models_opt);
    inspect = app.add_subcommand("inspect", "what each quantized layer learned (intervals, thresholds)");
    apps::add_inspect_flags(*inspect, inspect_opt);
    bench = app.add_subcommand("bench", "training-step throughput (img/s) on synthetic data");
    apps::add_bench_flags(*bench, bench_opt);
    bench_data = app.add_subcommand("bench-data", "input-pipeline throughput (img/s) on an ImageNet-style folder");
    apps::add_bench_data_flags(*bench_data, bench_data_opt);
    export_cmd = app.add_subcommand("export", "write a checkpoint as safetensors (float or integer weights)");
    apps::add_export_flags(*export_cmd, export_opt);
    predict = app.add_subcommand("predict", "logits of a .npy batch (float32 N,C,H,W) as .npy");
    apps::add_predict_flags(*predict, predict_opt);
    compare = app.add_subcommand("compare", "compare finished runs: groups by settings, mean ± sd, paired 95% intervals");
    apps::add_compare_flags(*compare, compare_opt);
  }

  // The engine's process-wide switches for the chosen subcommand.
  void configure_engine() const {
    engine::ops::tune_malloc_for_training();
    // Activations stay in oneDNN's blocked layout between the ops that support it (docs/performance-history.md) where
    // the network trains or is measured; the other commands keep the plain layout their outputs are read in.
    engine::ops::set_keep_blocked(*train || *eval || (*bench && !bench_opt.plain));
    engine::ops::set_op_profiling(*bench && bench_opt.profile);
    apps::apply_precision(*train ? train_cfg.precision
                          : *eval ? eval_opt.precision
                          : *bench ? bench_opt.precision
                          : *predict ? predict_opt.precision
                                     : "fp32");
    engine::dist::set_collective_timeout(*train ? train_cfg.collective_timeout : 600);
  }

  int run() const {
    if (*train) return apps::run_train(train_cfg);
    if (*eval) return apps::run_eval(eval_opt);
    if (*models) return apps::run_models(models_opt);
    if (*inspect) return apps::run_inspect(inspect_opt);
    if (*bench) return apps::run_bench(bench_opt);
    if (*bench_data) return apps::run_bench_data(bench_data_opt);
    if (*export_cmd) return apps::run_export(export_opt);
    if (*predict) return apps::run_predict(predict_opt);
    if (*compare) return apps::run_compare(compare_opt);
    return 0;
  }
};

}  // namespace

int main(int argc, char** argv) {
  DistScope dist(&argc, &argv);
  CLI::App app{"qil: train convolutional networks on CPUs and quantize them to 2-8 bits with learned "
               "quantization intervals (QIL)"};
  app.name("qil");
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Commands cmd(app);
  try {
    app.parse(argc, argv);
    // A config file (--config, or a resumed run's own config.toml) fills what the command line left unset.
    if (*cmd.train) apps::apply_config_file(*cmd.train, cmd.train_cfg);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const engine::Error& e) {
    return fail("error", e.what(), 2);
  }
  try {
    cmd.configure_engine();
    return cmd.run();
  } catch (const engine::Error& e) {
    return fail("error", e.what(), 1);
  } catch (const std::exception& e) {
    return fail("internal error", e.what(), 1);
  }
}
