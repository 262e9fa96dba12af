// The smaller subcommands: eval, models, inspect. Each has an options struct, a flag registration and a run.
#pragma once
#include "apps/limits.h"
#include "apps/model_file.h"
#include <string>

namespace CLI {
class App;
}

namespace apps {

struct EvalOptions {
  std::string checkpoint;  // or a .safetensors file (file describes it)
  std::string data;  // "" = the kind the checkpoint records, else fashion-mnist
  std::string data_dir;
  int64_t batch = 256;
  int64_t subset = 0;
  int64_t workers = 1;
  int64_t threads = 0;
  int64_t max_idx_mb = kDefaultMaxIdxMb;  // the largest IDX file read, MiB (apps/limits.h)
  std::string progress = "auto";
  bool json = false;
  // Calibration-only quantization: quantize a full-precision checkpoint at these widths, calibrate on the
  // data's training images, evaluate. "" = evaluate the network as saved.
  std::string quant;
  std::string quantizer = "qil";  // with quant: qil | lsq | pact | dorefa
  std::string first_last = "fp";
  std::string weight_calib = "mse";  // with quant: max | mse (QIL weight intervals), as qil train
  std::string act_calib = "mse";  // with quant: percentile | mse (QIL activation intervals)
  int64_t calib_batches = 8;
  bool int8 = false;  // integer inference for the layers whose weights and input are quantized (docs/int8.md)
  std::string precision = "fp32";  // fp32 | bf16 (convolutions and linear layers)
  ModelFileOptions file;  // for a safetensors file: what it does not say itself
};
void add_eval_flags(CLI::App& app, EvalOptions& o);

// `--precision fp32|bf16` of train, eval, predict and bench (engine::ops::Precision): the flag on `app`, and
// the process setting made from its value, with a line on stderr when bf16 runs as the emulation (naming the
// ISA the CPU lacks) or natively.
inline constexpr const char* kPrecisionHelp =
    "fp32 | bf16: convolutions and linear layers read their inputs, weights and output gradients in bf16 and "
    "sum in f32 (everything else, master weights included, stays f32; quantized layers are fed their integer "
    "levels, exact in bf16). Native on CPUs with AVX512_BF16 or AMX; elsewhere an exact emulation, no faster than "
    "fp32 (docs/performance.md, bf16)";
void add_precision_flag(CLI::App& app, std::string& precision);
void apply_precision(const std::string& precision);
// The SIMD flags of /proc/cpuinfo that matter to oneDNN (avx2, fma, avx512*, amx*), space-separated; "unknown"
// where /proc/cpuinfo cannot be read.
std::string cpu_simd_flags();
// The CPU's "model name" from /proc/cpuinfo, or "unknown".
std::string cpu_model_name();
// How busy the machine is, from /proc/loadavg: the 1-minute load average and the tasks other than the caller
// that are runnable now. -1 for what cannot be read.
struct HostLoad {
  double load1 = -1;
  int others_running = -1;
};
// One reading of /proc/loadavg's text ("0.45 1.44 1.49 3/245 12345"): others_running = runnable - 1 (the
// reader itself is one of them).
HostLoad parse_loadavg(const std::string& text);
// The fewest other runnable tasks over `samples` readings 20 ms apart (so that a process that only passes by
// does not count), with the last reading's load average.
HostLoad host_load(int samples);
// host_load(5) as a command starts, with mpirun's other ranks on this node (OpenMPI's
// OMPI_COMM_WORLD_LOCAL_SIZE) not counted as other tasks: they are expected to run beside this one.
HostLoad load_at_start();
// For `qil train`: when other tasks run and OMP_WAIT_POLICY is unset, a line advising
// OMP_WAIT_POLICY=passive (measured in docs/performance.md); "" otherwise.
std::string wait_policy_hint(const HostLoad& h);
int run_eval(const EvalOptions& o);

struct ModelsOptions {
  int64_t image_size = 0;  // 0 = each model's usual size
  int64_t in_channels = 0;  // 0 = each model's usual
  int64_t num_classes = 0;
};
void add_models_flags(CLI::App& app, ModelsOptions& o);
int run_models(const ModelsOptions& o);

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
