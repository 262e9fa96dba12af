// The one translation unit that holds doctest's runner for every suite. One addition to doctest's own main: a
// run asked for named test cases (--test-case=..., as ctest runs each one) that selects none fails. CMake
// splits a discovered name at every ';', and each piece then matched no test case and passed without running
// anything; now such a piece fails, naming itself.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

namespace {

unsigned g_selected = 0;  // test cases that passed the filters in the last run

struct SelectionCounter : doctest::IReporter {
  explicit SelectionCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& s) override { g_selected = s.numTestCasesPassingFilters; }
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
REGISTER_LISTENER("selection_counter", 1, SelectionCounter);

const char* test_case_filter(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    for (const char* flag : {"--test-case=", "-tc="})
      if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) return argv[i] + std::strlen(flag);
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
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
