// QIL's quantizers behind quant::Quantizer: the weight quantizer (c, d, γ) and the activation quantizer (c, d)
// of Jung et al., CVPR 2019, their shared state (QilQuantizerBase), calibration (max, percentile and the
// least-squares clip point, quantizer.h: mse_clip_point), the constraint step project(), gradient balancing and statistics
// with the effective pruning and clipping thresholds.
// Not the ops themselves (qil_ops.h), not the interface (quantizer.h), not the layer that applies out_scale.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "quant/quantizer.h"

namespace quant {

// Shared state of the QIL quantizers: bits, c, d, calibration bookkeeping.
class QilQuantizerBase : public Quantizer {
 public:
  int bits() const override { return bits_; }
  bool calibrated() const override { return calibrated_; }
  // QIL balancing: sqrt scales every parameter by 1/sqrt(N·q) (a parameter's gradient is a sum over N elements,
  // so one LR cannot suit a 2k-weight conv and an 800k-weight linear alike, as LSQ argues); relative scales c
  // and d by d², the interval's half-width squared, so that Δc/d = −lr·(d·∂L/∂c) — the loss's sensitivity to
  // moving the interval by a fraction of its own width, independent of the scale of the values, the layer's
  // size and the batch. (Scaling c by c² instead was measured to run away: c/d grows, and with it the step.)
  // Parameters beyond c and d (γ) get 1/sqrt(N·q) under relative too. elements <= 0 (not seen yet) under sqrt:
  // left alone.
  void scale_gradients(GradBalance mode, int64_t elements) override;
  // true: keep the current c, d; d_min is taken from the current width 2d unless already known.
  // false: forget the interval; the next observe()/finish_calibration() recalibrate.
  void set_calibrated(bool calibrated) override;
  const char* kernel_isa() const override;

  // Lower bound on d enforced by project(): kDMinFraction × the interval width 2d at calibration (0 before).
  double d_min() const { return kDMinFraction * reference_width_; }
  static constexpr double kDMinFraction = 1e-4;

  Tensor& c() { return c_; }
  Tensor& d() { return d_; }
  const Tensor& c() const { return c_; }
  const Tensor& d() const { return d_; }

 protected:
  explicit QilQuantizerBase(int bits);
  void require_calibrated(const char* op) const;
  void set_interval(double c, double d);  // writes c, d; marks calibrated; records the reference width
  void project_interval();                // d >= d_min, then c >= d

  int bits_;
  Tensor c_, d_;  // one-element, requires_grad
  bool calibrated_ = false;
  double reference_width_ = 0.0;
};


// Weights: c, d, γ. Calibration c = d = p / 2 (interval [0, p]) with p from WeightCalib (max|w| by default).
// γ in [0.25, 4]; fix_gamma pins it to 1 and keeps it out of training.
class QilWeightQuantizer : public QilQuantizerBase {
 public:
  explicit QilWeightQuantizer(int bits, bool fix_gamma = false, WeightCalib calib = WeightCalib::max);
  const char* kind() const override { return "qil_weight"; }
  Tensor operator()(const Tensor& w) const override;
  Tensor transform(const Tensor& w) const override;
  void set_bits(int bits) override;
  int positive_levels() const override;
  bool is_signed() const override { return true; }
  double level_step() const override { return 1.0 / positive_levels(); }
  NamedTensors named_parameters() const override;
  bool pinned(const std::string& name) const override { return fix_gamma_ && name == "gamma"; }
  void observe(const Tensor& w) override;
  void finish_calibration() override;
  void project() override;
  QuantStats stats() const override;
  QuantStats stats(const Tensor& w) const override;

  void set_options(const QuantizerOptions& o) override;  // weight_calib, no_pruning
  bool fix_gamma() const override { return fix_gamma_; }
  // Pinning sets γ = 1 and stops its training; unpinning makes it trainable from its current value.
  void set_fix_gamma(bool fix) override;
  Tensor& gamma() { return gamma_; }
  const Tensor& gamma() const { return gamma_; }
  static constexpr double kGammaMin = 0.25, kGammaMax = 4.0;
  // The rule the next calibration uses (a calibrated interval is left alone).
  WeightCalib calibration() const { return calib_; }
  void set_calibration(WeightCalib calib) { calib_ = calib; }
  // No pruning interval (`--no-pruning`, an ablation): project() ties c = d after every step (the Euclidean
  // projection onto c = d, both to their mean), so the pruning point c − d stays at 0 and only the clipping
  // point c + d learns.
  bool no_pruning() const { return no_pruning_; }
  void set_no_pruning(bool on) { no_pruning_ = on; }
  static constexpr int64_t kCalibSample = int64_t{1} << 18;  // |w| values kept for the mse search

 private:
  Tensor gamma_;
  bool fix_gamma_;
  bool no_pruning_ = false;
  WeightCalib calib_;
  double max_abs_ = 0.0;
  std::vector<float> sample_;  // mse: a strided sample of the last observed |w|
  int64_t observed_ = 0;
};

// Activations: c, d. Calibration c = d = p/2, p the `percentile`-th percentile of the observed inputs (of |x|
// when signed), computed per observed batch on a strided subsample of at most kCalibSample values and
// averaged over the batches; or (ActCalib::mse) the least-squares clip point of up to ActClipObserver::kMseSample
// values per batch, pooled over the batches (ActClipObserver does both). is_signed: a first conv's input (can be
// negative), quantized by the weights' symmetric rule with γ = 1.
class QilActQuantizer : public QilQuantizerBase {
 public:
  explicit QilActQuantizer(int bits, bool is_signed = false, double percentile = 99.9,
                           ActCalib calib = ActCalib::percentile);
  const char* kind() const override { return is_signed_ ? "qil_activation_signed" : "qil_activation"; }
  Tensor operator()(const Tensor& x) const override;
  Tensor transform(const Tensor& x) const override;
  void set_bits(int bits) override;
  int positive_levels() const override;
  double level_step() const override { return 1.0 / positive_levels(); }
  Tensor levels(const Tensor& x) const override;  // one pass (qil_activation_codes)
  // k = round_nonneg(clip((m − c)·(0.5/d) + 0.5, 0, 1)·q), m = |x| or x; a signed input's sign after rounding.
  LevelRule level_rule() const override;
  NamedTensors named_parameters() const override;
  void observe(const Tensor& x) override;
  void finish_calibration() override;
  void project() override;
  QuantStats stats() const override;
  QuantStats stats(const Tensor& x) const override;

  bool is_signed() const override { return is_signed_; }
  void set_options(const QuantizerOptions& o) override { calib_ = o.act_calib; }
  static constexpr int64_t kCalibSample = kObservedSample;  // observed_percentile's sample
  ActCalib calibration() const { return calib_; }
  void set_calibration(ActCalib calib) { calib_ = calib; }

 private:
  bool is_signed_;
  ActCalib calib_;
  ActClipObserver clip_;  // what calibration has observed
};

// Effective thresholds after discretization (docs/qil.md §3), on |v|:
// weights (any γ): pruning c − d + 2d·(2q)^(−1/γ), clipping c − d + 2d·(1 − 1/(2q))^(1/γ);
// activations (γ = 1): c − d + d/q and c + d − d/q.
double qil_prune_threshold(double c, double d, double gamma, int q);
double qil_clip_threshold(double c, double d, double gamma, int q);

}  // namespace quant
