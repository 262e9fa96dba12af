// Progress display for long work: a self-rewriting bar on a terminal (count, %, rate, ETA, caller's stats),
// plain log lines at ~10% steps otherwise, or nothing.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace apps::training {

enum class ProgressMode { bar, lines, none };
// "auto" -> bar on a terminal (stderr), lines otherwise.
ProgressMode progress_mode(const std::string& setting);

class Progress {
 public:
  Progress(std::string label, int64_t total, ProgressMode mode, std::string unit = "img");
  // done: units completed so far (e.g. images); stats: shown after the bar ("loss 0.41 acc 86.2%").
  void update(int64_t done, const std::string& stats);
  // Clears the bar line (the caller then prints its summary line).
  void finish();
  double elapsed_seconds() const;
  double rate() const;  // units per second so far

 private:
  std::string label_, unit_;
  int64_t total_;
  ProgressMode mode_;
  int64_t done_ = 0;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_duration(double seconds);  // "1:02:03" or "02:03"

}  // namespace apps::training
