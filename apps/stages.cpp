// Stage-list parsing and validation.
#include "apps/stages.h"

#include <cctype>

#include "engine/check.h"

namespace apps {

using engine::Error;
using engine::str_cat;

namespace {
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      out.push_back(cur);
      cur.clear();
    } else if (!std::isspace(static_cast<unsigned char>(ch))) {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

int parse_bits(const std::string& s, const std::string& entry) {
  size_t used = 0;
  int v = -1;
  try {
    v = std::stoi(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  QIL_CHECK(used == s.size() && !s.empty(), "--stages: cannot read '", entry, "' (expected e.g. 32, 4 or w4a8)");
  QIL_CHECK(v == 32 || (v >= 2 && v <= 8), "--stages: bit width ", v, " in '", entry,
            "' is outside 2..8 (or 32 for full precision)");
  return v;
}
}  // namespace

std::string Stage::name() const {
  if (!quantized()) return "fp32";
  return str_cat("w", wbits == 32 ? std::string("fp") : std::to_string(wbits), "a",
                 abits == 32 ? std::string("fp") : std::to_string(abits));
}

Stage parse_stage_entry(const std::string& entry) {
  Stage st;
  if (!entry.empty() && (entry[0] == 'w' || entry[0] == 'W')) {
    const size_t a = entry.find_first_of("aA");
    QIL_CHECK(a != std::string::npos, "--stages: '", entry, "' has a weight width but no 'a' activation width");
    st.wbits = parse_bits(entry.substr(1, a - 1), entry);
    st.abits = parse_bits(entry.substr(a + 1), entry);
  } else {
    st.wbits = st.abits = parse_bits(entry, entry);
  }
  return st;
}

std::vector<Stage> parse_stages(const std::string& stages, const std::string& stage_epochs,
                                const std::string& stage_lr) {
  std::vector<Stage> out;
  for (const std::string& e : split(stages, ',')) out.push_back(parse_stage_entry(e));
  for (size_t i = 1; i < out.size(); ++i) {
    const Stage& p = out[i - 1];
    const Stage& c = out[i];
    QIL_CHECK(c.wbits <= p.wbits && c.abits <= p.abits && (c.wbits < p.wbits || c.abits < p.abits),
              "--stages: '", stages, "' is not decreasing at stage ", i + 1, " (", p.name(), " -> ", c.name(),
              "); each stage must lower the bit width of the one before");
  }
  // One number for every stage, or one per stage.
  auto per_stage = [&](const char* flag, const std::string& list, const char* what) {
    std::vector<std::string> items = split(list, ',');
    QIL_CHECK(items.size() == 1 || items.size() == out.size(), flag, ": '", list, "' gives ", items.size(),
              " numbers for ", out.size(), " stages");
    std::vector<double> values;
    for (size_t i = 0; i < out.size(); ++i) {
      const std::string& s = items.size() == 1 ? items[0] : items[i];
      size_t used = 0;
      double v = 0;
      try {
        v = std::stod(s, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      QIL_CHECK(used == s.size() && !s.empty() && v > 0, flag, ": '", s, "' is not a positive ", what);
      values.push_back(v);
    }
    return values;
  };
  const std::vector<double> epochs = per_stage("--stage-epochs", stage_epochs, "epoch count");
  for (size_t i = 0; i < out.size(); ++i) {
    QIL_CHECK(epochs[i] <= 1e6 && epochs[i] == static_cast<int>(epochs[i]), "--stage-epochs: ", epochs[i],
              " is not a whole number of epochs");
    out[i].epochs = static_cast<int>(epochs[i]);
  }
  if (!stage_lr.empty()) {
    const std::vector<double> lrs = per_stage("--stage-lr", stage_lr, "learning rate");
    for (size_t i = 0; i < out.size(); ++i) out[i].lr = lrs[i];
  }
  return out;
}

}  // namespace apps
