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

}  // namespace apps
