// `qil compare`: groups finished runs by their resolved settings and compares the groups with paired intervals.
#include "apps/compare.h"
#include "apps/config.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "engine/check.h"

namespace apps {

using engine::Error;
using engine::str_cat;
namespace fs = std::filesystem;

namespace {

// The shortest decimal text that reads back as the same double ("0.01", not "0.010000000000000000208").
std::string shortest(double v) {
  char buf[64];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string node_text(const toml::node& n) {
  if (auto s = n.value_exact<std::string>()) return *s;
  if (auto i = n.value_exact<int64_t>()) return std::to_string(*i);
  if (auto d = n.value_exact<double>()) return shortest(*d);
  if (auto b = n.value_exact<bool>()) return *b ? "true" : "false";
  if (const toml::array* a = n.as_array()) {
    std::string out;
    for (const toml::node& e : *a) out += (out.empty() ? "" : ",") + node_text(e);
    return out;
  }
  std::ostringstream os;
  n.visit([&](const auto& v) { os << v; });  // dates and times, as TOML writes them
  return os.str();
}

void flatten(const toml::table& t, const std::string& prefix, std::map<std::string, std::string>& out) {
  for (const auto& [k, v] : t) {
    const std::string key = prefix + std::string(k.str());
    if (const toml::table* sub = v.as_table())
      flatten(*sub, key + ".", out);
    else
      out[key] = node_text(v);
  }
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream is(line);
  while (std::getline(is, cell, sep)) out.push_back(cell);
  if (!line.empty() && line.back() == sep) out.emplace_back();
  return out;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

double sd_of(const std::vector<double>& v) {  // sample standard deviation (n − 1)
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

std::string fixed(double v, int decimals = 2, bool sign = false) {
  char buf[64];
  std::snprintf(buf, sizeof buf, sign ? "%+.*f" : "%.*f", decimals, v);
  return buf;
}

std::string seeds_text(const RunGroup& g) {
  std::string out;
  for (const RunRecord& r : g.runs) out += (out.empty() ? "" : ",") + std::to_string(r.seed);
  return out;
}

}  // namespace

bool ignored_setting(const std::string& key) {
  static const std::set<std::string> kIgnored = {
      "seed",     "init",  "out", "threads", "workers", "progress", "checkpoint_every_steps", "rank_check_every",
      "collective_timeout", "allreduce", "bucket_mb", "config", "resume", "stop_after_steps"};
  return kIgnored.count(key) > 0;
}

RunRecord read_run(const std::string& dir, const std::string& metric, const std::string& stage) {
  RunRecord r;
  r.dir = dir;
  const fs::path cfg = fs::path(dir) / "config.toml", csv = fs::path(dir) / "metrics.csv";
  QIL_CHECK(fs::is_regular_file(cfg), "compare: ", dir, " is not a run directory (no config.toml)");
  QIL_CHECK(fs::is_regular_file(csv), "compare: ", dir, " has no metrics.csv");
  toml::table t;
  try {
    t = toml::parse_file(cfg.string());
  } catch (const toml::parse_error& e) {
    throw Error(str_cat("compare: ", cfg.string(), ": ", e.description()));
  }
  flatten(t, "", r.settings);
  // A setting the file lacks is one the binary that wrote it did not have yet: that binary behaved as the flag's
  // default does (a new flag defaults to the old behaviour), so it counts as the default, and runs from before and
  // after a flag was added group together while they ran alike (absent_key_config: a default resolved at start,
  // like int8_forward's auto, reads as the old behaviour). The default is today's: were a flag's default ever
  // changed, a file from before the flag existed would be read with the new one.
  static const std::map<std::string, std::string> kDefaults = [] {
    std::map<std::string, std::string> d;
    flatten(toml::parse(to_toml(absent_key_config())), "", d);
    return d;
  }();
  for (const auto& [key, v] : kDefaults) r.settings.emplace(key, v);
  if (auto it = r.settings.find("seed"); it != r.settings.end()) r.seed = std::strtoull(it->second.c_str(), nullptr, 10);
  r.start = r.settings.count("init") ? r.settings["init"] : "";

  std::ifstream in(csv);
  std::string line;
  QIL_CHECK(std::getline(in, line), "compare: ", csv.string(), " is empty");
  const std::vector<std::string> head = split(line, ',');
  const auto col = [&](const std::string& name) {
    const auto it = std::find(head.begin(), head.end(), name);
    QIL_CHECK(it != head.end(), "compare: ", csv.string(), " has no column '", name, "'");
    return static_cast<size_t>(it - head.begin());
  };
  const size_t mcol = col(metric), scol = col("stage_name");
  std::string cell;
  std::set<std::string> stages;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const std::vector<std::string> row = split(line, ',');
    if (row.size() <= std::max(mcol, scol)) continue;
    stages.insert(row[scol]);
    if (stage.empty() || row[scol] == stage) cell = row[mcol];
  }
  if (cell.empty()) {
    std::string known;
    for (const std::string& s : stages) known += (known.empty() ? "" : ", ") + s;
    QIL_CHECK(stage.empty() || stages.count(stage), "compare: ", csv.string(), " has no stage '", stage,
              "' (it has: ", known, ")");
    throw Error(str_cat("compare: ", csv.string(), ": no value of ", metric,
                        stage.empty() ? std::string() : " in stage " + stage, " (no row, or no such split)"));
  }
  char* end = nullptr;
  r.value = std::strtod(cell.c_str(), &end);
  QIL_CHECK(end && *end == '\0' && std::isfinite(r.value), "compare: ", csv.string(), ": ", metric, " is '", cell,
            "', not a number");

  const fs::path prov = fs::path(dir) / "provenance.json";
  if (fs::is_regular_file(prov)) {
    try {
      const nlohmann::json j = nlohmann::json::parse(std::ifstream(prov));
      if (j.contains("init") && j["init"].is_object())
        r.start = str_cat(j["init"].value("run", std::string("?")), " sha256:",
                          j["init"].value("sha256", std::string("?")).substr(0, 12));
    } catch (const nlohmann::json::exception& e) {
      throw Error(str_cat("compare: ", prov.string(), ": ", e.what()));
    }
  }
  return r;
}

double t_quantile_975(int df) {
  static const double kTable[30] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                    2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                    2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  QIL_CHECK(df >= 1, "t_quantile_975: degrees of freedom must be at least 1, got ", df);
  if (df <= 30) return kTable[df - 1];
  const double z = 1.959964, v = df;
  return z + (z * z * z + z) / (4 * v) + (5 * std::pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * v * v);
}

Comparison compare_runs(const std::vector<RunRecord>& runs, const std::string& baseline_dir) {
  QIL_CHECK(!runs.empty(), "compare: no runs given");
  Comparison c;
  auto key_of = [](const RunRecord& r) {
    std::map<std::string, std::string> k;
    for (const auto& [key, v] : r.settings)
      if (!ignored_setting(key)) k[key] = v;
    return k;
  };
  std::vector<std::map<std::string, std::string>> keys;
  for (const RunRecord& r : runs) {
    const auto k = key_of(r);
    size_t gi = std::find(keys.begin(), keys.end(), k) - keys.begin();
    if (gi == keys.size()) {
      keys.push_back(k);
      c.groups.emplace_back();
      c.groups.back().settings = k;
    }
    for (const RunRecord& o : c.groups[gi].runs)
      QIL_CHECK(o.seed != r.seed, "compare: ", o.dir, " and ", r.dir, " have the same settings and seed ", r.seed,
                " (give each run once)");
    c.groups[gi].runs.push_back(r);
    if (!baseline_dir.empty() && fs::path(r.dir).lexically_normal() == fs::path(baseline_dir).lexically_normal())
      c.baseline = gi;
    auto& st = c.starts[r.seed];
    if (std::find(st.begin(), st.end(), r.start) == st.end()) st.push_back(r.start);
  }
  if (!baseline_dir.empty()) {
    bool found = false;
    for (const RunRecord& r : runs)
      found = found || fs::path(r.dir).lexically_normal() == fs::path(baseline_dir).lexically_normal();
    QIL_CHECK(found, "compare: --baseline ", baseline_dir, " is not one of the runs given");
  }
  // The keys whose values are not the same in every group name the groups.
  std::set<std::string> all;
  for (const auto& k : keys)
    for (const auto& [key, v] : k) all.insert(key);
  for (const std::string& key : all) {
    const auto first = keys[0].find(key);
    for (const auto& k : keys) {
      const auto it = k.find(key);
      if ((it == k.end()) != (first == keys[0].end()) || (it != k.end() && it->second != first->second)) {
        c.differing.push_back(key);
        break;
      }
    }
  }
  for (RunGroup& g : c.groups) {
    std::sort(g.runs.begin(), g.runs.end(), [](const RunRecord& a, const RunRecord& b) { return a.seed < b.seed; });
    for (const std::string& key : c.differing) {
      const auto it = g.settings.find(key);
      g.name += (g.name.empty() ? "" : " ") + key + "=" + (it == g.settings.end() ? "(unset)" : it->second);
    }
    if (g.name.empty()) g.name = "all runs";
    std::vector<double> v;
    for (const RunRecord& r : g.runs) v.push_back(r.value);
    g.mean = mean_of(v);
    g.sd = sd_of(v);
  }
  const RunGroup& base = c.groups[c.baseline];
  for (RunGroup& g : c.groups) {
    if (&g == &base) {
      g.label = g.name;
      continue;
    }
    for (const std::string& key : c.differing) {
      const auto it = g.settings.find(key);
      const auto b = base.settings.find(key);
      const std::string v = it == g.settings.end() ? "(unset)" : it->second;
      if (v != (b == base.settings.end() ? "(unset)" : b->second))
        g.label += (g.label.empty() ? "" : " ") + key + "=" + v;
    }
  }
  for (size_t gi = 0; gi < c.groups.size(); ++gi) {
    if (gi == c.baseline) continue;
    RunGroup& g = c.groups[gi];
    std::vector<double> diffs;
    for (const RunRecord& r : g.runs)
      for (const RunRecord& b : base.runs)
        if (b.seed == r.seed) diffs.push_back(r.value - b.value);
    PairedDiff p;
    p.n = static_cast<int>(diffs.size());
    p.mean = mean_of(diffs);
    p.sd = sd_of(diffs);
    if (p.n >= 2) {
      const double half = t_quantile_975(p.n - 1) * p.sd / std::sqrt(static_cast<double>(p.n));
      p.low = p.mean - half;
      p.high = p.mean + half;
      p.verdict = p.low > 0 ? "higher" : p.high < 0 ? "lower" : "no difference shown";
    } else {
      p.verdict = "n < 2";
    }
    g.paired = p;
  }
  return c;
}

std::string comparison_markdown(const Comparison& c) {
  std::ostringstream os;
  const std::string what = c.metric + (c.stage.empty() ? "" : " (" + c.stage + ")");
  os << "| runs | n | seeds | " << what << ", mean ± sd | paired Δ vs baseline | 95% interval | verdict |\n";
  os << "|---|---|---|---|---|---|---|\n";
  for (size_t gi = 0; gi < c.groups.size(); ++gi) {
    const RunGroup& g = c.groups[gi];
    os << "| " << g.label << (gi == c.baseline ? " (baseline)" : "") << " | " << g.runs.size() << " | "
       << seeds_text(g) << " | " << fixed(g.mean) << (g.runs.size() > 1 ? " ± " + fixed(g.sd) : "") << " | ";
    if (!g.paired) {
      os << "— | — | — |\n";
    } else if (g.paired->n < 2) {
      os << (g.paired->n == 1 ? fixed(g.paired->mean, 2, true) + " (n=1)" : "—") << " | — | " << g.paired->verdict
         << " |\n";
    } else {
      os << fixed(g.paired->mean, 2, true) << " (n=" << g.paired->n << ") | [" << fixed(g.paired->low, 2, true)
         << ", " << fixed(g.paired->high, 2, true) << "] | " << g.paired->verdict << " |\n";
    }
  }
  os << "\nStarting checkpoints:";
  for (const auto& [seed, st] : c.starts) {
    os << " seed " << seed << ": ";
    for (size_t i = 0; i < st.size(); ++i) os << (i ? ", " : "") << (st[i].empty() ? "none (from scratch)" : st[i]);
    os << ";";
  }
  os << "\n";
  return os.str();
}

std::string comparison_csv(const Comparison& c) {
  std::ostringstream os;
  os << "runs,baseline,n,seeds,mean,sd,paired_n,paired_mean,paired_sd,ci_low,ci_high,verdict\n";
  for (size_t gi = 0; gi < c.groups.size(); ++gi) {
    const RunGroup& g = c.groups[gi];
    os << '"' << g.label << "\"," << (gi == c.baseline ? 1 : 0) << ',' << g.runs.size() << ",\"" << seeds_text(g)
       << "\"," << fixed(g.mean, 4) << ',' << fixed(g.sd, 4) << ',';
    if (g.paired && g.paired->n >= 2)
      os << g.paired->n << ',' << fixed(g.paired->mean, 4) << ',' << fixed(g.paired->sd, 4) << ','
         << fixed(g.paired->low, 4) << ',' << fixed(g.paired->high, 4) << ',' << g.paired->verdict << '\n';
    else
      os << (g.paired ? std::to_string(g.paired->n) : "") << ",,,,," << (g.paired ? g.paired->verdict : "") << '\n';
  }
  return os.str();
}

std::string comparison_json(const Comparison& c) {
  nlohmann::json j;
  j["metric"] = c.metric;
  j["stage"] = c.stage;
  j["baseline"] = c.groups[c.baseline].name;
  j["differing_settings"] = c.differing;
  j["groups"] = nlohmann::json::array();
  for (size_t gi = 0; gi < c.groups.size(); ++gi) {
    const RunGroup& g = c.groups[gi];
    nlohmann::json e;
    e["name"] = g.name;
    e["label"] = g.label;
    e["baseline"] = gi == c.baseline;
    e["n"] = g.runs.size();
    e["mean"] = g.mean;
    e["sd"] = g.sd;
    for (const std::string& key : c.differing)
      e["settings"][key] = g.settings.count(key) ? nlohmann::json(g.settings.at(key)) : nlohmann::json();
    for (const RunRecord& r : g.runs)
      e["runs"].push_back({{"dir", r.dir}, {"seed", r.seed}, {"value", r.value}, {"start", r.start}});
    if (g.paired) {
      const PairedDiff& p = *g.paired;
      e["paired"] = {{"n", p.n}, {"mean", p.mean}, {"sd", p.sd}, {"verdict", p.verdict}};
      if (p.n >= 2) {
        e["paired"]["ci_low"] = p.low;
        e["paired"]["ci_high"] = p.high;
        e["paired"]["t"] = t_quantile_975(p.n - 1);
      }
    }
    j["groups"].push_back(e);
  }
  for (const auto& [seed, st] : c.starts) j["starts"][std::to_string(seed)] = st;
  return j.dump(1) + "\n";
}

void add_compare_flags(CLI::App& app, CompareOptions& o) {
  app.add_option("runs", o.runs, "run directories (each with config.toml and metrics.csv)")->required();
  app.add_option("--baseline", o.baseline,
                 "a run directory: its group is the baseline (default: the first group); the tables name every other "
                 "group by the settings in which it differs from the baseline");
  app.add_option("--metric", o.metric, "metrics.csv column compared (default test_top1)");
  app.add_option("--stage", o.stage, "read the last epoch of this stage (e.g. w4a4; default: each run's last row)");
  app.add_option("--format", o.format, "markdown | csv | json")->check(CLI::IsMember({"markdown", "csv", "json"}));
  app.add_flag("--json", o.json, "the same as --format json");
}

int run_compare(const CompareOptions& o) {
  std::vector<RunRecord> runs;
  for (const std::string& d : o.runs) runs.push_back(read_run(d, o.metric, o.stage));
  Comparison c = compare_runs(runs, o.baseline);
  c.metric = o.metric;
  c.stage = o.stage;
  for (const auto& [seed, st] : c.starts)
    if (st.size() > 1)
      std::cerr << "qil compare: warning: the runs of seed " << seed << " start from " << st.size()
                << " different checkpoints; their pairs are not like for like" << std::endl;
  const std::string format = o.json ? "json" : o.format;
  std::cout << (format == "json" ? comparison_json(c) : format == "csv" ? comparison_csv(c) : comparison_markdown(c));
  return 0;
}

}  // namespace apps
