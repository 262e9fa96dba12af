// qil inspect.
#include "apps/inspect_cmd.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/data_setup.h"
#include "apps/inspect/activations.h"
#include "apps/inspect/page.h"
#include "apps/inspect/target.h"
#include "apps/training/report.h"
#include "engine/check.h"
#include "engine/serialize.h"

namespace apps {

using nlohmann::json;

void add_inspect_flags(CLI::App& app, InspectOptions& o) {
  app.add_option("target", o.target,
                 "run directory, a run's records without its checkpoint (intervals.jsonl: each layer's last record), "
                 "or checkpoint file")
      ->required();
  app.add_flag("--json", o.json, "print JSON (one object per layer)");
  app.add_flag("--csv", o.csv, "print CSV");
  app.add_option("--html", o.html, "write a self-contained HTML report to this file");
  app.add_option("--data", o.data,
                 "also measure each quantized layer's input on this data (fashion-mnist | idx | cifar10 | cifar100): "
                 "share zeroed and saturated by its activation quantizer");
  app.add_option("--data-dir", o.data_dir, "data folder for --data (fashion-mnist default: Debian's)");
  app.add_option("--batches", o.batches, "batches of --data to run")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size for --data")->capture_default_str();
  add_max_idx_flag(app, o.max_idx_mb);
}

namespace {
// How the network's inputs are made, in one line (what `qil predict` wants its .npy to hold).
std::string input_description(const InputGeometry& in) {
  std::ostringstream os;
  os << "input: " << in.channels << "x" << in.size << "x" << in.size;
  if (!in.recorded)
    os << " (how images were resized for it is not recorded: a checkpoint from before it was)";
  else if (in.resize > 0)
    os << " (" << (in.data.empty() ? "" : in.data + " images: ") << "shorter side resized to " << in.resize
       << ", center crop " << in.size << ")";
  else if (!in.data.empty())
    os << " (" << in.data << " images at their own size)";
  os << ", normalized with mean " << json(in.mean).dump() << " std " << json(in.std).dump();
  return os.str();
}
}  // namespace

int run_inspect(const InspectOptions& o) {
  QIL_CHECK(o.data.empty() || (o.batches >= 1 && o.batch >= 1), "inspect: --batches and --batch must be at least 1, "
            "got ", o.batches, " and ", o.batch);
  QIL_CHECK(!o.data.empty() || o.data_dir.empty(), "inspect: --data-dir needs --data");
  std::unique_ptr<layers::Module> model;
  InspectData in = load_inspect_data(o.target, o.data.empty() ? nullptr : &model);
  if (!o.data.empty()) {
    auto ds = load_eval_data(o.data, o.data_dir, o.batches * o.batch, network_input(in.meta), &in.data_name,
                             o.max_idx_mb);
    in.activations = activation_stats(*model, ds, o.batches, o.batch);
  }
  auto stats_of = [&](const std::string& layer) -> const ActivationStats* {
    for (const auto& s : in.activations)
      if (s.layer == layer) return &s;
    return nullptr;
  };
  if (!o.html.empty()) {
    engine::check_output_file(o.html, {{"target", o.target}}, "--html");
    std::ofstream f(o.html, std::ios::binary);
    QIL_CHECK(f.good(), "inspect: cannot write '", o.html, "'");
    f << html_report(in);
    f.close();
    QIL_CHECK(f.good(), "inspect: writing '", o.html, "' failed");
    if (!o.json && !o.csv) std::cerr << "inspect: wrote " << o.html << "\n";
  }
  if (o.json) {
    json arr = json::array();
    for (const auto& r : in.reports) {
      json j = training::layer_report_json(r);
      if (const ActivationStats* s = stats_of(r.name)) j["input_stats"] = activation_stats_json(*s);
      arr.push_back(j);
    }
    std::cout << arr.dump(2) << "\n";
  } else if (o.csv) {
    std::cout << training::interval_csv(in.reports);
  } else if (o.html.empty() || !o.data.empty()) {
    if (in.records_only)
      std::cout << in.checkpoint << ": " << (in.meta.model.empty() ? "model not recorded" : in.meta.model) << ", "
                << in.reports.size() << " quantized layers, each at its last record (no last.ckpt here: no "
                << "weights, no input description)\n";
    else
      std::cout << in.checkpoint << ": " << in.meta.model << ", " << in.reports.size() << " quantized layers\n"
                << input_description(network_input(in.meta)) << "\n";
    if (!in.reports.empty()) std::cout << training::interval_table(in.reports);
    if (!in.activations.empty()) {
      std::printf("\ninputs of the activation quantizers on %s:\n%-24s %10s %10s %10s %10s %12s\n",
                  in.data_name.c_str(), "layer", "%zeroed", "%saturated", "mean", "max", "values");
      for (const auto& s : in.activations)
        std::printf("%-24s %10.2f %10.2f %10.4f %10.4f %12lld\n", s.layer.c_str(), 100 * s.zeroed_fraction,
                    100 * s.saturated_fraction, s.mean, s.max, static_cast<long long>(s.values));
    }
  }
  return 0;
}

}  // namespace apps
