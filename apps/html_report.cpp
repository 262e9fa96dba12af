// Run history readers, activation statistics and the HTML report of `qil inspect`.
#include "apps/html_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "apps/report.h"
#include "apps/training/evaluate.h"
#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/check.h"
#include "quant/qil_ops.h"

namespace apps {

namespace fs = std::filesystem;
using engine::Tensor;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------------------
// History files

std::vector<MetricsRow> read_metrics_csv(const std::string& path) {
  std::ifstream in(path);
  QIL_CHECK(in.good(), "metrics: cannot open '", path, "'");
  std::string line;
  QIL_CHECK(static_cast<bool>(std::getline(in, line)), path, ": empty file (expected a header line)");
  auto split = [](const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string cell;
    while (std::getline(ss, cell, ',')) out.push_back(cell);
    if (!s.empty() && s.back() == ',') out.emplace_back();
    return out;
  };
  const std::vector<std::string> header = split(line);
  std::vector<MetricsRow> rows;
  int64_t line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    const std::vector<std::string> cells = split(line);
    QIL_CHECK(cells.size() == header.size(), path, ": line ", line_no, " has ", cells.size(), " fields, the header ",
              header.size());
    MetricsRow r;
    for (size_t i = 0; i < header.size(); ++i) {
      const std::string& h = header[i];
      const std::string& v = cells[i];
      if (h == "stage_name") {
        r.stage_name = v;
        continue;
      }
      double x = 0;
      try {
        x = v.empty() ? 0.0 : std::stod(v);
      } catch (const std::exception&) {
        throw engine::Error(engine::str_cat(path, ": line ", line_no, ": column '", h, "' is not a number: '", v, "'"));
      }
      if (h == "stage") r.stage = static_cast<int>(x);
      else if (h == "epoch") r.epoch = static_cast<int>(x);
      else if (h == "global_epoch") r.global_epoch = static_cast<int64_t>(x);
      else if (h == "lr") r.lr = x;
      else if (h == "train_loss") r.train_loss = x;
      else if (h == "train_top1") r.train_top1 = x;
      else if (h == "val_loss") r.val_loss = x;
      else if (h == "val_top1") r.val_top1 = x;
      else if (h == "val_top5") r.val_top5 = x;
      else if (h == "test_loss") r.test_loss = x;
      else if (h == "test_top1") r.test_top1 = x;
      else if (h == "test_top5") r.test_top5 = x;
      else if (h == "img_per_s") r.img_per_s = x;
      else if (h == "wall_s") r.wall_s = x;
    }
    rows.push_back(r);
  }
  return rows;
}

