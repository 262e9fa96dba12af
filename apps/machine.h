// What `qil` knows of the machine it runs on and sets for it: the CPU (model name, the SIMD flags oneDNN cares
// about), how busy it is (/proc/loadavg, with the advice on OpenMP's wait policy), and `--precision` (the flag of
// train, eval, predict and bench, and the process setting made from it). Not the engine's other process
// settings (apps/main.cpp) and not the limits on threads and workers (limits.h).
#pragma once
#include <string>

namespace CLI {
class App;
}

namespace apps {

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

}  // namespace apps
