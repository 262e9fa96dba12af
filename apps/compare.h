// `qil compare RUN_DIR...`: compares finished runs the way a results table should. Runs whose resolved settings
// (config.toml) differ only in the seed form a group; each group gets its mean, sample standard deviation and n;
// each group is set against a baseline group by the differences of runs paired by seed, with a 95% interval
// (Student's t). Groups are named by the settings that differ between them. A setting a config.toml lacks (written
// by a binary from before that flag) counts as the flag's current default. Markdown, CSV or JSON.
// It reads run directories (config.toml, metrics.csv, and provenance.json where a results driver wrote one);
// it trains and evaluates nothing.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace apps {

// What compare reads of one run directory.
struct RunRecord {
  std::string dir;
  uint64_t seed = 0;
  std::map<std::string, std::string> settings;  // config.toml flattened (layers."x".wbits -> layers.x.wbits)
  double value = 0;                             // the metric at the chosen row
  std::string start;  // the starting checkpoint: "<run> sha256:<first 12>" from provenance.json, else --init's path
};

// Settings that never change what a run computes, or that are per seed by design (the starting checkpoint),
// and so never split or name a group: seed, init, out, threads, workers, progress and the checkpoint/MPI
// housekeeping flags.
bool ignored_setting(const std::string& key);

// Reads `dir`: the metric (a metrics.csv column, e.g. test_top1) at the last epoch of `stage` (a stage_name
// such as w2a2; "" = the run's last row). Errors name the file and what is missing.
RunRecord read_run(const std::string& dir, const std::string& metric, const std::string& stage);

struct PairedDiff {
  int n = 0;           // seeds present in both groups
  double mean = 0;     // mean of (group − baseline) over those seeds
  double sd = 0;       // sample standard deviation of the differences (n − 1)
  double low = 0, high = 0;  // 95% interval: mean ± t(0.975, n − 1)·sd/√n; only for n ≥ 2
  std::string verdict;  // "higher" | "lower" (the interval excludes 0) | "no difference shown" | "n < 2"
};

struct RunGroup {
  std::string name;  // the differing settings, "key=value ..."; "all runs" when nothing differs
  // What the tables print: for the baseline its name, for any other group only the settings in which it differs
  // from the baseline's (a one-flag variant reads as that flag, however many settings vary across the groups).
  std::string label;
  std::map<std::string, std::string> settings;
  std::vector<RunRecord> runs;  // sorted by seed
  double mean = 0, sd = 0;      // sd: sample standard deviation (n − 1); 0 for n = 1
  std::optional<PairedDiff> paired;  // against the baseline; empty for the baseline itself
};

struct Comparison {
  std::string metric, stage;
  std::vector<RunGroup> groups;  // in the order their first run was given
  size_t baseline = 0;
  std::vector<std::string> differing;        // the setting keys that name the groups
  std::map<uint64_t, std::vector<std::string>> starts;  // seed -> the distinct starting checkpoints of its runs
};

// Groups `runs` and pairs each group with the baseline group (the one holding `baseline_dir`, or the first
// when it is empty). Two runs with the same settings and seed are an error naming both.
Comparison compare_runs(const std::vector<RunRecord>& runs, const std::string& baseline_dir);

// Student's t quantile at 0.975 with `df` degrees of freedom (df ≥ 1): the table to 30, a Cornish–Fisher
// expansion beyond (within 0.001).
double t_quantile_975(int df);

std::string comparison_markdown(const Comparison& c);
std::string comparison_csv(const Comparison& c);
std::string comparison_json(const Comparison& c);

struct CompareOptions {
  std::vector<std::string> runs;
  std::string baseline;
  std::string metric = "test_top1";
  std::string stage;
  std::string format = "markdown";
  bool json = false;
};
void add_compare_flags(CLI::App& app, CompareOptions& o);
int run_compare(const CompareOptions& o);

}  // namespace apps
