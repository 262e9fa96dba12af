// /proc/cpuinfo, /proc/loadavg and --precision.
#include "apps/machine.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>
#include <thread>

#include "engine/check.h"
#include "engine/dist.h"
#include "engine/ops.h"

namespace apps {

void add_precision_flag(CLI::App& app, std::string& precision) {
  app.add_option("--precision", precision, kPrecisionHelp)
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

std::string cpu_simd_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> picked;
    for (std::string w; words >> w;)
      if (w == "avx2" || w == "fma" || w.rfind("avx512", 0) == 0 || w.rfind("amx", 0) == 0) picked.insert(w);
    std::string out;
    for (const auto& w : picked) out += (out.empty() ? "" : " ") + w;
    return out.empty() ? "none of avx2, fma, avx512*, amx*" : out;
  }
  return "unknown";
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    const size_t start = line.find_first_not_of(" \t", colon + 1);
    if (colon != std::string::npos && start != std::string::npos) return line.substr(start);
  }
  return "unknown";
}

HostLoad parse_loadavg(const std::string& text) {
  HostLoad h;
  std::istringstream in(text);
  double l1 = 0, l5 = 0, l15 = 0;
  std::string tasks;
  if (!(in >> l1 >> l5 >> l15 >> tasks)) return h;
  h.load1 = l1;
  const size_t slash = tasks.find('/');
  if (slash != std::string::npos && slash > 0 && slash < 9 && tasks.find_first_not_of("0123456789") == slash)
    h.others_running = std::max(0, std::stoi(tasks.substr(0, slash)) - 1);
  return h;
}

HostLoad host_load(int samples) {
  HostLoad out;
  for (int i = 0; i < samples; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::ifstream f("/proc/loadavg");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const HostLoad h = parse_loadavg(text);
    out.load1 = h.load1;
    if (h.others_running >= 0 && (out.others_running < 0 || h.others_running < out.others_running))
      out.others_running = h.others_running;
  }
  return out;
}

HostLoad load_at_start() {
  HostLoad h = host_load(5);
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (local && h.others_running > 0) h.others_running = std::max(0, h.others_running - (std::atoi(local) - 1));
  return h;
}

std::string wait_policy_hint(const HostLoad& h) {
  if (h.others_running <= 0 || std::getenv("OMP_WAIT_POLICY")) return "";
  return engine::str_cat("qil train: ", h.others_running,
                         " other task(s) running on this machine as training starts (load average ", h.load1,
                         "). OpenMP's default spinning wait makes its threads fight them at every barrier (a "
                         "ResNet-20 step: 794 ms spinning, 467 ms passive; docs/performance.md): on a shared "
                         "machine, set OMP_WAIT_POLICY=passive");
}

void apply_precision(const std::string& precision) {
  const engine::ops::Precision p = engine::ops::parse_precision(precision);
  engine::ops::set_precision(p);
  if (p != engine::ops::Precision::bf16 || engine::dist::rank() != 0) return;
  if (engine::ops::bf16_emulated())
    std::cerr << "qil: --precision bf16: this CPU has no native bf16 (that needs " << engine::ops::bf16_isa_note()
              << "; this CPU has: " << cpu_simd_flags()
              << "). Running the exact emulation: operands rounded to bf16 on the f32 kernels, bf16's numerics, no "
                 "faster than fp32."
              << std::endl;
  else
    std::cerr << "qil: --precision bf16: oneDNN's native bf16 kernels (SIMD flags: " << cpu_simd_flags() << ")"
              << std::endl;
}

}  // namespace apps
