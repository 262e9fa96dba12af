// Where the tests find the source tree, the qil binary and npm's packages: the environment variable when set
// (QIL_SOURCE_DIR, QIL_BINARY, QIL_NODE_PATH: to run a test binary against another build), else the paths CMake
// compiled in. Never empty, so no test can skip itself for want of a path.
#pragma once
#include <cstdlib>
#include <string>

namespace testpaths {

inline std::string from_env(const char* var, const char* compiled) {
  const char* v = std::getenv(var);
  return v && *v ? v : compiled;
}
inline std::string source_dir() { return from_env("QIL_SOURCE_DIR", QIL_TEST_SOURCE_DIR); }
inline std::string qil_binary() { return from_env("QIL_BINARY", QIL_TEST_BINARY); }
inline std::string node_path() { return from_env("QIL_NODE_PATH", QIL_TEST_NODE_PATH); }

}  // namespace testpaths
