// Model-wide input observers (layers/observe.h): one call per quantized layer per forward with the layer's
// name and its input before quantization, none from full-precision layers, and none after the handle goes.
#include "gradcheck.h"

#include "engine/autograd.h"
#include "layers/models.h"
#include "layers/observe.h"
#include "layers/quantize.h"

using namespace layers;

namespace {
struct Call {
  std::string layer;
  engine::Shape shape;
  float first = 0;  // the input's first value, to compare with the layer's actual input
};

// LeNet on 28x28 at W4A4: conv2 and fc1 are quantized (conv1 and fc2 stay full precision by default).
std::unique_ptr<Module> quantized_lenet(const Tensor& x) {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 7});
  QuantPlan plan;
  plan.wbits = plan.abits = 4;
  apply_quant_plan(*m, plan);
  int calls = 0;
  calibrate(*m, 1, [&](Tensor& b) {
    b = x;
    return ++calls <= 1;
  });
  m->eval();
  return m;
}
}  // namespace

TEST_CASE("input observers fire once per quantized forward with the layer's name and input") {
  engine::Generator g(3);
  const Tensor x = qiltest::randn({3, 1, 28, 28}, g);  // (N, C, H, W)
  auto m = quantized_lenet(x);
  engine::NoGradGuard ng;
  std::vector<Call> calls, other;
  {
    ObserverHandle h = observe_inputs(*m, [&](const std::string& n, const Tensor& t) {
      calls.push_back({n, t.shape(), t.data()[0]});
    });
    CHECK(h.active());
    m->forward(x);
    REQUIRE(calls.size() == 2);
    CHECK(calls[0].layer == "conv2");
    CHECK(calls[0].shape == engine::Shape{3, 32, 14, 14});  // after conv1 and a 2x2 pool
    CHECK(calls[1].layer == "fc1");
    CHECK(calls[1].shape == engine::Shape{3, 64 * 7 * 7});
    // The observed tensor is conv2's real input (before quantization), not a copy of something else.
    const Tensor xin = m->child("pool1")->forward(
        m->child("relu1")->forward(m->child("bn1")->forward(m->child("conv1")->forward(x))));
    CHECK(calls[0].first == xin.data()[0]);

    // A second observer sees the same calls; each forward calls each once more.
    ObserverHandle h2 = observe_inputs(*m, [&](const std::string& n, const Tensor& t) {
      other.push_back({n, t.shape(), 0});
    });
    m->forward(x);
    CHECK(calls.size() == 4);
    CHECK(other.size() == 2);
    CHECK(calls[2].layer == "conv2");

    // Released: no more calls to the first; the second still runs. A moved handle keeps its registration.
    h.release();
    CHECK_FALSE(h.active());
    ObserverHandle moved = std::move(h2);
    CHECK_FALSE(h2.active());
    m->forward(x);
    CHECK(calls.size() == 4);
    CHECK(other.size() == 4);
  }  // `moved` goes out of scope here
  m->forward(x);
  CHECK(calls.size() == 4);
  CHECK(other.size() == 4);
}

TEST_CASE("input observers do not fire on full-precision layers") {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 7});
  engine::Generator g(4);
  int calls = 0;
  ObserverHandle h = observe_inputs(*m, [&](const std::string&, const Tensor&) { ++calls; });
  engine::NoGradGuard ng;
  m->forward(qiltest::randn({2, 1, 28, 28}, g));
  CHECK(calls == 0);
}
