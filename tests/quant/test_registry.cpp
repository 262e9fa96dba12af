// The quantizer registry (quant/registry.h): the four families in their order, each complete; every factory's
// quantizer reports a kind its family (or, for PACT's DoReFa weights, DoReFa) owns and comes back from its
// statistics as the same kind; unknown names are errors naming them and the known ones; the options each family
// reads and the switches checkpoints record; and each input quantizer's LevelRule, evaluated here in plain C++ as its
// comment spells it, gives exactly the levels the quantizer computes (what the ONNX export relies on).
#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gradcheck.h"

#include "quant/registry.h"

using namespace engine;
using namespace qiltest;
using namespace quant;

namespace {

// A quantizer of each role a layer asks a family for.
struct Role {
  const char* name;
  bool weight;
  bool variant;  // weights: options.symmetric (LSQ's symmetric grid); inputs: options.is_signed (a first conv's)
};
const Role kRoles[] = {{"weight", true, false}, {"symmetric weight", true, true}, {"input", false, false},
                       {"signed input", false, true}};

std::unique_ptr<Quantizer> make(const std::string& family, const Role& r, int bits) {
  QuantizerOptions o;
  (r.weight ? o.symmetric : o.is_signed) = r.variant;
  return r.weight ? make_weight_quantizer(family, bits, o) : make_activation_quantizer(family, bits, o);
}

// Weights N(0, 0.3); inputs N(0, 1), post-ReLU for an unsigned input.
Tensor sample(const Role& r, Generator& g, const Shape& shape = {4, 3, 5, 5}) {
  Tensor v = randn(shape, g, r.weight ? 0.3f : 1.f);
  if (!r.weight && !r.variant)
    for (int64_t i = 0; i < v.numel(); ++i) v.data()[i] = std::max(0.f, v.data()[i]);
  return v;
}

// The family that reports `kind`, or "".
std::string owner(const std::string& kind) {
  for (const QuantizerFamily& f : quantizer_families())
    for (const StatsKind& k : f.stats_kinds)
      if (k.kind == kind) return f.name;
  return "";
}

// k of one input by the rule, step by step as LevelRule's comment defines it.
int level_by_rule(const LevelRule& r, float x) {
  const bool sign_magnitude = r.sign_magnitude && r.is_signed;
  float v = sign_magnitude ? std::fabs(x) : x;
  for (const LevelRule::Step& s : r.steps) {
    const float a = s.constants.at(0).value;
    switch (s.op) {
      case LevelRule::Op::subtract: v = v - a; break;
      case LevelRule::Op::multiply: v = v * a; break;
      case LevelRule::Op::add: v = v + a; break;
      case LevelRule::Op::clip: v = std::min(std::max(v, a), s.constants.at(1).value); break;
    }
  }
  int k;
  if (r.rounding == LevelRule::Rounding::half_up) {
    k = static_cast<int>(std::trunc(static_cast<double>(v) + 0.5));
  } else {
    k = static_cast<int>(std::floor(std::fabs(v) + 0.5f));
    if (r.is_signed && v < 0.f) k = -k;
  }
  return sign_magnitude && x < 0.f ? -k : k;
}

int level_at(const Tensor& k, int64_t i) {
  return k.dtype() == DType::s8 ? k.data<int8_t>()[i] : k.data<uint8_t>()[i];
}

}  // namespace

TEST_CASE("registry: the four families, in order, each with everything a layer, a report and an export ask of it") {
  CHECK(quantizer_names() == std::vector<std::string>{"qil", "lsq", "pact", "dorefa"});
  CHECK(quantizer_list(" | ") == "qil | lsq | pact | dorefa");
  CHECK(quantizer_list(", ", " or ") == "qil, lsq, pact or dorefa");
  CHECK(quantizer_family(kDefaultQuantizer).name == kDefaultQuantizer);
  std::set<std::string> kinds;
  for (const QuantizerFamily& f : quantizer_families()) {
    CAPTURE(f.name);
    CHECK(&quantizer_family(f.name) == &f);
    CHECK_FALSE(f.summary.empty());
    CHECK_FALSE(f.input_rule.empty());
    CHECK(static_cast<bool>(f.make_weight));
    CHECK(static_cast<bool>(f.make_activation));
    CHECK(static_cast<bool>(f.from_stats));
    CHECK_FALSE(f.stats_kinds.empty());
    for (const StatsKind& k : f.stats_kinds) {
      CAPTURE(k.kind);
      CHECK(kinds.insert(k.kind).second);  // one owner per kind
      CHECK(find_stats_kind(k.kind) == &k);
      // A kind whose columns are not QIL's explains them under a table with thresholds.
      CHECK((k.columns == ReportColumns::interval) == k.threshold_note.empty());
    }
  }
}

