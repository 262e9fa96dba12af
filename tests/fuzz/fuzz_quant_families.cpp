// The quantizer families as the config fuzz target sees them: the real registry (quant/registry.cpp) over entries
// that carry what the config reader asks of a family (its name, help and the options it reads) and no quantizer.
// The real entries (quant/qil.cpp, lsq.cpp, pact.cpp, dorefa.cpp) bring the quantizers, whose kernels need OpenMP,
// which the fuzz targets leave out. A factory here is null: a reader that makes a quantizer crashes, a finding.
// The names and options are those tests/quant/test_registry.cpp pins for the real entries.
#include "quant/registry.h"

namespace quant {

namespace {
QuantizerFamily family(const char* name, const char* summary, std::vector<Option> options) {
  QuantizerFamily f;
  f.name = name;
  f.summary = summary;
  f.options = std::move(options);
  return f;
}
}  // namespace

QuantizerFamily qil_family() {
  return family("qil", "learned interval, c, d, gamma",
                {Option::fix_gamma, Option::weight_calib, Option::act_calib, Option::no_pruning});
}
QuantizerFamily lsq_family() { return family("lsq", "learned step size s", {Option::symmetric_weights}); }
QuantizerFamily pact_family() {
  return family("pact", "learned clipping level alpha; DoReFa weights", {Option::l2_penalty});
}
QuantizerFamily dorefa_family() { return family("dorefa", "nothing learned", {}); }

}  // namespace quant
