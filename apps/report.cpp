// Interval reports.
#include "apps/report.h"

#include <cstdio>
#include <sstream>

namespace apps {

using nlohmann::json;

namespace {
json stats_json(const quant::QuantStats& s) {
  if (s.bits == 0) return nullptr;
  json j{{"kind", s.kind},           {"bits", s.bits},
         {"c", s.c},                 {"d", s.d},
         {"gamma", s.gamma},         {"prune_threshold", s.prune_threshold},
         {"clip_threshold", s.clip_threshold}, {"levels_total", s.levels_total}};
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
  for (const auto& r : reports) {
    const auto& w = r.weight;
    const auto& a = r.activation;
    const std::string wa = (r.spec.wbits < 32 ? std::to_string(r.spec.wbits) : "fp") + "/" +
                           (r.spec.abits < 32 ? std::to_string(r.spec.abits) : "fp");
    std::string wcols = w.bits ? fmt("%8.4f", w.c) + " " + fmt("%8.4f", w.d) + " " + fmt("%5.2f", w.gamma) + " " +
                                     fmt("%8.4f", w.prune_threshold) + " " + fmt("%8.4f", w.clip_threshold) + " " +
                                     fmt("%6.1f", 100 * w.pruned_fraction) + " " +
                                     fmt("%6.1f", 100 * w.clipped_fraction) + " " +
                                     (std::to_string(w.levels_used) + "/" + std::to_string(w.levels_total))
                               : std::string(8 + 1 + 8 + 1 + 5 + 1 + 8 + 1 + 8 + 1 + 6 + 1 + 6 + 1 + 1, ' ') + "-";
    std::string acols = a.bits ? fmt("%8.4f", a.c) + " " + fmt("%8.4f", a.d) + " " + fmt("%8.4f", a.prune_threshold) +
                                     " " + fmt("%8.4f", a.clip_threshold)
                               : std::string(35, ' ') + "-";
    std::snprintf(line, sizeof line, "%-24s %5s | %-64s | %-35s | %7.4f\n", r.name.c_str(), wa.c_str(),
                  wcols.c_str(), acols.c_str(), r.out_scale);
    os << line;
  }
  return os.str();
}

std::string interval_csv(const std::vector<layers::LayerReport>& reports) {
  std::ostringstream os;
  os << "layer,type,wbits,abits,out_scale,w_c,w_d,w_gamma,w_prune_threshold,w_clip_threshold,w_pruned_fraction,"
        "w_clipped_fraction,w_levels_used,w_levels_total,a_c,a_d,a_prune_threshold,a_clip_threshold\n";
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
    os << '\n';
  }
  return os.str();
}

}  // namespace apps
