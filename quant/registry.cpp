// The families' table and the lookups over it: names, options, factories, statistics kinds.
#include "quant/registry.h"

#include <algorithm>

#include "engine/check.h"

namespace quant {

using engine::Error;
using engine::str_cat;

const std::vector<QuantizerFamily>& quantizer_families() {
  // The one list of families. Built on first use, so that no static initialization order (and no object file a
  // static link could leave out) decides what is registered.
  static const std::vector<QuantizerFamily> all = {qil_family(), lsq_family(), pact_family(), dorefa_family()};
  return all;
}

bool QuantizerFamily::reads(Option o) const { return std::find(options.begin(), options.end(), o) != options.end(); }

std::vector<std::string> quantizer_names() {
  std::vector<std::string> names;
  for (const QuantizerFamily& f : quantizer_families()) names.push_back(f.name);
  return names;
}

namespace {
std::string joined(const std::vector<std::string>& names, const std::string& separator, const std::string& last) {
  std::string o;
  for (size_t i = 0; i < names.size(); ++i) o += (i == 0 ? "" : i + 1 == names.size() ? last : separator) + names[i];
  return o;
}

const QuantizerFamily* find_family(const std::string& name) {
  for (const QuantizerFamily& f : quantizer_families())
    if (f.name == name) return &f;
  return nullptr;
}

// what: "quantizer", "weight quantizer", ...
const QuantizerFamily& family_or_throw(const std::string& name, const char* what) {
  const QuantizerFamily* f = find_family(name);
  if (!f) throw Error(str_cat("unknown ", what, " '", name, "' (known: ", quantizer_list(", "), ")"));
  return *f;
}
}  // namespace

std::string quantizer_list(const std::string& separator, const std::string& last_separator) {
  return joined(quantizer_names(), separator, last_separator);
}

std::string quantizer_list(const std::string& separator) { return quantizer_list(separator, separator); }

const QuantizerFamily& quantizer_family(const std::string& name) { return family_or_throw(name, "quantizer"); }

bool family_reads(const std::string& name, Option o) {
  const QuantizerFamily* f = find_family(name);
  return f && f->reads(o);
}

std::string families_reading(Option o) {
  std::vector<std::string> names;
  for (const QuantizerFamily& f : quantizer_families())
    if (f.reads(o)) names.push_back(f.name);
  return joined(names, ", ", " or ");
}

const StatsKind* find_stats_kind(const std::string& kind) {
  for (const QuantizerFamily& f : quantizer_families())
    for (const StatsKind& k : f.stats_kinds)
      if (k.kind == kind) return &k;
  return nullptr;
}

std::vector<RecordedSwitch> recorded_switches() {
  std::vector<RecordedSwitch> all;
  for (const QuantizerFamily& f : quantizer_families()) all.insert(all.end(), f.recorded.begin(), f.recorded.end());
  return all;
}

std::unique_ptr<Quantizer> make_weight_quantizer(const std::string& family, int bits, const QuantizerOptions& o) {
  return family_or_throw(family, "weight quantizer").make_weight(bits, o);
}

std::unique_ptr<Quantizer> make_activation_quantizer(const std::string& family, int bits, const QuantizerOptions& o) {
  return family_or_throw(family, "activation quantizer").make_activation(bits, o);
}

std::unique_ptr<Quantizer> quantizer_from_stats(const QuantStats& s) {
  for (const QuantizerFamily& f : quantizer_families())
    for (const StatsKind& k : f.stats_kinds)
      if (k.kind == s.kind) return f.from_stats(s);
  throw Error(str_cat("quantizer_from_stats: unknown quantizer kind '", s.kind, "'"));
}

}  // namespace quant
