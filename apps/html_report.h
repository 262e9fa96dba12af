// What `qil inspect` gathers about a run and the self-contained HTML report it writes: the run's history
// (metrics.csv, intervals.jsonl), the final network's per-layer intervals and weights, optional activation
// statistics over a few batches of data, and the page itself (inline CSS and SVG drawn here; no scripts
// from elsewhere, no external files). Not the terminal table or the JSON/CSV records (report.h), not training.
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/model_io.h"
#include "data/dataset.h"
#include "layers/quantize.h"

namespace apps {

// One row of metrics.csv (one epoch of one stage).
struct MetricsRow {
  int stage = 0;
  std::string stage_name;
  int epoch = 0;
  int64_t global_epoch = 0;
  double lr = 0, train_loss = 0, train_top1 = 0, val_loss = 0, val_top1 = 0, val_top5 = 0;
  double test_loss = 0, test_top1 = 0, test_top5 = 0, img_per_s = 0, wall_s = 0;
};
// Reads metrics.csv by its header names (columns may come in any order; missing ones stay 0). Errors name
// the file and the line.
std::vector<MetricsRow> read_metrics_csv(const std::string& path);

// One line of intervals.jsonl: a layer's report at the end of an epoch.
struct IntervalRecord {
  int stage = 0;
  std::string stage_name;
  int epoch = 0;
  int64_t global_epoch = 0;  // from metrics (stage, epoch); else the order of (stage, epoch) in the file
  layers::LayerReport report;
};
std::vector<IntervalRecord> read_intervals_jsonl(const std::string& path, const std::vector<MetricsRow>& metrics);

// Share of a quantized layer's input zeroed (below the activation quantizer's pruning threshold) and
// saturated (at its top level) over the batches seen, as the quantizer itself discretizes them.
struct ActivationStats {
  std::string layer;
  int64_t values = 0;  // input elements seen
  int64_t batches = 0;
  double zeroed_fraction = 0, saturated_fraction = 0;
  double mean = 0, max = 0;  // of the raw input
  // Histogram of the raw input over [hist_lo, hist_hi] (values outside land in the end bins): [0, R] or, for a
  // signed quantizer, [−R, R], with R = 1.25 × the clipping threshold.
  double hist_lo = 0, hist_hi = 0;
  std::vector<int64_t> hist;
};
// Runs `batches` batches of `ds` through the model (eval mode, no gradients) and measures each layer that
// has an active input quantizer.
std::vector<ActivationStats> activation_stats(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds,
                                              int64_t batches, int64_t batch_size);
nlohmann::json activation_stats_json(const ActivationStats& s);

// Everything the report shows. history may be empty (a bare checkpoint).
struct InspectData {
  std::string target;      // what the user named
  std::string run_dir;     // empty for a bare checkpoint
  std::string checkpoint;  // the file the final state comes from
  ModelMeta meta;
  std::vector<layers::LayerReport> reports;      // final state of every quantized layer
  std::map<std::string, std::vector<float>> weights;  // final full-precision weight of each reported layer
  std::vector<MetricsRow> metrics;
  std::vector<IntervalRecord> intervals;
  std::vector<ActivationStats> activations;  // empty unless measured
  std::string data_name;                     // the data activations were measured on
};
// Loads a run directory (last.ckpt plus history when present) or a checkpoint file. The model stays loaded in
// *model when model is not null (for activation statistics).
InspectData load_inspect_data(const std::string& target, std::unique_ptr<layers::Module>* model = nullptr);

// The whole page.
std::string html_report(const InspectData& in);

}  // namespace apps
