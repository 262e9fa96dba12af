// export --format onnx: the graph passes the ONNX checker (with shape inference), quantized layers appear as
// QuantizeLinear/DequantizeLinear pairs over int8/uint8, and ONNX Runtime (npm's onnxruntime-node, installed by
// scripts/test.sh) computes the same logits as qil for full-precision and quantized networks of every kind.
#include <doctest/doctest.h>

#include "test_paths.h"
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "apps/export.h"
#include "apps/export_onnx.h"
#include "engine/autograd.h"
#include "engine/serialize.h"
#include "export_fixtures.h"
#include "layers/models.h"
#include "layers/quantize.h"

using engine::Tensor;
using namespace exporttest;

namespace {

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto m;
  REQUIRE(m.ParseFromString(bytes));
  return m;
}

std::map<std::string, int> op_counts(const onnx::ModelProto& m) {
  std::map<std::string, int> n;
  for (const auto& node : m.graph().node()) ++n[node.op_type()];
  return n;
}

// The checker, then strict shape inference with type checks (what Python's check_model(full_check=True) does);
// the output's inferred shape must be (batch, classes).
void check_graph(const onnx::ModelProto& m, int64_t classes) {
  onnx::checker::check_model(m);
  onnx::ModelProto inferred = m;
  onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                     onnx::ShapeInferenceOptions(/*check_type=*/true, /*strict=*/1));
  CHECK(inferred.graph().output(0).type().tensor_type().shape().dim(1).dim_value() == classes);
}

const onnx::TensorProto* initializer(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

// ONNX Runtime's logits for x, through tests/apps/onnx_run.js.
Tensor run_onnxruntime(const TempDir& dir, const std::string& onnx_bytes, const Tensor& x) {
  const std::string node_path = testpaths::node_path();
  REQUIRE_MESSAGE(fs::exists(node_path + "/onnxruntime-node"), "onnxruntime-node is not installed in ", node_path,
                  " (scripts/test.sh installs it from npm)");
  write_bytes(dir.file("m.onnx"), onnx_bytes);
  write_bytes(dir.file("x.f32"), std::string(reinterpret_cast<const char*>(x.data()), x.numel() * 4));
  const std::string cmd = "NODE_PATH='" + node_path + "' node '" + testpaths::source_dir() +
                          "/tests/apps/onnx_run.js' '" + dir.file("m.onnx") + "' '" + dir.file("x.f32") + "' " +
                          engine::str_cat(x.size(0), " ", x.size(1), " ", x.size(2), " ", x.size(3)) + " '" +
                          dir.file("y.f32") + "' >/dev/null";
  REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  const std::string y = read_bytes(dir.file("y.f32"));
  Tensor out = Tensor::empty({x.size(0), static_cast<int64_t>(y.size() / 4) / x.size(0)});
  REQUIRE(static_cast<int64_t>(y.size()) == out.numel() * 4);
  std::memcpy(out.data(), y.data(), y.size());
  return out;
}

Tensor qil_logits(layers::Module& m, const Tensor& x) {
  engine::NoGradGuard ng;
  m.eval();
  return m.forward(x);
}

}  // namespace

