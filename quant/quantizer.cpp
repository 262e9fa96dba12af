// The Quantizer interface's shared members, the calibration helpers the quantizers share, the factory, and the
// output-scale fit.
#include "quant/quantizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "quant/kernel_util.h"

namespace quant {

using engine::DType;

using kernel::check_input;


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
  const int64_t stride = (n + kObservedSample - 1) / kObservedSample;
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

}  // namespace

// Every stride-th element of t, at most `cap` of them, appended as the magnitude a quantizer sees: |v| when
// symmetric, max(v, 0) when unsigned.
void append_magnitudes(const Tensor& t, int64_t cap, bool symmetric, std::vector<float>& out) {
  const float* p = t.data();
  const int64_t n = t.numel(), stride = (n + cap - 1) / cap;
  for (int64_t i = 0; i < n; i += stride) out.push_back(symmetric ? std::fabs(p[i]) : std::max(p[i], 0.f));
}

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

void ActClipObserver::observe(const Tensor& x, ActCalib rule) {
  if (x.numel() == 0) return;
  percentile_sum_ += observed_percentile(x, percentile_, absolute_);
  max_value_ = std::max(max_value_, observed_max(x, absolute_));
  if (rule == ActCalib::mse) append_magnitudes(x, kMseSample, absolute_, sample_);
  ++observed_;
}

double ActClipObserver::finish(ActCalib rule, int q, const char* who) {
  QIL_CHECK(observed_ > 0, who, ": nothing observed");
  double p = percentile_sum_ / static_cast<double>(observed_);
  if (!(p > 0.0)) p = max_value_;
  QIL_CHECK(p > 0.0, who, ": all ", observed_, " observed inputs are zero (or negative for an unsigned quantizer)");
  if (rule == ActCalib::mse && std::any_of(sample_.begin(), sample_.end(), [](float v) { return v > 0.f; }))
    p = mse_clip_point(sample_, q);
  sample_.clear();
  sample_.shrink_to_fit();
  percentile_sum_ = max_value_ = 0.0;
  observed_ = 0;
  return p;
}

bool Quantizer::levels_fit() const {
  const int lo = min_level(), hi = positive_levels();
  return lo < 0 ? (lo >= -128 && hi <= 127) : hi <= 255;
}

void Quantizer::check_levels_fit() const {
  const int lo = min_level(), hi = positive_levels();
  QIL_CHECK(levels_fit(), kind(), ": ", bits(), "-bit levels span [", lo, ", ", hi, "] and do not fit ",
            lo < 0 ? "int8 (s8)" : "uint8 (u8)");
}

Tensor Quantizer::levels(const Tensor& v) const {
  engine::NoGradGuard ng;
  return levels_of((*this)(v));
}

namespace {

// The smallest and largest level a pass wrote; combined across threads by +=.
struct LevelRange {
  int32_t lo = std::numeric_limits<int32_t>::max(), hi = std::numeric_limits<int32_t>::min();
  LevelRange& operator+=(const LevelRange& o) {
    lo = std::min(lo, o.lo), hi = std::max(hi, o.hi);
    return *this;
  }
};

// k = vbar·inv_step rounded half away from zero, on [b, e): vbar = k·step up to float rounding, so r is within 1e-5
// of k and truncating r ± 0.5 rounds it. Branch-free with a min/max reduction, so it vectorizes; compiled twice
// (kernel_util.h: AVX2 and the baseline, the same bits).
template <class T>
__attribute__((always_inline)) inline LevelRange levels_body(const float* vp, T* kp, int64_t b, int64_t e,
                                                             float inv_step) {
  int32_t lo = std::numeric_limits<int32_t>::max(), hi = std::numeric_limits<int32_t>::min();
#pragma omp simd reduction(min : lo) reduction(max : hi)
  for (int64_t i = b; i < e; ++i) {
    const float r = vp[i] * inv_step;
    const int32_t k = static_cast<int32_t>(r + (r < 0.f ? -0.5f : 0.5f));
    lo = std::min(lo, k);
    hi = std::max(hi, k);
    kp[i] = static_cast<T>(k);
  }
  return {lo, hi};
}
template <class T>
QIL_AVX2 LevelRange levels_avx2(const float* vp, T* kp, int64_t b, int64_t e, float inv_step) {
  return levels_body(vp, kp, b, e, inv_step);
}
template <class T>
LevelRange levels_base(const float* vp, T* kp, int64_t b, int64_t e, float inv_step) {
  return levels_body(vp, kp, b, e, inv_step);
}

}  // namespace

Tensor Quantizer::levels_of(const Tensor& vbar) const {
  engine::ops::OpTimer timer("levels_of");
  check_levels_fit();
  kernel::check_input("levels_of", vbar);
  const int lo = min_level(), hi = positive_levels();
  const bool sgn = lo < 0;
  const float inv_step = static_cast<float>(1.0 / level_step());
  Tensor k = Tensor::empty(vbar.shape(), sgn ? DType::s8 : DType::u8, vbar.layout());
  const float* vp = vbar.data();
  const int64_t n = vbar.numel();
  auto fill = [&](auto* kp) {
    using T = std::remove_pointer_t<decltype(kp)>;
    const auto body = kernel::use_avx2() ? levels_avx2<T> : levels_base<T>;
    return kernel::thread_sum<LevelRange>(n, [&](int64_t b, int64_t e) { return body(vp, kp, b, e, inv_step); });
  };
  const LevelRange got = sgn ? fill(k.data<int8_t>()) : fill(k.data<uint8_t>());
  if (n > 0 && (got.lo < lo || got.hi > hi)) {  // a step that does not match the rule: count them for the message
    int64_t outside = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float r = vp[i] * inv_step;
      const int64_t ki = static_cast<int64_t>(r + (r < 0.f ? -0.5f : 0.5f));
      outside += (ki < lo) + (ki > hi);
    }
    throw engine::Error(engine::str_cat(kind(), ": ", outside, " levels fell outside [", lo, ", ", hi, "] (step ",
                                        level_step(), ")"));
  }
  return k;
}

LevelRule Quantizer::level_rule() const {
  throw engine::Error(engine::str_cat(kind(), ": no integer level rule to export"));
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

WeightCalib parse_weight_calib(const std::string& name) {
  if (name == "max") return WeightCalib::max;
  if (name == "mse") return WeightCalib::mse;
  throw engine::Error(engine::str_cat("unknown weight calibration '", name, "' (known: max, mse)"));
}

ActCalib parse_act_calib(const std::string& name) {
  if (name == "percentile") return ActCalib::percentile;
  if (name == "mse") return ActCalib::mse;
  throw engine::Error(engine::str_cat("unknown activation calibration '", name, "' (known: percentile, mse)"));
}

}  // namespace quant
