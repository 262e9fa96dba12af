// Error reporting for every layer of qil: one exception type and a check macro whose message names the
// op and the offending values. Not a logging facility.
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine {

// Every recoverable failure in qil (bad shapes, bad files, bad flags) is an engine::Error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::ostream& operator<<(std::ostream& os, const std::vector<int64_t>& v) {
  os << '[';
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  return os << ']';
}

template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace engine

// QIL_CHECK(cond, "conv2d: expected ", c, " channels, got ", x.shape());
#define QIL_CHECK(cond, ...)                                          \
  do {                                                                \
    if (!(cond)) throw ::engine::Error(::engine::str_cat(__VA_ARGS__)); \
  } while (0)
