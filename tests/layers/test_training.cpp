// Training end to end at the layer level: a small network overfits one batch; quantization plans pick the
// right layers; calibration sets intervals and output scales; freezing leaves weights and BN untouched.
#include "gradcheck.h"

#include "engine/ops.h"
#include "engine/optim.h"
#include "layers/basic.h"
#include "layers/models.h"
#include "layers/quantize.h"
#include "train_fixtures.h"

using namespace layers;
using engine::Generator;
using qiltest::Batch;
using qiltest::random_batch;
using qiltest::train_steps;

TEST_CASE("lenet overfits one fixed batch (loss below 0.05)") {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 3});
  Batch b = random_batch(32, 10, 11);
  const float first = engine::ops::softmax_cross_entropy(m->forward(b.x), b.y).item();
  CHECK(first > 1.5f);  // about log(10) = 2.3 at initialization
  const float last = train_steps(*m, b, 60, 0.05f);
  CHECK(last < 0.05f);
}

TEST_CASE("quantization plan: first conv and last linear stay full precision unless 8-bit, overrides apply") {
  auto m = build_model("resnet20", ModelSpec{3, 10, 32, 0});
  QuantPlan plan;
  plan.wbits = plan.abits = 4;
  plan.overrides["layer2.0.conv1"] = LayerOverride{3, 0, false, ""};
  plan.overrides["layer3.2.conv2"] = LayerOverride{0, 0, true, ""};
  auto q = apply_quant_plan(*m, plan);
  // 19 convs + 2 projection shortcuts + fc = 22 layers; minus conv1, fc and the excluded one.
  CHECK(q.size() == 19);
  CHECK(std::find(q.begin(), q.end(), "conv1") == q.end());
  CHECK(std::find(q.begin(), q.end(), "fc") == q.end());
  for (auto& [n, l] : quantizable_layers(*m)) {
    if (n == "layer2.0.conv1") CHECK((l->quant_spec().wbits == 3 && l->quant_spec().abits == 4));
    if (n == "layer3.2.conv2") CHECK(!l->quantized());
    if (n == "layer1.0.conv1") CHECK((l->quant_spec().wbits == 4 && l->quant_spec().abits == 4));
  }
  auto names = m->named_parameters();
  CHECK(std::count_if(names.begin(), names.end(), [](const NamedTensor& t) {
          return t.name == "layer1.0.conv1.weight_quant.gamma" && t.kind == ParamKind::quant;
        }) == 1);
  plan.first_last_bits = 8;
  q = apply_quant_plan(*m, plan);
  CHECK(q.size() == 21);
  for (auto& [n, l] : quantizable_layers(*m))
    if (n == "conv1") CHECK((l->quant_spec().wbits == 8 && l->quant_spec().signed_input));
  plan.overrides["conv9"] = LayerOverride{};
  CHECK_THROWS_WITH_AS(apply_quant_plan(*m, plan), doctest::Contains("'conv9'"), engine::Error);
}

TEST_CASE("quantization plan: first_last_bits 0 quantizes the first conv and the last linear at the stage's widths") {
  auto m = build_model("resnet20", ModelSpec{3, 10, 32, 0});
  QuantPlan plan;
  plan.wbits = 3;
  plan.abits = 2;
  plan.first_last_bits = 0;
  CHECK(apply_quant_plan(*m, plan).size() == 22);  // every layer, conv1 and fc included
  for (auto& [n, l] : quantizable_layers(*m)) {
    CHECK_MESSAGE((l->quant_spec().wbits == 3 && l->quant_spec().abits == 2), n);
    CHECK_MESSAGE(l->quant_spec().signed_input == (n == "conv1"), n);  // only the image input is signed
  }
  // A full-precision stage quantizes nothing, edges included.
  auto fp = build_model("resnet20", ModelSpec{3, 10, 32, 0});
  QuantPlan none;
  none.first_last_bits = 0;
  CHECK(apply_quant_plan(*fp, none).empty());
}

TEST_CASE("freezing one side: weight intervals or activation intervals alone stop training") {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 3});
  QuantPlan plan;
  plan.wbits = plan.abits = 2;
  apply_quant_plan(*m, plan);
  auto trainable = [&](bool weight_side) {
    int on = 0, total = 0;
    for (auto& [n, l] : quantizable_layers(*m)) {
      quant::Quantizer* q = weight_side ? l->weight_quantizer() : l->act_quantizer();
      if (!q) continue;
      for (auto& [pn, t] : q->named_parameters()) on += t.requires_grad(), ++total;
    }
    REQUIRE(total > 0);
    return on == total ? 1 : on == 0 ? 0 : -1;  // all, none, some
  };
  freeze_intervals(*m, /*weights=*/true, /*activations=*/false);
  CHECK(trainable(true) == 0);
  CHECK(trainable(false) == 1);
  freeze_intervals(*m, false, true);
  CHECK(trainable(true) == 1);
  CHECK(trainable(false) == 0);
  freeze_intervals(*m, false);
  CHECK(trainable(true) == 1);
  CHECK(trainable(false) == 1);
}

