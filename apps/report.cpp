// Interval reports.
#include "apps/report.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "apps/inspect/history.h"

namespace apps {

using nlohmann::json;

namespace {
json stats_json(const quant::QuantStats& s) {
  if (s.bits == 0) return nullptr;
  json j{{"kind", s.kind},           {"bits", s.bits},
         {"c", s.c},                 {"d", s.d},
         {"gamma", s.gamma},         {"prune_threshold", s.prune_threshold},
         {"clip_threshold", s.clip_threshold}, {"levels_total", s.levels_total}};
  if (s.step > 0) j["step"] = s.step;  // LSQ's s
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
  bool any_lsq = false;
  for (const auto& r : reports) {
    const auto& w = r.weight;
    const auto& a = r.activation;
    const std::string wa = (r.spec.wbits < 32 ? std::to_string(r.spec.wbits) : "fp") + "/" +
                           (r.spec.abits < 32 ? std::to_string(r.spec.abits) : "fp");
    // LSQ has one step s and no interval: s in the c column, "-" for d and γ (a note under the table says so).
    const bool wl = w.step > 0, al = a.step > 0;
    any_lsq = any_lsq || wl || al;
    std::string wcols = w.bits ? (wl ? fmt("%8.4f", w.step) + " " + std::string(7, ' ') + "-" + " " + std::string(4, ' ') + "-"
                                     : fmt("%8.4f", w.c) + " " + fmt("%8.4f", w.d) + " " + fmt("%5.2f", w.gamma)) +
                                     " " +
                                     fmt("%8.4f", w.prune_threshold) + " " + fmt("%8.4f", w.clip_threshold) + " " +
                                     fmt("%6.1f", 100 * w.pruned_fraction) + " " +
                                     fmt("%6.1f", 100 * w.clipped_fraction) + " " +
                                     (std::to_string(w.levels_used) + "/" + std::to_string(w.levels_total))
                               : std::string(8 + 1 + 8 + 1 + 5 + 1 + 8 + 1 + 8 + 1 + 6 + 1 + 6 + 1 + 1, ' ') + "-";
    std::string acols = a.bits ? (al ? fmt("%8.4f", a.step) + " " + std::string(7, ' ') + "-"
                                     : fmt("%8.4f", a.c) + " " + fmt("%8.4f", a.d)) +
                                     " " + fmt("%8.4f", a.prune_threshold) +
                                     " " + fmt("%8.4f", a.clip_threshold)
                               : std::string(35, ' ') + "-";
    std::snprintf(line, sizeof line, "%-24s %5s | %-64s | %-35s | %7.4f\n", r.name.c_str(), wa.c_str(),
                  wcols.c_str(), acols.c_str(), r.out_scale);
    os << line;
  }
  if (any_lsq) os << "LSQ layers: the c columns hold the step s; prune = s/2, clip = (Q_P - 1/2)*s\n";
  return os.str();
}

std::string interval_csv(const std::vector<layers::LayerReport>& reports) {
  std::ostringstream os;
  os << "layer,type,wbits,abits,out_scale,w_c,w_d,w_gamma,w_prune_threshold,w_clip_threshold,w_pruned_fraction,"
        "w_clipped_fraction,w_levels_used,w_levels_total,a_c,a_d,a_prune_threshold,a_clip_threshold,"
        "w_step,a_step\n";
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
    // LSQ's steps last, so that the QIL columns keep their positions; empty for QIL.
    os << ',';
    if (w.step > 0) os << w.step;
    os << ',';
    if (a.step > 0) os << a.step;
    os << '\n';
  }
  return os.str();
}

std::vector<layers::LayerReport> first_interval_rows(const std::string& intervals_jsonl) {
  std::vector<layers::LayerReport> out;
  if (!std::filesystem::exists(intervals_jsonl)) return out;
  std::map<std::string, size_t> index;
  for (const auto& rec : read_intervals_jsonl(intervals_jsonl, {})) {
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
  bool any_lsq = false;
  for (const auto& r : now) {
    auto it = by_name.find(r.name);
    if (it == by_name.end()) continue;
    const auto& w0 = it->second->weight;
    const auto& a0 = it->second->activation;
    const auto& w = r.weight;
    const auto& a = r.activation;
    const bool ws = w.bits && w0.bits, as = a.bits && a0.bits;
    // LSQ: the step s in the c columns, "-" for d and γ (as in interval_table).
    const bool wl = w.step > 0, al = a.step > 0;
    any_lsq = any_lsq || wl || al;
    const std::string wc = !ws ? "-" : wl ? moved(w0.step, w.step, "%.4f") : moved(w0.c, w.c, "%.4f");
    const std::string wd = !ws || wl ? "-" : moved(w0.d, w.d, "%.4f");
    const std::string wg = !ws || wl ? "-" : fmt("%.3f", w0.gamma) + " -> " + fmt("%.3f", w.gamma);
    const std::string ac = !as ? "-" : al ? moved(a0.step, a.step, "%.4f") : moved(a0.c, a.c, "%.4f");
    const std::string ad = !as || al ? "-" : moved(a0.d, a.d, "%.4f");
    std::snprintf(line, sizeof line, "%-24s | %-28s %-28s %-21s %6s | %-28s %-28s\n", r.name.c_str(), wc.c_str(),
                  wd.c_str(), wg.c_str(),
                  w.bits && w.pruned_fraction >= 0 ? fmt("%.1f", 100 * w.pruned_fraction).c_str() : "-", ac.c_str(),
                  ad.c_str());
    os << line;
  }
  if (any_lsq) os << "LSQ layers: the c columns hold the step s\n";
  return os.str();
}

}  // namespace apps
