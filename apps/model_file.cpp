// eval's and predict's network: a checkpoint, or safetensors weights under torchvision's names; --int8.
#include "apps/model_file.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/check.h"
#include "engine/serialize.h"
#include "layers/models.h"
#include "layers/quantize.h"

namespace apps {

using engine::DType;
using engine::str_cat;
using engine::Tensor;

void add_model_file_flags(CLI::App& app, ModelFileOptions& o) {
  app.add_option("--model", o.model, "safetensors: the network (qil models lists them); default: the file's metadata");
  app.add_option("--num-classes", o.num_classes,
                 "safetensors: classes; default: the metadata, else the file's last linear layer");
  app.add_option("--in-channels", o.in_channels,
                 "safetensors: input channels; default: the metadata, else the file's first convolution");
  app.add_option("--image-size", o.image_size,
                 "safetensors: input side; default: the metadata, else the model's. With a checkpoint (eval only, "
                 "imagenet data): evaluate at this side instead of the one the checkpoint records, said on stderr");
  app.add_option("--mean", o.mean, "safetensors: input mean per channel, comma-separated; default: the metadata, "
                                   "else ImageNet's for RGB")
      ->delimiter(',');
  app.add_option("--std", o.std, "safetensors: input std per channel (with --mean)")->delimiter(',');
}

namespace {

const layers::ModelInfo& model_info(const std::string& name) {
  for (const auto& i : layers::model_infos())
    if (i.name == name) return i;
  layers::build_model(name, {});  // throws, listing the known models
  throw engine::Error("unreachable");
}

// bf16 -> f32 is exact: the bf16 bits are the top half of the float.
Tensor widen_bf16(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape());
  const uint16_t* s = t.data<uint16_t>();
  float* d = out.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
    std::memcpy(&d[i], &bits, 4);
  }
  return out;
}

int64_t meta_int(const std::map<std::string, std::string>& md, const char* key, const std::string& path) {
  auto it = md.find(key);
  if (it == md.end()) return 0;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    throw engine::Error(str_cat(path, ": metadata '", key, "' is not an integer: '", it->second, "'"));
  }
}

std::vector<float> meta_floats(const std::map<std::string, std::string>& md, const char* key, const std::string& path) {
  auto it = md.find(key);
  if (it == md.end()) return {};
  try {
    return nlohmann::json::parse(it->second).get<std::vector<float>>();
  } catch (const std::exception&) {
    throw engine::Error(str_cat(path, ": metadata '", key, "' is not a JSON list of numbers: '", it->second, "'"));
  }
}

// A flag given with a checkpoint must agree with what the checkpoint says.
void check_agrees(const layers::LoadedModel& lm, const ModelFileOptions& o, const std::string& path) {
  auto same = [&](const char* flag, int64_t given, int64_t have) {
    QIL_CHECK(given == 0 || given == have, flag, " ", given, ": ", path, " is a checkpoint of a network with ", have,
              " (the flag is for safetensors files)");
  };
  QIL_CHECK(o.model.empty() || o.model == lm.meta.model, "--model ", o.model, ": ", path, " is a checkpoint of a '",
            lm.meta.model, "' network (the flag is for safetensors files)");
  same("--num-classes", o.num_classes, lm.meta.spec.num_classes);
  same("--in-channels", o.in_channels, lm.meta.spec.in_channels);
  same("--image-size", o.image_size, lm.meta.spec.image_size);
  QIL_CHECK(o.mean.empty() && o.std.empty(), "--mean/--std: ", path,
            " is a checkpoint, which holds the normalization its network was trained with");
}

// What a file of another quantization than float weights cannot be evaluated as.
void check_float_weights(const engine::SafeTensors& st, const std::string& path) {
  auto fmt = st.metadata.find("format");
  QIL_CHECK(fmt == st.metadata.end() || fmt->second != kExportFormatInt, path,
            ": an integer export (qil export --format int: weight codes and scales); evaluate the checkpoint it "
            "came from");
  for (const auto& [n, t] : st.tensors)
    QIL_CHECK(n.find(".weight_quant.") == std::string::npos && n.find(".act_quant.") == std::string::npos &&
                  n.find("out_scale") == std::string::npos,
              path, ": holds quantizer parameters ('", n,
              "', from qil export --with-quant-params); evaluate the checkpoint it came from for the quantized "
              "network, or export without --with-quant-params for its effective float weights");
}

// The zoo network's spec: flags, then the file's metadata, then its tensors' shapes, then the model's defaults.
layers::ModelSpec spec_for(const std::string& model, const engine::SafeTensors& st, const ModelFileOptions& o,
                           const std::string& path) {
  const layers::ModelInfo& info = model_info(model);
  layers::ModelSpec spec;
  spec.in_channels = o.in_channels ? o.in_channels : meta_int(st.metadata, "in_channels", path);
  spec.num_classes = o.num_classes ? o.num_classes : meta_int(st.metadata, "num_classes", path);
  spec.image_size = o.image_size ? o.image_size : meta_int(st.metadata, "image_size", path);
  if (!spec.image_size) spec.image_size = info.default_image_size;
  if (spec.in_channels && spec.num_classes) return spec;
  // The first convolution's weight is (out, in, kh, kw); the last linear's is (classes, features).
  layers::ModelSpec probe = spec;
  if (!probe.in_channels) probe.in_channels = info.default_channels;
  if (!probe.num_classes) probe.num_classes = info.default_classes;
  const auto params = layers::build_model(model, probe)->named_parameters();
  std::string first_conv, last_linear;
  for (const auto& p : params) {
    if (p.tensor.dim() == 4 && first_conv.empty()) first_conv = p.name;
    if (p.tensor.dim() == 2) last_linear = p.name;
  }
  for (const auto& [n, t] : st.tensors) {
    if (!spec.in_channels && n == first_conv && t.dim() == 4) spec.in_channels = t.size(1);
    if (!spec.num_classes && n == last_linear && t.dim() == 2) spec.num_classes = t.size(0);
  }
  if (!spec.in_channels) spec.in_channels = probe.in_channels;
  if (!spec.num_classes) spec.num_classes = probe.num_classes;
  return spec;
}