TEST_CASE("no_pruning: training keeps every QIL weight interval's pruning point at 0 (c = d), the default moves it") {
  Batch b = random_batch(32, 10, 5);
  auto pruning_points = [&](bool no_pruning) {
    auto m = build_model("lenet", ModelSpec{1, 10, 28, 3});
    QuantPlan plan;
    plan.wbits = plan.abits = 2;
    plan.no_pruning = no_pruning;
    apply_quant_plan(*m, plan);
    calibrate(*m, 1, [&, done = false](Tensor& x) mutable {
      if (done) return false;
      x = b.x;
      return done = true;
    });
    train_steps(*m, b, 20, 0.05f);
    std::vector<double> out;  // c − d of every weight quantizer
    for (auto& [n, l] : quantizable_layers(*m))
      if (l->quant_spec().wbits < 32) {
        const quant::QuantStats st = l->weight_quantizer()->stats();
        out.push_back(st.c - st.d);
      }
    return out;
  };
  double moved = 0;
  for (double p : pruning_points(false)) moved = std::max(moved, std::fabs(p));
  CHECK(moved > 1e-5);  // the learned pruning interval leaves c = d: the tie below is what holds it
  for (double p : pruning_points(true)) CHECK(p == 0.0);
}

TEST_CASE("calibration sets intervals and a least-squares output scale, a later stage keeps them") {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 5});
  Batch b = random_batch(16, 10, 2);
  QuantPlan plan;
  plan.wbits = plan.abits = 4;
  apply_quant_plan(*m, plan);
  int calls = 0;
  calibrate(*m, 2, [&](Tensor& x) {
    x = b.x;
    return ++calls <= 2;
  });
  Conv2d* conv2 = dynamic_cast<Conv2d*>(m->child("conv2"));
  REQUIRE(conv2);
  auto* wq = conv2->weight_quantizer();
  // c = d = max|w| / 2.
  float mx = 0;
  for (float v : conv2->weight().to_vector()) mx = std::max(mx, std::fabs(v));
  CHECK(wq->parameter("c").item() == doctest::Approx(mx / 2));
  CHECK(wq->parameter("d").item() == doctest::Approx(mx / 2));
  CHECK(conv2->act_quantizer()->calibrated());
  // The fitted scale s minimizes |y_fp - s*y_q|: any other scale does worse on the same batch.
  const float s = conv2->out_scale().item();
  CHECK(s > 0.f);
  m->eval();
  engine::NoGradGuard ng;
  Tensor xin = m->child("pool1")->forward(m->child("relu1")->forward(m->child("bn1")->forward(m->child("conv1")->forward(b.x))));
  conv2->set_quant(LayerQuantSpec{});  // full precision output
  const auto y_fp = conv2->forward(xin).to_vector();
  conv2->set_quant(LayerQuantSpec{4, 4});
  auto err = [&](float scale) {
    conv2->out_scale().data()[0] = scale;
    const auto y = conv2->forward(xin).to_vector();
    double e = 0;
    for (size_t i = 0; i < y.size(); ++i) e += (y[i] - y_fp[i]) * (y[i] - y_fp[i]);
    return e;
  };
  const double best = err(s);
  CHECK(best < err(s * 1.05f));
  CHECK(best < err(s * 0.95f));
  conv2->out_scale().data()[0] = s;
  // A 3-bit stage keeps the 4-bit intervals.
  const float c_before = wq->parameter("c").item();
  plan.wbits = plan.abits = 3;
  apply_quant_plan(*m, plan);
  calibrate(*m, 1, [&](Tensor& x) { x = b.x; return true; });
  CHECK(wq->parameter("c").item() == c_before);
  CHECK(wq->bits() == 3);
}

TEST_CASE("quantized lenet still learns one batch, frozen weights and BN stay put") {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 9});
  Batch b = random_batch(32, 10, 4);
  train_steps(*m, b, 30, 0.05f);  // a trained full-precision start
  QuantPlan plan;
  plan.wbits = plan.abits = 4;
  apply_quant_plan(*m, plan);
  calibrate(*m, 1, [&, n = 0](Tensor& x) mutable { x = b.x; return n++ < 1; });
  freeze_weights(*m, true);
  std::vector<std::vector<float>> before;
  for (auto& p : m->named_parameters())
    if (p.kind != ParamKind::quant) before.push_back(p.tensor.to_vector());
  std::vector<std::vector<float>> buf_before;
  for (auto& p : m->named_buffers()) buf_before.push_back(p.tensor.to_vector());
  const float first = engine::ops::softmax_cross_entropy(m->forward(b.x), b.y).item();
  const float last = train_steps(*m, b, 40, 0.05f);
  CHECK(last < first);  // the intervals and scales alone lower the loss
  size_t k = 0;
  for (auto& p : m->named_parameters())
    if (p.kind != ParamKind::quant) CHECK_MESSAGE(p.tensor.to_vector() == before[k++], p.name);
  k = 0;
  for (auto& p : m->named_buffers()) CHECK_MESSAGE(p.tensor.to_vector() == buf_before[k++], p.name);
  freeze_weights(*m, false);
  CHECK(m->named_parameters()[0].tensor.requires_grad());
}
