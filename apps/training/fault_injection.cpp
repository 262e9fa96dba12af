// Test-only fault injection (see the header).
#include "apps/training/fault_injection.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "engine/check.h"

namespace apps::training {

namespace {

struct Fault {
  std::string kind, param;
  int rank = 0;
  int64_t step = 1;
};

const Fault& fault() {
  static const Fault f = [] {
    Fault x;
    auto env = [](const char* name) -> std::string {
      const char* v = std::getenv(name);
      return v ? v : "";
    };
    x.kind = env("QIL_TEST_FAULT");
    x.param = env("QIL_TEST_FAULT_PARAM");
    if (!env("QIL_TEST_FAULT_RANK").empty()) x.rank = std::stoi(env("QIL_TEST_FAULT_RANK"));
    if (!env("QIL_TEST_FAULT_STEP").empty()) x.step = std::stoll(env("QIL_TEST_FAULT_STEP"));
    QIL_CHECK(x.kind.empty() || x.kind == "throw" || x.kind == "kill" || x.kind == "hang" || x.kind == "diverge",
              "QIL_TEST_FAULT must be throw, kill, hang or diverge, got '", x.kind, "'");
    return x;
  }();
  return f;
}

void perturb(layers::Module& model, const std::string& name) {
  for (auto& p : model.named_parameters()) {
    if (!name.empty() && p.name != name) continue;
    p.tensor.data<float>()[0] += 1e-3f;
    return;
  }
  throw engine::Error(engine::str_cat("QIL_TEST_FAULT_PARAM: the model has no parameter '", name, "'"));
}

}  // namespace

void inject_test_fault(int rank, int64_t step, layers::Module& model) {
  const Fault& f = fault();
  if (f.kind.empty() || rank != f.rank || step != f.step) return;
  if (f.kind == "throw")
    throw engine::Error(engine::str_cat("test fault (QIL_TEST_FAULT=throw) after step ", step));
  // The other kinds say what they do first: a killed or hung rank says nothing afterwards.
  std::fprintf(stderr, "qil: test fault (QIL_TEST_FAULT=%s) on rank %d after step %lld\n", f.kind.c_str(), rank,
               static_cast<long long>(step));
  std::fflush(stderr);
  if (f.kind == "kill") std::raise(SIGKILL);
  if (f.kind == "hang")
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  if (f.kind == "diverge") perturb(model, f.param);
}

}  // namespace apps::training
