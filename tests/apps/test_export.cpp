// qil export and qil predict: exported names are the model's own (torchvision's), quantized layers' exported
// weights equal w̄·s computed here from c, d, γ by the QIL rule written out in plain loops, integer codes times
// their scale give the same weights, and predict's logits equal the network's forward.
#include <doctest/doctest.h>

#include "test_paths.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "apps/export.h"
#include "apps/predict.h"
#include "apps/npy.h"
#include "engine/autograd.h"
#include "export_fixtures.h"

using namespace exporttest;
using engine::Tensor;

namespace {

std::map<std::string, Tensor> by_name(const engine::NamedTensors& v) {
  std::map<std::string, Tensor> out;
  for (const auto& [n, t] : v) {
    CHECK_MESSAGE(!out.count(n), "duplicate name ", n);
    out[n] = t;
  }
  return out;
}

std::map<std::string, Tensor> model_tensors(layers::Module& m) {
  std::map<std::string, Tensor> out;
  for (auto& p : m.named_parameters()) out[p.name] = p.tensor;
  for (auto& b : m.named_buffers()) out[b.name] = b.tensor;
  return out;
}

std::set<std::string> model_names(layers::Module& m, bool with_quant) {
  std::set<std::string> out;
  for (auto& p : m.named_parameters())
    if (with_quant || p.kind != layers::ParamKind::quant) out.insert(p.name);
  for (auto& b : m.named_buffers()) out.insert(b.name);
  return out;
}

std::set<std::string> names_of(const std::map<std::string, Tensor>& m) {
  std::set<std::string> out;
  for (const auto& kv : m) out.insert(kv.first);
  return out;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.data<float>(), b.data<float>(), a.nbytes()) == 0;
}

// The QIL weight rule (docs/qil.md §1) in double, independent of quant/: the integer code round(ŵ·q) of w, with
// u = (|w| − c)/(2d) + 0.5; ŵ = 0 below c − d, sign(w) above c + d, sign(w)·u^γ in between.
// near_tie: ŵ·q lies within 1e-4 of a rounding boundary, where float rounding in the fast kernels may fall
// either way, so the comparison skips it.
struct RefCodes {
  std::vector<int> codes;
  int64_t near_ties = 0;
  std::set<int> levels;
};
RefCodes qil_reference_codes(const Tensor& w, double c, double d, double gamma, int q) {
  RefCodes r;
  const float* wp = w.data();
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double a = std::fabs(static_cast<double>(wp[i]));
    double h;
    if (a < c - d)
      h = 0.0;
    else if (a > c + d)
      h = 1.0;
    else
      h = std::pow((a - c) / (2.0 * d) + 0.5, gamma);
    const double v = h * q;
    const bool tie = std::fabs(v - std::floor(v) - 0.5) < 1e-4;
    r.near_ties += tie;
    const int code = static_cast<int>(std::round(v)) * (wp[i] < 0 ? -1 : 1);
    r.codes.push_back(tie ? std::numeric_limits<int>::min() : code);
    r.levels.insert(code);
  }
  return r;
}

struct LayerParams {
  Tensor w;
  double c, d, gamma, s;
  int wbits;
};
LayerParams layer_params(layers::Module& m, const std::string& layer, int wbits) {
  auto t = model_tensors(m);
  return {t.at(layer + ".weight"), t.at(layer + ".weight_quant.c").item(), t.at(layer + ".weight_quant.d").item(),
          t.at(layer + ".weight_quant.gamma").item(), t.at(layer + ".out_scale").item(), wbits};
}

}  // namespace

TEST_CASE("export: a full-precision model is written unchanged under its own names") {
  TempDir dir;
  write_tiny_checkpoint(dir.file("fp.ckpt"), false);
  layers::LoadedModel lm = layers::load_model_checkpoint(dir.file("fp.ckpt"));
  apps::ExportedModel e = apps::export_float(*lm.model, lm.meta, false);
  engine::write_safetensors(dir.file("fp.safetensors"), e.tensors, e.metadata);
  engine::SafeTensors st = engine::read_safetensors(dir.file("fp.safetensors"));
  auto got = by_name(st.tensors);
  CHECK(names_of(got) == model_names(*lm.model, true));
  for (auto& [name, t] : model_tensors(*lm.model)) CHECK_MESSAGE(bit_equal(got.at(name), t), name);
  CHECK(st.metadata.at("format") == "qil-export-v1");
  CHECK(st.metadata.at("model") == "lenet");
  CHECK(nlohmann::json::parse(st.metadata.at("input_mean")) == nlohmann::json({0.5}));
  CHECK(nlohmann::json::parse(st.metadata.at("input_std")) == nlohmann::json({0.25}));
  CHECK(nlohmann::json::parse(st.metadata.at("quant_layers")).empty());
}

