// Interval reports.
#include "apps/training/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "engine/check.h"

namespace apps::training {

using nlohmann::json;

namespace {
json stats_json(const quant::QuantStats& s) {
  if (s.bits == 0) return nullptr;
  json j{{"kind", s.kind},           {"bits", s.bits},
         {"c", s.c},                 {"d", s.d},
         {"gamma", s.gamma},         {"prune_threshold", s.prune_threshold},
         {"clip_threshold", s.clip_threshold}, {"levels_total", s.levels_total}};
  if (s.step > 0) j["step"] = s.step;              // LSQ's s
  if (s.alpha > 0) j["alpha"] = s.alpha;           // PACT's α (DoReFa's activations: 1)
  if (s.tanh_max > 0) j["tanh_max"] = s.tanh_max;  // DoReFa's weights: max|tanh w|
  if (s.pruned_fraction >= 0) j["pruned_fraction"] = s.pruned_fraction;
  if (s.clipped_fraction >= 0) j["clipped_fraction"] = s.clipped_fraction;
  if (s.levels_used >= 0) j["levels_used"] = s.levels_used;
  return j;
}
quant::QuantStats stats_from_json(const json& j) {
  quant::QuantStats s;
  if (j.is_null()) return s;
  s.kind = j.value("kind", "");
  s.bits = j.value("bits", 0);
  s.c = j.value("c", 0.0);
  s.d = j.value("d", 0.0);
  s.gamma = j.value("gamma", 1.0);
  s.step = j.value("step", 0.0);
  s.alpha = j.value("alpha", 0.0);
  s.tanh_max = j.value("tanh_max", 0.0);
  s.prune_threshold = j.value("prune_threshold", 0.0);
  s.clip_threshold = j.value("clip_threshold", 0.0);
  s.levels_total = j.value("levels_total", 0);
  s.pruned_fraction = j.value("pruned_fraction", -1.0);
  s.clipped_fraction = j.value("clipped_fraction", -1.0);
  s.levels_used = j.value("levels_used", -1);
  return s;
}
std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// What a side's c, d and γ columns show, as the kind's family says (quant/registry.h): QIL's interval; one learned
// scalar in the c column ("-" in d and γ): LSQ's step s, PACT's clipping level α; nothing ("-" in all three):
// DoReFa learns no parameter. A kind no family reports (none: not quantized) shows the interval columns.
using Shown = quant::ReportColumns;
Shown shown(const quant::QuantStats& s) {
  const quant::StatsKind* k = quant::find_stats_kind(s.kind);
  return k ? k->columns : Shown::interval;
}
double one_param(const quant::QuantStats& s) { return s.step > 0 ? s.step : s.alpha; }

// The notes under a table: each note of the kinds present (those whose columns differ from QIL's have one), once, in
// the registry's order.
std::string table_notes(const std::vector<layers::LayerReport>& reports, bool thresholds) {
  std::set<std::string> present;
  for (const auto& r : reports)
    for (const quant::QuantStats* s : {&r.weight, &r.activation}) present.insert(s->kind);
  std::vector<std::string> notes;
  for (const quant::QuantizerFamily& f : quant::quantizer_families())
    for (const quant::StatsKind& k : f.stats_kinds) {
      const std::string& note = thresholds ? k.threshold_note : k.note;
      if (present.count(k.kind) && !note.empty() && std::find(notes.begin(), notes.end(), note) == notes.end())
        notes.push_back(note);
    }
  std::string o;
  for (const std::string& n : notes) o += n + "\n";
  return o;
}

// The c, d, γ columns of the interval table for one side (widths 8, 8 and 5, or 8 and 8 without γ).
std::string param_cols(const quant::QuantStats& s, bool with_gamma) {
  const std::string dash8 = std::string(7, ' ') + "-", dash5 = std::string(4, ' ') + "-";
  const Shown k = shown(s);
  std::string o = k == Shown::interval ? fmt("%8.4f", s.c) + " " + fmt("%8.4f", s.d)
                  : k == Shown::scalar ? fmt("%8.4f", one_param(s)) + " " + dash8
                                       : dash8 + " " + dash8;
  if (with_gamma) o += " " + (k == Shown::interval ? fmt("%5.2f", s.gamma) : dash5);
  return o;
}
}  // namespace

json layer_report_json(const layers::LayerReport& r) {
  return json{{"layer", r.name},
              {"type", r.type},
              {"wbits", r.spec.wbits},
              {"abits", r.spec.abits},
              {"out_scale", r.out_scale},
              {"weight", stats_json(r.weight)},
              {"activation", stats_json(r.activation)}};
}

layers::LayerReport layer_report_from_json(const json& j) {
  layers::LayerReport r;
  r.name = j.at("layer").get<std::string>();
  r.type = j.value("type", "");
  r.spec.wbits = j.value("wbits", 32);
  r.spec.abits = j.value("abits", 32);
  r.out_scale = j.value("out_scale", 1.f);
  r.weight = stats_from_json(j.value("weight", json()));
  r.activation = stats_from_json(j.value("activation", json()));
  return r;
}

std::string interval_table(const std::vector<layers::LayerReport>& reports) {
  std::ostringstream os;
  char line[512];
  std::snprintf(line, sizeof line, "%-24s %5s | %8s %8s %5s %8s %8s %6s %6s %6s | %8s %8s %8s %8s | %7s\n",
                "layer", "w/a", "c_W", "d_W", "gamma", "prune", "clip", "%prun", "%clip", "levels", "c_X", "d_X",
                "prune_X", "clip_X", "scale");
  os << line << std::string(std::string(line).size() - 1, '-') << "\n";
  for (const auto& r : reports) {
    const auto& w = r.weight;
    const auto& a = r.activation;
    const std::string wa = (r.spec.wbits < 32 ? std::to_string(r.spec.wbits) : "fp") + "/" +
                           (r.spec.abits < 32 ? std::to_string(r.spec.abits) : "fp");
    const std::string wcols = w.bits ? param_cols(w, true) + " " + fmt("%8.4f", w.prune_threshold) + " " +
                                           fmt("%8.4f", w.clip_threshold) + " " +
                                           fmt("%6.1f", 100 * w.pruned_fraction) + " " +
                                           fmt("%6.1f", 100 * w.clipped_fraction) + " " +
                                           (std::to_string(w.levels_used) + "/" + std::to_string(w.levels_total))
                                     : std::string(8 + 1 + 8 + 1 + 5 + 1 + 8 + 1 + 8 + 1 + 6 + 1 + 6 + 1 + 1, ' ') + "-";
    const std::string acols = a.bits ? param_cols(a, false) + " " + fmt("%8.4f", a.prune_threshold) + " " +
                                           fmt("%8.4f", a.clip_threshold)
                                     : std::string(35, ' ') + "-";
    std::snprintf(line, sizeof line, "%-24s %5s | %-64s | %-35s | %7.4f\n", r.name.c_str(), wa.c_str(),
                  wcols.c_str(), acols.c_str(), r.out_scale);
    os << line;
  }
  os << table_notes(reports, true);
  return os.str();
}

std::string interval_csv(const std::vector<layers::LayerReport>& reports) {
  std::ostringstream os;
  os << "layer,type,wbits,abits,out_scale,w_c,w_d,w_gamma,w_prune_threshold,w_clip_threshold,w_pruned_fraction,"
        "w_clipped_fraction,w_levels_used,w_levels_total,a_c,a_d,a_prune_threshold,a_clip_threshold,"
        "w_step,a_step,a_alpha,w_tanh_max\n";
  os.precision(8);
  for (const auto& r : reports) {
    const auto& w = r.weight;
    const auto& a = r.activation;
    os << r.name << ',' << r.type << ',' << r.spec.wbits << ',' << r.spec.abits << ',' << r.out_scale;
    if (w.bits)
      os << ',' << w.c << ',' << w.d << ',' << w.gamma << ',' << w.prune_threshold << ',' << w.clip_threshold << ','
         << w.pruned_fraction << ',' << w.clipped_fraction << ',' << w.levels_used << ',' << w.levels_total;
    else
      os << ",,,,,,,,,";
    if (a.bits)
      os << ',' << a.c << ',' << a.d << ',' << a.prune_threshold << ',' << a.clip_threshold;
    else
      os << ",,,,";
    // The other quantizers' parameters last, so that the QIL columns keep their positions; empty where a layer's
    // quantizer has no such parameter (LSQ's steps, PACT's α, DoReFa's max|tanh w|).
    for (double v : {w.step, a.step, a.alpha, w.tanh_max}) {
      os << ',';
      if (v > 0) os << v;
    }
    os << '\n';
  }
  return os.str();
}

std::vector<IntervalRecord> read_interval_records(const std::string& path) {
  std::ifstream in(path);
  QIL_CHECK(in.good(), "intervals: cannot open '", path, "'");
  std::vector<IntervalRecord> out;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const json j = json::parse(line);
      IntervalRecord r;
      r.stage = j.value("stage", 0);
      r.stage_name = j.value("stage_name", "");
      r.epoch = j.value("epoch", 0);
      r.report = layer_report_from_json(j);
      out.push_back(std::move(r));
    } catch (const json::exception& e) {
      throw engine::Error(engine::str_cat(path, ": line ", line_no, " is not a layer record (", e.what(), ")"));
    }
  }
  return out;
}