std::vector<IntervalRecord> read_intervals_jsonl(const std::string& path, const std::vector<MetricsRow>& metrics) {
  std::ifstream in(path);
  QIL_CHECK(in.good(), "intervals: cannot open '", path, "'");
  std::map<std::pair<int, int>, int64_t> global;
  for (const auto& m : metrics) global[{m.stage, m.epoch}] = m.global_epoch;
  std::map<std::pair<int, int>, int64_t> seen;  // fallback numbering without metrics
  std::vector<IntervalRecord> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const json j = json::parse(line);
      IntervalRecord r;
      r.stage = j.value("stage", 0);
      r.stage_name = j.value("stage_name", "");
      r.epoch = j.value("epoch", 0);
      r.report = layer_report_from_json(j);
      const std::pair<int, int> key{r.stage, r.epoch};
      // Epoch 0 is the start of a stage (its calibration): where the previous epoch ended.
      const auto first = global.find({r.stage, 1});
      if (r.epoch == 0 && first != global.end()) {
        r.global_epoch = first->second - 1;
      } else if (auto it = global.find(key); it != global.end()) {
        r.global_epoch = it->second;
      } else {
        auto s = seen.find(key);
        if (s == seen.end()) s = seen.emplace(key, static_cast<int64_t>(seen.size()) + 1).first;
        r.global_epoch = s->second;
      }
      out.push_back(std::move(r));
    } catch (const json::exception& e) {
      throw engine::Error(engine::str_cat(path, ": line ", line_no, " is not a layer record (", e.what(), ")"));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Activation statistics

namespace {
constexpr int64_t kActivationBins = 80;
}

std::vector<ActivationStats> activation_stats(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds,
                                              int64_t batches, int64_t batch_size) {
  QIL_CHECK(batches >= 1, "inspect: --batches must be at least 1, got ", batches);
  struct Acc {
    ActivationStats s;
    double zeroed = 0, saturated = 0, sum = 0;
  };
  auto qlayers = layers::quantizable_layers(model);
  std::vector<Acc> acc;
  acc.reserve(qlayers.size());
  for (auto& [name, l] : qlayers) {
    quant::QilActQuantizer* aq = l->act_quantizer();
    if (!aq || l->quant_spec().abits >= 32) continue;
    acc.push_back(Acc{});
    Acc* a = &acc.back();
    a->s.layer = name;
    const quant::QuantStats q = aq->stats();
    a->s.hist_hi = 1.25 * std::max(q.clip_threshold, 1e-6);
    a->s.hist_lo = aq->is_signed() ? -a->s.hist_hi : 0.0;
    a->s.hist.assign(kActivationBins, 0);
    l->set_input_hook([a, aq](const Tensor& x) {
      const quant::QuantStats st = aq->stats(x);  // the quantizer's own discretization of this input
      const double n = static_cast<double>(x.numel());
      a->zeroed += st.pruned_fraction * n;
      a->saturated += st.clipped_fraction * n;
      const float* xp = x.data();
      double sum = 0, mx = a->s.values ? a->s.max : -INFINITY;
      const double lo = a->s.hist_lo, scale = kActivationBins / (a->s.hist_hi - a->s.hist_lo);
      for (int64_t i = 0; i < x.numel(); ++i) {
        sum += xp[i];
        mx = std::max(mx, static_cast<double>(xp[i]));
        const auto b = static_cast<int64_t>(std::floor((xp[i] - lo) * scale));
        ++a->s.hist[static_cast<size_t>(std::clamp<int64_t>(b, 0, kActivationBins - 1))];
      }
      a->sum += sum;
      a->s.max = mx;
      a->s.values += x.numel();
      ++a->s.batches;
    });
  }
  struct HookGuard {  // the hooks point into acc: remove them however the forward ends
    decltype(qlayers)& ls;
    ~HookGuard() {
      for (auto& [name, l] : ls) l->set_input_hook(nullptr);
    }
  } guard{qlayers};
  training::for_each_eval_batch(model, ds, training::loader_options(training::LoaderUse::eval, batch_size, 1),
                                batches, [](const data::Batch&, const Tensor&) {});
  std::vector<ActivationStats> out;
  for (auto& a : acc) {
    if (a.s.values) {
      const double n = static_cast<double>(a.s.values);
      a.s.zeroed_fraction = a.zeroed / n;
      a.s.saturated_fraction = a.saturated / n;
      a.s.mean = a.sum / n;
    }
    out.push_back(a.s);
  }
  return out;
}

json activation_stats_json(const ActivationStats& s) {
  return json{{"values", s.values},     {"batches", s.batches}, {"zeroed_fraction", s.zeroed_fraction},
              {"saturated_fraction", s.saturated_fraction}, {"mean", s.mean},       {"max", s.max},
              {"hist_lo", s.hist_lo}, {"hist_hi", s.hist_hi}, {"hist", s.hist}};
}

// ---------------------------------------------------------------------------------------------------------
// Loading a target

InspectData load_inspect_data(const std::string& target, std::unique_ptr<layers::Module>* model) {
  InspectData d;
  d.target = target;
  d.checkpoint = target;
  if (fs::is_directory(target)) {
    d.run_dir = target;
    d.checkpoint = (fs::path(target) / "last.ckpt").string();
    QIL_CHECK(fs::exists(d.checkpoint), "inspect: '", target, "' has no last.ckpt (is it a run directory?)");
  }
  QIL_CHECK(fs::exists(d.checkpoint), "inspect: no such file '", d.checkpoint, "'");
  QIL_CHECK(fs::is_regular_file(d.checkpoint), "inspect: '", d.checkpoint, "' is not a file");
  LoadedModel lm;
  try {
    lm = load_model_checkpoint(d.checkpoint);
  } catch (const engine::Error& e) {
    throw engine::Error(engine::str_cat("inspect: '", d.checkpoint, "' is not a readable model checkpoint: ", e.what()));
  }
  d.meta = lm.meta;
  d.reports = layers::quant_report(*lm.model);
  std::set<std::string> reported;
  for (const auto& r : d.reports) reported.insert(r.name);
  for (auto& [name, l] : layers::quantizable_layers(*lm.model)) {
    if (!reported.count(name)) continue;
    const Tensor w = l->weight();
    d.weights[name].assign(w.data(), w.data() + w.numel());
  }
  if (!d.run_dir.empty()) {
    const fs::path dir(d.run_dir);
    if (fs::exists(dir / "metrics.csv")) d.metrics = read_metrics_csv((dir / "metrics.csv").string());
    if (fs::exists(dir / "intervals.jsonl"))
      d.intervals = read_intervals_jsonl((dir / "intervals.jsonl").string(), d.metrics);
  }
  if (model) *model = std::move(lm.model);
  return d;
}

// ---------------------------------------------------------------------------------------------------------
// SVG charts

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v, const char* f = "%.4g") {
  if (!std::isfinite(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
std::string px(double v) { return num(v, "%.1f"); }

// Tick positions: about n steps of 1, 2 or 5 × 10^k covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int n) {
  std::vector<double> t;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step)
    t.push_back(std::abs(v) < 1e-12 * step ? 0.0 : v);
  return t;
}

struct Series {
  Series(std::string l, std::string c) : label(std::move(l)), color(std::move(c)) {}
  std::string label, color;
  std::vector<std::pair<double, double>> pts;  // NaN y breaks the line
  bool dashed = false;
  bool markers = true;
  bool secondary = false;  // on the right-hand axis
  double width = 1.8;
};
struct VLine {
  double x;
  std::string label, color;
  bool dashed = true;
};
struct Bar {
  double x0, x1, h;
};
struct Band {  // a shaded x range with a label at the top (a training stage)
  double x0, x1;
  std::string label;
};

struct Chart {
  std::string title, xlabel, ylabel, y2label;
  int w = 620, h = 280;
  double xmin = NAN, xmax = NAN, ymin = NAN, ymax = NAN, y2min = -1.05, y2max = 1.05;
  bool integer_x = false;
  bool log_bars = false;  // bar heights on a log10(1 + count) axis: tails and outliers stay visible
  std::vector<Series> series;
  std::vector<VLine> vlines;
  std::vector<Bar> bars;
  std::vector<Band> bands;

  std::string svg() const;
};

std::string Chart::svg() const {
  const double ml = 62, mr = y2label.empty() ? 16 : 56, mt = 56, mb = 44;
  const double pw = w - ml - mr, ph = h - mt - mb;
  // Data ranges.
  double x0 = xmin, x1 = xmax, y0 = ymin, y1 = ymax;
  auto widen = [](double& lo, double& hi, double v) {
    if (!std::isfinite(v)) return;
    if (!std::isfinite(lo) || v < lo) lo = v;
    if (!std::isfinite(hi) || v > hi) hi = v;
  };
  double dx0 = NAN, dx1 = NAN, dy0 = NAN, dy1 = NAN;
  for (const auto& s : series)
    for (auto [x, y] : s.pts) {
      widen(dx0, dx1, x);
      if (!s.secondary) widen(dy0, dy1, y);
    }
  auto bar_y = [&](double hgt) { return log_bars ? std::log10(1.0 + hgt) : hgt; };
  for (const auto& b : bars) {
    widen(dx0, dx1, b.x0);
    widen(dx0, dx1, b.x1);
    widen(dy0, dy1, 0.0);
    widen(dy0, dy1, bar_y(b.h));
  }
  for (const auto& v : vlines) widen(dx0, dx1, v.x);
  if (!std::isfinite(x0)) x0 = dx0;
  if (!std::isfinite(x1)) x1 = dx1;
  if (!std::isfinite(y0)) y0 = dy0;
  if (!std::isfinite(y1)) y1 = dy1;
  if (!std::isfinite(x0) || !std::isfinite(x1)) x0 = 0, x1 = 1;
  if (!std::isfinite(y0) || !std::isfinite(y1)) y0 = 0, y1 = 1;
  if (x1 <= x0) x0 -= 0.5, x1 += 0.5;
  if (y1 <= y0) {
    const double pad = std::abs(y0) > 0 ? std::abs(y0) * 0.1 : 0.5;
    y0 -= pad, y1 += pad;
  } else if (!std::isfinite(ymin) || !std::isfinite(ymax)) {
    const double pad = 0.06 * (y1 - y0);
    if (!std::isfinite(ymin) && !(bars.size() && y0 == 0)) y0 -= pad;
    if (!std::isfinite(ymax)) y1 += pad;
  }
  auto X = [&](double x) { return ml + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return mt + (1 - (y - y0) / (y1 - y0)) * ph; };
  auto Y2 = [&](double y) { return mt + (1 - (y - y2min) / (y2max - y2min)) * ph; };

  std::ostringstream o;
  o << "<svg class=\"chart\" width=\"" << w << "\" height=\"" << h
    << "\" viewBox=\"0 0 " << w << " " << h << "\" role=\"img\">";
  o << "<text x=\"10\" y=\"16\" class=\"ct\">" << esc(title) << "</text>";
  o << "<defs><clipPath id=\"CLIPID\"><rect x=\"" << ml << "\" y=\"" << mt << "\" width=\"" << px(pw)
    << "\" height=\"" << px(ph) << "\"/></clipPath></defs>";
  // Stage bands, alternating shade, labels above the plot.
  for (size_t i = 0; i < bands.size(); ++i) {
    const double a = std::max(X(bands[i].x0), ml), b = std::min(X(bands[i].x1), ml + pw);
    if (b <= a) continue;
    if (i % 2 == 1)
      o << "<rect x=\"" << px(a) << "\" y=\"" << mt << "\" width=\"" << px(b - a) << "\" height=\"" << px(ph)
        << "\" fill=\"#f1f3f7\"/>";
    o << "<text x=\"" << px((a + b) / 2) << "\" y=\"" << mt - 5 << "\" class=\"band\">" << esc(bands[i].label)
      << "</text>";
  }
  // Grid and ticks.
  o << "<g class=\"grid\">";
  std::vector<double> yt = nice_ticks(y0, y1, 5);
  if (log_bars) {
    yt.clear();  // 1, 10, 100, ... (0 would sit on top of 1)
    for (double k = 0; k <= y1; k += 1) yt.push_back(std::log10(1.0 + std::pow(10.0, k)));
  }
  for (double t : yt)
    o << "<line x1=\"" << ml << "\" x2=\"" << px(ml + pw) << "\" y1=\"" << px(Y(t)) << "\" y2=\"" << px(Y(t))
      << "\"/><text x=\"" << ml - 6 << "\" y=\"" << px(Y(t) + 4) << "\" class=\"yt\">"
      << num(log_bars ? std::round(std::pow(10.0, t) - 1) : t, log_bars ? "%.0f" : "%.4g") << "</text>";
  std::vector<double> xt = nice_ticks(x0, x1, 7);
  if (integer_x) {
    xt.erase(std::remove_if(xt.begin(), xt.end(), [](double v) { return std::abs(v - std::round(v)) > 1e-9; }),
             xt.end());
    if (xt.empty()) xt.push_back(std::round((x0 + x1) / 2));
  }
  for (double t : xt)
    o << "<line x1=\"" << px(X(t)) << "\" x2=\"" << px(X(t)) << "\" y1=\"" << mt << "\" y2=\"" << px(mt + ph)
      << "\"/><text x=\"" << px(X(t)) << "\" y=\"" << px(mt + ph + 15) << "\" class=\"xt\">" << num(t) << "</text>";
  if (!y2label.empty())
    for (double t : nice_ticks(y2min, y2max, 4))
      o << "<text x=\"" << px(ml + pw + 6) << "\" y=\"" << px(Y2(t) + 4) << "\" class=\"y2t\">" << num(t)
        << "</text>";
  o << "</g>";
  o << "<rect x=\"" << ml << "\" y=\"" << mt << "\" width=\"" << px(pw) << "\" height=\"" << px(ph)
    << "\" class=\"frame\"/>";
  o << "<text x=\"" << px(ml + pw / 2) << "\" y=\"" << h - 8 << "\" class=\"xl\">" << esc(xlabel) << "</text>";
  o << "<text transform=\"translate(14," << px(mt + ph / 2) << ") rotate(-90)\" class=\"xl\">" << esc(ylabel)
    << "</text>";
  if (!y2label.empty())
    o << "<text transform=\"translate(" << w - 10 << "," << px(mt + ph / 2) << ") rotate(90)\" class=\"xl\">"
      << esc(y2label) << "</text>";
  o << "<g clip-path=\"url(#CLIPID)\">";
  for (const auto& b : bars)
    o << "<rect x=\"" << px(X(b.x0)) << "\" y=\"" << px(Y(bar_y(b.h))) << "\" width=\""
      << px(std::max(0.5, X(b.x1) - X(b.x0))) << "\" height=\"" << px(Y(0) - Y(bar_y(b.h))) << "\" class=\"bar\"><title>[" << num(b.x0) << ", " << num(b.x1)
      << "): " << num(b.h, "%.0f") << "</title></rect>";
  for (const auto& v : vlines)
    o << "<line x1=\"" << px(X(v.x)) << "\" x2=\"" << px(X(v.x)) << "\" y1=\"" << mt << "\" y2=\"" << px(mt + ph)
      << "\" stroke=\"" << v.color << "\" stroke-width=\"1.4\"" << (v.dashed ? " stroke-dasharray=\"5 3\"" : "")
      << "><title>" << esc(v.label) << " = " << num(v.x) << "</title></line>";
  for (const auto& s : series) {
    auto YY = [&](double y) { return s.secondary ? Y2(y) : Y(y); };
    std::string d;
    bool pen = false;
    for (auto [x, y] : s.pts) {
      if (!std::isfinite(y)) {
        pen = false;
        continue;
      }
      d += (pen ? "L" : "M") + px(X(x)) + " " + px(YY(y));
      pen = true;
    }
    o << "<path d=\"" << d << "\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << s.width << "\""
      << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>";
    if (s.markers)
      for (auto [x, y] : s.pts)
        if (std::isfinite(y))
          o << "<circle cx=\"" << px(X(x)) << "\" cy=\"" << px(YY(y)) << "\" r=\"3\" fill=\"" << s.color
            << "\"><title>" << esc(s.label) << " @ " << esc(xlabel) << " " << num(x) << ": " << num(y, "%.5g")
            << "</title></circle>";
  }
  o << "</g>";
  // Legend, one row at the top right.
  std::vector<std::pair<std::string, std::string>> items;  // label, color (series, then marked lines)
  for (const auto& s : series) items.push_back({s.label, s.color});
  std::set<std::string> seen;
  for (const auto& v : vlines)
    if (!v.label.empty() && seen.insert(v.label).second) items.push_back({v.label, v.color});
  double lx = ml + pw;
  std::string legend;
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    const double chars = static_cast<double>(
        std::count_if(it->first.begin(), it->first.end(), [](char ch) { return (ch & 0xC0) != 0x80; }));
    const double tw = 6.4 * chars + 26;
    lx -= tw;
    legend += "<rect x=\"" + px(lx) + "\" y=\"25\" width=\"12\" height=\"4\" fill=\"" + it->second +
              "\"/><text x=\"" + px(lx + 15) + "\" y=\"31\" class=\"lg\">" + esc(it->first) + "</text>";
  }
  o << legend << "</svg>";
  return o.str();
}

