// Runs the real `qil` binary for command-line tests: exit code and combined output, in a temporary folder.
#pragma once
#include <doctest/doctest.h>

#include "test_paths.h"

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <sys/wait.h>
#include <thread>

namespace qiltest {

struct CmdResult {
  int code = -1;
  std::string out;  // stdout and stderr
};

inline std::string qil_binary() {
  return testpaths::qil_binary();
}

inline CmdResult run_qil(const std::string& args) {
  CmdResult r;
  const std::string cmd = "'" + qil_binary() + "' " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE_MESSAGE(p != nullptr, "cannot run " << cmd);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// Whether qil's output says how --precision bf16 runs: the emulation (no native bf16) or oneDNN's bf16 kernels.
inline bool says_how_bf16_runs(const std::string& out) {
  return out.find("exact emulation") != std::string::npos || out.find("native bf16 kernels") != std::string::npos;
}

struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    char tmpl[] = "/tmp/qil-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// A thread of the test process that spins while it lives: a runnable task that `qil` sees in /proc/loadavg.
struct BusyThread {
  std::atomic<bool> stop{false};
  std::thread t{[this] {
    volatile unsigned long spin = 0;
    while (!stop.load(std::memory_order_relaxed)) spin = spin + 1;
  }};
  ~BusyThread() {
    stop = true;
    t.join();
  }
};

// Sets (value != nullptr) or unsets an environment variable for the scope; restores what was there.
struct EnvScope {
  std::string name, saved;
  bool had;
  EnvScope(const char* n, const char* value) : name(n), had(std::getenv(n) != nullptr) {
    if (had) saved = std::getenv(n);
    set(value);
  }
  void set(const char* value) const {
    if (value)
      setenv(name.c_str(), value, 1);
    else
      unsetenv(name.c_str());
  }
  ~EnvScope() { set(had ? saved.c_str() : nullptr); }
};

}  // namespace qiltest