void set_normalization(layers::ModelMeta& meta, const engine::SafeTensors& st, const ModelFileOptions& o,
                       bool need, const std::string& path) {
  QIL_CHECK(o.mean.size() == o.std.size(), "--mean has ", o.mean.size(), " values but --std has ", o.std.size());
  meta.mean = o.mean.empty() ? meta_floats(st.metadata, "input_mean", path) : o.mean;
  meta.std = o.std.empty() ? meta_floats(st.metadata, "input_std", path) : o.std;
  const auto c = static_cast<size_t>(meta.spec.in_channels);
  if (meta.mean.empty() && c == 3) {
    meta.mean = {0.485f, 0.456f, 0.406f};
    meta.std = {0.229f, 0.224f, 0.225f};
    if (need)
      std::fprintf(stderr, "%s: no normalization in the file; using ImageNet's mean and std (--mean/--std to "
                           "change)\n", path.c_str());
  }
  QIL_CHECK(!need || !meta.mean.empty(), path, ": says nothing of the input normalization of its ", c,
            "-channel network; give --mean and --std");
  if (meta.mean.empty()) return;  // predict: inputs arrive normalized
  QIL_CHECK(meta.mean.size() == c && meta.std.size() == c, path, ": ", meta.mean.size(),
            " mean and ", meta.std.size(), " std values for a ", c, "-channel network");
  for (float m : meta.mean) QIL_CHECK(std::isfinite(m), path, ": input mean must be finite, got ", m);
  for (float s : meta.std) QIL_CHECK(std::isfinite(s) && s > 0.f, path, ": input std must be positive, got ", s);
}

layers::LoadedModel load_safetensors_model(const std::string& path, const ModelFileOptions& o, bool need_norm) {
  engine::SafeTensors st = engine::read_safetensors(path);
  check_float_weights(st, path);
  layers::LoadedModel lm;
  auto named = st.metadata.find("model");
  lm.meta.model = o.model;
  if (named != st.metadata.end()) {
    QIL_CHECK(o.model.empty() || o.model == named->second, "--model ", o.model, ": ", path, " holds a '",
              named->second, "' network");
    lm.meta.model = named->second;
  }
  QIL_CHECK(!lm.meta.model.empty(), path, ": does not say which network it holds; give --model (qil models lists "
                                          "them)");
  lm.meta.spec = spec_for(lm.meta.model, st, o, path);
  // What qil's export says of how the inputs were made (apps::input_metadata), when it says it.
  auto transform = st.metadata.find("input_transform");
  if (transform != st.metadata.end()) {
    lm.meta.input.recorded = true;
    lm.meta.input.resize = transform->second == "resize-center-crop" ? meta_int(st.metadata, "input_resize", path) : 0;
    auto kind = st.metadata.find("input_data");
    if (kind != st.metadata.end()) lm.meta.input.data = kind->second;
  }
  layers::check_spec(lm.meta.spec, path);  // a shape [2^40, 512] would otherwise be allocated
  set_normalization(lm.meta, st, o, need_norm, path);
  for (auto& [n, t] : st.tensors)
    if (t.dtype() == DType::bf16) t = widen_bf16(t);
  lm.model = layers::build_model(lm.meta.model, lm.meta.spec);
  layers::load_model_tensors(*lm.model, st.tensors, path, false);
  auto q = st.metadata.find("quant_layers");
  if (q != st.metadata.end() && q->second != "{}" && q->second != "null")
    std::fprintf(stderr, "%s: the export of a quantized network: its quantized layers' weights are the effective "
                         "weights, but their inputs are not quantized here (the checkpoint runs the quantized "
                         "network)\n", path.c_str());
  return lm;
}

}  // namespace

layers::LoadedModel load_model_file(const std::string& path, const ModelFileOptions& o, bool need_normalization) {
  if (layers::is_safetensors_path(path)) return load_safetensors_model(path, o, need_normalization);
  layers::LoadedModel lm = layers::load_model_checkpoint(path);
  check_agrees(lm, o, path);
  return lm;
}

const char* const kCheckpointArgHelp =
    "checkpoint (e.g. runs/NAME/best.ckpt), or a .safetensors file with torchvision's names (F32, F16 or BF16; the "
    "--model ... flags below fill in what it does not say)";

const char* const kInt8FlagHelp =
    "integer inference: every layer whose weights and input are both quantized runs on oneDNN's int8 primitives "
    "(input levels u8, or s8 for a signed first-layer input, x weight codes s8, exact s32 sums, one f32 scale per "
    "layer); full-precision layers and layers with only one side quantized run in f32 as before (docs/int8.md)";

void enable_int8_inference(layers::Module& model, const std::string& checkpoint) {
  const layers::Int8Layers l = layers::set_int8_inference(model, true);
  QIL_CHECK(!l.integer.empty(), "--int8: ", checkpoint,
            " has no layer whose weights and input are both quantized (nothing would run in int8)");
  std::string names;
  for (const std::string& n : l.floating) names += (names.empty() ? "" : ", ") + n;
  std::fprintf(stderr, "int8: %zu layers in integers, %zu in f32%s%s\n", l.integer.size(), l.floating.size(),
               names.empty() ? "" : ": ", names.c_str());
}

}  // namespace apps
