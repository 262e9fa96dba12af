// Loading an inspect target: the checkpoint's final state, then the history files beside it.
#include "apps/inspect/target.h"

#include <toml++/toml.h>

#include <filesystem>
#include <map>
#include <set>

#include "engine/check.h"

namespace apps {

namespace fs = std::filesystem;

namespace {

// The final weight of every layer that has a report (the page draws its histogram).
std::map<std::string, std::vector<float>> reported_weights(layers::Module& model,
                                                           const std::vector<layers::LayerReport>& reports) {
  std::set<std::string> reported;
  for (const auto& r : reports) reported.insert(r.name);
  std::map<std::string, std::vector<float>> out;
  for (auto& [name, l] : layers::quantizable_layers(model)) {
    if (!reported.count(name)) continue;
    const engine::Tensor w = l->weight();
    out[name].assign(w.data(), w.data() + w.numel());
  }
  return out;
}

void read_history(InspectData& d) {
  const fs::path dir(d.run_dir);
  if (fs::exists(dir / "metrics.csv")) d.metrics = read_metrics_csv((dir / "metrics.csv").string());
  if (fs::exists(dir / "intervals.jsonl"))
    d.intervals = read_intervals_jsonl((dir / "intervals.jsonl").string(), d.metrics);
}

// The model named by a run's config.toml ("" when there is none or it names none).
std::string configured_model(const fs::path& dir) {
  const fs::path cfg = dir / "config.toml";
  if (!fs::exists(cfg)) return "";
  try {
    return toml::parse_file(cfg.string())["model"].value_or(std::string());
  } catch (const toml::parse_error& e) {
    throw engine::Error(engine::str_cat("inspect: ", cfg.string(), ": ", e.description()));
  }
}

// A folder of records: each layer's last interval record is its final state, in the order layers first appear.
void load_records(InspectData& d, bool want_model) {
  const fs::path dir(d.run_dir);
  QIL_CHECK(fs::exists(dir / "intervals.jsonl"), "inspect: '", d.target,
            "' has neither last.ckpt nor intervals.jsonl (is it a run directory?)");
  QIL_CHECK(!want_model, "inspect: '", d.target, "' has no last.ckpt, only its records: --data needs the network's ",
            "weights (give a run directory with its checkpoint, or the checkpoint itself)");
  d.records_only = true;
  d.checkpoint = (dir / "intervals.jsonl").string();
  d.meta.model = configured_model(dir);
  read_history(d);
  QIL_CHECK(!d.intervals.empty(), "inspect: ", d.checkpoint, " holds no layer record");
  std::map<std::string, size_t> at;
  for (const IntervalRecord& r : d.intervals) {
    auto [it, added] = at.emplace(r.report.name, d.reports.size());
    if (added) d.reports.push_back(r.report);
    else d.reports[it->second] = r.report;
  }
}

}  // namespace

InspectData load_inspect_data(const std::string& target, std::unique_ptr<layers::Module>* model) {
  InspectData d;
  d.target = target;
  d.checkpoint = target;
  if (fs::is_directory(target)) {
    d.run_dir = target;
    d.checkpoint = (fs::path(target) / "last.ckpt").string();
    if (!fs::exists(d.checkpoint)) {
      load_records(d, model != nullptr);
      return d;
    }
  }
  QIL_CHECK(fs::exists(d.checkpoint), "inspect: no such file '", d.checkpoint, "'");
  QIL_CHECK(fs::is_regular_file(d.checkpoint), "inspect: '", d.checkpoint, "' is not a file");
  layers::LoadedModel lm;
  try {
    lm = layers::load_model_checkpoint(d.checkpoint);
  } catch (const engine::Error& e) {
    throw engine::Error(engine::str_cat("inspect: '", d.checkpoint, "' is not a readable model checkpoint: ", e.what()));
  }
  d.meta = lm.meta;
  d.reports = layers::quant_report(*lm.model);
  d.weights = reported_weights(*lm.model, d.reports);
  if (!d.run_dir.empty()) read_history(d);
  if (model) *model = std::move(lm.model);
  return d;
}

}  // namespace apps
