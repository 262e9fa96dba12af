// Activation statistics: an input observer per model, accumulating each measured layer's shares through its
// quantizer's stats(x) and a histogram of the raw input.
#include "apps/inspect/activations.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "apps/training/evaluate.h"
#include "data/loader.h"
#include "engine/check.h"
#include "layers/observe.h"
#include "layers/quantize.h"

namespace apps {

using engine::Tensor;

namespace {

constexpr int64_t kActivationBins = 80;

struct Accumulator {
  const quant::Quantizer* quantizer;  // the layer's activation quantizer
  ActivationStats s;
  double zeroed = 0, saturated = 0, sum = 0;  // element counts and the sum, over every batch so far
};

Accumulator start(const std::string& layer, const quant::Quantizer& q, bool is_signed) {
  Accumulator a{&q, {}, 0, 0, 0};
  a.s.layer = layer;
  a.s.hist_hi = 1.25 * std::max(q.stats().clip_threshold, 1e-6);
  a.s.hist_lo = is_signed ? -a.s.hist_hi : 0.0;
  a.s.hist.assign(kActivationBins, 0);
  return a;
}

void add_batch(Accumulator& a, const Tensor& x) {  // x: the layer's input before quantization, any shape
  const quant::QuantStats st = a.quantizer->stats(x);  // the quantizer's own discretization of this input
  const double n = static_cast<double>(x.numel());
  a.zeroed += st.pruned_fraction * n;
  a.saturated += st.clipped_fraction * n;
  const float* xp = x.data();
  double sum = 0, mx = a.s.values ? a.s.max : -INFINITY;
  const double lo = a.s.hist_lo, scale = kActivationBins / (a.s.hist_hi - a.s.hist_lo);
  for (int64_t i = 0; i < x.numel(); ++i) {
    sum += xp[i];
    mx = std::max(mx, static_cast<double>(xp[i]));
    const auto b = static_cast<int64_t>(std::floor((xp[i] - lo) * scale));
    ++a.s.hist[static_cast<size_t>(std::clamp<int64_t>(b, 0, kActivationBins - 1))];
  }
  a.sum += sum;
  a.s.max = mx;
  a.s.values += x.numel();
  ++a.s.batches;
}

ActivationStats finish(Accumulator& a) {
  if (a.s.values) {
    const double n = static_cast<double>(a.s.values);
    a.s.zeroed_fraction = a.zeroed / n;
    a.s.saturated_fraction = a.saturated / n;
    a.s.mean = a.sum / n;
  }
  return a.s;
}

// The training library's evaluation pass; the observers see the inputs, the logits are not needed.
void run_batches(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batches,
                 int64_t batch_size) {
  apps::training::for_each_eval_batch(model, ds,
                                      apps::training::loader_options(apps::training::LoaderUse::eval, batch_size, 1),
                                      batches, [](const data::Batch&, const Tensor&) {});
}

}  // namespace

std::vector<ActivationStats> activation_stats(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds,
                                              int64_t batches, int64_t batch_size) {
  QIL_CHECK(batches >= 1, "inspect: --batches must be at least 1, got ", batches);
  std::vector<Accumulator> acc;
  std::map<std::string, size_t> index;  // layer name -> its accumulator
  for (auto& [name, l] : layers::quantizable_layers(model)) {
    const quant::Quantizer* q = l->act_quantizer();
    if (!q || l->quant_spec().abits >= 32) continue;
    index[name] = acc.size();
    acc.push_back(start(name, *q, l->quant_spec().signed_input));
  }
  {
    // Released at the end of this scope however the forward ends: the observer points into acc.
    const layers::ObserverHandle observer = layers::observe_inputs(model, [&](const std::string& layer, const Tensor& x) {
      if (auto it = index.find(layer); it != index.end()) add_batch(acc[it->second], x);
    });
    run_batches(model, ds, batches, batch_size);
  }
  std::vector<ActivationStats> out;
  for (auto& a : acc) out.push_back(finish(a));
  return out;
}

nlohmann::json activation_stats_json(const ActivationStats& s) {
  return nlohmann::json{{"values", s.values},   {"batches", s.batches},
                        {"zeroed_fraction", s.zeroed_fraction}, {"saturated_fraction", s.saturated_fraction},
                        {"mean", s.mean},       {"max", s.max},
                        {"hist_lo", s.hist_lo}, {"hist_hi", s.hist_hi},
                        {"hist", s.hist}};
}

}  // namespace apps
