// `qil bench-data`: throughput of the ImageNet-folder input pipeline (ImageFolderDataset + Loader) over
// DIR/train/<class>/* — decoded and transformed images/s in total and per decode thread, with an optional
// one-thread breakdown into read, decode and transform. A benchmark, never a test; no model is involved.
#pragma once
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace apps {

struct BenchDataOptions {
  std::string dir;          // an ImageNet-style root: DIR/train/<class>/*
  int64_t image_size = 224;
  int64_t workers = 1;      // decode threads
  int64_t batch = 32;
  int64_t batches = 10;     // timed batches per repeat
  int64_t warmup = 1;       // untimed batches first (page cache, thread start)
  int64_t repeat = 3;       // the median of the repeats is reported
  bool eval = false;        // resize + center crop instead of random-resized-crop + flip
  bool breakdown = false;   // also time read / decode / transform on one thread
  bool json = false;
};
void add_bench_data_flags(CLI::App& app, BenchDataOptions& o);
int run_bench_data(const BenchDataOptions& o);

}  // namespace apps