// Unique clip-path ids across the page.
std::string finish_svg(std::string svg, int& counter) {
  const std::string id = "clip" + std::to_string(++counter);
  for (size_t p; (p = svg.find("CLIPID")) != std::string::npos;) svg.replace(p, 6, id);
  return svg;
}

// ---------------------------------------------------------------------------------------------------------
// Page pieces

struct StageSpan {
  int stage;
  std::string name;
  int64_t first, last;  // global epochs
};

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

const char* kCss = R"(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#fafbfc}
main{max-width:1400px;margin:0 auto;padding:18px 28px 60px}
h1{font-size:22px;margin:6px 0 2px}h2{font-size:18px;margin:34px 0 8px;border-bottom:1px solid #d9dde4;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}
.sub{color:#5b6473}.note{color:#5b6473;font-style:italic}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px;background:#fff}
th,td{border:1px solid #dde1e7;padding:3px 8px;text-align:right}th{background:#eef1f5;font-weight:600}
td.l,th.l{text-align:left}
.kv td:first-child{text-align:left;color:#5b6473}
.layer h2{margin-top:10px}
.layer{background:#fff;border:1px solid #e1e4ea;border-radius:6px;padding:6px 16px 14px;margin:18px 0}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
svg.chart{background:#fff;border:1px solid #e6e8ec;border-radius:4px}
svg text{font-family:system-ui,sans-serif}
.ct{font-size:13px;font-weight:600;fill:#1d2330}.xt,.band{font-size:11px;fill:#4a5261;text-anchor:middle}
.yt{font-size:11px;fill:#4a5261;text-anchor:end}.y2t{font-size:11px;fill:#4a5261;text-anchor:start}
.xl{font-size:12px;fill:#313846;text-anchor:middle}.lg{font-size:11px;fill:#313846}
.grid line{stroke:#eceef2}.frame{fill:none;stroke:#b9bec8}.bar{fill:#a9bfd9}
.band{font-weight:600}
a{color:#2557a7}
)";

std::string pct(double f) { return f < 0 ? "-" : num(100 * f, "%.2f") + "%"; }

std::string header_html(const InspectData& in, const std::vector<StageSpan>& spans) {
  std::ostringstream o;
  o << "<h1>qil inspect: " << esc(in.meta.model) << "</h1><p class=\"sub\">"
    << (in.run_dir.empty() ? "checkpoint " : "run directory ") << "<code>" << esc(in.target) << "</code></p>";
  o << "<table class=\"kv\"><tr><td>model</td><td class=\"l\">" << esc(in.meta.model) << " (" << in.meta.spec.in_channels
    << "&times;" << in.meta.spec.image_size << "&times;" << in.meta.spec.image_size << " input, "
    << in.meta.spec.num_classes << " classes)</td></tr>";
  o << "<tr><td>final state from</td><td class=\"l\"><code>" << esc(in.checkpoint) << "</code></td></tr>";
  o << "<tr><td>quantized layers</td><td class=\"l\">" << in.reports.size() << "</td></tr>";
  if (!spans.empty()) {
    std::string st;
    for (const auto& s : spans)
      st += (st.empty() ? "" : " &rarr; ") + esc(stage_label(s.name)) + " (" + std::to_string(s.last - s.first + 1) +
            " epoch" + (s.last > s.first ? "s" : "") + ")";
    o << "<tr><td>stages</td><td class=\"l\">" << st << "</td></tr>";
  }
  if (!in.metrics.empty()) {
    const MetricsRow& f = in.metrics.back();
    o << "<tr><td>final epoch</td><td class=\"l\">val top-1 " << num(f.val_top1, "%.2f") << "%, test top-1 "
      << num(f.test_top1, "%.2f") << "%, test top-5 " << num(f.test_top5, "%.2f") << "% (" << esc(stage_label(f.stage_name))
      << ", global epoch " << f.global_epoch << ")</td></tr>";
  }
  if (!in.data_name.empty())
    o << "<tr><td>activation statistics on</td><td class=\"l\">" << esc(in.data_name) << "</td></tr>";
  o << "</table>";
  if (!in.metrics.empty()) {
    o << "<h3>Per stage</h3><table><tr><th class=\"l\">stage</th><th>epochs</th><th>best val top-1</th>"
         "<th>final val top-1</th><th>final test top-1</th><th>final test top-5</th></tr>";
    for (const auto& s : spans) {
      double best = -1;
      const MetricsRow* last = nullptr;
      for (const auto& m : in.metrics)
        if (m.stage == s.stage) {
          best = std::max(best, m.val_top1);
          last = &m;
        }
      if (!last) continue;
      o << "<tr><td class=\"l\">" << esc(stage_label(s.name)) << "</td><td>" << (s.last - s.first + 1) << "</td><td>"
        << num(best, "%.2f") << "%</td><td>" << num(last->val_top1, "%.2f") << "%</td><td>"
        << num(last->test_top1, "%.2f") << "%</td><td>" << num(last->test_top5, "%.2f") << "%</td></tr>";
    }
    o << "</table>";
  }
  return o.str();
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
    if (prev_stage >= 0 && m.stage != prev_stage)  // no line across a stage boundary
      for (Series* s : {&val, &test, &train}) s->pts.push_back({m.global_epoch - 0.5, NAN});
    prev_stage = m.stage;
    val.pts.push_back({static_cast<double>(m.global_epoch), m.val_top1});
    test.pts.push_back({static_cast<double>(m.global_epoch), m.test_top1});
    train.pts.push_back({static_cast<double>(m.global_epoch), m.train_top1});
  }
  c.series = {train, val, test};
  add_stages(c, spans);
  return finish_svg(c.svg(), ids);
}

// The interval of one side (weights or activations) of a layer over training.
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
    if (prev_stage >= 0 && r.stage != prev_stage)
      for (Series* se : {&lo, &mid, &hi, &pr, &cl}) se->pts.push_back({g - 0.5, NAN});
    prev_stage = r.stage;
    if (s.bits == 0) {
      for (Series* se : {&lo, &mid, &hi, &pr, &cl}) se->pts.push_back({g, NAN});
      continue;
    }
    lo.pts.push_back({g, s.c - s.d});
    mid.pts.push_back({g, s.c});
    hi.pts.push_back({g, s.c + s.d});
    pr.pts.push_back({g, s.prune_threshold});
    cl.pts.push_back({g, s.clip_threshold});
  }
  bool any = false;
  for (auto& p : mid.pts) any = any || std::isfinite(p.second);
  if (!any) return "";
  c.series = {lo, hi, mid, pr, cl};
  add_stages(c, spans);
  return finish_svg(c.svg(), ids);
}

// Histogram of the final weights with the thresholds, and the transformer ŵ(w) with its discretized

// The transformer (smooth) and the discretizer (a staircase) over a grid, on the secondary axis.
std::vector<Series> quantizer_curves(const std::vector<float>& grid, const Tensor& hat, const Tensor& bar,
                                     const char* hat_label, const char* bar_label) {
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

// staircase w̄(w) on the right-hand axis, computed by the quantizer's own ops.
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
  Chart c;
  c.title = "Final weights (" + std::to_string(w.size()) + ") and the " + std::to_string(s.bits) + "-bit quantizer";
  c.xlabel = "w";
  c.ylabel = "count (log scale)";
  c.log_bars = true;
  c.y2label = "quantized value";
  c.xmin = -m;
  c.xmax = m;
  c.ymin = 0;
  for (int i = 0; i < kBins; ++i) c.bars.push_back({-m + 2 * m * i / kBins, -m + 2 * m * (i + 1) / kBins, h[size_t(i)]});
  c.vlines = {{-s.prune_threshold, "prune", "#e08a00"}, {s.prune_threshold, "prune", "#e08a00"},
              {-s.clip_threshold, "clip", "#c81e1e"},   {s.clip_threshold, "clip", "#c81e1e"}};
  constexpr int kPts = 801;
  std::vector<float> grid(kPts);
  for (int i = 0; i < kPts; ++i) grid[size_t(i)] = static_cast<float>(-m + 2 * m * i / (kPts - 1));
  engine::NoGradGuard ng;
  const Tensor x = Tensor::from_vector(grid, {kPts});
  const Tensor tc = Tensor::scalar(static_cast<float>(s.c)), td = Tensor::scalar(static_cast<float>(s.d)),
               tg = Tensor::scalar(static_cast<float>(s.gamma));
  const Tensor hat = quant::qil_weight_transform(x, tc, td, tg);
  const Tensor bar = quant::qil_weight(x, tc, td, tg, s.bits);
  c.series = quantizer_curves(grid, hat, bar, "\u0175 (transformer)", "w\u0304 (discretized)");
  return finish_svg(c.svg(), ids);
}

// Histogram of a layer's measured inputs with the activation thresholds, and the quantizer's x̂(x) and x̄(x).
std::string activation_chart(const layers::LayerReport& r, const ActivationStats& as, int& ids) {
  const quant::QuantStats& s = r.activation;
  const bool is_signed = s.kind == "qil_activation_signed";
  const double lo = as.hist_lo, hi = as.hist_hi;
  Chart c;
  c.title = "Inputs (" + std::to_string(as.values) + ") and the " + std::to_string(s.bits) + "-bit quantizer";
  c.xlabel = is_signed ? "x (values beyond the range in the end bins)" : "x (values beyond the range in the last bin)";
  c.ylabel = "count (log scale)";
  c.log_bars = true;
  c.y2label = "quantized value";
  c.xmin = lo;
  c.xmax = hi;
  c.ymin = 0;
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
  constexpr int kPts = 801;
  std::vector<float> grid(kPts);
  for (int i = 0; i < kPts; ++i) grid[size_t(i)] = static_cast<float>(lo + (hi - lo) * i / (kPts - 1));
  engine::NoGradGuard ng;
  const Tensor x = Tensor::from_vector(grid, {kPts});
  const Tensor tc = Tensor::scalar(static_cast<float>(s.c)), td = Tensor::scalar(static_cast<float>(s.d));
  const Tensor hat = quant::qil_activation_transform(x, tc, td, is_signed);
  const Tensor bar = quant::qil_activation(x, tc, td, s.bits, is_signed);
  c.series = quantizer_curves(grid, hat, bar, "x\u0302 (transformer)", "x\u0304 (discretized)");
  return finish_svg(c.svg(), ids);
}

std::string layer_table(const layers::LayerReport& r, const ActivationStats* as) {
  const quant::QuantStats& w = r.weight;
  const quant::QuantStats& a = r.activation;
  std::ostringstream o;
  auto cell = [](const quant::QuantStats& s, const std::string& v) { return "<td>" + (s.bits ? v : "-") + "</td>"; };
  auto row = [&](const std::string& k, const std::string& wv, const std::string& av) {
    o << "<tr><td class=\"l\">" << k << "</td>" << cell(w, wv) << cell(a, av) << "</tr>";
  };
  o << "<table><tr><th class=\"l\"></th><th>weights</th><th>activations</th></tr>";
  row("bits", std::to_string(w.bits), std::to_string(a.bits));
  row("c", num(w.c), num(a.c));
  row("d", num(w.d), num(a.d));
  row("&gamma;", num(w.gamma, "%.3f"), num(a.gamma, "%.3f"));
  row("interval [c&minus;d, c+d]", "[" + num(w.c - w.d) + ", " + num(w.c + w.d) + "]",
      "[" + num(a.c - a.d) + ", " + num(a.c + a.d) + "]");
  row("pruning threshold", num(w.prune_threshold), num(a.prune_threshold));
  row("clipping threshold", num(w.clip_threshold), num(a.clip_threshold));
  row("% pruned (zeroed)", pct(w.pruned_fraction), as ? pct(as->zeroed_fraction) : "-");
  row("% clipped (saturated)", pct(w.clipped_fraction), as ? pct(as->saturated_fraction) : "-");
  row("levels used", w.levels_used < 0 ? "-" : std::to_string(w.levels_used) + " / " + std::to_string(w.levels_total),
      "- / " + std::to_string(a.levels_total));
  if (as) row("input mean / max", "", num(as->mean) + " / " + num(as->max));
  o << "<tr><td class=\"l\">out_scale</td><td colspan=\"2\" style=\"text-align:center\">" << num(r.out_scale)
    << "</td></tr></table>";
  if (as)
    o << "<p class=\"note\">activation shares over " << as->values << " input values (" << as->batches
      << " batches)</p>";
  return o.str();
}

std::string overview_table(const InspectData& in) {
  std::ostringstream o;
  o << "<table><tr><th class=\"l\">layer</th><th class=\"l\">type</th><th>W/A bits</th><th>prune W</th><th>clip W</th>"
       "<th>% pruned</th><th>% clipped</th><th>levels</th><th>prune X</th><th>clip X</th>";
  if (!in.activations.empty()) o << "<th>% zeroed X</th><th>% saturated X</th>";
  o << "<th>out_scale</th></tr>";
  for (const auto& r : in.reports) {
    const auto& w = r.weight;
    const auto& a = r.activation;
    auto b = [](int bits) { return bits < 32 ? std::to_string(bits) : std::string("fp"); };
    o << "<tr><td class=\"l\"><a href=\"#layer-" << esc(r.name) << "\">" << esc(r.name) << "</a></td><td class=\"l\">"
      << esc(r.type) << "</td><td>" << b(r.spec.wbits) << "/" << b(r.spec.abits) << "</td>";
    if (w.bits)
      o << "<td>" << num(w.prune_threshold) << "</td><td>" << num(w.clip_threshold) << "</td><td>"
        << pct(w.pruned_fraction) << "</td><td>" << pct(w.clipped_fraction) << "</td><td>" << w.levels_used << "/"
        << w.levels_total << "</td>";
    else
      o << "<td>-</td><td>-</td><td>-</td><td>-</td><td>-</td>";
    if (a.bits)
      o << "<td>" << num(a.prune_threshold) << "</td><td>" << num(a.clip_threshold) << "</td>";
    else
      o << "<td>-</td><td>-</td>";
    if (!in.activations.empty()) {
      const ActivationStats* as = nullptr;
      for (const auto& s : in.activations)
        if (s.layer == r.name) as = &s;
      o << "<td>" << (as ? pct(as->zeroed_fraction) : "-") << "</td><td>" << (as ? pct(as->saturated_fraction) : "-")
        << "</td>";
    }
    o << "<td>" << num(r.out_scale) << "</td></tr>";
  }
  o << "</table>";
  return o.str();
}

}  // namespace

std::string html_report(const InspectData& in) {
  int ids = 0;
  const std::vector<StageSpan> spans = stage_spans(in);
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qil inspect: " << esc(in.meta.model)
    << "</title><style>" << kCss << "</style></head><body><main>";
  o << header_html(in, spans);
  if (!in.metrics.empty()) o << "<h2>Accuracy</h2>" << accuracy_chart(in, spans, ids);
  else if (in.run_dir.empty())
    o << "<p class=\"note\">A checkpoint on its own: no training history, only the final state.</p>";
  else
    o << "<p class=\"note\">This run directory has no metrics.csv: no accuracy history.</p>";
  o << "<h2>Quantized layers</h2>";
  if (in.reports.empty()) {
    o << "<p class=\"note\">This network has no quantized layer (it runs at full precision): there are no intervals "
         "to show.</p>";
  } else {
    o << overview_table(in);
    if (!in.run_dir.empty() && in.intervals.empty())
      o << "<p class=\"note\">No intervals.jsonl in this run directory: no interval history.</p>";
  }
  for (const auto& r : in.reports) {
    o << "<section class=\"layer\" id=\"layer-" << esc(r.name) << "\"><h2>" << esc(r.name) << " <span class=\"sub\">("
      << esc(r.type) << ", W" << (r.spec.wbits < 32 ? std::to_string(r.spec.wbits) : "fp") << "/A"
      << (r.spec.abits < 32 ? std::to_string(r.spec.abits) : "fp") << ")</span></h2>";
    const ActivationStats* as = nullptr;
    for (const auto& s : in.activations)
      if (s.layer == r.name) as = &s;
    o << "<div class=\"row\">";
    if (r.weight.bits) {
      auto it = in.weights.find(r.name);
      if (it != in.weights.end()) o << weight_chart(r, it->second, ids);
    }
    if (r.activation.bits && as && as->values > 0 && !as->hist.empty()) o << activation_chart(r, *as, ids);
    o << "<div>" << layer_table(r, as) << "</div></div>";
    if (!in.intervals.empty()) {
      o << "<div class=\"row\">";
      if (r.weight.bits) o << interval_chart(in, r.name, true, spans, ids);
      if (r.activation.bits) o << interval_chart(in, r.name, false, spans, ids);
      o << "</div>";
    }
    o << "</section>";
  }
  if (!in.reports.empty())
    o << "<p class=\"sub\">Thresholds are after discretization: |w| below the pruning threshold becomes 0, |w| at or "
       "above the clipping threshold becomes &plusmn;1 (activations: 0 and 1). Hover over points and lines for "
       "values.</p>";
  o << "</main></body></html>\n";
  return o.str();
}

}  // namespace apps
