// The Quantizer interface a layer holds: forward, calibration, the constraint step project(), gradient balancing,
// freezing, the per-layer statistics QuantStats, integer levels and the rule an input quantizer spells out for
// exporters (LevelRule); the options a factory passes on, the calibration helpers the quantizers share (observed
// statistics, the least-squares clip point mse_clip_point, the activation clip-point observer ActClipObserver), and
// the least-squares output-scale fit.
// Not a quantizer: QIL's are in qil.h, LSQ's in lsq.h, PACT's in pact.h, DoReFa's in dorefa.h. Not the layer that
// applies out_scale, not the optimizer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace quant {

using engine::Tensor;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What one quantizer has learned, for `qil inspect`. Thresholds are on |v| (weights, signed activations)
// or on v (post-ReLU activations), after discretization: |v| < prune_threshold -> 0;
// |v| >= clip_threshold -> the top level (±1 or 1).
struct QuantStats {
  std::string kind;  // "qil_weight", "qil_activation", "lsq_weight", "pact_activation", "dorefa_weight", ...
  int bits = 0;
  int levels_total = 0;  // distinct output values the rule can produce: 2q+1 (symmetric) or q+1
  double c = 0.0, d = 0.0, gamma = 1.0;  // QIL's interval and exponent (0, 0, 1 for the others)
  double step = 0.0;                      // LSQ's step s (0 for the others)
  double alpha = 0.0;     // the clipping level: PACT's learned α, DoReFa's activations' fixed 1 (0 for the others)
  double tanh_max = 0.0;  // DoReFa's weights: M = max|tanh w| of the tensor stats(w) saw (0 for the others)
  double prune_threshold = 0.0;
  double clip_threshold = 0.0;
  // Over one tensor (stats(v)); -1 when no tensor was given (stats()).
  double pruned_fraction = -1.0;   // elements discretized to 0
  double clipped_fraction = -1.0;  // elements discretized to the top level ±1 (or 1): |v| >= clip_threshold
  int levels_used = -1;            // distinct discretized values present
};

// How a quantizer's parameter gradients are rescaled before an optimizer step (Quantizer::scale_gradients).
enum class GradBalance { none, sqrt, relative };
GradBalance parse_grad_balance(const std::string& name);  // "none" | "sqrt" | "relative"; throws naming it
const char* grad_balance_name(GradBalance mode);

// How a weight quantizer's first interval [0, p] (c = d = p/2, γ = 1) is chosen (`--weight-calib`):
//   max: p = max|w|, the whole range. At 2 bits (levels −1, 0, 1) only |w| > max|w|/2 leave zero, typically
//        a few percent of a layer's weights;
//   mse: p minimizes min_s ||w − s·Q_p(w)||², the error left after the least-squares scale the layer fits to
//        its output anyway (mse_clip_point, qil.h).
enum class WeightCalib { max, mse };
WeightCalib parse_weight_calib(const std::string& name);  // "max" | "mse"; anything else is an error naming it

// How an activation quantizer's first interval [0, p] is chosen (`--act-calib`): percentile — p the
// `percentile`-th percentile of the inputs; mse — mse_clip_point over a sample of the observed inputs (the error
// left after a least-squares scale, which the layer's output scale provides).
enum class ActCalib { percentile, mse };
ActCalib parse_act_calib(const std::string& name);  // "percentile" | "mse"; anything else is an error naming it

// Options a factory passes on (quant/registry.h); a quantizer ignores those it has no use for.
struct QuantizerOptions {
  bool fix_gamma = false;     // weights: pin QIL's γ to 1
  bool no_pruning = false;    // QIL weights: c tied to d, the pruning point held at 0 (an ablation)
  bool symmetric = false;     // LSQ weights: Q_N = Q_P (lsq_symmetric_range), the level count of QIL's weights
  bool is_signed = false;     // activations: the input can be negative (a first conv's), symmetric rule
  double percentile = 99.9;   // activations: calibration percentile (QIL's c + d, PACT's α)
  WeightCalib weight_calib = WeightCalib::max;  // QIL weights: how the first interval is chosen
  ActCalib act_calib = ActCalib::percentile;    // QIL activations: how the first interval is chosen
  ActCalib pact_calib = ActCalib::percentile;   // PACT activations: how the first alpha is chosen
};

