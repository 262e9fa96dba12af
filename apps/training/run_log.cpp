// Run logging: the CSV and JSON-lines files and the console.
#include "apps/training/run_log.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/training/progress.h"
#include "apps/training/report.h"
#include "engine/check.h"
#include "engine/serialize.h"
#include "layers/quantize.h"

namespace apps::training {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void append_line(const std::string& path, const std::string& line) {
  std::ofstream f(path, std::ios::app);
  QIL_CHECK(f.good(), "cannot append to ", path, ": ", std::strerror(errno));
  f << line << '\n';
  f.flush();  // a full disk shows here, not silently at close
  QIL_CHECK(f.good(), "cannot append to ", path, ": ", std::strerror(errno));
}

// A comma-separated row. Numbers in fixed notation with the given decimals, or (decimals < 0) in %g style
// with that many significant digits; the fields written here never contain commas or quotes.
class CsvRow {
 public:
  CsvRow() { os_.imbue(std::locale::classic()); }
  template <class T>
  CsvRow& add(const T& v) {
    sep();
    os_ << v;
    return *this;
  }
  CsvRow& fixed(double v, int decimals) {
    sep();
    os_ << std::fixed << std::setprecision(decimals) << v << std::defaultfloat;
    return *this;
  }
  CsvRow& general(double v, int digits) {
    sep();
    os_ << std::defaultfloat << std::setprecision(digits) << v;
    return *this;
  }
  std::string str() const { return os_.str(); }

 private:
  void sep() {
    if (any_) os_ << ',';
    any_ = true;
  }
  std::ostringstream os_;
  bool any_ = false;
};

std::string fixed(double v, int decimals) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << v;
  return os.str();
}

// A split that does not exist (no validation hold-out, no test set) has no figure: "—", never 0.00 or -1.00.
const char* const kNone = "\u2014";

// A percentage right-aligned in `width` columns, or "—" there when there is none ("—" is one column but three
// bytes, which std::setw would count).
std::string percent_cell(double v, bool have, int width) {
  const std::string s = have ? fixed(v, 2) + "%" : std::string(kNone) + " ";
  const int shown = have ? static_cast<int>(s.size()) : 2;
  return std::string(static_cast<size_t>(std::max(0, width - shown)), ' ') + s;
}

}  // namespace

const char* RunLog::metrics_header() {
  return "stage,stage_name,epoch,global_epoch,lr,train_loss,train_top1,val_loss,val_top1,val_top5,"
         "test_loss,test_top1,test_top5,img_per_s,wall_s";
}

RunLog::RunLog(std::string dir, bool lead)
    : dir_(std::move(dir)),
      metrics_path_((fs::path(dir_) / "metrics.csv").string()),
      intervals_path_((fs::path(dir_) / "intervals.jsonl").string()),
      lead_(lead) {
  if (lead_ && !fs::exists(metrics_path_)) append_line(metrics_path_, metrics_header());
}

namespace {
// Rewrites `path` with only the lines `keep` accepts (the first `skip_head` lines always), atomically.
void filter_lines(const std::string& path, int skip_head, const std::function<bool(const std::string&)>& keep) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::ostringstream out;
  int n = 0;
  for (std::string line; std::getline(in, line); ++n)
    if (n < skip_head || line.empty() || keep(line)) out << line << '\n';
  in.close();
  engine::write_file_atomic(path, out.str(), "log");
}
}  // namespace