TEST_CASE("export: torchvision names for the zoo's ResNets") {
  auto m = layers::build_model("resnet20", layers::ModelSpec{3, 10, 32, 1});
  apps::ExportedModel e = apps::export_float(*m, layers::ModelMeta{"resnet20", {3, 10, 32, 1}, {0, 0, 0}, {1, 1, 1}}, false);
  auto got = by_name(e.tensors);
  for (const char* n : {"conv1.weight", "bn1.running_mean", "bn1.running_var", "layer1.0.conv1.weight",
                        "layer1.0.bn1.weight", "layer3.2.bn2.bias", "fc.weight", "fc.bias"})
    CHECK_MESSAGE(got.count(n), n);
}

TEST_CASE("export: quantized layers are written as w_bar * s, by the QIL rule") {
  TempDir dir;
  write_tiny_checkpoint(dir.file("q.ckpt"), true);
  layers::LoadedModel lm = layers::load_model_checkpoint(dir.file("q.ckpt"));
  layers::Module& m = *lm.model;

  for (bool with_quant : {false, true}) {
    CAPTURE(with_quant);
    apps::ExportedModel e = apps::export_float(m, lm.meta, with_quant);
    engine::write_safetensors(dir.file("q.safetensors"), e.tensors, e.metadata);
    engine::SafeTensors st = engine::read_safetensors(dir.file("q.safetensors"));
    auto got = by_name(st.tensors);
    CHECK(names_of(got) == model_names(m, with_quant));
    CHECK(st.metadata.at("format") == "qil-export-v1");

    // Full-precision layers, biases, BatchNorm and (when present) quantizer parameters: unchanged.
    for (auto& [name, t] : model_tensors(m)) {
      if (name == "conv2.weight" || name == "fc1.weight" || !got.count(name)) continue;
      CHECK_MESSAGE(bit_equal(got.at(name), t), name);
    }
    for (auto [layer, bits] : {std::pair<std::string, int>{"conv2", 4}, {"fc1", 3}}) {
      CAPTURE(layer);
      const LayerParams p = layer_params(m, layer, bits);
      REQUIRE(p.gamma != 1.0);
      REQUIRE(p.s != 1.0);
      const int q = (1 << (bits - 1)) - 1;
      const RefCodes ref = qil_reference_codes(p.w, p.c, p.d, p.gamma, q);
      CHECK(ref.levels.size() >= 5);  // pruned, clipped and interior levels all occur
      CHECK(ref.near_ties < p.w.numel() / 100);
      const Tensor& ex = got.at(layer + ".weight");
      REQUIRE(ex.shape() == p.w.shape());
      int64_t bad = 0;
      for (int64_t i = 0; i < ex.numel(); ++i) {
        if (ref.codes[i] == std::numeric_limits<int>::min()) continue;
        const double want = ref.codes[i] * p.s / q;
        bad += std::fabs(ex.data()[i] - want) > 1e-6 * std::fabs(p.s);
      }
      CHECK(bad == 0);
    }
  }

  auto ql = nlohmann::json::parse(apps::export_float(m, lm.meta, false).metadata.at("quant_layers"));
  CHECK(ql.size() == 2);
  CHECK(ql.at("conv2").at("wbits") == 4);
  CHECK(ql.at("conv2").at("abits") == 4);
  CHECK(ql.at("fc1").at("wbits") == 3);
  CHECK(ql.at("fc1").at("abits") == 4);
}

