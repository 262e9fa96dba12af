// The quant::Quantizer interface as a layer sees it: quantizers made by the factory and used through a
// `Quantizer*` only (forward, calibration, gradient balancing, projection, freezing, re-arming after a load).
// Every kind passes the last case. Not the QIL rule's values (test_qil_ops.cpp) or the QIL
// classes' own members (test_quantizer.cpp).
#include <algorithm>
#include <cmath>
#include <memory>

#include "gradcheck.h"

#include "engine/ops.h"
#include "quant/quantizer.h"
#include "quant/registry.h"

using namespace engine;
using namespace qiltest;
using namespace quant;

namespace {

// Sets every parameter's gradient to `v` (defined, one element each).
void set_grads(Quantizer* q, float v) {
  for (auto& [n, t] : q->named_parameters()) {
    t.zero_grad();
    t.grad().data()[0] = v;
  }
}

}  // namespace

TEST_CASE("factory: a weight quantizer through Quantizer* alone") {
  std::unique_ptr<Quantizer> owned = make_weight_quantizer("qil", 3);
  Quantizer* q = owned.get();
  CHECK(std::string(q->kind()) == "qil_weight");
  CHECK(q->bits() == 3);
  CHECK(q->positive_levels() == 3);  // 2^(3-1) - 1
  CHECK(q->is_signed());
  CHECK_FALSE(q->calibrated());

  // Calibration: the interval [0, max|w|] = [0, 0.8], so c = d = 0.4.
  Generator g(3);
  Tensor w = randn({8, 4, 3, 3}, g, 0.2f);
  w.data()[5] = 0.8f;
  w.data()[6] = -0.1f;
  for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = std::max(-0.8f, std::min(0.8f, w.data()[i]));
  w.set_requires_grad(true);
  q->observe(w);
  q->finish_calibration();
  REQUIRE(q->calibrated());
  CHECK(q->parameter("c").item() == doctest::Approx(0.4f));
  CHECK(q->parameter("d").item() == doctest::Approx(0.4f));

  // Forward: every output on the grid k/q with |k| <= q; the max weight clips to 1.
  Tensor y = (*q)(w);
  REQUIRE(y.shape() == w.shape());
  for (float v : y.to_vector()) {
    const double k = v * 3.0;
    CHECK(std::fabs(k - std::round(k)) < 1e-5);
    CHECK(std::fabs(k) <= 3.0 + 1e-5);
  }
  CHECK(y.data()[5] == doctest::Approx(1.f));

  // Backward reaches each parameter.
  ops::sum(y).backward();
  for (auto& [n, t] : q->named_parameters()) {
    CAPTURE(n);
    REQUIRE(t.grad().defined());
  }

  // Gradient balancing: sqrt scales every parameter by 1/sqrt(N·q) (N = 288 weights, q = 3: 1/sqrt(864));
  // relative scales c and d by d² = 0.16 and γ by 1/sqrt(N·q); none leaves them.
  const int64_t n = w.numel();
  set_grads(q, 2.f);
  q->scale_gradients(GradBalance::none, n);
  for (auto& [nm, t] : q->named_parameters()) CHECK(t.grad().item() == 2.f);
  set_grads(q, 2.f);
  q->scale_gradients(GradBalance::sqrt, n);
  for (auto& [nm, t] : q->named_parameters()) CHECK(t.grad().item() == doctest::Approx(2.0 / std::sqrt(864.0)));
  set_grads(q, 2.f);
  q->scale_gradients(GradBalance::relative, n);
  CHECK(q->parameter("c").grad().item() == doctest::Approx(2 * 0.16));
  CHECK(q->parameter("d").grad().item() == doctest::Approx(2 * 0.16));
  CHECK(q->parameter("gamma").grad().item() == doctest::Approx(2.0 / std::sqrt(864.0)));

  // project(): c below d is pulled to their mean, d below d_min (1e-4 of the width 0.8) rises to it.
  q->parameter("c").data()[0] = 0.1f;
  q->parameter("d").data()[0] = 0.3f;
  q->project();
  CHECK(q->parameter("c").item() == doctest::Approx(0.2f));
  CHECK(q->parameter("d").item() == doctest::Approx(0.2f));
  q->parameter("d").data()[0] = -1.f;
  q->project();
  CHECK(q->parameter("d").item() == doctest::Approx(0.8e-4).epsilon(1e-3).scale(0));
  CHECK(q->parameter("c").item() >= q->parameter("d").item());

  // Progressive reduction keeps the parameters.
  const float c = q->parameter("c").item();
  q->set_bits(2);
  CHECK(q->positive_levels() == 1);
  CHECK(q->parameter("c").item() == c);
  CHECK_THROWS_WITH_AS(q->parameter("alpha"), doctest::Contains("no parameter 'alpha'"), Error);
}

