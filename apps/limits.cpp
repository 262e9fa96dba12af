// The count flags shared by the subcommands, with one range check (apps/limits.h).
#include "apps/limits.h"

#include <CLI/CLI.hpp>

#include "engine/check.h"

namespace apps {

namespace {
// Throws the message whole, as train's field checks do (apps/config.cpp): "--threads must be in 0..1024, got
// 100000". A value that is not an integer passes here and fails CLI11's conversion, which names it.
CLI::Validator count_range(const std::string& flag, int64_t lo, int64_t hi) {
  return CLI::Validator(
      [flag, lo, hi](std::string& s) {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(s, &used);
          if (used != s.size()) return std::string();
        } catch (const std::exception&) {
          return std::string();
        }
        QIL_CHECK(v >= static_cast<double>(lo) && v <= static_cast<double>(hi), flag, " must be in ", lo, "..", hi,
                  ", got ", s);
        return std::string();
      },
      engine::str_cat("[", lo, "..", hi, "]"));
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
