// The Quantizer interface's shared helpers and factory, the QIL quantizers (parameters, calibration, constraints,
// gradient balancing, statistics), and the output-scale fit.
#include "quant/quantizer.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine/autograd.h"
#include "quant/dorefa.h"
#include "quant/lsq.h"
#include "quant/pact.h"
#include "quant/qil_ops.h"

namespace quant {

using engine::DType;

namespace {
Tensor learnable_scalar(float v) {
  Tensor t = Tensor::scalar(v);
  t.set_requires_grad(true);
  return t;
}

void check_input(const char* op, const Tensor& t) {
  QIL_CHECK(t.defined(), op, ": undefined input");
  QIL_CHECK(t.dtype() == DType::f32, op, ": expected an f32 tensor, got ", t);
}
}  // namespace

double observed_max(const Tensor& t, bool absolute) {
  const float* p = t.data();
  const int64_t n = t.numel();
  float m = 0.f;
#pragma omp parallel for reduction(max : m) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) m = std::max(m, absolute ? std::fabs(p[i]) : p[i]);
  return m;
}

double observed_percentile(const Tensor& t, double pct, bool absolute) {
  const float* p = t.data();
  const int64_t n = t.numel();
  const int64_t stride = (n + QilActQuantizer::kCalibSample - 1) / QilActQuantizer::kCalibSample;
  std::vector<float> s;
  s.reserve(static_cast<size_t>(n / stride + 1));
  for (int64_t i = 0; i < n; i += stride) s.push_back(absolute ? std::fabs(p[i]) : p[i]);
  const double pos = pct / 100.0 * static_cast<double>(s.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  std::nth_element(s.begin(), s.begin() + lo, s.end());
  const double v_lo = s[lo];
  if (lo + 1 >= s.size()) return v_lo;
  const double v_hi = *std::min_element(s.begin() + lo + 1, s.end());
  return v_lo + (pos - lo) * (v_hi - v_lo);
}

namespace {
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

double least_squares_scale(const Tensor& y_fp, const Tensor& y_q) {
  check_input("least_squares_scale", y_fp);
  check_input("least_squares_scale", y_q);
  QIL_CHECK(y_fp.shape() == y_q.shape(), "least_squares_scale: shapes differ: ", y_fp.shape(), " and ",
            y_q.shape());
  const float* a = y_fp.data();
  const float* b = y_q.data();
  const int64_t n = y_fp.numel();
  double ab = 0.0, bb = 0.0;
#pragma omp parallel for reduction(+ : ab, bb) if (n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return bb > 0.0 ? ab / bb : 1.0;
}

GradBalance parse_grad_balance(const std::string& name) {
  if (name == "none") return GradBalance::none;
  if (name == "sqrt") return GradBalance::sqrt;
  if (name == "relative") return GradBalance::relative;
  throw engine::Error(engine::str_cat("quantizer gradient balancing must be none, sqrt or relative, got '", name, "'"));
}

const char* grad_balance_name(GradBalance mode) {
  return mode == GradBalance::none ? "none" : mode == GradBalance::sqrt ? "sqrt" : "relative";
}

// ---- interface --------------------------------------------------------------------------------------------

Tensor Quantizer::parameter(const std::string& name) const {
  for (auto& [n, t] : named_parameters())
    if (n == name) return t;
  throw engine::Error(engine::str_cat(kind(), ": no parameter '", name, "'"));
}

void Quantizer::check_levels_fit() const {
  const int lo = min_level(), hi = positive_levels();
  const bool sgn = lo < 0;
  QIL_CHECK(sgn ? (lo >= -128 && hi <= 127) : hi <= 255, kind(), ": ", bits(), "-bit levels span [", lo, ", ", hi,
            "] and do not fit ", sgn ? "int8 (s8)" : "uint8 (u8)");
}

Tensor Quantizer::levels(const Tensor& v) const {
  check_levels_fit();
  const int lo = min_level(), hi = positive_levels();
  const bool sgn = lo < 0;
  engine::NoGradGuard ng;
  const Tensor vbar = (*this)(v);
  const float inv_step = static_cast<float>(1.0 / level_step());
  Tensor k = Tensor::empty(v.shape(), sgn ? DType::s8 : DType::u8, v.layout());
  const float* vp = vbar.data();
  const int64_t n = v.numel();
  int64_t outside = 0;  // levels outside [lo, hi]: a step that does not match the rule
  auto fill = [&](auto* kp) {
#pragma omp parallel for simd reduction(+ : outside) if (n > 16384)
    for (int64_t i = 0; i < n; ++i) {
      // vbar = k·step up to float rounding, so r is within 1e-5 of k: round half away by truncation (vectorizes).
      const float r = vp[i] * inv_step;
      const int32_t ki = static_cast<int32_t>(r + (r < 0.f ? -0.5f : 0.5f));
      outside += static_cast<int64_t>(ki < lo) + static_cast<int64_t>(ki > hi);
      kp[i] = static_cast<std::remove_pointer_t<decltype(kp)>>(ki);
    }
  };
  if (sgn) fill(k.data<int8_t>());
  else fill(k.data<uint8_t>());
  QIL_CHECK(outside == 0, kind(), ": ", outside, " levels fell outside [", lo, ", ", hi, "] (step ", level_step(), ")");
  return k;
}

void Quantizer::set_frozen(bool frozen) {
  for (auto& [n, t] : named_parameters()) {
    Tensor h = t;  // a handle: requires_grad is shared state
    h.set_requires_grad(!frozen && !pinned(n));
  }
}

void Quantizer::parameters_loaded(const std::vector<std::string>& names) {
  if (!names.empty()) set_calibrated(true);
}

std::unique_ptr<Quantizer> make_weight_quantizer(const std::string& kind, int bits, const QuantizerOptions& o) {
  if (kind == "qil") return std::make_unique<QilWeightQuantizer>(bits, o.fix_gamma, o.weight_calib);
  if (kind == "lsq")
    return std::make_unique<LsqQuantizer>(o.symmetric ? LsqQuantizer::Role::weight_symmetric : LsqQuantizer::Role::weight,
                                          bits);
  // PACT's paper quantizes the weights with DoReFa's rule.
  if (kind == "pact" || kind == "dorefa") return std::make_unique<DorefaWeightQuantizer>(bits);
  throw engine::Error(engine::str_cat("unknown weight quantizer '", kind, "' (known: qil, lsq, pact, dorefa)"));
}

std::unique_ptr<Quantizer> make_activation_quantizer(const std::string& kind, int bits, const QuantizerOptions& o) {
  if (kind == "qil") return std::make_unique<QilActQuantizer>(bits, o.is_signed, o.percentile, o.act_calib);
  if (kind == "lsq")
    return std::make_unique<LsqQuantizer>(
        o.is_signed ? LsqQuantizer::Role::activation_signed : LsqQuantizer::Role::activation, bits);
  if (kind == "pact") return std::make_unique<PactQuantizer>(bits, o.is_signed, o.percentile);
  if (kind == "dorefa") return std::make_unique<DorefaActQuantizer>(bits, o.is_signed);
  throw engine::Error(
      engine::str_cat("unknown activation quantizer '", kind, "' (known: qil, lsq, pact, dorefa)"));
}

std::unique_ptr<Quantizer> quantizer_from_stats(const QuantStats& s) {
  if (s.kind == "pact_activation" || s.kind == "pact_activation_signed") {
    auto p = std::make_unique<PactQuantizer>(s.bits, s.kind == "pact_activation_signed");
    p->alpha().data()[0] = static_cast<float>(s.alpha);
    p->set_calibrated(true);
    return p;
  }
  if (s.kind == "dorefa_weight") {
    auto w = std::make_unique<DorefaWeightQuantizer>(s.bits);
    w->set_fixed_normalizer(static_cast<float>(s.tanh_max));  // 0 (not reported): the input's own M
    return w;
  }
  if (s.kind == "dorefa_activation" || s.kind == "dorefa_activation_signed")
    return std::make_unique<DorefaActQuantizer>(s.bits, s.kind == "dorefa_activation_signed");
  if (s.kind == "lsq_weight" || s.kind == "lsq_weight_symmetric" || s.kind == "lsq_activation" ||
      s.kind == "lsq_activation_signed") {
    const auto role = s.kind == "lsq_weight"             ? LsqQuantizer::Role::weight
                      : s.kind == "lsq_weight_symmetric" ? LsqQuantizer::Role::weight_symmetric
                      : s.kind == "lsq_activation"       ? LsqQuantizer::Role::activation
                                                         : LsqQuantizer::Role::activation_signed;
    auto l = std::make_unique<LsqQuantizer>(role, s.bits);
    l->step().data()[0] = static_cast<float>(s.step);
    l->set_calibrated(true);
    return l;
  }
  std::unique_ptr<QilQuantizerBase> q;
  if (s.kind == "qil_weight") {
    auto w = std::make_unique<QilWeightQuantizer>(s.bits);
    w->gamma().data()[0] = static_cast<float>(s.gamma);
    q = std::move(w);
  } else if (s.kind == "qil_activation" || s.kind == "qil_activation_signed") {
    q = std::make_unique<QilActQuantizer>(s.bits, s.kind == "qil_activation_signed");
  } else {
    throw engine::Error(engine::str_cat("quantizer_from_stats: unknown quantizer kind '", s.kind, "'"));
  }
  q->c().data()[0] = static_cast<float>(s.c);
  q->d().data()[0] = static_cast<float>(s.d);
  q->set_calibrated(true);
  return q;
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

WeightCalib parse_weight_calib(const std::string& name) {
  if (name == "max") return WeightCalib::max;
  if (name == "mse") return WeightCalib::mse;
  throw engine::Error(engine::str_cat("unknown weight calibration '", name, "' (known: max, mse)"));
}

namespace {
// (Σ v·k)² / Σ k² for k = min(round(q·v/p), q): the share of ||v||² a least-squares scale of the levels keeps.
double kept_energy(const std::vector<float>& v, int q, double p) {
  const double inv = q / p;
  double vk = 0.0, kk = 0.0;
  for (float x : v) {
    const double k = std::min(std::floor(x * inv + 0.5), static_cast<double>(q));
    vk += x * k;
    kk += k * k;
  }
  return kk > 0.0 ? vk * vk / kk : 0.0;
}

// Every stride-th element of t, at most `cap` of them, appended as the magnitude a quantizer sees: |v| when
// symmetric, max(v, 0) when unsigned.
void append_magnitudes(const Tensor& t, int64_t cap, bool symmetric, std::vector<float>& out) {
  const float* p = t.data();
  const int64_t n = t.numel(), stride = (n + cap - 1) / cap;
  for (int64_t i = 0; i < n; i += stride) out.push_back(symmetric ? std::fabs(p[i]) : std::max(p[i], 0.f));
}
}  // namespace

double mse_clip_point(const std::vector<float>& v, int q) {
  QIL_CHECK(!v.empty(), "mse_clip_point: no values");
  QIL_CHECK(q >= 1, "mse_clip_point: q must be >= 1, got ", q);
  const double top = *std::max_element(v.begin(), v.end());
  QIL_CHECK(top > 0.0, "mse_clip_point: all values are zero");
  constexpr int kCoarse = 256, kFine = 64;
  double best_p = top, best = -1.0;
  for (int j = 1; j <= kCoarse; ++j) {
    const double p = top * j / kCoarse, e = kept_energy(v, q, p);
    if (e > best) best = e, best_p = p;
  }
  const double step = top / kCoarse, lo = std::max(step / kFine, best_p - step);
  for (int j = 0; j <= 2 * kFine; ++j) {
    const double p = std::min(top, lo + step * j / kFine), e = kept_energy(v, q, p);
    if (e > best) best = e, best_p = p;
  }
  return best_p;
}

QilWeightQuantizer::QilWeightQuantizer(int bits, bool fix_gamma, WeightCalib calib)
    : QilQuantizerBase(bits), gamma_(learnable_scalar(1.f)), fix_gamma_(fix_gamma), calib_(calib) {
  qil_weight_levels(bits, "QilWeightQuantizer");
  set_fix_gamma(fix_gamma);
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

ActCalib parse_act_calib(const std::string& name) {
  if (name == "percentile") return ActCalib::percentile;
  if (name == "mse") return ActCalib::mse;
  throw engine::Error(engine::str_cat("unknown activation calibration '", name, "' (known: percentile, mse)"));
}

QilActQuantizer::QilActQuantizer(int bits, bool is_signed, double percentile, ActCalib calib)
    : QilQuantizerBase(bits), is_signed_(is_signed), percentile_(percentile), calib_(calib) {
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

NamedTensors QilActQuantizer::named_parameters() const { return {{"c", c_}, {"d", d_}}; }

void QilActQuantizer::observe(const Tensor& x) {
  if (calibrated_) return;
  check_input("QilActQuantizer::observe", x);
  if (x.numel() == 0) return;
  percentile_sum_ += observed_percentile(x, percentile_, is_signed_);
  max_value_ = std::max(max_value_, observed_max(x, is_signed_));
  if (calib_ == ActCalib::mse) append_magnitudes(x, kMseSample, is_signed_, sample_);
  ++observed_;
}

void QilActQuantizer::finish_calibration() {
  if (calibrated_) return;
  QIL_CHECK(observed_ > 0, "QilActQuantizer::finish_calibration: nothing observed");
  double p = percentile_sum_ / static_cast<double>(observed_);
  if (!(p > 0.0)) p = max_value_;
  QIL_CHECK(p > 0.0, "QilActQuantizer::finish_calibration: all ", observed_,
            " observed inputs are zero (or negative for an unsigned quantizer)");
  // mse: from the pooled sample; where the stride missed every nonzero input of a sparse layer, p stays.
  if (calib_ == ActCalib::mse && std::any_of(sample_.begin(), sample_.end(), [](float v) { return v > 0.f; }))
    p = mse_clip_point(sample_, positive_levels());
  set_interval(p / 2.0, p / 2.0);
  percentile_sum_ = 0.0;
  max_value_ = 0.0;
  sample_.clear();
  sample_.shrink_to_fit();
  observed_ = 0;
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

}  // namespace quant