// How an input quantizer turns x into its integer level k, as the f32 arithmetic of its kernel, for an exporter that
// must give the same levels in another runtime (apps/export_onnx.cpp turns each step into graph nodes; no ONNX here).
// With m = |x| when sign_magnitude and is_signed, else m = x:
//   v = the steps applied to m in order, each one f32 operation with named constants;
//   k = round(v): half_up — trunc(double(v) + 0.5), for v >= 0 (the kernels' round_nonneg);
//                 half_away — floor(|v| + 0.5), times sign(v) when is_signed (sign(0) = +1);
//   k = sign(x)·k when sign_magnitude and is_signed;
// and the layer computes with k·level_step(). Names (of steps and constants) are unique within a rule; the exporter
// names its own rounding and sign nodes (export_onnx.cpp), which a rule's names must not repeat.
struct LevelRule {
  enum class Op { subtract, multiply, add, clip };  // v − a, v·a, v + a, min(max(v, lo), hi)
  struct Constant {
    std::string name;
    float value;
  };
  struct Step {
    Op op;
    std::string name;                 // of the step's result
    std::vector<Constant> constants;  // one; clip: lo, hi
  };
  enum class Rounding { half_up, half_away };
  bool is_signed = false;       // k may be negative (s8 rather than u8)
  bool sign_magnitude = false;  // a signed input is quantized as |x|, its sign put back after rounding
  std::vector<Step> steps;
  Rounding rounding = Rounding::half_up;
};

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  virtual const char* kind() const = 0;

  // The fake-quantized tensor, recorded for autograd. Throws until calibrated().
  virtual Tensor operator()(const Tensor& v) const = 0;
  // The continuous map before the discretizer (QIL's transformer ŵ or x̂), recorded for autograd. For plots
  // and finite-difference checks: operator()'s gradient is the STE, which neither can show.
  virtual Tensor transform(const Tensor& v) const = 0;

  virtual int bits() const = 0;
  virtual void set_bits(int bits) = 0;  // 2..8; keeps the current parameters (progressive reduction)
  // Positive levels q of the discretized output: QIL's k/q (k in [−q, q] when is_signed(), else [0, q]);
  // LSQ's Q_P, its output k·s with k in [−Q_N, Q_P] (quant/lsq.h).
  virtual int positive_levels() const = 0;
  // Whether the output takes negative values: QIL's spans [−1, 1] (odd-symmetric rule) rather than [0, 1].
  virtual bool is_signed() const = 0;

  // Integer inference: operator()(v) = k·level_step() with k an integer in [min_level(), positive_levels()] —
  // QIL's and DoReFa's k/q (step 1/q), LSQ's k·s, PACT's k·α/q. No kind has an offset: level 0 is the value 0,
  // which is what lets an integer convolution pad with level 0 where the float one pads with 0.
  virtual double level_step() const = 0;
  virtual int min_level() const { return is_signed() ? -positive_levels() : 0; }
  // k of every element of v, in v's shape and layout: s8 when min_level() < 0, else u8 (no autograd).
  // This default rounds operator()(v)/level_step(), so k is by construction the level the float path uses.
  virtual Tensor levels(const Tensor& v) const;
  // levels() spelled out step by step for exporters (LevelRule). Input quantizers give one; the default throws,
  // naming the kind. Throws until calibrated().
  virtual LevelRule level_rule() const;
  // The levels of vbar, a tensor of this quantizer's outputs k·level_step() (operator()'s result, whose f32
  // products are within rounding of k·step): k = vbar/level_step() rounded, in vbar's shape and layout, s8 or u8 as
  // levels(). What an integer forward in training feeds its convolution, the float output being computed anyway.
  // Throws when a value is not within rounding of a level in range (vbar is not this quantizer's output).
  Tensor levels_of(const Tensor& vbar) const;
  // Whether the levels fit that 8-bit type (8-bit DoReFa weights reach ±255 and do not).
  bool levels_fit() const;
  // Throws, naming the kind, bits and range, when they do not; levels() checks it first.
  void check_levels_fit() const;

  // Handles to the learnable scalars, unprefixed ("c", "d", "gamma"); the layer prefixes them
  // ("weight_quant." / "act_quant."). Entries that must not train (a pinned γ) have requires_grad false.
  virtual NamedTensors named_parameters() const = 0;
  // The parameter `name` of named_parameters(); throws naming it and the kind when there is none.
  Tensor parameter(const std::string& name) const;
  // Parameters that stay out of training whatever freezing asks (QIL's γ under fix_gamma).
  virtual bool pinned(const std::string& name) const { return false; }
  // Parameters the method regularizes with an L2 penalty λ·p²/2 (PACT's α): the trainer puts them in an optimizer
  // group whose weight decay is λ (`--pact-alpha-decay`), which adds λ·p to their gradient after balancing.
  virtual bool l2_penalized(const std::string& name) const { return false; }
  // γ pinning, an option of quantizers with an exponent; the others ignore it.
  virtual bool fix_gamma() const { return false; }
  virtual void set_fix_gamma(bool /*fix*/) {}
  // Interval freezing (`--freeze-intervals`): every parameter stops (or resumes) training, pinned ones stay out.
  void set_frozen(bool frozen);

  // Calibration: observe() a few batches, then finish_calibration() sets the parameters. Once calibrated
  // (by calibration, or set_calibrated(true) after loading a checkpoint or a previous stage's intervals),
  // observe() and finish_calibration() leave the parameters alone.
  virtual void observe(const Tensor& v) = 0;
  virtual void finish_calibration() = 0;
  virtual bool calibrated() const = 0;
  virtual void set_calibrated(bool calibrated) = 0;
  // The options that may change from stage to stage, applied to a quantizer made earlier (from a checkpoint or by
  // the previous stage; the factory applies them to a new one): QIL's calibration rules and no_pruning. A kind
  // ignores the options it does not read; fix_gamma has set_fix_gamma.
  virtual void set_options(const QuantizerOptions& /*options*/) {}
  // After a checkpoint load: `names` are this quantizer's (unprefixed) parameters that the file held. A
  // quantizer whose parameters came from a file counts as calibrated; one that received none keeps its state.
  virtual void parameters_loaded(const std::vector<std::string>& names);

  // Constraints, after each optimizer step (never inside forward).
  virtual void project() = 0;
  // Rescales the gradients of this quantizer's parameters before an optimizer step (the rule and its gradients
  // are unchanged; only the step each parameter takes is). elements: values quantized per sample (per image
  // for activations, the whole tensor for weights), the count each parameter's gradient is summed over.
  virtual void scale_gradients(GradBalance mode, int64_t elements) = 0;

  virtual QuantStats stats() const = 0;                 // parameters and thresholds only
  virtual QuantStats stats(const Tensor& v) const = 0;  // plus fractions and levels over v
  // The instruction set the kind's own kernels picked at run time ("avx2", "baseline (sse2)"), or null for a kind
  // whose kernels are built for one (qil_ops.h: qil_kernel_isa).
  virtual const char* kernel_isa() const { return nullptr; }
};

