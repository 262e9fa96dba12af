// QIL's weight and activation quantizers: parameters, calibration, constraints, gradient balancing, statistics.
#include "quant/qil.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "quant/kernel_util.h"
#include "quant/qil_ops.h"
#include "quant/registry.h"

namespace quant {

using engine::DType;
using kernel::check_input;

namespace {
Tensor learnable_scalar(float v) {
  Tensor t = Tensor::scalar(v);
  t.set_requires_grad(true);
  return t;
}

// Fractions of discretized values at level 0 and at the top level, and how many levels appear.
// y holds the op's output: k/q for integer levels k in [−q, q] (symmetric) or [0, q].
void level_stats(const Tensor& y, int q, bool symmetric, QuantStats& st) {
  std::vector<int64_t> hist(static_cast<size_t>(2 * q + 1), 0);
  const float* yp = y.data();
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) {
    const long k = std::lround(static_cast<double>(yp[i]) * q);
    ++hist[static_cast<size_t>(k + q)];
  }
  const double nn = n > 0 ? static_cast<double>(n) : 1.0;
  st.pruned_fraction = static_cast<double>(hist[static_cast<size_t>(q)]) / nn;
  st.clipped_fraction = static_cast<double>(hist[static_cast<size_t>(2 * q)] + (symmetric ? hist[0] : 0)) / nn;
  st.levels_used = static_cast<int>(std::count_if(hist.begin(), hist.end(), [](int64_t h) { return h > 0; }));
}
}  // namespace

double qil_prune_threshold(double c, double d, double gamma, int q) {
  return c - d + 2.0 * d * std::pow(2.0 * q, -1.0 / gamma);
}

double qil_clip_threshold(double c, double d, double gamma, int q) {
  return c - d + 2.0 * d * std::pow(1.0 - 1.0 / (2.0 * q), 1.0 / gamma);
}

// ---- shared -----------------------------------------------------------------------------------------------

QilQuantizerBase::QilQuantizerBase(int bits)
    : bits_(bits), c_(learnable_scalar(0.5f)), d_(learnable_scalar(0.5f)) {}

const char* QilQuantizerBase::kernel_isa() const { return qil_kernel_isa(); }

void QilQuantizerBase::set_calibrated(bool calibrated) {
  calibrated_ = calibrated;
  if (!calibrated) reference_width_ = 0.0;
  else if (reference_width_ <= 0.0) reference_width_ = 2.0 * d_.item();
}

void QilQuantizerBase::require_calibrated(const char* op) const {
  QIL_CHECK(calibrated_, op, ": quantizer used before calibration (observe() a few batches, then "
                             "finish_calibration(), or set_calibrated(true) after loading its intervals)");
}

void QilQuantizerBase::set_interval(double c, double d) {
  c_.data()[0] = static_cast<float>(c);
  d_.data()[0] = static_cast<float>(d);
  reference_width_ = 2.0 * d;
  calibrated_ = true;
}

void QilQuantizerBase::scale_gradients(GradBalance mode, int64_t elements) {
  if (mode == GradBalance::none) return;
  auto scale = [](const Tensor& t, double f) {
    if (!t.requires_grad() || !t.grad().defined()) return;
    Tensor g = t.grad();
    g.data()[0] = static_cast<float>(g.data()[0] * f);
  };
  // A parameter's gradient is a sum over `elements` values, each on a grid of q levels.
  const double per_element = 1.0 / std::sqrt(static_cast<double>(elements) * positive_levels());
  if (mode == GradBalance::relative) {
    // c and d in units of the interval's own half-width d: Δc = −lr·d²·∂L/∂c, Δd = −lr·d²·∂L/∂d.
    const double d2 = static_cast<double>(d_.item()) * d_.item();
    for (auto& [n, t] : named_parameters()) scale(t, n == "c" || n == "d" ? d2 : per_element);
    return;
  }
  if (elements <= 0) return;
  for (auto& [n, t] : named_parameters()) scale(t, per_element);
}

void QilQuantizerBase::project_interval() {
  engine::NoGradGuard ng;
  float& c = c_.data()[0];
  float& d = d_.data()[0];
  // The Euclidean projection of (c, d) onto {c >= d, d >= d_min}. Clamping c up to d instead would turn a step
  // that lowers c and raises d (which the gradient asks for whenever most |w| lie below c) into a rise of
  // both, and the interval then drifts wider until every weight rounds to 0.
  if (c < d) c = d = 0.5f * (c + d);
  const float dm = static_cast<float>(d_min());
  if (d < dm) {
    d = dm;
    c = std::max(c, dm);
  }
}

// ---- weights ----------------------------------------------------------------------------------------------

