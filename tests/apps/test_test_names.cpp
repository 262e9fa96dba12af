// The suites' own test names: ctest finds each TEST_CASE through CMake's doctest_discover_tests, which carries
// the names in CMake lists. A ';' splits a name into fragments, and an unbalanced '[' swallows the names after
// it; each fragment then runs `--test-case=<fragment>`, which matches no test and passes without running one.
// Not a check of what the tests test.
#include <doctest/doctest.h>

#include "skip.h"
#include "test_paths.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

TEST_CASE("test names: no semicolon and balanced square brackets, so that ctest runs every TEST_CASE") {
  const std::filesystem::path tests = std::filesystem::path(testpaths::source_dir()) / "tests";
  if (!std::filesystem::is_directory(tests)) {
    qiltest::skip("source", tests.string() + " is absent (run under ctest, or set QIL_SOURCE_DIR)");
    return;
  }
  const std::regex test_case(R"re(TEST_CASE\("((?:[^"\\]|\\.)*)"\))re");
  int names = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(tests)) {
    if (e.path().extension() != ".cpp") continue;
    std::ifstream f(e.path());
    const std::string text((std::istreambuf_iterator<char>(f)), {});
    for (std::sregex_iterator it(text.begin(), text.end(), test_case), end; it != end; ++it) {
      const std::string name = (*it)[1];
      ++names;
      int depth = 0;
      bool balanced = true;
      for (char c : name) {
        depth += c == '[' ? 1 : c == ']' ? -1 : 0;
        balanced = balanced && depth >= 0;
      }
      CHECK_MESSAGE(name.find(';') == std::string::npos, e.path().filename().string() << ": '" << name << "'");
      CHECK_MESSAGE((balanced && depth == 0), e.path().filename().string() << ": '" << name << "'");
    }
  }
  CHECK(names > 100);  // the pattern still finds the suites' tests
}