TEST_CASE("export int: codes are round(w_hat * q) and code * scale reproduces w_bar * s") {
  TempDir dir;
  write_tiny_checkpoint(dir.file("q.ckpt"), true);
  layers::LoadedModel lm = layers::load_model_checkpoint(dir.file("q.ckpt"));
  layers::Module& m = *lm.model;
  apps::ExportedModel e = apps::export_int(m, lm.meta);
  engine::write_safetensors(dir.file("int.safetensors"), e.tensors, e.metadata);
  engine::SafeTensors st = engine::read_safetensors(dir.file("int.safetensors"));
  auto got = by_name(st.tensors);
  auto fl = by_name(apps::export_float(m, lm.meta, false).tensors);
  CHECK(st.metadata.at("format") == "qil-export-int-v1");

  std::set<std::string> want_names = model_names(m, false);
  for (const char* layer : {"conv2", "fc1"}) {
    const std::string l = layer;
    want_names.erase(l + ".weight");
    for (const char* suffix : {".weight_int", ".weight_scale", ".act_quant.c", ".act_quant.d", ".act_quant.bits"})
      want_names.insert(l + suffix);
  }
  CHECK(names_of(got) == want_names);
  auto mt = model_tensors(m);
  for (const char* n : {"conv1.weight", "fc2.weight", "fc2.bias", "fc1.bias", "bn2.running_var"})
    CHECK_MESSAGE(bit_equal(got.at(n), mt.at(n)), n);

  for (auto [layer, bits] : {std::pair<std::string, int>{"conv2", 4}, {"fc1", 3}}) {
    CAPTURE(layer);
    const LayerParams p = layer_params(m, layer, bits);
    const int q = (1 << (bits - 1)) - 1;
    const Tensor& codes = got.at(layer + ".weight_int");
    REQUIRE(codes.dtype() == engine::DType::s8);
    REQUIRE(codes.shape() == p.w.shape());
    const float scale = got.at(layer + ".weight_scale").item();
    CHECK(scale == doctest::Approx(p.s / q).epsilon(1e-6));
    const RefCodes ref = qil_reference_codes(p.w, p.c, p.d, p.gamma, q);
    const Tensor& wf = fl.at(layer + ".weight");
    int64_t bad_code = 0, bad_weight = 0;
    for (int64_t i = 0; i < codes.numel(); ++i) {
      const int code = codes.data<int8_t>()[i];
      if (ref.codes[i] != std::numeric_limits<int>::min()) bad_code += code != ref.codes[i];
      bad_weight += std::fabs(code * scale - wf.data()[i]) > 1e-6 * std::fabs(p.s);
    }
    CHECK(bad_code == 0);
    CHECK(bad_weight == 0);
    CHECK(got.at(layer + ".act_quant.c").item() == mt.at(layer + ".act_quant.c").item());
    CHECK(got.at(layer + ".act_quant.d").item() == mt.at(layer + ".act_quant.d").item());
    CHECK(got.at(layer + ".act_quant.bits").item() == 4.f);
  }
  CHECK(st.metadata.count("activations"));
}

TEST_CASE("export int: LSQ, PACT and DoReFa codes times their scale reproduce the float export, rules per kind") {
  // DoReFa's and PACT's weights lie on k/q (k odd, q = 2^b - 1), LSQ's on k·s: the codes are k, the scale
  // out_scale/q or out_scale·s. Each input rule's parameters follow: LSQ s, PACT alpha, DoReFa none.
  const std::map<std::string, std::vector<std::string>> act_params = {
      {"lsq", {".act_quant.s"}}, {"pact", {".act_quant.alpha"}}, {"dorefa", {}}};
  for (const auto& [kind, params] : act_params) {
    CAPTURE(kind);
    TempDir dir;
    write_tiny_checkpoint(dir.file("q.ckpt"), true, kind);
    layers::LoadedModel lm = layers::load_model_checkpoint(dir.file("q.ckpt"));
    layers::Module& m = *lm.model;
    const apps::ExportedModel e = apps::export_int(m, lm.meta);
    auto got = by_name(e.tensors);
    auto fl = by_name(apps::export_float(m, lm.meta, false).tensors);
    auto mt = model_tensors(m);
    for (const std::string layer : {"conv2", "fc1"}) {
      CAPTURE(layer);
      const Tensor& codes = got.at(layer + ".weight_int");
      REQUIRE(codes.dtype() == engine::DType::s8);
      const float scale = got.at(layer + ".weight_scale").item();
      const Tensor& wf = fl.at(layer + ".weight");  // w̄·out_scale
      int64_t bad = 0, even = 0;
      for (int64_t i = 0; i < codes.numel(); ++i) {
        const int code = codes.data<int8_t>()[i];
        bad += std::fabs(code * scale - wf.data()[i]) > 1e-5 * std::fabs(wf.data()[i]) + 1e-7;
        even += code % 2 == 0;
      }
      CHECK(bad == 0);
      if (kind == "dorefa" || kind == "pact") CHECK(even == 0);  // DoReFa's levels: odd multiples of 1/q
      CHECK(got.count(layer + ".act_quant.bits"));
      for (const std::string& pn : params) CHECK(got.at(layer + pn).item() == mt.at(layer + pn).item());
    }
    const std::string rule = e.metadata.at("activations");
    CHECK_MESSAGE(rule.find(kind == "lsq" ? "x/s" : kind == "pact" ? "clamp(x, 0, alpha)" : "clamp(x, 0, 1)") !=
                      std::string::npos,
                  rule);
    CHECK(nlohmann::json::parse(e.metadata.at("quant_layers")).at("conv2").at("quantizer") == kind);
  }
  // 8-bit DoReFa weights reach code ±255: no int8 file can hold them.
  TempDir dir;
  write_tiny_checkpoint(dir.file("d8.ckpt"), true, "dorefa", 8);
  layers::LoadedModel lm = layers::load_model_checkpoint(dir.file("d8.ckpt"));
  check_error([&] { apps::export_int(*lm.model, lm.meta); },
              {"layer 'conv2'", "8-bit dorefa_weight", "255", "do not fit int8", "--format safetensors"});
  // A model mixing kinds states each rule by its family.
  auto mixed = layers::build_model("lenet", tiny_meta().spec);
  layers::QuantPlan plan;
  plan.wbits = plan.abits = 4;
  plan.quantizer = "pact";
  plan.overrides["fc1"].quantizer = "dorefa";
  layers::apply_quant_plan(*mixed, plan);
  layers::calibrate(*mixed, 1, [n = 0](Tensor& x) mutable { x = random_tensor({4, 1, 8, 8}, 5); return n++ < 1; });
  const std::string rules = apps::export_float(*mixed, tiny_meta(), false).metadata.at("activation_rule");
  CHECK(rules.find("dorefa layers: ") != std::string::npos);
  CHECK(rules.find(" | pact layers: ") != std::string::npos);
}