QilWeightQuantizer::QilWeightQuantizer(int bits, bool fix_gamma, WeightCalib calib)
    : QilQuantizerBase(bits), gamma_(learnable_scalar(1.f)), fix_gamma_(fix_gamma), calib_(calib) {
  qil_weight_levels(bits, "QilWeightQuantizer");
  set_fix_gamma(fix_gamma);
}

void QilWeightQuantizer::set_options(const QuantizerOptions& o) {
  calib_ = o.weight_calib;
  no_pruning_ = o.no_pruning;
}

void QilWeightQuantizer::set_fix_gamma(bool fix) {
  fix_gamma_ = fix;
  gamma_.set_requires_grad(!fix);
  if (fix) gamma_.data()[0] = 1.f;
}

Tensor QilWeightQuantizer::operator()(const Tensor& w) const {
  require_calibrated("QilWeightQuantizer");
  return qil_weight(w, c_, d_, gamma_, bits_);
}

Tensor QilWeightQuantizer::transform(const Tensor& w) const {
  require_calibrated("QilWeightQuantizer::transform");
  return qil_weight_transform(w, c_, d_, gamma_);
}

void QilWeightQuantizer::set_bits(int bits) {
  qil_weight_levels(bits, "QilWeightQuantizer::set_bits");
  bits_ = bits;
}

int QilWeightQuantizer::positive_levels() const { return qil_weight_levels(bits_); }

NamedTensors QilWeightQuantizer::named_parameters() const { return {{"c", c_}, {"d", d_}, {"gamma", gamma_}}; }

void QilWeightQuantizer::observe(const Tensor& w) {
  if (calibrated_) return;
  check_input("QilWeightQuantizer::observe", w);
  max_abs_ = std::max(max_abs_, observed_max(w, true));
  if (calib_ == WeightCalib::mse) {  // the weights do not change during calibration: keep the last sample
    sample_.clear();
    append_magnitudes(w, kCalibSample, true, sample_);
  }
  ++observed_;
}

void QilWeightQuantizer::finish_calibration() {
  if (calibrated_) return;
  QIL_CHECK(observed_ > 0, "QilWeightQuantizer::finish_calibration: nothing observed");
  QIL_CHECK(max_abs_ > 0.0, "QilWeightQuantizer::finish_calibration: all observed weights are zero");
  const double p = calib_ == WeightCalib::mse ? mse_clip_point(sample_, positive_levels()) : max_abs_;
  set_interval(p / 2.0, p / 2.0);
  gamma_.data()[0] = 1.f;
  max_abs_ = 0.0;
  sample_.clear();
  sample_.shrink_to_fit();
  observed_ = 0;
}

void QilWeightQuantizer::project() {
  if (no_pruning_) {
    float& c = c_.data()[0];
    float& d = d_.data()[0];
    c = d = 0.5f * (c + d);
  }
  project_interval();  // keeps c = d when it held: it only raises both to d_min
  float& g = gamma_.data()[0];
  g = fix_gamma_ ? 1.f
                 : std::min(static_cast<float>(kGammaMax), std::max(static_cast<float>(kGammaMin), g));
}

QuantStats QilWeightQuantizer::stats() const {
  QuantStats st;
  st.kind = kind();
  st.bits = bits_;
  const int q = qil_weight_levels(bits_);
  st.levels_total = 2 * q + 1;
  st.c = c_.item();
  st.d = d_.item();
  st.gamma = gamma_.item();
  st.prune_threshold = qil_prune_threshold(st.c, st.d, st.gamma, q);
  st.clip_threshold = qil_clip_threshold(st.c, st.d, st.gamma, q);
  return st;
}

QuantStats QilWeightQuantizer::stats(const Tensor& w) const {
  QuantStats st = stats();
  engine::NoGradGuard ng;
  level_stats((*this)(w), qil_weight_levels(bits_), true, st);
  return st;
}

// ---- activations ------------------------------------------------------------------------------------------

QilActQuantizer::QilActQuantizer(int bits, bool is_signed, double percentile, ActCalib calib)
    : QilQuantizerBase(bits), is_signed_(is_signed), calib_(calib), clip_(percentile, is_signed) {
  qil_activation_levels(bits, "QilActQuantizer");
  QIL_CHECK(percentile > 0.0 && percentile <= 100.0, "QilActQuantizer: percentile must be in (0, 100], got ",
            percentile);
}

Tensor QilActQuantizer::operator()(const Tensor& x) const {
  require_calibrated("QilActQuantizer");
  return qil_activation(x, c_, d_, bits_, is_signed_);
}

Tensor QilActQuantizer::transform(const Tensor& x) const {
  require_calibrated("QilActQuantizer::transform");
  return qil_activation_transform(x, c_, d_, is_signed_);
}

void QilActQuantizer::set_bits(int bits) {
  qil_activation_levels(bits, "QilActQuantizer::set_bits");
  bits_ = bits;
}

int QilActQuantizer::positive_levels() const {
  return is_signed_ ? qil_weight_levels(bits_) : qil_activation_levels(bits_);
}

