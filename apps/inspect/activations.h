// Activation statistics for `qil inspect --data`: how each quantized layer's activation quantizer treats the
// inputs the layer actually sees on some data (share zeroed, share saturated, mean, max, histogram). Measured
// through a layers/observe.h observer and the quantizer's own stats(x); not the quantization rule itself
// (quant/), not the report page (page.h).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "layers/module.h"

namespace apps {

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
// Runs `batches` batches of `ds` through the model (eval mode, no gradients; the training mode is restored)
// and measures each layer that has an active input quantizer, in the model's layer order.
std::vector<ActivationStats> activation_stats(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds,
                                              int64_t batches, int64_t batch_size);
nlohmann::json activation_stats_json(const ActivationStats& s);

}  // namespace apps
