// The op-time counters behind OpTimer (ops.h): a process-wide table keyed by op name, guarded by a mutex
// because ops may run on more than one thread (loader, evaluation). Only touched when profiling is on.
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