void RunLog::keep_until(int stage, int epochs_done, bool stage_started) const {
  if (!lead_) return;
  auto covered = [&](int s, int e) {
    if (s != stage) return s < stage;
    return e == 0 ? stage_started : e <= epochs_done;
  };
  // Only rows of this log's shape survive: as many cells as the header, stage and epoch plain integers. A
  // garbage line (a torn append, an edit) would otherwise read as stage 0, epoch 0 and be kept for good.
  const std::string header = metrics_header();
  const size_t cells = static_cast<size_t>(std::count(header.begin(), header.end(), ',')) + 1;
  auto integer = [](const std::string& c, int* v) {
    if (c.empty() || c.size() > 9 || c.find_first_not_of("0123456789") != std::string::npos) return false;
    *v = std::atoi(c.c_str());
    return true;
  };
  filter_lines(metrics_path_, 1, [&](const std::string& line) {
    std::vector<std::string> row;  // "stage,stage_name,epoch,..."
    std::istringstream ls(line);
    for (std::string cell; std::getline(ls, cell, ',');) row.push_back(cell);
    int s = 0, e = 0;
    return row.size() == cells && integer(row[0], &s) && integer(row[2], &e) && covered(s, e);
  });
  filter_lines(intervals_path_, 0, [&](const std::string& line) {
    const json j = json::parse(line, nullptr, false);
    return j.is_object() && covered(j.value("stage", 0), j.value("epoch", 0));
  });
}

void RunLog::line(const std::string& text) const {
  if (lead_) std::cout << text << std::endl;
}

void RunLog::epoch(const EpochRecord& e, layers::Module& model) const {
  if (!lead_) return;
  CsvRow row;
  row.add(e.stage).add(e.stage_name).add(e.epoch).add(e.global_epoch).general(e.lr, 6);
  row.fixed(e.train_loss, 6).fixed(e.train_top1, 4);
  // Empty cells for a split the run does not have.
  for (const EvalResult* r : {&e.val, &e.test}) {
    if (r->count > 0)
      row.fixed(r->loss, 6).fixed(r->top1, 4).fixed(r->top5, 4);
    else
      row.add("").add("").add("");
  }
  row.fixed(e.img_per_s, 1).fixed(e.wall_s, 1);
  append_line(metrics_path_, row.str());
  interval_rows(model, e.stage, e.stage_name, e.epoch);
  std::ostringstream os;
  os << "[" << e.stage_name << "] epoch " << e.epoch << "/" << e.epochs << "  train loss " << fixed(e.train_loss, 4)
     << " acc " << fixed(e.train_top1, 2) << "%  val " << (e.val.count > 0 ? fixed(e.val.top1, 2) + "%" : kNone)
     << "  test "
     << (e.test.count > 0 ? fixed(e.test.top1, 2) + "% (top-5 " + fixed(e.test.top5, 2) + "%)" : std::string(kNone))
     << "  lr " << std::setprecision(4) << e.lr << "  "
     << fixed(e.img_per_s, 0) << " img/s  " << format_duration(e.wall_s);
  line(os.str());
}

void RunLog::interval_rows(layers::Module& model, int stage, const std::string& stage_name, int epoch) const {
  if (!lead_) return;
  for (const auto& rep : layers::quant_report(model)) {
    json j = layer_report_json(rep);
    j["stage"] = stage;
    j["stage_name"] = stage_name;
    j["epoch"] = epoch;
    append_line(intervals_path_, j.dump());
  }
}

void RunLog::summary(const std::vector<StageSummary>& stages, layers::Module& model) const {
  if (!lead_) return;
  std::ostringstream os;
  os << "\n== summary (" << dir_ << ")\n";
  os << std::left << std::setw(10) << "stage" << std::right << " " << std::setw(7) << "epochs" << " "
     << std::setw(10) << "best val" << " " << std::setw(10) << "test@best" << " " << std::setw(10) << "final test"
     << "\n";
  for (const auto& s : stages)
    os << std::left << std::setw(10) << s.name << std::right << " " << std::setw(7) << s.epochs << " "
       << percent_cell(s.best_val, s.best_val >= 0, 10) << " " << percent_cell(s.test_at_best, s.test_at_best >= 0, 10)
       << " " << percent_cell(s.test.top1, s.test.count > 0, 10) << "\n";
  const auto rep = layers::quant_report(model);
  if (!rep.empty()) {
    os << "\nlearned intervals (final stage):\n" << interval_table(rep);
    const auto calib = first_interval_rows(intervals_path_);
    if (!calib.empty()) os << "\nmoved from calibration (each value: at calibration -> learned):\n" << movement_table(rep, calib);
  }
  std::cout << os.str() << std::flush;
}

}  // namespace apps::training
