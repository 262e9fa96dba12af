// Process-wide runtime of the ops: the op-time counters behind OpTimer (ops.h), and the allocator setting
// that programs which train choose once at start-up (tune_malloc_for_training). Nothing here runs before
// main: a library that links the engine gets no process-wide change it did not ask for.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include "engine/ops.h"

namespace engine::ops {

namespace {

std::atomic<bool> g_on{false};
std::mutex g_mu;
std::map<std::string, OpTime>& table() {
  static std::map<std::string, OpTime> t;
  return t;
}
}  // namespace

// A training step frees and reallocates the same large activation and gradient buffers every step. glibc
// serves large blocks by mmap and returns them on free, so every step page-faults and zero-fills all of them
// again in the kernel (measured: ~20% of a ResNet-20 step). Keep freed memory in the heap instead: no mmap
// for blocks, and only trim more than 1 GiB of free memory at the top of the heap.
void tune_malloc_for_training() {
#ifdef __GLIBC__
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

void set_op_profiling(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool op_profiling() { return g_on.load(std::memory_order_relaxed); }

void add_op_time(const char* name, double seconds) {
  std::lock_guard<std::mutex> lock(g_mu);
  OpTime& t = table()[name];
  if (t.name.empty()) t.name = name;
  t.seconds += seconds;
  ++t.calls;
}

std::vector<OpTime> op_profile() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<OpTime> out;
  for (auto& kv : table()) out.push_back(kv.second);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return out;
}

void reset_op_profile() {
  std::lock_guard<std::mutex> lock(g_mu);
  table().clear();
}

}  // namespace engine::ops
