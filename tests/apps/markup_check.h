// A well-formedness check of the HTML and SVG that qil writes: every element opened is closed, in order. Tags
// are scanned by hand: std::regex's recursive matcher runs out of stack on long attribute values (an SVG
// path, an embedded image) under AddressSanitizer's larger frames (scripts/sanitize.sh).
#pragma once
#include <doctest/doctest.h>

#include <cctype>
#include <set>
#include <string>
#include <vector>

namespace markuptest {

// Every opened element is closed in order; elements named in void_elements (HTML's meta, br, ...) and
// self-closed ones (<path/>) need no closing tag. Returns the number of opening tags seen.
inline int check_balanced(const std::string& text, const std::set<std::string>& void_elements = {}) {
  std::vector<std::string> stack;
  int elements = 0;
  for (size_t i = text.find('<'); i != std::string::npos; i = text.find('<', i + 1)) {
    size_t j = i + 1;
    const bool closing = j < text.size() && text[j] == '/';
    if (closing) ++j;
    if (j >= text.size() || !std::isalpha(static_cast<unsigned char>(text[j]))) continue;  // <!DOCTYPE, a < b
    const size_t name_end = text.find_first_not_of(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", j);
    const size_t end = text.find('>', j);
    REQUIRE_MESSAGE(end != std::string::npos, "tag at ", i, " is never closed with '>'");
    const std::string name = text.substr(j, std::min(name_end, end) - j);
    if (closing) {
      REQUIRE_MESSAGE(!stack.empty(), "closing </", name, "> with nothing open");
      REQUIRE_MESSAGE(stack.back() == name, "</", name, "> closes <", stack.back(), ">");
      stack.pop_back();
      continue;
    }
    ++elements;
    if (text[end - 1] != '/' && !void_elements.count(name)) stack.push_back(name);
  }
  CHECK_MESSAGE(stack.empty(), stack.size(), " elements left open");
  return elements;
}

}  // namespace markuptest
