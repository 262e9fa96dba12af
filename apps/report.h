// What each quantized layer learned, as JSON records (intervals.jsonl, `qil inspect --json`), CSV rows and a
// fixed-width table for the terminal.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "layers/quantize.h"

namespace apps {

nlohmann::json layer_report_json(const layers::LayerReport& r);
layers::LayerReport layer_report_from_json(const nlohmann::json& j);
std::string interval_table(const std::vector<layers::LayerReport>& reports);
std::string interval_csv(const std::vector<layers::LayerReport>& reports);
// Each layer's first record in an intervals.jsonl: its state when calibrated (per side, weights and
// activations, which may have joined in different stages). Empty when the file does not exist.
std::vector<layers::LayerReport> first_interval_rows(const std::string& intervals_jsonl);
// How far each layer's c, d, γ moved from `start` (matched by name): "start -> now (±%)" per parameter, with
// the pruned share of the weights now.
std::string movement_table(const std::vector<layers::LayerReport>& now, const std::vector<layers::LayerReport>& start);

}  // namespace apps
