// Loading an inspect target: the checkpoint's final state, then the history files beside it.
#include "apps/inspect/target.h"

#include <filesystem>
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

}  // namespace

InspectData load_inspect_data(const std::string& target, std::unique_ptr<layers::Module>* model) {
  InspectData d;
  d.target = target;
  d.checkpoint = target;
  if (fs::is_directory(target)) {
    d.run_dir = target;
    d.checkpoint = (fs::path(target) / "last.ckpt").string();
    QIL_CHECK(fs::exists(d.checkpoint), "inspect: '", target, "' has no last.ckpt (is it a run directory?)");
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
