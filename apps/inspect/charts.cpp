// The report's charts: data from InspectData into svg::Chart, the quantizer's curves through quant::Quantizer.
#include "apps/inspect/charts.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "apps/inspect/svg_chart.h"
#include "engine/autograd.h"
#include "layers/quantize.h"

namespace apps {

using engine::Tensor;
using svg::Chart;
using svg::Series;

namespace {

std::string render(const Chart& c, int& ids) { return svg::render(c, "clip" + std::to_string(++ids)); }

// Shaded bands and boundary lines for the stages; x ticks on whole epochs.
void add_stages(Chart& c, const std::vector<StageSpan>& spans) {
  for (size_t i = 0; i < spans.size(); ++i) {
    c.bands.push_back({spans[i].first - 0.5, spans[i].last + 0.5, stage_label(spans[i].name)});
    if (i > 0) c.vlines.push_back({spans[i].first - 0.5, "", "#8a8f98", true});
  }
  if (!spans.empty()) {
    c.xmin = spans.front().first - 0.5;
    c.xmax = spans.back().last + 0.5;
  }
  c.integer_x = true;
}

// A NaN point in every series: no line across a stage boundary (each stage restarts its schedule).
void break_lines(std::initializer_list<Series*> series, double x) {
  for (Series* s : series) s->pts.push_back({x, NAN});
}

// The transformer (smooth) and the discretizer (a staircase) of a quantizer over a grid, on the secondary axis.
std::vector<Series> quantizer_curves(const quant::QuantStats& s, const std::vector<float>& grid,
                                     const char* hat_label, const char* bar_label) {
  engine::NoGradGuard ng;
  const std::unique_ptr<quant::Quantizer> q = quant::quantizer_from_stats(s);
  const Tensor x = Tensor::from_vector(grid, {static_cast<int64_t>(grid.size())});
  const Tensor hat = q->transform(x), bar = (*q)(x);
  Series sh{hat_label, "#2563eb"}, sb{bar_label, "#15803d"};
  sh.secondary = sb.secondary = true;
  sh.markers = sb.markers = false;
  sb.width = 1.4;
  for (size_t i = 0; i < grid.size(); ++i) {
    sh.pts.push_back({grid[i], hat.data()[i]});
    // A staircase: hold the previous level up to each jump so risers are vertical.
    if (i > 0 && bar.data()[i] != bar.data()[i - 1]) sb.pts.push_back({grid[i], bar.data()[i - 1]});
    sb.pts.push_back({grid[i], bar.data()[i]});
  }
  return {sh, sb};
}

std::vector<float> grid(double lo, double hi) {
  constexpr int kPts = 801;
  std::vector<float> g(kPts);
  for (int i = 0; i < kPts; ++i) g[size_t(i)] = static_cast<float>(lo + (hi - lo) * i / (kPts - 1));
  return g;
}

// A histogram chart on a log-count axis over [lo, hi], with the quantized value on the right-hand axis.
Chart histogram_chart(std::string title, std::string xlabel, double lo, double hi) {
  Chart c;
  c.title = std::move(title);
  c.xlabel = std::move(xlabel);
  c.ylabel = "count (log scale)";
  c.log_bars = true;
  c.y2label = "quantized value";
  c.xmin = lo;
  c.xmax = hi;
  c.ymin = 0;
  return c;
}

}  // namespace

std::vector<StageSpan> stage_spans(const InspectData& in) {
  std::vector<StageSpan> spans;
  auto add = [&](int stage, const std::string& name, int64_t g) {
    for (auto& s : spans)
      if (s.stage == stage) {
        s.first = std::min(s.first, g);
        s.last = std::max(s.last, g);
        return;
      }
    spans.push_back({stage, name, g, g});
  };
  for (const auto& m : in.metrics) add(m.stage, m.stage_name, m.global_epoch);
  if (spans.empty())
    for (const auto& r : in.intervals) add(r.stage, r.stage_name, r.global_epoch);
  std::sort(spans.begin(), spans.end(), [](const StageSpan& a, const StageSpan& b) { return a.first < b.first; });
  return spans;
}

std::string stage_label(const std::string& name) {
  if (name == "32" || name == "fp32" || name == "fp") return "FP32";
  bool digits = !name.empty() && std::all_of(name.begin(), name.end(), ::isdigit);
  return digits ? "W" + name + "A" + name : name;
}

std::string accuracy_chart(const InspectData& in, const std::vector<StageSpan>& spans, int& ids) {
  Chart c;
  c.title = "Accuracy by epoch";
  c.xlabel = "global epoch";
  c.ylabel = "top-1 (%)";
  c.w = 900;
  c.h = 300;
  Series val{"val top-1", "#2563eb"}, test{"test top-1", "#dc6b19"}, train{"train top-1", "#9aa3b2"};
  train.dashed = true;
  train.markers = false;
  int prev_stage = -1;
  for (const auto& m : in.metrics) {
    if (prev_stage >= 0 && m.stage != prev_stage) break_lines({&val, &test, &train}, m.global_epoch - 0.5);
    prev_stage = m.stage;
    val.pts.push_back({static_cast<double>(m.global_epoch), m.val_top1});
    test.pts.push_back({static_cast<double>(m.global_epoch), m.test_top1});
    train.pts.push_back({static_cast<double>(m.global_epoch), m.train_top1});
  }
  c.series = {train, val, test};
  add_stages(c, spans);
  return render(c, ids);
}

std::string interval_chart(const InspectData& in, const std::string& layer, bool weights,
                           const std::vector<StageSpan>& spans, int& ids) {
  Chart c;
  c.title = std::string(weights ? "Weight" : "Activation") + " interval over training";
  c.xlabel = "global epoch";
  c.ylabel = weights ? "|w|" : "x";
  Series lo{"c\u2212d", "#7c8aa5"}, mid{"c", "#1d2330"}, hi{"c+d", "#7c8aa5"}, pr{"prune", "#e08a00"},
      cl{"clip", "#c81e1e"};
  lo.dashed = hi.dashed = true;
  lo.width = hi.width = 1.2;
  int prev_stage = -1;
  for (const auto& r : in.intervals) {
    if (r.report.name != layer) continue;
    const quant::QuantStats& s = weights ? r.report.weight : r.report.activation;
    const double g = static_cast<double>(r.global_epoch);
    if (prev_stage >= 0 && r.stage != prev_stage) break_lines({&lo, &mid, &hi, &pr, &cl}, g - 0.5);
    prev_stage = r.stage;
    if (s.bits == 0) {  // this side was full precision in that epoch
      break_lines({&lo, &mid, &hi, &pr, &cl}, g);
      continue;
    }
    lo.pts.push_back({g, s.c - s.d});
    mid.pts.push_back({g, s.c});
    hi.pts.push_back({g, s.c + s.d});
    pr.pts.push_back({g, s.prune_threshold});
    cl.pts.push_back({g, s.clip_threshold});
  }
  if (std::none_of(mid.pts.begin(), mid.pts.end(), [](const auto& p) { return std::isfinite(p.second); })) return "";
  c.series = {lo, hi, mid, pr, cl};
  add_stages(c, spans);
  return render(c, ids);
}

std::string weight_chart(const layers::LayerReport& r, const std::vector<float>& w, int& ids) {
  const quant::QuantStats& s = r.weight;
  double m = 0;
  for (float v : w) m = std::max(m, static_cast<double>(std::abs(v)));
  m = std::max({m, s.clip_threshold, s.c + s.d}) * 1.04;
  if (!(m > 0)) m = 1;
  constexpr int kBins = 80;
  std::vector<double> h(kBins, 0);
  for (float v : w) {
    int b = static_cast<int>(std::floor((v + m) / (2 * m) * kBins));
    h[static_cast<size_t>(std::clamp(b, 0, kBins - 1))] += 1;
  }
  Chart c = histogram_chart(
      "Final weights (" + std::to_string(w.size()) + ") and the " + std::to_string(s.bits) + "-bit quantizer", "w",
      -m, m);
  for (int i = 0; i < kBins; ++i) c.bars.push_back({-m + 2 * m * i / kBins, -m + 2 * m * (i + 1) / kBins, h[size_t(i)]});
  c.vlines = {{-s.prune_threshold, "prune", "#e08a00"}, {s.prune_threshold, "prune", "#e08a00"},
              {-s.clip_threshold, "clip", "#c81e1e"},   {s.clip_threshold, "clip", "#c81e1e"}};
  c.series = quantizer_curves(s, grid(-m, m), "\u0175 (transformer)", "w\u0304 (discretized)");
  return render(c, ids);
}

std::string activation_chart(const layers::LayerReport& r, const ActivationStats& as, int& ids) {
  const quant::QuantStats& s = r.activation;
  const std::string signed_suffix = "_signed";  // qil_activation_signed, lsq_activation_signed, ...
  const bool is_signed = s.kind.size() > signed_suffix.size() &&
                         s.kind.compare(s.kind.size() - signed_suffix.size(), signed_suffix.size(), signed_suffix) == 0;
  const double lo = as.hist_lo, hi = as.hist_hi;
  Chart c = histogram_chart(
      "Inputs (" + std::to_string(as.values) + ") and the " + std::to_string(s.bits) + "-bit quantizer",
      is_signed ? "x (values beyond the range in the end bins)" : "x (values beyond the range in the last bin)", lo,
      hi);
  if (!is_signed) c.y2min = -0.05;
  const size_t n = as.hist.size();
  for (size_t i = 0; i < n; ++i)
    c.bars.push_back({lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(n),
                      lo + (hi - lo) * static_cast<double>(i + 1) / static_cast<double>(n),
                      static_cast<double>(as.hist[i])});
  c.vlines = {{s.prune_threshold, "prune", "#e08a00"}, {s.clip_threshold, "clip", "#c81e1e"}};
  if (is_signed) {
    c.vlines.push_back({-s.prune_threshold, "prune", "#e08a00"});
    c.vlines.push_back({-s.clip_threshold, "clip", "#c81e1e"});
  }
  c.series = quantizer_curves(s, grid(lo, hi), "x\u0302 (transformer)", "x\u0304 (discretized)");
  return render(c, ids);
}

}  // namespace apps