TEST_CASE("factory: freezing, pinning and re-arming through Quantizer*") {
  QuantizerOptions o;
  o.fix_gamma = true;
  std::unique_ptr<Quantizer> q = make_weight_quantizer("qil", 4, o);
  CHECK(q->fix_gamma());
  CHECK(q->pinned("gamma"));
  CHECK_FALSE(q->pinned("c"));
  CHECK_FALSE(q->parameter("gamma").requires_grad());
  q->set_frozen(true);
  for (auto& [n, t] : q->named_parameters()) CHECK_FALSE(t.requires_grad());
  q->set_frozen(false);
  CHECK(q->parameter("c").requires_grad());
  CHECK(q->parameter("d").requires_grad());
  CHECK_FALSE(q->parameter("gamma").requires_grad());  // pinned stays pinned
  q->set_fix_gamma(false);
  CHECK(q->parameter("gamma").requires_grad());

  // A load that brought none of its parameters leaves it uncalibrated; one that brought them re-arms it.
  q->parameters_loaded({});
  CHECK_FALSE(q->calibrated());
  q->parameter("c").data()[0] = 0.3f;
  q->parameter("d").data()[0] = 0.2f;
  q->parameters_loaded({"c", "d", "gamma"});
  CHECK(q->calibrated());
  CHECK(q->parameter("c").item() == 0.3f);  // loaded values kept, no recalibration
  Generator g(1);
  q->observe(randn({16}, g, 5.f));
  q->finish_calibration();
  CHECK(q->parameter("c").item() == 0.3f);
}

TEST_CASE("factory: activation quantizers, signed and not, and unknown kinds") {
  std::unique_ptr<Quantizer> a = make_activation_quantizer("qil", 2);
  CHECK(std::string(a->kind()) == "qil_activation");
  CHECK(a->positive_levels() == 3);
  CHECK_FALSE(a->is_signed());
  // Inputs 0..3 evenly: the 99.9th percentile is 3, so c = d = 1.5 and x̄ = x/3 on the grid.
  Tensor x = Tensor::empty({4, 100});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = static_cast<float>(i % 4);
  a->observe(x);
  a->finish_calibration();
  CHECK(a->parameter("c").item() == doctest::Approx(1.5f));
  const auto y = (*a)(x).to_vector();
  for (int64_t i = 0; i < x.numel(); ++i) CHECK(y[i] == doctest::Approx(x.data()[i] / 3.f));
  // sqrt balancing over N = 100 values per sample: 1/sqrt(100·3); none seen yet (0): left alone.
  set_grads(a.get(), 1.f);
  a->scale_gradients(GradBalance::sqrt, 0);
  CHECK(a->parameter("c").grad().item() == 1.f);
  a->scale_gradients(GradBalance::sqrt, 100);
  CHECK(a->parameter("c").grad().item() == doctest::Approx(1.0 / std::sqrt(300.0)));

  QuantizerOptions so;
  so.is_signed = true;
  std::unique_ptr<Quantizer> s = make_activation_quantizer("qil", 4, so);
  CHECK(s->is_signed());
  CHECK(s->positive_levels() == 7);

  CHECK_THROWS_WITH_AS(make_weight_quantizer("lq-nets", 4),
                       doctest::Contains("unknown weight quantizer 'lq-nets' (known: qil, lsq, pact, dorefa)"), Error);
  CHECK_THROWS_WITH_AS(make_activation_quantizer("lq-nets", 4),
                       doctest::Contains("unknown activation quantizer 'lq-nets'"), Error);
  CHECK_THROWS_WITH_AS(make_weight_quantizer("qil", 1), doctest::Contains("bits must be in 2..8, got 1"), Error);
}

TEST_CASE("factory: every kind through Quantizer*: calibration, levels, gradients, freezing, re-arming, widths") {
  Generator g(9);
  const Tensor w = randn({6, 4, 3, 3}, g, 0.3f);
  Tensor x = randn({2, 4, 5, 5}, g);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::max(0.f, x.data()[i]);  // post-ReLU
  for (const std::string& kind : quantizer_names()) {  // every family of the registry
    for (bool weights : {true, false}) {
      CAPTURE(kind);
      CAPTURE(weights);
      std::unique_ptr<Quantizer> q = weights ? make_weight_quantizer(kind, 3) : make_activation_quantizer(kind, 3);
      const Tensor& v = weights ? w : x;
      q->observe(v);
      q->finish_calibration();
      REQUIRE(q->calibrated());
      // The output takes at most levels_total values, and as many as the stats count.
      Tensor in = v.clone();
      in.set_requires_grad(true);
      const Tensor y = (*q)(in);
      std::vector<float> vals = y.to_vector();
      std::sort(vals.begin(), vals.end());
      const int distinct = static_cast<int>(std::unique(vals.begin(), vals.end()) - vals.begin());
      const QuantStats st = q->stats(v);
      CHECK(distinct <= st.levels_total);
      CHECK(distinct == st.levels_used);
      CHECK(st.kind == q->kind());
      CHECK(st.clip_threshold > st.prune_threshold);
      // Backward reaches the input and every parameter.
      ops::sum(y).backward();
      CHECK(in.grad().defined());
      for (auto& [n, t] : q->named_parameters()) {
        CAPTURE(n);
        CHECK(t.grad().defined());
      }
      // Freezing stops every parameter; a load that brought them re-arms without recalibrating.
      q->set_frozen(true);
      for (auto& [n, t] : q->named_parameters()) CHECK_FALSE(t.requires_grad());
      std::vector<std::string> names;
      std::vector<float> before;
      for (auto& [n, t] : q->named_parameters()) {
        names.push_back(n);
        before.push_back(t.item());
      }
      q->parameters_loaded(names);
      CHECK(q->calibrated());
      q->set_bits(2);
      q->observe(randn({64}, g, 50.f));
      q->finish_calibration();
      size_t i = 0;
      for (auto& [n, t] : q->named_parameters()) CHECK(t.item() == before[i++]);
      CHECK(q->bits() == 2);
    }
  }
}
