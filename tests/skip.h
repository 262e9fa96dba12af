// A test case that cannot run on this machine reports "skipped", never "passed": it calls qiltest::skip(kind,
// reason) and returns. doctest 2.4 has no run-time skip, so the runner (tests/doctest_main.cpp) prints
// `[qil-skip:<kind>] <reason>` when such a case ends without a failure, and ctest, told by CMakeLists.txt's
// SKIP_REGULAR_EXPRESSION, counts the case as Skipped. With QIL_SKIP_LOG set, the runner also appends
// `<kind>\t<suite>/<test case>\t<reason>` to that file: scripts/test.sh fails on any skip but kind "isa".
// A case that failed before it skipped fails; its skip is not reported.
//
// Kinds: "isa" (the CPU lacks the instruction set the case compares against), "dataset" (a Debian dataset
// package is missing), "tool" (a program such as mpirun or ImageMagick is missing), "source" (the source tree
// is not where the test binary was told it is).
#pragma once
#include <string>

namespace qiltest {

struct SkipRequest {
  bool requested = false;
  std::string kind, reason;
};

// The current test case's skip, read and cleared by the runner.
inline SkipRequest& pending_skip() {
  static SkipRequest s;
  return s;
}

// Marks the current test case skipped; the caller returns right after.
inline void skip(const std::string& kind, const std::string& reason) { pending_skip() = {true, kind, reason}; }

}  // namespace qiltest
