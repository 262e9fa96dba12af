// Model checkpoints at the layers level: a checkpoint whose quantization layout has the oldest form (widths,
// signedness and fix_gamma only; no "quantizer", "has_wq" or "has_aq" keys) loads, and its quantizers come
// back armed (calibrated, output scale fitted) with the file's intervals, so that the next stage or an
// evaluation does not recalibrate them. Not the command-line round trips (tests/apps).
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "gradcheck.h"

#include "engine/ops.h"
#include "engine/serialize.h"
#include "layers/model_io.h"
#include "layers/quantize.h"

using namespace layers;
using engine::Generator;

namespace {

std::string temp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("qil_test_model_io_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

}  // namespace

TEST_CASE("an old-layout checkpoint loads with its quantizers re-armed (calibrated, scale fitted)") {
  const ModelMeta meta{"lenet", ModelSpec{1, 10, 28, 3}, {0.5f}, {0.25f}};
  auto m = build_model(meta.model, meta.spec);
  Generator g(11);
  const Tensor x = qiltest::randn({8, 1, 28, 28}, g);
  QuantPlan plan;
  plan.wbits = 3;
  plan.abits = 4;
  const auto quantized = apply_quant_plan(*m, plan);
  REQUIRE(quantized.size() >= 2);
  calibrate(*m, 1, [&, n = 0](Tensor& b) mutable { b = x; return n++ < 1; });
  // Intervals away from calibration's, as training leaves them, so that a recalibration would show.
  for (auto& [name, l] : quantizable_layers(*m)) {
    if (!l->quantized()) continue;
    l->weight_quantizer()->parameter("c").data()[0] *= 0.9f;
    l->act_quantizer()->parameter("d").data()[0] *= 1.1f;
    l->out_scale().data()[0] *= 1.05f;
  }

  // The file as builds before the quantizer interface wrote it, with the layout in its oldest form.
  engine::Checkpoint ck;
  for (const auto& p : m->named_parameters()) ck.add_tensor("model." + p.name, p.tensor.detach());
  for (const auto& b : m->named_buffers()) ck.add_tensor("model." + b.name, b.tensor.detach());
  ck.add_json("model_meta", meta_to_json(meta).dump());
  nlohmann::json layout = nlohmann::json::object();
  for (const auto& n : quantized) layout[n] = {{"wbits", 3}, {"abits", 4}, {"signed", false}, {"fix_gamma", false}};
  ck.add_json("quant_layout", layout.dump());
  const std::string path = temp_path("old_layout.ckpt");
  engine::write_checkpoint(path, ck);

  LoadedModel lm = load_model_checkpoint(path);
  std::filesystem::remove(path);
  std::map<std::string, QuantizableModule*> loaded;
  for (auto& [n, l] : quantizable_layers(*lm.model)) loaded[n] = l;
  for (auto& [n, l] : quantizable_layers(*m)) {
    CAPTURE(n);
    QuantizableModule* k = loaded.at(n);
    CHECK(k->quantized() == l->quantized());
    if (!l->quantized()) continue;
    CHECK(k->quant_spec().wbits == 3);
    CHECK(k->quant_spec().abits == 4);
    REQUIRE(k->weight_quantizer());
    REQUIRE(k->act_quantizer());
    CHECK(k->weight_quantizer()->calibrated());
    CHECK(k->act_quantizer()->calibrated());
    CHECK(k->scale_fitted());
    CHECK(k->weight_quantizer()->parameter("c").item() == l->weight_quantizer()->parameter("c").item());
    CHECK(k->act_quantizer()->parameter("d").item() == l->act_quantizer()->parameter("d").item());
    CHECK(k->out_scale().item() == l->out_scale().item());
  }
  // Armed means calibrate() has nothing to do: it asks for no data and changes nothing.
  bool asked = false;
  calibrate(*lm.model, 1, [&](Tensor&) { asked = true; return false; });
  CHECK_FALSE(asked);
  engine::NoGradGuard ng;
  m->eval();
  lm.model->eval();
  CHECK(lm.model->forward(x).to_vector() == m->forward(x).to_vector());
}

TEST_CASE("the layout records the quantizer kind, and an unknown one is an error naming it") {
  auto m = build_model("lenet", ModelSpec{1, 10, 28, 3});
  QuantPlan plan;
  plan.wbits = plan.abits = 4;
  apply_quant_plan(*m, plan);
  const nlohmann::json layout = quant_layout(*m);
  REQUIRE_FALSE(layout.empty());
  for (auto& [n, v] : layout.items()) CHECK(v.at("quantizer") == "qil");
  nlohmann::json bad = layout;
  bad.begin().value()["quantizer"] = "lq-nets";
  auto fresh = build_model("lenet", ModelSpec{1, 10, 28, 3});
  CHECK_THROWS_WITH_AS(apply_quant_layout(*fresh, bad, "f.ckpt"), doctest::Contains("'lq-nets'"), engine::Error);
}