// Calibration statistics of observed inputs, shared by the activation quantizers: max(0, max v) (max |v| when
// absolute), and the pct-th percentile of v (of |v|; linear interpolation between order statistics, as numpy's
// default) over every stride-th element, so that a large input costs at most kObservedSample values.
constexpr int64_t kObservedSample = int64_t{1} << 20;
double observed_max(const Tensor& v, bool absolute);
double observed_percentile(const Tensor& v, double pct, bool absolute);

// The clip point p in (0, max v] that minimizes min_s Σ (v_i − s·k_i/q)² over v ≥ 0 (magnitudes), k_i =
// min(round(q·v_i/p), q): QIL's γ = 1 rule with c = d = p/2 at q positive levels. Maximizes (Σ v·k)² / Σ k²
// over a grid of 256 candidates in (0, max v], then 64 finer ones around the best. An empty v or max v = 0 is
// an error.
double mse_clip_point(const std::vector<float>& v, int q);
// Every stride-th element of t, at most `cap` of them, appended to out as the magnitude a quantizer sees: |v| when
// symmetric, max(v, 0) when unsigned (the sample mse_clip_point searches).
void append_magnitudes(const Tensor& t, int64_t cap, bool symmetric, std::vector<float>& out);

// What an activation quantizer's calibration gathers, and the clip point p it starts from (ActCalib), for QIL's
// (c = d = p/2) and PACT's (α = p) activation quantizers. Per observed batch: the percentile-th percentile of the
// inputs (of |x| when absolute) on observed_percentile's subsample, their max, and under mse up to kMseSample
// magnitudes (append_magnitudes), pooled over the batches.
class ActClipObserver {
 public:
  static constexpr int64_t kMseSample = int64_t{1} << 15;  // per observed batch, ActCalib::mse
  ActClipObserver(double percentile, bool absolute) : percentile_(percentile), absolute_(absolute) {}
  void observe(const Tensor& x, ActCalib rule);  // an empty x counts for nothing
  // p under `rule`: percentile — the batches' percentiles averaged, or their max where that average is 0 (an input
  // so sparse its percentile is 0); mse — mse_clip_point of the pooled sample at q positive levels (the percentile
  // rule's p where the sample holds no positive value: the stride missed every nonzero input of a sparse layer).
  // Forgets what it observed. Throws, naming `who`, when nothing was observed or every input was zero (or negative
  // when not absolute).
  double finish(ActCalib rule, int q, const char* who);

 private:
  double percentile_;
  bool absolute_;
  std::vector<float> sample_;
  double percentile_sum_ = 0.0;
  double max_value_ = 0.0;
  int64_t observed_ = 0;
};

// The least-squares scale s minimizing ||y_fp − s·y_q||²: ⟨y_fp, y_q⟩ / ⟨y_q, y_q⟩, in double.
// Returns 1 when y_q is all zeros (any scale fits equally; 1 leaves the output untouched).
double least_squares_scale(const Tensor& y_fp, const Tensor& y_q);

}  // namespace quant
