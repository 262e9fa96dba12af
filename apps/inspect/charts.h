// The inspect report's charts, built from an InspectData with the SVG kit: accuracy by epoch, a layer's
// interval over training, its final weights and its measured inputs against the quantizer's curves; and the
// stage spans that shade them. Each chart is one <svg> string. Not the kit (svg_chart.h), not the page around
// the charts (page.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "apps/inspect/target.h"

namespace apps {

// The global epochs a training stage covers (from metrics.csv, else from intervals.jsonl).
struct StageSpan {
  int stage;
  std::string name;
  int64_t first, last;
};
std::vector<StageSpan> stage_spans(const InspectData& in);
// "32" -> "FP32", "4" -> "W4A4"; other names ("w4a8") as they are.
std::string stage_label(const std::string& name);

// Charts share a page: `ids` numbers their clip paths so that each is unique.
std::string accuracy_chart(const InspectData& in, const std::vector<StageSpan>& spans, int& ids);
// c − d, c, c + d and both thresholds of one side (weights or activations) of a layer; "" without records.
std::string interval_chart(const InspectData& in, const std::string& layer, bool weights,
                           const std::vector<StageSpan>& spans, int& ids);
// Histogram of the final weights with the thresholds, and the transformer ŵ(w) with its discretized staircase
// w̄(w) on the right-hand axis, computed by the layer's quantizer rule (quant::quantizer_from_stats).
std::string weight_chart(const layers::LayerReport& r, const std::vector<float>& w, int& ids);
// The same for a layer's measured inputs: histogram, activation thresholds, x̂(x) and x̄(x).
std::string activation_chart(const layers::LayerReport& r, const ActivationStats& as, int& ids);

}  // namespace apps