TEST_CASE("registry: each factory makes a quantizer whose kind round-trips through its statistics") {
  // The kind of each family's quantizer in each role (kRoles' order). PACT's weights are DoReFa's, as in its paper.
  const std::vector<std::pair<std::string, std::vector<std::string>>> expected = {
      {"qil", {"qil_weight", "qil_weight", "qil_activation", "qil_activation_signed"}},
      {"lsq", {"lsq_weight", "lsq_weight_symmetric", "lsq_activation", "lsq_activation_signed"}},
      {"pact", {"dorefa_weight", "dorefa_weight", "pact_activation", "pact_activation_signed"}},
      {"dorefa", {"dorefa_weight", "dorefa_weight", "dorefa_activation", "dorefa_activation_signed"}},
  };
  Generator g(11);
  for (const auto& [family, kinds] : expected) {
    for (size_t i = 0; i < 4; ++i) {
      const Role& r = kRoles[i];
      CAPTURE(family);
      CAPTURE(r.name);
      std::unique_ptr<Quantizer> q = make(family, r, 3);
      REQUIRE(std::string(q->kind()) == kinds[i]);
      CHECK(q->bits() == 3);
      // An input quantizer's kind is its own family's; a weight quantizer's the family whose rule it runs.
      CHECK(owner(q->kind()) == (family == "pact" && r.weight ? "dorefa" : family));
      const Tensor v = sample(r, g);
      q->observe(v);
      q->finish_calibration();
      REQUIRE(q->calibrated());
      const QuantStats st = q->stats(v);
      CHECK(st.kind == q->kind());
      const std::unique_ptr<Quantizer> back = quantizer_from_stats(st);
      CHECK(std::string(back->kind()) == q->kind());
      CHECK(back->bits() == q->bits());
      CHECK(back->calibrated());
      // The very rule: the same outputs (DoReFa's weights normalize by the M the statistics saw, which is v's).
      engine::NoGradGuard ng;
      const std::vector<float> a = (*q)(v).to_vector(), b = (*back)(v).to_vector();
      REQUIRE(a.size() == b.size());
      int differ = 0;
      for (size_t j = 0; j < a.size(); ++j) differ += std::fabs(a[j] - b[j]) > 1e-6f * (1.f + std::fabs(a[j]));
      CHECK(differ == 0);
    }
  }
}

TEST_CASE("registry: an unknown family is an error naming it and the known ones") {
  CHECK_THROWS_WITH_AS(quantizer_family("lq-nets"),
                       "unknown quantizer 'lq-nets' (known: qil, lsq, pact, dorefa)", Error);
  CHECK_THROWS_WITH_AS(make_weight_quantizer("QIL", 4),
                       "unknown weight quantizer 'QIL' (known: qil, lsq, pact, dorefa)", Error);
  CHECK_THROWS_WITH_AS(make_activation_quantizer("", 4),
                       "unknown activation quantizer '' (known: qil, lsq, pact, dorefa)", Error);
  CHECK_FALSE(family_reads("lq-nets", Option::fix_gamma));
  CHECK(find_stats_kind("lsq_step") == nullptr);
  CHECK(find_stats_kind("") == nullptr);  // a side that is not quantized
  QuantStats st;
  st.kind = "qil";  // a family's name is not a statistics kind
  st.bits = 4;
  CHECK_THROWS_WITH_AS(quantizer_from_stats(st), "quantizer_from_stats: unknown quantizer kind 'qil'", Error);
}

