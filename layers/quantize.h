// Network-level quantization: which layers are quantized at which widths (first conv and last linear full
// precision, 8-bit or at the stage's width; per-layer overrides), calibration of new quantizers, constraints, freezing for
// quantizer-only training, switching integer inference on, and per-layer statistics.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "layers/module.h"
#include "layers/quantizable.h"

namespace layers {

// A per-layer override (the config file's [layers."name"] table).
struct LayerOverride {
  int wbits = 0;  // 0 = the stage's width
  int abits = 0;
  bool exclude = false;  // keep this layer full precision
  std::string quantizer;  // "" = the plan's family; else a family of quant/registry.h for this layer
};

struct QuantPlan {
  int wbits = 32, abits = 32;   // the stage's widths (32 = full precision)
  // The first conv and the last linear: 32 = full precision (the paper's rule), 8 = 8-bit, 0 = the stage's own
  // widths. Quantized, the first conv's input quantizer is signed (normalized images are negative too).
  int first_last_bits = 32;
  bool fix_gamma = false;
  bool no_pruning = false;  // QIL weights: the pruning point c − d held at 0 (quant::QuantizerOptions::no_pruning)
  quant::ActCalib pact_calib = quant::ActCalib::percentile;  // PACT activations: the first alpha
  bool lsq_symmetric = false;  // LSQ weights: Q_N = Q_P (quant::lsq_symmetric_range), for layers whose kind is lsq
  quant::WeightCalib weight_calib = quant::WeightCalib::max;  // how calibration picks a QIL weight interval
  quant::ActCalib act_calib = quant::ActCalib::percentile;    // and a QIL activation interval
  // A layer whose weight width changes (a later stage) calibrates its weight interval and output scale again
  // instead of keeping the previous stage's (`--recalibrate-weights`).
  bool recalibrate_weights = false;
  bool recalibrate_activations = false;  // the same for a change of activation width (`--recalibrate-activations`)
  std::map<std::string, LayerOverride> overrides;
  std::string quantizer = quant::kDefaultQuantizer;  // the family every quantized layer gets (quant/registry.h)
};

// Every Conv2d and Linear in forward-definition order, with its dotted name.
std::vector<std::pair<std::string, QuantizableModule*>> quantizable_layers(Module& m);

// Applies the plan to every layer; returns the names of the layers that are now quantized. Overrides naming
// a layer that does not exist are errors (the message names it), and so is a kind other than the one whose
// quantizers a layer already holds (from a checkpoint or an earlier stage: their parameters cannot change kind).
std::vector<std::string> apply_quant_plan(Module& m, const QuantPlan& plan);

// Calibrates quantizers that have no interval yet (a new stage keeps the previous stage's intervals): one
// pass observing `batches` inputs, then one fitting output scales. next_batch fills x and returns false when
// out of data. Runs without gradients, in eval mode, and restores the training mode after.
void calibrate(Module& m, int64_t batches, const std::function<bool(Tensor& x)>& next_batch);

// Constraints after every optimizer step.
void project_quantizers(Module& m);
// Per-layer gradient balancing of quantizer parameters (QuantizableModule::scale_quant_grads), before a step.
void scale_quantizer_gradients(Module& m, GradBalance mode = GradBalance::sqrt);

// Quantizer-only training: weights, biases and BN affine parameters stop training; BN uses its running
// statistics and stops updating them. Unfreezing restores both.
void freeze_weights(Module& m, bool frozen);

// Frozen intervals (`--freeze-intervals`): c, d and γ of every quantizer stop training and keep the values
// calibration (or the previous stage) gave them; the weights and output scales still train. The ablation
// that shows what learning the intervals is worth. Unfreezing makes them trainable again (a pinned γ stays
// pinned).
void freeze_intervals(Module& m, bool frozen);
// The same for one side: the weight quantizers' parameters, the activation quantizers' parameters.
void freeze_intervals(Module& m, bool weights, bool activations);

// Output scales (`out_scale`) stop training and keep their least-squares value (the paper recipe).
void freeze_output_scales(Module& m, bool frozen);

// Integer inference for every layer that can run it (QuantizableModule::set_int8): those whose weights and
// input are both quantized; the others stay as they are. on = false switches every layer back. A layer whose
// levels do not fit 8 bits is an error naming it (and leaves every layer off).
struct Int8Layers {
  std::vector<std::string> integer;  // layers now running in int8
  std::vector<std::string> floating;  // quantizable layers still running in f32 (one side or neither quantized)
};
Int8Layers set_int8_inference(Module& m, bool on);
// Integer forward in training (QuantizableModule::set_int8_forward) for every quantizable layer; returns, of the
// quantized layers, those whose training forward now runs in integers (weights and input quantized, levels that
// fit 8 bits) and the others. Call it after the stage's apply_quant_plan: the answer depends on the widths.
Int8Layers set_int8_forward(Module& m, bool on);

struct LayerReport {
  std::string name;
  std::string type;  // "Conv2d" / "Linear"
  LayerQuantSpec spec;
  float out_scale = 1.f;
  quant::QuantStats weight;      // bits 0 when weights are full precision
  quant::QuantStats activation;  // bits 0 when inputs are full precision
};
// Current state of every quantized layer, with weight statistics over the layer's weight.
std::vector<LayerReport> quant_report(Module& m);

}  // namespace layers