Tensor QilActQuantizer::levels(const Tensor& x) const {
  require_calibrated("QilActQuantizer::levels");
  return qil_activation_codes(x, c_, d_, bits_, is_signed_);
}

LevelRule QilActQuantizer::level_rule() const {
  require_calibrated("QilActQuantizer::level_rule");
  using Op = LevelRule::Op;
  const float c = c_.item(), d = d_.item(), q = static_cast<float>(positive_levels());
  LevelRule r;
  r.is_signed = is_signed_;
  r.sign_magnitude = true;
  r.steps = {{Op::subtract, "centered", {{"c", c}}},
             {Op::multiply, "scaled", {{"inv2d", 0.5f / d}}},
             {Op::add, "u", {{"half", 0.5f}}},
             {Op::clip, "u_clipped", {{"lo", 0.f}, {"hi", 1.f}}},
             {Op::multiply, "times_q", {{"q", q}}}};
  r.rounding = LevelRule::Rounding::half_up;
  return r;
}

NamedTensors QilActQuantizer::named_parameters() const { return {{"c", c_}, {"d", d_}}; }

void QilActQuantizer::observe(const Tensor& x) {
  if (calibrated_) return;
  check_input("QilActQuantizer::observe", x);
  clip_.observe(x, calib_);
}

void QilActQuantizer::finish_calibration() {
  if (calibrated_) return;
  const double p = clip_.finish(calib_, positive_levels(), "QilActQuantizer::finish_calibration");
  set_interval(p / 2.0, p / 2.0);
}

void QilActQuantizer::project() { project_interval(); }

QuantStats QilActQuantizer::stats() const {
  QuantStats st;
  st.kind = kind();
  st.bits = bits_;
  const int q = is_signed_ ? qil_weight_levels(bits_) : qil_activation_levels(bits_);
  st.levels_total = is_signed_ ? 2 * q + 1 : q + 1;
  st.c = c_.item();
  st.d = d_.item();
  st.gamma = 1.0;
  st.prune_threshold = qil_prune_threshold(st.c, st.d, 1.0, q);
  st.clip_threshold = qil_clip_threshold(st.c, st.d, 1.0, q);
  return st;
}

QuantStats QilActQuantizer::stats(const Tensor& x) const {
  QuantStats st = stats();
  engine::NoGradGuard ng;
  const int q = is_signed_ ? qil_weight_levels(bits_) : qil_activation_levels(bits_);
  level_stats((*this)(x), q, is_signed_, st);
  return st;
}

// ---- the family -------------------------------------------------------------------------------------------

namespace {
std::unique_ptr<Quantizer> make_weight(int bits, const QuantizerOptions& o) {
  auto w = std::make_unique<QilWeightQuantizer>(bits, o.fix_gamma, o.weight_calib);
  w->set_options(o);
  return w;
}

std::unique_ptr<Quantizer> make_activation(int bits, const QuantizerOptions& o) {
  return std::make_unique<QilActQuantizer>(bits, o.is_signed, o.percentile, o.act_calib);
}

std::unique_ptr<Quantizer> from_stats(const QuantStats& s) {
  std::unique_ptr<QilQuantizerBase> q;
  if (s.kind == "qil_weight") {
    auto w = std::make_unique<QilWeightQuantizer>(s.bits);
    w->gamma().data()[0] = static_cast<float>(s.gamma);
    q = std::move(w);
  } else {
    q = std::make_unique<QilActQuantizer>(s.bits, s.kind == "qil_activation_signed");
  }
  q->c().data()[0] = static_cast<float>(s.c);
  q->d().data()[0] = static_cast<float>(s.d);
  q->set_calibrated(true);
  return q;
}
}  // namespace

QuantizerFamily qil_family() {
  QuantizerFamily f;
  f.name = "qil";
  f.summary = "learned interval, c, d, gamma";
  f.options = {Option::fix_gamma, Option::weight_calib, Option::act_calib, Option::no_pruning};
  f.recorded = {{"fix_gamma", &QuantizerOptions::fix_gamma, true}, {"no_pruning", &QuantizerOptions::no_pruning}};
  f.make_weight = make_weight;
  f.make_activation = make_activation;
  for (const char* kind : {"qil_weight", "qil_activation", "qil_activation_signed"})
    f.stats_kinds.push_back({kind, ReportColumns::interval, "", ""});
  f.from_stats = from_stats;
  f.input_rule =
      "x_bar = round(clamp((x - c)/(2d) + 0.5, 0, 1) * q)/q with q = 2^bits - 1; for signed_input layers "
      "x_bar = sign(x) * round(clamp((|x| - c)/(2d) + 0.5, 0, 1) * q)/q with q = 2^(bits-1) - 1; "
      "round is half away from zero";
  return f;
}

}  // namespace quant
