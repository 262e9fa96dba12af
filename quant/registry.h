// The quantizer families behind `--quantizer`, in one table: each brings its name and help, the options it reads,
// its factories (weights; inputs, signed for a first conv), the statistics kinds its quantizers report (how a
// report shows each, how to rebuild a quantizer from them) and the input rule export files state. apps/ and layers/
// name no family and no kind: they ask here, and a quantizer describes its own integer rule
// (Quantizer::level_rule) for exporters.
// Not the quantizers (qil.h, lsq.h, pact.h, dorefa.h), not ONNX, not the command line (apps/ words the flags).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "quant/quantizer.h"

namespace quant {

// The family of a layer that names none: `--quantizer`'s default, and what checkpoints written before there was a
// choice hold.
constexpr const char* kDefaultQuantizer = "qil";

// The options a family may read beyond the widths and the input's sign. apps/ refuse the flags of some
// (`--no-pruning`, `--lsq-symmetric`, `--pact-alpha-decay`) for a run whose families do not read them.
enum class Option {
  fix_gamma,          // QuantizerOptions::fix_gamma (`--fix-gamma`)
  weight_calib,       // QuantizerOptions::weight_calib (`--weight-calib`)
  act_calib,          // QuantizerOptions::act_calib (`--act-calib`)
  no_pruning,         // QuantizerOptions::no_pruning (`--no-pruning`)
  symmetric_weights,  // QuantizerOptions::symmetric (`--lsq-symmetric`)
  pact_calib,         // QuantizerOptions::pact_calib (`--pact-calib`)
  l2_penalty,         // an L2 penalty on the parameters Quantizer::l2_penalized names (`--pact-alpha-decay`)
};

// What a report's c, d and γ columns show for one statistics kind: the interval (c, d, γ); one learned scalar in
// the c column (QuantStats::step, else alpha) and "-" in d and γ; "-" in all three (nothing learned).
enum class ReportColumns { interval, scalar, none };

// One kind of statistics (QuantStats::kind, as Quantizer::kind() names it) and how a report shows it.
struct StatsKind {
  std::string kind;
  ReportColumns columns = ReportColumns::interval;
  std::string note;            // the line under a table where the kind appears, "" for none
  std::string threshold_note;  // the same under a table with thresholds
};

// A switch of QuantizerOptions that a checkpoint's quantization layout records per layer, under its key: the
// options a quantizer cannot be rebuilt without. written_when_false: the key is always written (fix_gamma, which
// every layout has had); else only when set, so that layouts without it stay as they were.
struct RecordedSwitch {
  const char* key;
  bool QuantizerOptions::*option;
  bool written_when_false = false;
};

using QuantizerFactory = std::unique_ptr<Quantizer> (*)(int bits, const QuantizerOptions& options);

struct QuantizerFamily {
  std::string name;     // the `--quantizer` value, LayerQuantSpec::quantizer, a checkpoint layout's "quantizer"
  std::string summary;  // what it learns, in a few words, for `--quantizer`'s help
  std::vector<Option> options;  // what it reads of QuantizerOptions and of the training options
  std::vector<RecordedSwitch> recorded;  // the switches among them that checkpoints record
  QuantizerFactory make_weight = nullptr;      // options.symmetric: LSQ's symmetric grid
  QuantizerFactory make_activation = nullptr;  // options.is_signed: a first conv's input, which can be negative
  std::vector<StatsKind> stats_kinds;  // the kinds its own quantizers report (PACT's weights are DoReFa's)
  // A calibrated quantizer rebuilt from what it reported, for s.kind one of stats_kinds.
  std::unique_ptr<Quantizer> (*from_stats)(const QuantStats& s) = nullptr;
  // The input rule `qil export` states in its files' metadata (activation_rule), in words, with the variant of a
  // signed input.
  std::string input_rule;

  bool reads(Option o) const;
};

// Every family, in the order `--quantizer` lists them: qil, lsq, pact, dorefa.
const std::vector<QuantizerFamily>& quantizer_families();
std::vector<std::string> quantizer_names();
// The names for help texts and errors: ("|") "qil|lsq|pact|dorefa"; (", ", " or ") "qil, lsq, pact or dorefa".
std::string quantizer_list(const std::string& separator, const std::string& last_separator);
std::string quantizer_list(const std::string& separator);
// The family called `name`; anything else is an error naming it and the known ones.
const QuantizerFamily& quantizer_family(const std::string& name);
// Whether the family called `name` reads o (false for an unknown name: the name's own check reports it).
bool family_reads(const std::string& name, Option o);
// The names of the families that read o, "a or b".
std::string families_reading(Option o);
// The family's entry for a statistics kind, or null when no family reports it (an empty kind: not quantized).
const StatsKind* find_stats_kind(const std::string& kind);

// The quantizers a layer holds, by family name. An unknown name is an error naming it and the known ones.
std::unique_ptr<Quantizer> make_weight_quantizer(const std::string& family, int bits,
                                                 const QuantizerOptions& options = {});
std::unique_ptr<Quantizer> make_activation_quantizer(const std::string& family, int bits,
                                                     const QuantizerOptions& options = {});

// A calibrated quantizer rebuilt from what it reported (kind, bits, c, d, γ, LSQ's step, PACT's α, DoReFa's M): a
// reader of intervals.jsonl or a checkpoint's report can run the very rule that produced the numbers. An unknown
// kind is an error naming it.
std::unique_ptr<Quantizer> quantizer_from_stats(const QuantStats& s);

// Every family's recorded switches (QuantizerFamily::recorded), in family order: a checkpoint's quantization layout
// (layers/model_io.cpp) holds them for every quantized layer, whatever its family.
std::vector<RecordedSwitch> recorded_switches();

// Each family's entry, defined beside its quantizers (qil.cpp, lsq.cpp, pact.cpp, dorefa.cpp) and listed once,
// in quantizer_families() (registry.cpp).
QuantizerFamily qil_family();
QuantizerFamily lsq_family();
QuantizerFamily pact_family();
QuantizerFamily dorefa_family();

}  // namespace quant
