// The count flags shared by the subcommands, with one range check (apps/limits.h).
#include "apps/limits.h"

#include <CLI/CLI.hpp>

#include "engine/check.h"

namespace apps {

CLI::Validator number_check(std::string flag, std::function<bool(double)> ok, std::string requirement,
                            std::string help) {
  return CLI::Validator(
      [flag, ok, requirement](std::string& s) {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(s, &used);
          if (used != s.size()) return std::string();
        } catch (const std::exception&) {
          return std::string();
        }
        if (!ok(v)) throw engine::Error(engine::str_cat(flag, " ", requirement, ", got ", s));
        return std::string();
      },
      std::move(help));
}

namespace {
// "--threads must be in 0..1024, got 100000".
CLI::Validator count_range(const std::string& flag, int64_t lo, int64_t hi) {
  return number_check(
      flag, [lo, hi](double v) { return v >= static_cast<double>(lo) && v <= static_cast<double>(hi); },
      engine::str_cat("must be in ", lo, "..", hi), engine::str_cat("[", lo, "..", hi, "]"));
}
}  // namespace

void add_threads_flag(CLI::App& app, int64_t& threads) {
  app.add_option("--threads", threads, "compute threads (0 = OpenMP's default)")
      ->check(count_range("--threads", 0, kMaxThreads));
}

void add_workers_flag(CLI::App& app, int64_t& workers, const std::string& help) {
  app.add_option("--workers", workers, help)->check(count_range("--workers", 1, kMaxWorkers))->capture_default_str();
}

void add_max_idx_flag(CLI::App& app, int64_t& max_idx_mb) {
  app.add_option("--max-idx-mb", max_idx_mb, kMaxIdxHelp)
      ->check(count_range("--max-idx-mb", 1, kMaxIdxMb))
      ->capture_default_str();
}

}  // namespace apps