std::vector<layers::LayerReport> first_interval_rows(const std::string& intervals_jsonl) {
  std::vector<layers::LayerReport> out;
  if (!std::filesystem::exists(intervals_jsonl)) return out;
  std::map<std::string, size_t> index;
  for (const auto& rec : read_interval_records(intervals_jsonl)) {
    const auto& r = rec.report;
    auto [it, added] = index.emplace(r.name, out.size());
    if (added) out.push_back(r);
    // A quantizer can join a layer in a later stage (w32a4 -> w4a4): each side keeps its own first record.
    layers::LayerReport& first = out[it->second];
    if (!first.weight.bits && r.weight.bits) first.weight = r.weight;
    if (!first.activation.bits && r.activation.bits) first.activation = r.activation;
  }
  return out;
}

namespace {
// "0.0834 -> 0.0486 (-41.7%)"
std::string moved(double from, double to, const char* f) {
  const std::string pct = from != 0 ? fmt(" (%+.1f%%)", 100.0 * (to - from) / std::fabs(from)) : std::string();
  return fmt(f, from) + " -> " + fmt(f, to) + pct;
}
}  // namespace

std::string movement_table(const std::vector<layers::LayerReport>& now, const std::vector<layers::LayerReport>& start) {
  std::map<std::string, const layers::LayerReport*> by_name;
  for (const auto& r : start) by_name[r.name] = &r;
  std::ostringstream os;
  char line[640];
  std::snprintf(line, sizeof line, "%-24s | %-28s %-28s %-21s %6s | %-28s %-28s\n", "layer", "c_W", "d_W", "gamma",
                "%prun", "c_X", "d_X");
  os << line << std::string(std::string(line).size() - 1, '-') << "\n";
  for (const auto& r : now) {
    auto it = by_name.find(r.name);
    if (it == by_name.end()) continue;
    const auto& w0 = it->second->weight;
    const auto& a0 = it->second->activation;
    const auto& w = r.weight;
    const auto& a = r.activation;
    // As in interval_table: LSQ's s and PACT's α in the c columns, "-" for what a quantizer does not learn.
    const Shown wk = w.bits && w0.bits ? shown(w) : Shown::none, ak = a.bits && a0.bits ? shown(a) : Shown::none;
    auto c_col = [](Shown k, const quant::QuantStats& s0, const quant::QuantStats& s) {
      return k == Shown::interval ? moved(s0.c, s.c, "%.4f")
             : k == Shown::scalar ? moved(one_param(s0), one_param(s), "%.4f")
                                  : std::string("-");
    };
    const std::string wc = c_col(wk, w0, w), ac = c_col(ak, a0, a);
    const std::string wd = wk == Shown::interval ? moved(w0.d, w.d, "%.4f") : "-";
    const std::string wg =
        wk == Shown::interval ? fmt("%.3f", w0.gamma) + " -> " + fmt("%.3f", w.gamma) : std::string("-");
    const std::string ad = ak == Shown::interval ? moved(a0.d, a.d, "%.4f") : "-";
    std::snprintf(line, sizeof line, "%-24s | %-28s %-28s %-21s %6s | %-28s %-28s\n", r.name.c_str(), wc.c_str(),
                  wd.c_str(), wg.c_str(),
                  w.bits && w.pruned_fraction >= 0 ? fmt("%.1f", 100 * w.pruned_fraction).c_str() : "-", ac.c_str(),
                  ad.c_str());
    os << line;
  }
  os << table_notes(now, false);
  return os.str();
}

}  // namespace apps::training