TEST_CASE("predict: logits equal the network's forward, in batches") {
  for (bool quantized : {false, true}) {
    CAPTURE(quantized);
    TempDir dir;
    write_tiny_checkpoint(dir.file("m.ckpt"), quantized);
    const Tensor x = random_tensor({5, 1, 8, 8}, 42);  // (N, C, H, W)
    apps::write_npy(dir.file("x.npy"), x);
    apps::PredictOptions o;
    o.checkpoint = dir.file("m.ckpt");
    o.input = dir.file("x.npy");
    o.output = dir.file("y.npy");
    o.batch = 2;  // 2 + 2 + 1
    REQUIRE(apps::run_predict(o) == 0);
    const Tensor y = apps::read_npy(o.output);
    REQUIRE(y.shape() == engine::Shape{5, 3});

    layers::LoadedModel lm = layers::load_model_checkpoint(o.checkpoint);
    lm.model->eval();
    engine::NoGradGuard ng;
    const Tensor ref = lm.model->forward(x);  // (N, K), the whole batch at once
    REQUIRE(ref.shape() == y.shape());
    double max_abs = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) max_abs = std::max(max_abs, std::fabs(double(ref.data()[i])));
    REQUIRE(max_abs > 0);
    for (int64_t i = 0; i < ref.numel(); ++i) CHECK(y.data()[i] == doctest::Approx(ref.data()[i]).epsilon(1e-4).scale(max_abs));
  }
}

TEST_CASE("predict: an input of the wrong shape names the file and both shapes") {
  TempDir dir;
  write_tiny_checkpoint(dir.file("m.ckpt"), false);
  apps::write_npy(dir.file("x.npy"), random_tensor({2, 3, 8, 8}, 1));
  apps::PredictOptions o{dir.file("m.ckpt"), dir.file("x.npy"), dir.file("y.npy"), 4, 0, false, "fp32", {}};
  check_error([&] { apps::run_predict(o); }, {"x.npy", "[2, 3, 8, 8]", "(N, 1, 8, 8)"});
  apps::write_npy(dir.file("x.npy"), random_tensor({1, 8, 8}, 1));
  check_error([&] { apps::run_predict(o); }, {"x.npy", "[1, 8, 8]"});
  CHECK_FALSE(fs::exists(o.output));
}

TEST_CASE("export and predict from the command line") {
  const std::string bin = testpaths::qil_binary();
  TempDir dir;
  write_tiny_checkpoint(dir.file("m.ckpt"), true);
  const std::string q = "'" + std::string(bin) + "' ";
  const std::string quiet = " >/dev/null 2>&1";
  CHECK(std::system((q + "export '" + dir.file("m.ckpt") + "' --out '" + dir.file("a.safetensors") + "'" + quiet).c_str()) == 0);
  CHECK(engine::read_safetensors(dir.file("a.safetensors")).metadata.at("format") == "qil-export-v1");
  CHECK(std::system((q + "export '" + dir.file("m.ckpt") + "' --format int --out '" + dir.file("i.safetensors") + "'" +
                     quiet).c_str()) == 0);
  CHECK(engine::read_safetensors(dir.file("i.safetensors")).metadata.at("format") == "qil-export-int-v1");
  CHECK(std::system((q + "export '" + dir.file("m.ckpt") + "' --format tflite --out '" + dir.file("t") + "'" + quiet)
                        .c_str()) != 0);
  CHECK_FALSE(fs::exists(dir.file("t")));
  CHECK(std::system((q + "export '" + dir.file("m.ckpt") + "' --format onnx --out '" + dir.file("m.onnx") + "'" + quiet)
                        .c_str()) == 0);
  CHECK(fs::file_size(dir.file("m.onnx")) > 1000);
  apps::write_npy(dir.file("x.npy"), random_tensor({3, 1, 8, 8}, 3));
  CHECK(std::system((q + "predict '" + dir.file("m.ckpt") + "' --input '" + dir.file("x.npy") + "' --output '" +
                     dir.file("y.npy") + "'" + quiet).c_str()) == 0);
  CHECK(apps::read_npy(dir.file("y.npy")).shape() == engine::Shape{3, 3});
}
