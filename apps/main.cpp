// The `qil` command: subcommands train, eval, models, inspect, bench, bench-data, export, predict. Every error
// is reported on one line naming the bad value or file, with a non-zero exit code.
#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "apps/bench.h"
#include "apps/bench_data.h"
#include "apps/commands.h"
#include "apps/config.h"
#include "apps/export.h"
#include "apps/train.h"
#include "engine/check.h"
#include "engine/dist.h"

namespace {

struct DistScope {
  DistScope(int* argc, char*** argv) { engine::dist::init(argc, argv); }
  ~DistScope() { engine::dist::finalize(); }
};

}  // namespace

int main(int argc, char** argv) {
  DistScope dist(&argc, &argv);
  CLI::App app{"qil: train convolutional networks on CPUs and quantize them to 2-8 bits with learned "
               "quantization intervals (QIL)"};
  app.name("qil");
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  apps::TrainConfig cfg;
  CLI::App* train = app.add_subcommand("train", "train a network (full precision and/or quantized stages)");
  apps::add_train_flags(*train, cfg);

  apps::EvalOptions eval_opt;
  CLI::App* eval = app.add_subcommand("eval", "top-1/top-5 accuracy of a checkpoint on a dataset");
  apps::add_eval_flags(*eval, eval_opt);

  apps::ModelsOptions models_opt;
  CLI::App* models = app.add_subcommand("models", "list the model zoo: parameters and FLOPs");
  apps::add_models_flags(*models, models_opt);

  apps::InspectOptions inspect_opt;
  CLI::App* inspect = app.add_subcommand("inspect", "what each quantized layer learned (intervals, thresholds)");
  apps::add_inspect_flags(*inspect, inspect_opt);

  apps::BenchOptions bench_opt;
  CLI::App* bench = app.add_subcommand("bench", "training-step throughput (img/s) on synthetic data");
  apps::add_bench_flags(*bench, bench_opt);

  apps::BenchDataOptions bench_data_opt;
  CLI::App* bench_data = app.add_subcommand("bench-data", "input-pipeline throughput (img/s) on an ImageNet-style folder");
  apps::add_bench_data_flags(*bench_data, bench_data_opt);

  apps::ExportOptions export_opt;
  CLI::App* export_cmd = app.add_subcommand("export", "write a checkpoint as safetensors (float or integer weights)");
  apps::add_export_flags(*export_cmd, export_opt);

  apps::PredictOptions predict_opt;
  CLI::App* predict = app.add_subcommand("predict", "logits of a .npy batch (float32 N,C,H,W) as .npy");
  apps::add_predict_flags(*predict, predict_opt);

  try {
    // A config file (--config, or a resumed run's own config.toml) supplies tokens ahead of the command line,
    // so that flags given on the command line win.
    std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == "train") {
      std::vector<std::string> rest(args.begin() + 1, args.end());
      std::string config = apps::find_config_arg(rest);
      std::string resume;
      for (size_t i = 0; i < rest.size(); ++i) {
        if (rest[i] == "--resume" && i + 1 < rest.size()) resume = rest[i + 1];
        if (rest[i].rfind("--resume=", 0) == 0) resume = rest[i].substr(9);
      }
      if (config.empty() && !resume.empty()) {
        config = (std::filesystem::path(resume) / "config.toml").string();
        QIL_CHECK(std::filesystem::exists(config), "--resume: '", resume, "' is not a run directory (no config.toml)");
      }
      if (!config.empty()) {
        QIL_CHECK(std::filesystem::exists(config), "--config: no such file '", config, "'");
        std::vector<std::string> tokens = apps::config_file_tokens(config, *train, cfg);
        tokens.insert(tokens.begin(), "train");
        tokens.insert(tokens.end(), rest.begin(), rest.end());
        args = tokens;
      }
    }
    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them back to front
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const engine::Error& e) {
    std::cerr << "qil: error: " << e.what() << "\n";
    return 2;
  }

  try {
    if (*train) return apps::run_train(cfg);
    if (*eval) return apps::run_eval(eval_opt);
    if (*models) return apps::run_models(models_opt);
    if (*inspect) return apps::run_inspect(inspect_opt);
    if (*bench) return apps::run_bench(bench_opt);
    if (*bench_data) return apps::run_bench_data(bench_data_opt);
    if (*export_cmd) return apps::run_export(export_opt);
    if (*predict) return apps::run_predict(predict_opt);
  } catch (const engine::Error& e) {
    std::cerr << "qil: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "qil: internal error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
