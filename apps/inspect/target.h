// What `qil inspect` gathers about its target (a run directory or a checkpoint file): the final network's
// per-layer intervals and weights, the run's history when there is one, and room for activation statistics.
// Not the readers of the history files (history.h), not the measurement (activations.h), not the page.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "apps/inspect/activations.h"
#include "apps/inspect/history.h"
#include "layers/model_io.h"
#include "layers/quantize.h"

namespace apps {

// Everything the report shows. history may be empty (a bare checkpoint).
struct InspectData {
  std::string target;      // what the user named
  std::string run_dir;     // empty for a bare checkpoint
  std::string checkpoint;  // the file the final state comes from (intervals.jsonl for a folder of records)
  // A run's records without its checkpoint (the folders docs/results/runs/ keeps): the final state is each layer's
  // last record in intervals.jsonl, the model's name comes from config.toml, and there are no weights.
  bool records_only = false;
  layers::ModelMeta meta;
  std::vector<layers::LayerReport> reports;           // final state of every quantized layer
  std::map<std::string, std::vector<float>> weights;  // final full-precision weight of each reported layer
  std::vector<MetricsRow> metrics;
  std::vector<IntervalRecord> intervals;
  std::vector<ActivationStats> activations;  // empty unless measured
  std::string data_name;                     // the data activations were measured on
};
// Loads a run directory (last.ckpt plus history when present), a run's records without last.ckpt
// (intervals.jsonl, with metrics.csv and config.toml when present: records_only), or a checkpoint file. The model
// stays loaded in *model when model is not null (for activation statistics; a folder of records has none, an error
// naming it). Errors name the file.
InspectData load_inspect_data(const std::string& target, std::unique_ptr<layers::Module>* model = nullptr);

}  // namespace apps
