// What each quantized layer learned, as JSON records (intervals.jsonl, `qil inspect --json`), CSV rows and a
// fixed-width table for the terminal, and intervals.jsonl read back record by record. Not the writing of the
// run's files (run_log.h) and not `qil inspect`'s history of a run (apps/inspect/history.h, which numbers
// these records by the run's epochs).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "layers/quantize.h"

namespace apps::training {

nlohmann::json layer_report_json(const layers::LayerReport& r);
layers::LayerReport layer_report_from_json(const nlohmann::json& j);
std::string interval_table(const std::vector<layers::LayerReport>& reports);
std::string interval_csv(const std::vector<layers::LayerReport>& reports);

// One line of intervals.jsonl: a layer's report at the end of an epoch (epoch 0: the start of its stage).
struct IntervalRecord {
  int stage = 0;
  std::string stage_name;
  int epoch = 0;
  int64_t global_epoch = 0;  // 0 here; apps/inspect/history.h numbers the records over the whole run
  layers::LayerReport report;
};
// Every record of an intervals.jsonl, in file order. Blank lines are skipped; a line that is not a layer
// record is an error naming the file and the line.
std::vector<IntervalRecord> read_interval_records(const std::string& path);
// Each layer's first record in an intervals.jsonl: its state when calibrated (per side, weights and
// activations, which may have joined in different stages). Empty when the file does not exist.
std::vector<layers::LayerReport> first_interval_rows(const std::string& intervals_jsonl);
// How far each layer's c, d, γ moved from `start` (matched by name): "start -> now (±%)" per parameter, with
// the pruned share of the weights now.
std::string movement_table(const std::vector<layers::LayerReport>& now, const std::vector<layers::LayerReport>& start);

}  // namespace apps::training
