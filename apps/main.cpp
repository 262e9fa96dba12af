// The `qil` command: one table of subcommands (train, eval, models, inspect, bench, bench-data, export, predict,
// compare), each a name, a help line, its flags, its run function and what it asks of the engine's process-wide
// settings. Every error is reported on one line naming the bad value or file, with a non-zero exit code; under
// mpirun the line names the rank and the error ends every rank of the job at once. The process-wide settings of
// the engine (allocator, activation layout, op profiler, precision, collective watchdog) are set here, once, and
// nowhere else. Not any subcommand's work: each lives in its own apps/ file.
#include <CLI/CLI.hpp>

#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "apps/bench.h"
#include "apps/bench_data.h"
#include "apps/compare.h"
#include "apps/config.h"
#include "apps/eval.h"
#include "apps/export_cmd.h"
#include "apps/inspect_cmd.h"
#include "apps/machine.h"
#include "apps/models_cmd.h"
#include "apps/predict.h"
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

// What a subcommand asks of the engine's process-wide settings.
struct EngineSettings {
  // Activations stay in oneDNN's blocked layout between the ops that support it (docs/performance-history.md)
  // where the network trains or is measured; the other commands keep the plain layout their outputs are read in.
  bool keep_blocked = false;
  bool profile_ops = false;
  std::string precision = "fp32";
  double collective_timeout = 600;  // seconds (train's --collective-timeout); a no-op without MPI
};

// Every subcommand's options, bound to its flags.
struct Options {
  apps::TrainConfig train;
  apps::EvalOptions eval;
  apps::ModelsOptions models;
  apps::InspectOptions inspect;
  apps::BenchOptions bench;
  apps::BenchDataOptions bench_data;
  apps::ExportOptions export_;
  apps::PredictOptions predict;
  apps::CompareOptions compare;
};

struct Subcommand {
  const char* name;
  const char* help;
  std::function<void(CLI::App&)> add_flags;
  std::function<int()> run;
  std::function<EngineSettings()> engine = [] { return EngineSettings{}; };
  // After parsing, before anything runs: train's config file fills what the command line left unset.
  std::function<void(CLI::App&)> after_parse = [](CLI::App&) {};
};

// The subcommands, in the order `qil --help` lists them.
std::vector<Subcommand> subcommands(Options& o) {
  return {
      {"train", "train a network (full precision and/or quantized stages)",
       [&](CLI::App& a) { apps::add_train_flags(a, o.train); }, [&] { return apps::run_train(o.train); },
       [&] { return EngineSettings{true, false, o.train.precision, o.train.collective_timeout}; },
       [&](CLI::App& a) { apps::apply_config_file(a, o.train); }},
      {"eval", "top-1/top-5 accuracy of a checkpoint on a dataset",
       [&](CLI::App& a) { apps::add_eval_flags(a, o.eval); }, [&] { return apps::run_eval(o.eval); },
       [&] { return EngineSettings{true, false, o.eval.precision}; }},
      {"models", "list the model zoo: parameters and FLOPs",
       [&](CLI::App& a) { apps::add_models_flags(a, o.models); }, [&] { return apps::run_models(o.models); }},
      {"inspect", "what each quantized layer learned (intervals, thresholds)",
       [&](CLI::App& a) { apps::add_inspect_flags(a, o.inspect); }, [&] { return apps::run_inspect(o.inspect); }},
      {"bench", "training-step throughput (img/s) on synthetic data",
       [&](CLI::App& a) { apps::add_bench_flags(a, o.bench); }, [&] { return apps::run_bench(o.bench); },
       [&] { return EngineSettings{!o.bench.plain, o.bench.profile, o.bench.precision}; }},
      {"bench-data", "input-pipeline throughput (img/s) on an ImageNet-style folder",
       [&](CLI::App& a) { apps::add_bench_data_flags(a, o.bench_data); },
       [&] { return apps::run_bench_data(o.bench_data); }},
      {"export", "write a checkpoint as safetensors (float or integer weights)",
       [&](CLI::App& a) { apps::add_export_flags(a, o.export_); }, [&] { return apps::run_export(o.export_); }},
      {"predict", "logits of a .npy batch (float32 N,C,H,W) as .npy",
       [&](CLI::App& a) { apps::add_predict_flags(a, o.predict); }, [&] { return apps::run_predict(o.predict); },
       [&] { return EngineSettings{false, false, o.predict.precision}; }},
      {"compare", "compare finished runs: groups by settings, mean ± sd, paired 95% intervals",
       [&](CLI::App& a) { apps::add_compare_flags(a, o.compare); }, [&] { return apps::run_compare(o.compare); }},
  };
}

void configure_engine(const EngineSettings& s) {
  engine::ops::tune_malloc_for_training();
  engine::ops::set_keep_blocked(s.keep_blocked);
  engine::ops::set_op_profiling(s.profile_ops);
  apps::apply_precision(s.precision);
  engine::dist::set_collective_timeout(s.collective_timeout);
}

}  // namespace

int main(int argc, char** argv) {
  DistScope dist(&argc, &argv);
  CLI::App app{"qil: train convolutional networks on CPUs and quantize them to 2-8 bits with learned "
               "quantization intervals (QIL)"};
  app.name("qil");
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Options options;
  const std::vector<Subcommand> table = subcommands(options);
  std::vector<CLI::App*> parsers;
  for (const Subcommand& s : table) {
    parsers.push_back(app.add_subcommand(s.name, s.help));
    s.add_flags(*parsers.back());
  }
  const Subcommand* chosen = nullptr;
  try {
    app.parse(argc, argv);
    for (size_t i = 0; i < table.size(); ++i)
      if (*parsers[i]) {
        chosen = &table[i];
        chosen->after_parse(*parsers[i]);
      }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const engine::Error& e) {
    return fail("error", e.what(), 2);
  }
  if (!chosen) return 0;  // not reached: CLI11 requires one subcommand
  try {
    configure_engine(chosen->engine());
    return chosen->run();
  } catch (const engine::Error& e) {
    return fail("error", e.what(), 1);
  } catch (const std::exception& e) {
    return fail("internal error", e.what(), 1);
  }
}
