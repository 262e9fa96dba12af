// Readers of metrics.csv and intervals.jsonl.
#include "apps/inspect/history.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "apps/training/report.h"
#include "engine/check.h"

namespace apps {

using nlohmann::json;

namespace {

// metrics.csv holds numbers and stage names only (apps/training/run_log.cpp writes no quotes and no commas
// inside a field), so a plain split on ',' is the whole CSV grammar it needs. "a,,b," -> {"a", "", "b", ""}.
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t comma = line.find(',', start);
    out.push_back(line.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

// The numeric columns this reader knows and where each goes.
using Setter = void (*)(MetricsRow&, double);
const std::map<std::string, Setter, std::less<>>& numeric_columns() {
  static const std::map<std::string, Setter, std::less<>> columns = {
      {"stage", [](MetricsRow& r, double v) { r.stage = static_cast<int>(v); }},
      {"epoch", [](MetricsRow& r, double v) { r.epoch = static_cast<int>(v); }},
      {"global_epoch", [](MetricsRow& r, double v) { r.global_epoch = static_cast<int64_t>(v); }},
      {"lr", [](MetricsRow& r, double v) { r.lr = v; }},
      {"train_loss", [](MetricsRow& r, double v) { r.train_loss = v; }},
      {"train_top1", [](MetricsRow& r, double v) { r.train_top1 = v; }},
      {"val_loss", [](MetricsRow& r, double v) { r.val_loss = v; }},
      {"val_top1", [](MetricsRow& r, double v) { r.val_top1 = v; }},
      {"val_top5", [](MetricsRow& r, double v) { r.val_top5 = v; }},
      {"test_loss", [](MetricsRow& r, double v) { r.test_loss = v; }},
      {"test_top1", [](MetricsRow& r, double v) { r.test_top1 = v; }},
      {"test_top5", [](MetricsRow& r, double v) { r.test_top5 = v; }},
      {"img_per_s", [](MetricsRow& r, double v) { r.img_per_s = v; }},
      {"wall_s", [](MetricsRow& r, double v) { r.wall_s = v; }},
  };
  return columns;
}

// The whole field must be a number ("12abc" is not 12); an empty field is 0.
bool parse_number(std::string_view s, double& out) {
  out = 0;
  if (s.empty()) return true;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string_view without_cr(const std::string& line) {  // a file written on Windows, or edited there
  std::string_view v(line);
  if (!v.empty() && v.back() == '\r') v.remove_suffix(1);
  return v;
}

MetricsRow parse_metrics_row(const std::vector<std::string_view>& header, std::string_view line,
                             const std::string& path, int64_t line_no) {
  const std::vector<std::string_view> cells = split_fields(line);
  QIL_CHECK(cells.size() == header.size(), path, ": line ", line_no, " has ", cells.size(), " fields, the header ",
            header.size());
  MetricsRow r;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "stage_name") {
      r.stage_name = std::string(cells[i]);
      continue;
    }
    const auto column = numeric_columns().find(header[i]);
    if (column == numeric_columns().end()) continue;
    double v = 0;
    QIL_CHECK(parse_number(cells[i], v), path, ": line ", line_no, ": column '", header[i], "' is not a number: '",
              cells[i], "'");
    // An empty val_* or test_* cell is a split the run does not have: no figure (NaN, drawn as a gap, shown
    // as "—"), not 0.
    const bool split_figure = header[i].rfind("val_", 0) == 0 || header[i].rfind("test_", 0) == 0;
    column->second(r, cells[i].empty() && split_figure ? std::nan("") : v);
  }
  return r;
}

}  // namespace

std::vector<MetricsRow> read_metrics_csv(const std::string& path) {
  std::ifstream in(path);
  QIL_CHECK(in.good(), "metrics: cannot open '", path, "'");
  std::string header_line, line;
  QIL_CHECK(static_cast<bool>(std::getline(in, header_line)), path, ": empty file (expected a header line)");
  const std::vector<std::string_view> header = split_fields(without_cr(header_line));
  std::vector<MetricsRow> rows;
  for (int64_t line_no = 2; std::getline(in, line); ++line_no) {
    const std::string_view v = without_cr(line);
    if (!v.empty()) rows.push_back(parse_metrics_row(header, v, path, line_no));
  }
  return rows;
}

std::vector<IntervalRecord> read_intervals_jsonl(const std::string& path, const std::vector<MetricsRow>& metrics) {
  std::map<std::pair<int, int>, int64_t> global;
  for (const auto& m : metrics) global[{m.stage, m.epoch}] = m.global_epoch;
  std::map<std::pair<int, int>, int64_t> seen;  // fallback numbering without metrics
  std::vector<IntervalRecord> out = training::read_interval_records(path);
  for (IntervalRecord& r : out) {
    const std::pair<int, int> key{r.stage, r.epoch};
    // Epoch 0 is the start of a stage (its calibration): where the previous epoch ended.
    const auto first = global.find({r.stage, 1});
    if (r.epoch == 0 && first != global.end()) {
      r.global_epoch = first->second - 1;
    } else if (auto it = global.find(key); it != global.end()) {
      r.global_epoch = it->second;
    } else {
      auto s = seen.find(key);
      if (s == seen.end()) s = seen.emplace(key, static_cast<int64_t>(seen.size()) + 1).first;
      r.global_epoch = s->second;
    }
  }
  return out;
}

}  // namespace apps
