// Progress bar and log lines.
#include "apps/training/progress.h"

#include <unistd.h>

#include <cstdio>

#include "engine/check.h"

namespace apps::training {

ProgressMode progress_mode(const std::string& s) {
  if (s == "bar") return ProgressMode::bar;
  if (s == "lines") return ProgressMode::lines;
  if (s == "none") return ProgressMode::none;
  QIL_CHECK(s == "auto", "progress: unknown mode '", s, "'");
  return isatty(fileno(stderr)) ? ProgressMode::bar : ProgressMode::lines;
}

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}

Progress::Progress(std::string label, int64_t total, ProgressMode mode, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), mode_(mode),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::rate() const {
  const double e = elapsed_seconds();
  return e > 0 ? done_ / e : 0.0;
}

void Progress::update(int64_t done, const std::string& stats) {
  done_ = done;
  if (mode_ == ProgressMode::none || total_ <= 0) return;
  const double frac = std::min(1.0, static_cast<double>(done) / total_);
  const double r = rate();
  const double eta = r > 0 ? (total_ - done) / r : -1;
  if (mode_ == ProgressMode::bar) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '#');
    bar += std::string(kWidth - filled, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %.0f %s/s ETA %s %s", label_.c_str(), bar.c_str(), frac * 100,
                 r, unit_.c_str(), format_duration(eta).c_str(), stats.c_str());
    std::fflush(stderr);
  } else {
    const int decile = static_cast<int>(frac * 10);
    if (decile == last_decile_ || decile == 10) return;  // the caller's summary covers 100%
    last_decile_ = decile;
    if (decile == 0) return;
    std::fprintf(stderr, "%s %3d%% %.0f %s/s ETA %s %s\n", label_.c_str(), decile * 10, r, unit_.c_str(),
                 format_duration(eta).c_str(), stats.c_str());
  }
}

void Progress::finish() {
  if (mode_ == ProgressMode::bar) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }
}

}  // namespace apps::training