TEST_CASE("registry: the options each family reads, and the switches checkpoints record") {
  CHECK(quantizer_family("qil").options ==
        std::vector<Option>{Option::fix_gamma, Option::weight_calib, Option::act_calib, Option::no_pruning});
  CHECK(quantizer_family("lsq").options == std::vector<Option>{Option::symmetric_weights});
  CHECK(quantizer_family("pact").options == std::vector<Option>{Option::l2_penalty, Option::pact_calib});
  CHECK(quantizer_family("dorefa").options.empty());
  CHECK(families_reading(Option::no_pruning) == "qil");
  CHECK(families_reading(Option::symmetric_weights) == "lsq");
  CHECK(families_reading(Option::l2_penalty) == "pact");
  CHECK(families_reading(Option::pact_calib) == "pact");
  CHECK(family_reads("qil", Option::fix_gamma));
  CHECK_FALSE(family_reads("lsq", Option::fix_gamma));

  // What the options mean for the quantizers: a family reading l2_penalty has a penalized parameter, the others none;
  // the one reading symmetric_weights changes its weight grid with it; fix_gamma pins QIL's γ.
  for (const QuantizerFamily& f : quantizer_families()) {
    CAPTURE(f.name);
    bool penalized = false;
    for (const Role& r : kRoles) {
      const std::unique_ptr<Quantizer> q = make(f.name, r, 4);
      for (const auto& [n, t] : q->named_parameters()) penalized = penalized || q->l2_penalized(n);
    }
    CHECK(penalized == f.reads(Option::l2_penalty));
    const std::unique_ptr<Quantizer> plain = make(f.name, kRoles[0], 2), sym = make(f.name, kRoles[1], 2);
    CHECK((plain->min_level() != sym->min_level()) == f.reads(Option::symmetric_weights));
    QuantizerOptions pin;
    pin.fix_gamma = true;
    CHECK(make_weight_quantizer(f.name, 4, pin)->fix_gamma() == f.reads(Option::fix_gamma));
  }

  // The keys and rules every checkpoint layout has used: fix_gamma always, the others only when set.
  const std::vector<RecordedSwitch> rs = recorded_switches();
  REQUIRE(rs.size() == 3);
  CHECK(std::string(rs[0].key) == "fix_gamma");
  CHECK((rs[0].option == &QuantizerOptions::fix_gamma));
  CHECK(rs[0].written_when_false);
  CHECK(std::string(rs[1].key) == "no_pruning");
  CHECK((rs[1].option == &QuantizerOptions::no_pruning));
  CHECK_FALSE(rs[1].written_when_false);
  CHECK(std::string(rs[2].key) == "lsq_symmetric");
  CHECK((rs[2].option == &QuantizerOptions::symmetric));
  CHECK_FALSE(rs[2].written_when_false);
}

TEST_CASE("registry: each input quantizer's level rule gives its levels exactly") {
  Generator g(5);
  for (const QuantizerFamily& f : quantizer_families()) {
    for (bool is_signed : {false, true}) {
      for (int bits : {2, 4, 8}) {
        CAPTURE(f.name);
        CAPTURE(is_signed);
        CAPTURE(bits);
        const Role& r = kRoles[is_signed ? 3 : 2];
        std::unique_ptr<Quantizer> q = make(f.name, r, bits);
        q->observe(sample(r, g));
        q->finish_calibration();
        // Inputs over and beyond the range, both signs (an unsigned quantizer clips negatives to level 0), exact
        // zeros of either sign.
        Tensor x = randn({4000}, g, 1.5f);
        x.data()[0] = 0.f;
        x.data()[1] = -0.f;
        x.data()[2] = 100.f;
        x.data()[3] = -100.f;
        const Tensor k = q->levels(x);
        const LevelRule rule = q->level_rule();
        CHECK(rule.is_signed == q->is_signed());
        int differ = 0;
        for (int64_t i = 0; i < x.numel(); ++i) differ += level_by_rule(rule, x.data()[i]) != level_at(k, i);
        CHECK(differ == 0);
      }
    }
  }
  // A rule exporters cannot rebuild (QIL's weights: the γ power) is refused by name.
  CHECK_THROWS_WITH_AS(make_weight_quantizer("qil", 4)->level_rule(),
                       doctest::Contains("qil_weight: no integer level rule"), Error);
}
