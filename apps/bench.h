// `qil bench`: training-step throughput (images/s) of a model at a batch size and resolution, full precision
// or quantized, on synthetic in-memory data; with --infer, inference throughput (eval-mode forward passes,
// fake-quantized f32 or --int8); under mpirun, of a data-parallel step (gradient averaging included, either
// all-reduce mode), and with --allreduce-only the time of one all-reduce of the model's whole gradient.
// A benchmark, never a test.
#pragma once
#include <cstdint>
#include <string>

#include "layers/quantizable.h"

namespace CLI {
class App;
}

namespace apps {

struct BenchOptions {
  std::string model = "resnet18";
  int64_t batch = 32;
  int64_t image_size = 224;
  int64_t in_channels = 3;
  int64_t num_classes = 1000;
  int64_t steps = 10;   // timed SGD steps per repeat
  int64_t warmup = 2;   // untimed steps first
  int64_t repeat = 3;   // the median of the repeats is reported
  int64_t threads = 0;  // 0 = OpenMP's default
  std::string quant = "32";  // a stage entry: 32, 4, w4a8 ...
  std::string quantizer = quant::kDefaultQuantizer;  // a family of quant/registry.h, for a quantized --quant
  std::string precision = "fp32";  // fp32 | bf16 (convolutions and linear layers)
  bool json = false;
  bool plain = false;    // plain NCHW activations between ops instead of oneDNN's blocked layout
  bool profile = false;  // per-op time table after the result (costs a clock read pair per op call)
  bool infer = false;    // time eval-mode forward passes without gradients instead of training steps
  bool int8 = false;     // with infer and a quantized --quant: integer inference (layers::set_int8_inference)
  bool int8_forward = false;  // training steps with a quantized --quant: integer forward (layers::set_int8_forward)
  // Under mpirun: how gradients are averaged (end | overlap, as `qil train --allreduce`) and the bucket size.
  std::string allreduce = "end";
  double bucket_mb = 25;
  bool allreduce_only = false;  // time one all-reduce of the model's gradient instead of a step (2+ ranks)
  // The machine's FMA peak in GFLOP/s (scripts/fma_peak.sh); when > 0 the step's GFLOP/s is also given as a
  // share of it.
  double peak_gflops = 0;
};
void add_bench_flags(CLI::App& app, BenchOptions& o);
int run_bench(const BenchOptions& o);

}  // namespace apps
