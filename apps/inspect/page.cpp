// The HTML page: style sheet, header, tables, and the order of sections; the charts come from charts.h.
#include "apps/inspect/page.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "apps/inspect/charts.h"
#include "apps/inspect/svg_chart.h"

namespace apps {

using svg::esc;
using svg::num;

namespace {

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

// A top-1/top-5 figure in percent, or "—" for a split the run does not have (NaN from history.h).
std::string percent(double v) { return std::isfinite(v) ? num(v, "%.2f") + "%" : "\u2014"; }
std::string pct(double f) { return f < 0 ? "-" : num(100 * f, "%.2f") + "%"; }
std::string bits_label(int bits) { return bits < 32 ? std::to_string(bits) : std::string("fp"); }

const ActivationStats* stats_of(const InspectData& in, const std::string& layer) {
  const ActivationStats* found = nullptr;
  for (const auto& s : in.activations)
    if (s.layer == layer) found = &s;
  return found;
}

// "FP32 (1 epoch) &rarr; w4a4 (2 epochs)"
std::string stage_list(const std::vector<StageSpan>& spans) {
  std::string st;
  for (const auto& s : spans)
    st += (st.empty() ? "" : " &rarr; ") + esc(stage_label(s.name)) + " (" + std::to_string(s.last - s.first + 1) +
          " epoch" + (s.last > s.first ? "s" : "") + ")";
  return st;
}

std::string summary_table(const InspectData& in, const std::vector<StageSpan>& spans) {
  std::ostringstream o;
  if (in.records_only)
    o << "<table class=\"kv\"><tr><td>model</td><td class=\"l\">" << esc(in.meta.model)
      << " (the run's records only: no checkpoint, so no weights or input description)</td></tr>";
  else
    o << "<table class=\"kv\"><tr><td>model</td><td class=\"l\">" << esc(in.meta.model) << " ("
      << in.meta.spec.in_channels << "&times;" << in.meta.spec.image_size << "&times;" << in.meta.spec.image_size
      << " input, " << in.meta.spec.num_classes << " classes)</td></tr>";
  o << "<tr><td>final state from</td><td class=\"l\"><code>" << esc(in.checkpoint) << "</code></td></tr>";
  o << "<tr><td>quantized layers</td><td class=\"l\">" << in.reports.size() << "</td></tr>";
  if (!spans.empty()) o << "<tr><td>stages</td><td class=\"l\">" << stage_list(spans) << "</td></tr>";
  if (!in.metrics.empty()) {
    const MetricsRow& f = in.metrics.back();
    o << "<tr><td>final epoch</td><td class=\"l\">val top-1 " << percent(f.val_top1) << ", test top-1 "
      << percent(f.test_top1) << ", test top-5 " << percent(f.test_top5) << " (" << esc(stage_label(f.stage_name))
      << ", global epoch " << f.global_epoch << ")</td></tr>";
  }
  if (!in.data_name.empty())
    o << "<tr><td>activation statistics on</td><td class=\"l\">" << esc(in.data_name) << "</td></tr>";
  o << "</table>";
  return o.str();
}

std::string per_stage_table(const InspectData& in, const std::vector<StageSpan>& spans) {
  std::ostringstream o;
  o << "<h3>Per stage</h3><table><tr><th class=\"l\">stage</th><th>epochs</th><th>best val top-1</th>"
       "<th>final val top-1</th><th>final test top-1</th><th>final test top-5</th></tr>";
  for (const auto& s : spans) {
    double best = std::nan("");
    const MetricsRow* last = nullptr;
    for (const auto& m : in.metrics)
      if (m.stage == s.stage) {
        if (std::isfinite(m.val_top1) && !(best >= m.val_top1)) best = m.val_top1;
        last = &m;
      }
    if (!last) continue;
    o << "<tr><td class=\"l\">" << esc(stage_label(s.name)) << "</td><td>" << (s.last - s.first + 1) << "</td><td>"
      << percent(best) << "</td><td>" << percent(last->val_top1) << "</td><td>" << percent(last->test_top1)
      << "</td><td>" << percent(last->test_top5) << "</td></tr>";
  }
  o << "</table>";
  return o.str();
}

std::string header_html(const InspectData& in, const std::vector<StageSpan>& spans) {
  std::string h = "<h1>qil inspect: " + esc(in.meta.model) + "</h1><p class=\"sub\">" +
                  (in.run_dir.empty() ? "checkpoint " : "run directory ") + "<code>" + esc(in.target) +
                  "</code></p>" + summary_table(in, spans);
  if (!in.metrics.empty()) h += per_stage_table(in, spans);
  return h;
}

// The final numbers of one layer: weights and activations side by side.
std::string layer_table(const layers::LayerReport& r, const ActivationStats* as) {
  const quant::QuantStats& w = r.weight;
  const quant::QuantStats& a = r.activation;
  std::ostringstream o;
  auto cell = [](const quant::QuantStats& s, const std::string& v) { return "<td>" + (s.bits ? v : "-") + "</td>"; };
  auto row = [&](const std::string& k, const std::string& wv, const std::string& av) {
    o << "<tr><td class=\"l\">" << k << "</td>" << cell(w, wv) << cell(a, av) << "</tr>";
  };
  o << "<table><tr><th class=\"l\"></th><th>weights</th><th>activations</th></tr>";
  row("quantizer", w.kind, a.kind);
  row("bits", std::to_string(w.bits), std::to_string(a.bits));
  if (w.step > 0 || a.step > 0) row("step s (LSQ)", num(w.step), num(a.step));
  if (a.alpha > 0) row("clipping level &alpha; (PACT; DoReFa: 1)", "", num(a.alpha));
  if (w.tanh_max > 0) row("max|tanh w| (DoReFa)", num(w.tanh_max), "");
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

std::string overview_row(const InspectData& in, const layers::LayerReport& r) {
  const auto& w = r.weight;
  const auto& a = r.activation;
  std::ostringstream o;
  o << "<tr><td class=\"l\"><a href=\"#layer-" << esc(r.name) << "\">" << esc(r.name) << "</a></td><td class=\"l\">"
    << esc(r.type) << "</td><td>" << bits_label(r.spec.wbits) << "/" << bits_label(r.spec.abits) << "</td>";
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
    const ActivationStats* as = stats_of(in, r.name);
    o << "<td>" << (as ? pct(as->zeroed_fraction) : "-") << "</td><td>" << (as ? pct(as->saturated_fraction) : "-")
      << "</td>";
  }
  o << "<td>" << num(r.out_scale) << "</td></tr>";
  return o.str();
}

std::string overview_table(const InspectData& in) {
  std::string t =
      "<table><tr><th class=\"l\">layer</th><th class=\"l\">type</th><th>W/A bits</th><th>prune W</th><th>clip W</th>"
      "<th>% pruned</th><th>% clipped</th><th>levels</th><th>prune X</th><th>clip X</th>";
  if (!in.activations.empty()) t += "<th>% zeroed X</th><th>% saturated X</th>";
  t += "<th>out_scale</th></tr>";
  for (const auto& r : in.reports) t += overview_row(in, r);
  return t + "</table>";
}

// One quantized layer: final-state charts and table, then its intervals over training.
std::string layer_section(const InspectData& in, const layers::LayerReport& r, const std::vector<StageSpan>& spans,
                          int& ids) {
  std::ostringstream o;
  o << "<section class=\"layer\" id=\"layer-" << esc(r.name) << "\"><h2>" << esc(r.name) << " <span class=\"sub\">("
    << esc(r.type) << ", W" << bits_label(r.spec.wbits) << "/A" << bits_label(r.spec.abits) << ")</span></h2>";
  const ActivationStats* as = stats_of(in, r.name);
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
  return o.str();
}

// The accuracy chart, or a note on why there is none.
std::string history_html(const InspectData& in, const std::vector<StageSpan>& spans, int& ids) {
  if (!in.metrics.empty()) return "<h2>Accuracy</h2>" + accuracy_chart(in, spans, ids);
  if (in.run_dir.empty()) return "<p class=\"note\">A checkpoint on its own: no training history, only the final state.</p>";
  return "<p class=\"note\">This run directory has no metrics.csv: no accuracy history.</p>";
}

std::string layers_intro(const InspectData& in) {
  std::string s = "<h2>Quantized layers</h2>";
  if (in.reports.empty())
    return s + "<p class=\"note\">This network has no quantized layer (it runs at full precision): there are no "
               "intervals to show.</p>";
  s += overview_table(in);
  if (!in.run_dir.empty() && in.intervals.empty())
    s += "<p class=\"note\">No intervals.jsonl in this run directory: no interval history.</p>";
  return s;
}

}  // namespace

std::string html_report(const InspectData& in) {
  int ids = 0;  // clip-path ids, unique across the page
  const std::vector<StageSpan> spans = stage_spans(in);
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qil inspect: " << esc(in.meta.model)
    << "</title><style>" << kCss << "</style></head><body><main>";
  o << header_html(in, spans) << history_html(in, spans, ids) << layers_intro(in);
  for (const auto& r : in.reports) o << layer_section(in, r, spans, ids);
  if (!in.reports.empty())
    o << "<p class=\"sub\">Thresholds are after discretization: |w| below the pruning threshold becomes 0, |w| at or "
         "above the clipping threshold becomes &plusmn;1 (activations: 0 and 1). Hover over points and lines for "
         "values.</p>";
  o << "</main></body></html>\n";
  return o.str();
}

}  // namespace apps
