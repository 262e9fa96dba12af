// Shared by the libFuzzer targets (scripts/fuzz.sh builds them): the input written to a file, since qil's
// readers take paths, and the one outcome a reader may have besides success, an engine::Error. Anything else
// (a crash, a sanitizer report, another exception type, a failed allocation) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/check.h"

namespace fuzz {

// The size of the input being run (libFuzzer also runs an empty one first, which no seed check applies to).
inline size_t& input_size() {
  static size_t n = 0;
  return n;
}

// A file of this process's own (one per target and suffix), rewritten for every input.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& suffix) {
  input_size() = size;
  const std::string path = "/tmp/qil-fuzz-" + std::to_string(getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// Under QIL_FUZZ_EXPECT_VALID=1 (scripts/fuzz.sh --check-seeds) every input must be read without error: the
// seeds have to pass the first checks, or fuzzing would start outside the parsers.
inline void refused(const std::string& msg, const std::string& name) {
  const char* v = std::getenv("QIL_FUZZ_EXPECT_VALID");
  if (v && std::string(v) == "1" && input_size() > 0) {
    std::fprintf(stderr, "seed refused: %s\n", msg.c_str());
    std::abort();
  }
  if (msg.find(name) == std::string::npos) {
    std::fprintf(stderr, "error without the file name: %s\n", msg.c_str());
    std::abort();
  }
}

// Runs `read`; an engine::Error is a clean refusal. Its message must name the file (`name`) it was given.
template <class F>
void expect_clean(const std::string& name, F&& read) {
  try {
    read();
  } catch (const engine::Error& e) {
    refused(e.what(), name);
  }
}

}  // namespace fuzz
