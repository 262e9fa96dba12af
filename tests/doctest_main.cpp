// The one translation unit that holds doctest's runner for every suite. One addition to doctest's own main: a
// run asked for named test cases (--test-case=..., as ctest runs each one) that selects none fails. CMake
// splits a discovered name at every ';', and each piece then matched no test case and passed without running
// anything; now such a piece fails, naming itself. Two: a case that called qiltest::skip (tests/skip.h) and
// ended without a failure prints the skip marker ctest counts as Skipped, and is logged to $QIL_SKIP_LOG.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "skip.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

namespace {

unsigned g_selected = 0;  // test cases that passed the filters in the last run

// A listener that ignores every event; the two below override what they read.
struct QuietListener : doctest::IReporter {
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

struct SelectionCounter : QuietListener {
  explicit SelectionCounter(const doctest::ContextOptions&) {}
  void test_run_end(const doctest::TestRunStats& s) override { g_selected = s.numTestCasesPassingFilters; }
};
REGISTER_LISTENER("selection_counter", 1, SelectionCounter);

std::string g_suite;  // the ctest prefix: "apps" for test_apps

struct SkipReporter : QuietListener {
  std::string name;
  explicit SkipReporter(const doctest::ContextOptions&) {}
  void test_case_start(const doctest::TestCaseData& t) override {
    name = t.m_name;
    qiltest::pending_skip() = {};
  }
  void test_case_end(const doctest::CurrentTestCaseStats& s) override {
    const qiltest::SkipRequest skip = qiltest::pending_skip();
    qiltest::pending_skip() = {};
    if (!skip.requested) return;
    if (!s.testCaseSuccess) {  // a failure is never hidden behind a skip
      std::cout << "skip (" << skip.kind << ": " << skip.reason << ") not reported: the case failed" << std::endl;
      return;
    }
    std::cout << "[qil-skip:" << skip.kind << "] " << skip.reason << std::endl;
    if (const char* log = std::getenv("QIL_SKIP_LOG"); log && *log) {
      const std::string line = skip.kind + "\t" + g_suite + "/" + name + "\t" + skip.reason + "\n";
      if (FILE* f = std::fopen(log, "a")) {  // one write per line: ctest -j runs cases side by side
        std::fwrite(line.data(), 1, line.size(), f);
        std::fclose(f);
      }
    }
  }
};
REGISTER_LISTENER("skip_reporter", 2, SkipReporter);

const char* test_case_filter(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    for (const char* flag : {"--test-case=", "-tc="})
      if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) return argv[i] + std::strlen(flag);
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  g_suite = argc > 0 ? argv[0] : "";
  g_suite = g_suite.substr(g_suite.find_last_of('/') + 1);
  if (g_suite.rfind("test_", 0) == 0) g_suite = g_suite.substr(5);
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;
  if (const char* filter = test_case_filter(argc, argv); filter && g_selected == 0) {
    std::fprintf(stderr,
                 "no test case selected by --test-case=%s (a name holding ';' is split by ctest; a skipped case "
                 "needs --no-skip)\n",
                 filter);
    return rc != 0 ? rc : 1;
  }
  return rc;
}
