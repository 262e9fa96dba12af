// `qil inspect`: what each quantized layer of a run or checkpoint learned, as a table, JSON, CSV or an HTML page,
// with activation statistics on data (--data). The flags and the run function only: reading a run, the
// statistics and the page are apps/inspect/'s, the tables and records apps/training/report.h's.
#pragma once
#include <cstdint>
#include <string>

#include "apps/limits.h"

namespace CLI {
class App;
}

namespace apps {

struct InspectOptions {
  std::string target;  // run directory or checkpoint
  bool json = false;
  bool csv = false;
  std::string html;
  // Activation statistics over a few batches of this data (empty = none).
  std::string data;
  std::string data_dir;
  int64_t batches = 4;
  int64_t batch = 128;
  int64_t max_idx_mb = kDefaultMaxIdxMb;  // the largest IDX file read, MiB (apps/limits.h)
};
void add_inspect_flags(CLI::App& app, InspectOptions& o);
int run_inspect(const InspectOptions& o);

}  // namespace apps
