// A run's history as `qil inspect` reads it back: metrics.csv (one row per epoch of each stage) and
// intervals.jsonl (one record per quantized layer per epoch). Readers only: apps/training/run_log.cpp writes both files, and
// what a page or table makes of them is page.h's and report.h's business.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "apps/training/report.h"
#include "layers/quantize.h"

namespace apps {

// One row of metrics.csv (one epoch of one stage).
struct MetricsRow {
  int stage = 0;
  std::string stage_name;
  int epoch = 0;
  int64_t global_epoch = 0;
  double lr = 0, train_loss = 0, train_top1 = 0, val_loss = 0, val_top1 = 0, val_top5 = 0;
  double test_loss = 0, test_top1 = 0, test_top5 = 0, img_per_s = 0, wall_s = 0;
};
// Reads metrics.csv by its header names: columns may come in any order, unknown ones are ignored, missing and
// empty ones stay 0, except empty val_* and test_* cells (a split the run does not have), which are NaN. A row with the wrong number of fields or a value that is not a number is an error that
// names the file, the line and the column.
std::vector<MetricsRow> read_metrics_csv(const std::string& path);

// One line of intervals.jsonl (apps/training/report.h), with global_epoch from metrics (stage, epoch), else the
// order of (stage, epoch) in the file. Blank lines are skipped; a line that is not a layer record is an error
// naming the file and the line.
using training::IntervalRecord;
std::vector<IntervalRecord> read_intervals_jsonl(const std::string& path, const std::vector<MetricsRow>& metrics);

}  // namespace apps
