// Stage-list parsing and validation.
#include "apps/training/stages.h"

#include <sstream>

#include "engine/check.h"

namespace apps::training {

using engine::Error;
using engine::str_cat;

namespace {

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

template <class T>
std::string as_flag_value(const std::vector<T>& items) {  // the list as it was typed: "1,2,3"
  std::ostringstream os;
  for (size_t i = 0; i < items.size(); ++i) os << (i ? "," : "") << items[i];
  return os.str();
}

// One number for every stage, or one per stage; each positive.
template <class T>
std::vector<T> per_stage(const char* flag, const std::vector<T>& list, size_t stages, const char* what) {
  QIL_CHECK(list.size() == 1 || list.size() == stages, flag, ": '", as_flag_value(list), "' gives ", list.size(),
            " numbers for ", stages, " stages");
  std::vector<T> values;
  for (size_t i = 0; i < stages; ++i) {
    const T v = list.size() == 1 ? list[0] : list[i];
    QIL_CHECK(v > 0, flag, ": '", v, "' is not a positive ", what);
    values.push_back(v);
  }
  return values;
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

std::vector<Stage> parse_stages(const std::vector<std::string>& stages, const std::vector<int64_t>& stage_epochs,
                                const std::vector<double>& stage_lr) {
  QIL_CHECK(!stages.empty(), "--stages: no stage given");
  std::vector<Stage> out;
  for (const std::string& e : stages) out.push_back(parse_stage_entry(e));
  for (size_t i = 1; i < out.size(); ++i) {
    const Stage& p = out[i - 1];
    const Stage& c = out[i];
    QIL_CHECK(c.wbits <= p.wbits && c.abits <= p.abits && (c.wbits < p.wbits || c.abits < p.abits), "--stages: '",
              as_flag_value(stages), "' is not decreasing at stage ", i + 1, " (", p.name(), " -> ", c.name(),
              "); each stage must lower the bit width of the one before");
  }
  const std::vector<int64_t> epochs = per_stage("--stage-epochs", stage_epochs, out.size(), "epoch count");
  for (size_t i = 0; i < out.size(); ++i) {
    QIL_CHECK(epochs[i] <= 1000000, "--stage-epochs: ", epochs[i], " epochs is more than a run can hold");
    out[i].epochs = static_cast<int>(epochs[i]);
  }
  if (!stage_lr.empty()) {
    const std::vector<double> lrs = per_stage("--stage-lr", stage_lr, out.size(), "learning rate");
    for (size_t i = 0; i < out.size(); ++i) out[i].lr = lrs[i];
  }
  return out;
}

}  // namespace apps::training