TEST_CASE("onnx export: the checker accepts the zoo's graphs, full precision, with the right ops") {
  for (const std::string name : {"lenet", "lenet-nobn", "resnet20", "resnet18", "alexnet"}) {
    CAPTURE(name);
    const int64_t side = name == "alexnet" ? 224 : name == "resnet18" ? 64 : 8;  // AlexNet: 6x6 before its pool
    const layers::ModelMeta meta{name, layers::ModelSpec{side > 8 ? 3 : 1, 5, side, 1}, {}, {}};
    auto model = layers::build_model(name, meta.spec);
    const onnx::ModelProto m = parse(apps::export_onnx(*model, meta));
    CHECK_NOTHROW(check_graph(m, 5));
    const auto ops = op_counts(m);
    CHECK(ops.count("QuantizeLinear") == 0);
    int convs = 0;
    for (auto& [n, l] : model->named_modules()) convs += dynamic_cast<layers::Conv2d*>(l) != nullptr;
    CHECK(ops.at("Conv") == convs);
    CHECK(m.graph().output(0).type().tensor_type().shape().dim(1).dim_value() == 5);
  }
  // AlexNet's adaptive 6x6 pool has no ONNX form where the side is not a multiple of 6.
  const layers::ModelMeta meta{"alexnet", layers::ModelSpec{3, 5, 100, 1}, {}, {}};
  auto model = layers::build_model("alexnet", meta.spec);
  check_error([&] { apps::export_onnx(*model, meta); }, {"layer 'avgpool' pools 2x2 to 6x6"});
}

TEST_CASE("onnx export: quantized layers as QDQ pairs, weights as int8 codes, checker accepts") {
  for (const std::string& kind : quant::quantizer_names()) {
    CAPTURE(kind);
    layers::LoadedModel lm = quantized_resnet20(kind, 2, 900);
    const onnx::ModelProto m = parse(apps::export_onnx(*lm.model, lm.meta));
    CHECK_NOTHROW(check_graph(m, 3));
    int quantized_inputs = 0, quantized_weights = 0;
    for (auto& [n, l] : layers::quantizable_layers(*lm.model)) {
      quantized_inputs += l->active_act_quantizer() != nullptr;
      quantized_weights += l->active_weight_quantizer() != nullptr;
    }
    const auto ops = op_counts(m);
    CHECK(ops.at("QuantizeLinear") == quantized_inputs);
    CHECK(ops.at("DequantizeLinear") == quantized_inputs + quantized_weights);
    const onnx::TensorProto* w = initializer(m, "layer1.0.conv1.weight_int");
    REQUIRE(w != nullptr);
    CHECK(w->data_type() == onnx::TensorProto::INT8);
    // The first conv's input is signed (an int8 pair) for QIL and LSQ, where it is quantized at 8 bits.
    const onnx::TensorProto* zp = initializer(m, "conv1.act_quant.zero_point");
    if (kind == "qil" || kind == "lsq") {
      REQUIRE(zp != nullptr);
      CHECK(zp->data_type() == onnx::TensorProto::INT8);
    }
    CHECK(initializer(m, "layer1.0.conv1.act_quant.zero_point")->data_type() == onnx::TensorProto::UINT8);
  }
}

TEST_CASE("onnx export: ONNX Runtime computes qil's logits, full precision and quantized") {
  TempDir dir;
  {
    const layers::ModelMeta meta{"resnet18", layers::ModelSpec{3, 7, 64, 3}, {}, {}};
    auto model = layers::build_model("resnet18", meta.spec);
    const Tensor x = random_tensor({2, 3, 64, 64}, 5);
    check_same_logits(qil_logits(*model, x), run_onnxruntime(dir, apps::export_onnx(*model, meta), x));
  }
  for (const std::string& kind : quant::quantizer_names()) {
    CAPTURE(kind);
    layers::LoadedModel lm = quantized_resnet20(kind, 2, 900);
    const Tensor x = random_tensor({16, 1, 8, 8}, 6);
    check_same_logits(qil_logits(*lm.model, x), run_onnxruntime(dir, apps::export_onnx(*lm.model, lm.meta), x));
  }
  write_tiny_checkpoint(dir.file("l.ckpt"), true);  // LeNet: conv2 W4A4, fc1 W3A4, γ and output scales set
  layers::LoadedModel lm = layers::load_model_checkpoint(dir.file("l.ckpt"));
  const Tensor x = random_tensor({16, 1, 8, 8}, 7);
  check_same_logits(qil_logits(*lm.model, x), run_onnxruntime(dir, apps::export_onnx(*lm.model, lm.meta), x));
}
