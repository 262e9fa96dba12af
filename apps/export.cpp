// export (safetensors, float or integer weights) and predict (.npy in, logits .npy out).
#include "apps/export.h"

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "apps/commands.h"
#include "apps/data_setup.h"
#include "apps/export_onnx.h"
#include "apps/limits.h"
#include "apps/npy.h"
#include "engine/autograd.h"
#include "engine/check.h"
#include "layers/quantize.h"

namespace apps {

using engine::str_cat;
using engine::Tensor;
using nlohmann::json;

namespace {

bool weight_quantized(const layers::QuantizableModule& l) { return l.active_weight_quantizer() != nullptr; }
bool input_quantized(const layers::QuantizableModule& l) { return l.active_act_quantizer() != nullptr; }

// w̄ (normalized to [−1, 1]) of a layer whose weights are quantized.
Tensor fake_quantized_weight(const layers::QuantizableModule& l) {
  engine::NoGradGuard ng;
  return (*l.weight_quantizer())(l.weight()).detach();
}

Tensor times(const Tensor& t, float s) {  // a new tensor t·s
  Tensor out = Tensor::empty(t.shape());
  const float* a = t.data();
  float* o = out.data();
  for (int64_t i = 0; i < t.numel(); ++i) o[i] = a[i] * s;
  return out;
}

Tensor scalar(float v) { return Tensor::scalar(v); }

}  // namespace

std::map<std::string, std::string> input_metadata(const layers::ModelMeta& meta) {
  const InputGeometry in = network_input(meta);
  std::map<std::string, std::string> md{{"in_channels", std::to_string(in.channels)},
                                        {"image_size", std::to_string(in.size)},
                                        {"input_mean", json(in.mean).dump()},
                                        {"input_std", json(in.std).dump()}};
  if (in.recorded) {
    md["input_transform"] = in.resize > 0 ? "resize-center-crop" : "none";
    if (in.resize > 0) md["input_resize"] = std::to_string(in.resize);
    if (!in.data.empty()) md["input_data"] = in.data;
  }
  return md;
}

namespace {

// Metadata both kinds of file share: the network, its input normalization and each quantized layer's widths.
std::map<std::string, std::string> common_metadata(layers::Module& model, const layers::ModelMeta& meta,
                                                   const char* format) {
  json layers_json = json::object();
  for (auto& [name, l] : layers::quantizable_layers(model)) {
    if (!l->quantized()) continue;
    const auto& s = l->quant_spec();
    layers_json[name] = {{"wbits", weight_quantized(*l) ? s.wbits : 32},
                         {"abits", input_quantized(*l) ? s.abits : 32},
                         {"signed_input", input_quantized(*l) && l->act_quantizer()->is_signed()},
                         {"quantizer", s.quantizer}};
  }
  std::map<std::string, std::string> md = input_metadata(meta);
  md["format"] = format;
  md["model"] = meta.model;
  md["num_classes"] = std::to_string(meta.spec.num_classes);
  md["quant_layers"] = layers_json.dump();
  return md;
}

// Each quantizer family's input rule, as the files state it (the layer's quant_layers entry names its family).
const char* activation_rule(const std::string& family) {
  if (family == "lsq")
    return "x_bar = round(clamp(x/s, 0, 2^bits - 1)) * s; for signed_input layers x_bar = round(clamp(x/s, "
           "-2^(bits-1), 2^(bits-1) - 1)) * s; round is half away from zero";
  if (family == "pact")
    return "x_bar = round(clamp(x, 0, alpha) * q/alpha) * alpha/q with q = 2^bits - 1; for signed_input layers "
           "x_bar = sign(x) * round(min(|x|, alpha) * q/alpha) * alpha/q with q = 2^(bits-1) - 1; round is half "
           "away from zero";
  if (family == "dorefa")
    return "x_bar = round(clamp(x, 0, 1) * q)/q with q = 2^bits - 1; for signed_input layers x_bar = sign(x) * "
           "round(min(|x|, 1) * q)/q with q = 2^(bits-1) - 1; round is half away from zero";
  return "x_bar = round(clamp((x - c)/(2d) + 0.5, 0, 1) * q)/q with q = 2^bits - 1; for signed_input layers "
         "x_bar = sign(x) * round(clamp((|x| - c)/(2d) + 0.5, 0, 1) * q)/q with q = 2^(bits-1) - 1; "
         "round is half away from zero";
}

// The rule of every family whose input quantizers the model uses: the rule alone when there is one family (QIL's
// text as files have always had it), else "<family> layers: <rule>" joined by " | ".
std::string activation_rules(layers::Module& model) {
  std::set<std::string> families;
  for (auto& [name, l] : layers::quantizable_layers(model))
    if (input_quantized(*l)) families.insert(l->quant_spec().quantizer);
  if (families.size() <= 1) return activation_rule(families.empty() ? "qil" : *families.begin());
  std::string o;
  for (const std::string& f : families) o += (o.empty() ? "" : " | ") + f + " layers: " + activation_rule(f);
  return o;
}

std::map<std::string, layers::QuantizableModule*> layer_map(layers::Module& model) {
  std::map<std::string, layers::QuantizableModule*> out;
  for (auto& [name, l] : layers::quantizable_layers(model)) out[name] = l;
  return out;
}

// The layer whose weight parameter this is, or nullptr.
layers::QuantizableModule* owner_of_weight(const std::map<std::string, layers::QuantizableModule*>& layers,
                                           const std::string& param) {
  const std::string w = "weight";
  if (param.size() < w.size() || param.compare(param.size() - w.size(), w.size(), w) != 0) return nullptr;
  std::string layer = param.substr(0, param.size() - w.size());
  if (!layer.empty()) {
    if (layer.back() != '.') return nullptr;
    layer.pop_back();
  }
  auto it = layers.find(layer);
  return it == layers.end() ? nullptr : it->second;
}

}  // namespace

Tensor effective_weight(const layers::QuantizableModule& l) {
  if (!l.quantized()) return l.weight().clone();
  const float s = l.out_scale().item();
  return times(weight_quantized(l) ? fake_quantized_weight(l) : l.weight().detach(), s);
}

ExportedModel export_float(layers::Module& model, const layers::ModelMeta& meta, bool with_quant_params) {
  ExportedModel out;
  const auto layers = layer_map(model);
  for (const auto& p : model.named_parameters()) {
    if (p.kind == layers::ParamKind::quant && !with_quant_params) continue;
    layers::QuantizableModule* l = owner_of_weight(layers, p.name);
    out.tensors.emplace_back(p.name, l ? effective_weight(*l) : p.tensor.detach());
  }
  for (const auto& b : model.named_buffers()) out.tensors.emplace_back(b.name, b.tensor.detach());
  out.metadata = common_metadata(model, meta, kExportFormatFloat);
  out.metadata["weights"] =
      "effective: the weight of each quantized layer is its fake-quantized weight times its out_scale (w_bar * s), "
      "so the file loads into the full-precision network; reproducing qil's outputs exactly also needs each "
      "quantized layer's input quantization (abits and the quantizer in quant_layers; its parameters, e.g. c and d, "
      "in <layer>.act_quant.* when exported with --with-quant-params)";
  out.metadata["activation_rule"] = activation_rules(model);
  return out;
}

WeightCodes weight_codes(const layers::QuantizableModule& l, const std::string& name) {
  // The codes are the weight quantizer's levels (w̄ = code·level_step), the ones integer inference (`--int8`)
  // computes with.
  const quant::Quantizer& wq = *l.active_weight_quantizer();
  const int reach = std::max(-wq.min_level(), wq.positive_levels());
  QIL_CHECK(wq.min_level() >= -128 && wq.positive_levels() <= 127, "export: layer '", name, "' has ", wq.bits(),
            "-bit ", wq.kind(), " weights, whose codes reach ", reach,
            " and do not fit int8 (use --format safetensors, or at most 7 bits)");
  return {wq.levels(l.weight().detach()), static_cast<float>(l.out_scale().item() * wq.level_step())};
}

ExportedModel export_int(layers::Module& model, const layers::ModelMeta& meta) {
  ExportedModel out;
  const auto layers = layer_map(model);
  for (const auto& p : model.named_parameters()) {
    if (p.kind == layers::ParamKind::quant) continue;  // written per layer below
    layers::QuantizableModule* l = owner_of_weight(layers, p.name);
    if (!l) {
      out.tensors.emplace_back(p.name, p.tensor.detach());
      continue;
    }
    const std::string pre = p.name.substr(0, p.name.size() - 6);  // "<layer>." (without "weight")
    if (weight_quantized(*l)) {
      WeightCodes wc = weight_codes(*l, pre.substr(0, pre.size() - 1));
      out.tensors.emplace_back(pre + "weight_int", wc.codes);
      out.tensors.emplace_back(pre + "weight_scale", scalar(wc.scale));
    } else out.tensors.emplace_back(p.name, effective_weight(*l));
    if (input_quantized(*l)) {
      // The quantizer's own parameters (QIL: c, d; LSQ: s; PACT: alpha; DoReFa: none), which its rule names.
      for (const auto& [n, t] : l->active_act_quantizer()->named_parameters())
        out.tensors.emplace_back(pre + "act_quant." + n, scalar(t.item()));
      out.tensors.emplace_back(pre + "act_quant.bits", scalar(static_cast<float>(l->quant_spec().abits)));
    }
  }
  for (const auto& b : model.named_buffers()) out.tensors.emplace_back(b.name, b.tensor.detach());
  out.metadata = common_metadata(model, meta, kExportFormatInt);
  out.metadata["weights"] =
      "<layer>.weight = <layer>.weight_int (int8 codes) * <layer>.weight_scale for layers with quantized weights; "
      "other weights are f32 (already multiplied by the layer's output scale where only the input is quantized)";
  out.metadata["activations"] = str_cat(
      "a layer with <layer>.act_quant.bits computes op(x_bar, weight) + bias, its input quantized by the rule of "
      "its quantizer (quant_layers), whose parameters are <layer>.act_quant.*: ",
      activation_rules(model));
  return out;
}

void add_export_flags(CLI::App& app, ExportOptions& o) {
  app.add_option("checkpoint", o.checkpoint, "checkpoint file (e.g. runs/NAME/best.ckpt)")->required();
  app.add_option("--out", o.out, "output file (.safetensors; .onnx for --format onnx)")->required();
  app.add_option("--format", o.format,
                 "safetensors (float, torchvision names) | int (integer weight codes) | onnx (opset 13 graph, "
                 "quantized layers as QuantizeLinear/DequantizeLinear)")
      ->capture_default_str();
  app.add_flag("--with-quant-params", o.with_quant_params,
               "safetensors: also write the quantizer parameters (<layer>.weight_quant.c, ...) and output scales");
}

int run_export(const ExportOptions& o) {
  QIL_CHECK(o.format == "safetensors" || o.format == "int" || o.format == "onnx",
            "export: --format must be safetensors, int or onnx, got '", o.format, "'");
  QIL_CHECK(!(o.with_quant_params && o.format == "int"),
            "export: --with-quant-params applies to --format safetensors (the int format always has them)");
  // Before the network is read: an output that is a device, a FIFO or the checkpoint itself is refused.
  engine::check_output_file(o.out, {{"checkpoint", o.checkpoint}}, "--out");
  layers::LoadedModel lm = layers::load_model_checkpoint(o.checkpoint);
  if (o.format == "onnx") {
    engine::write_file_atomic(o.out, export_onnx(*lm.model, lm.meta), "export");
    bool quantized = false;
    for (auto& [n, l] : layers::quantizable_layers(*lm.model))
      quantized |= l->active_weight_quantizer() || l->active_act_quantizer();
    std::printf("%s: ONNX graph (opset 13%s) written to %s\n", o.checkpoint.c_str(),
                quantized ? ", quantized layers as QuantizeLinear/DequantizeLinear" : "", o.out.c_str());
    return 0;
  }
  ExportedModel e = o.format == "int" ? export_int(*lm.model, lm.meta)
                                      : export_float(*lm.model, lm.meta, o.with_quant_params);
  engine::write_safetensors(o.out, e.tensors, e.metadata);
  std::printf("%s: %zu tensors (%s) written to %s\n", o.checkpoint.c_str(), e.tensors.size(), o.format.c_str(),
              o.out.c_str());
  return 0;
}

void add_predict_flags(CLI::App& app, PredictOptions& o) {
  app.add_option("checkpoint", o.checkpoint,
                 "checkpoint (e.g. runs/NAME/best.ckpt), or a .safetensors file with torchvision's names (F32, F16 "
                 "or BF16; the --model ... flags below fill in what it does not say)")
      ->required();
  app.add_option("--input", o.input,
                 ".npy float32 (N, C, H, W), already normalized: images made as the checkpoint records (side, "
                 "resize and center crop, mean and std: qil inspect CHECKPOINT prints them)")->required();
  app.add_option("--output", o.output, ".npy float32 logits (N, classes) to write")->required();
  app.add_option("--batch", o.batch, "images per forward pass")->capture_default_str();
  add_threads_flag(app, o.threads);
  add_model_file_flags(app, o.file);
  app.add_flag("--int8", o.int8, kInt8FlagHelp);
  add_precision_flag(app, o.precision);
}

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

Tensor predict_logits(layers::Module& model, const layers::ModelSpec& spec, const Tensor& x, int64_t batch,
                      const std::string& where) {
  QIL_CHECK(batch >= 1, "predict: --batch must be at least 1, got ", batch);
  const engine::Shape want{spec.in_channels, spec.image_size, spec.image_size};
  QIL_CHECK(x.dim() == 4 && engine::Shape(x.shape().begin() + 1, x.shape().end()) == want, where,
            ": shape ", x.shape(), " does not match the network's input (N, ", want[0], ", ", want[1], ", ", want[2],
            ")");
  const int64_t n = x.size(0), per_image = x.numel() / std::max<int64_t>(n, 1);
  QIL_CHECK(n >= 1, where, ": holds no images (shape ", x.shape(), ")");
  Tensor logits = Tensor::empty({n, spec.num_classes});  // (N, K)
  engine::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  for (int64_t i0 = 0; i0 < n; i0 += batch) {
    const int64_t b = std::min(batch, n - i0);
    Tensor xb = Tensor::empty({b, want[0], want[1], want[2]});  // (b, C, H, W)
    std::memcpy(xb.data(), x.data() + i0 * per_image, static_cast<size_t>(b * per_image) * sizeof(float));
    const std::vector<float> y = model.forward(xb).to_vector();
    QIL_CHECK(static_cast<int64_t>(y.size()) == b * spec.num_classes, "predict: the network returned ", y.size(),
              " values for ", b, " images, expected ", b, " x ", spec.num_classes);
    std::memcpy(logits.data() + i0 * spec.num_classes, y.data(), y.size() * sizeof(float));
  }
  model.train(was_training);
  return logits;
}

int run_predict(const PredictOptions& o) {
  if (o.threads > 0) omp_set_num_threads(static_cast<int>(o.threads));
  engine::check_output_file(o.output, {{"file", o.input}, {"checkpoint", o.checkpoint}}, "--output");
  layers::LoadedModel lm = load_model_file(o.checkpoint, o.file, false);
  if (o.int8) enable_int8_inference(*lm.model, o.checkpoint);
  const Tensor x = read_npy(o.input);
  const Tensor y = predict_logits(*lm.model, lm.meta.spec, x, o.batch, o.input);
  // The logits are written whatever they hold (a caller may want to see them), but a non-finite input or
  // logit is said on stderr: exit 0 alone would hide it. (A NaN image does not always give NaN logits:
  // ReLU and max pooling may drop NaNs, leaving finite logits that mean nothing.)
  const auto bad_rows = [](const Tensor& t, int64_t* values) {
    const std::vector<float> v = t.to_vector();
    const int64_t per = t.numel() / std::max<int64_t>(t.size(0), 1);
    std::vector<int64_t> rows;
    *values = 0;
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i])) {
        ++*values;
        if (rows.empty() || rows.back() != static_cast<int64_t>(i) / per) rows.push_back(static_cast<int64_t>(i) / per);
      }
    std::string list;
    for (size_t i = 0; i < rows.size() && i < 8; ++i) list += (i ? ", " : "") + std::to_string(rows[i]);
    if (rows.size() > 8) list += ", ...";
    return std::make_pair(rows.size(), list);
  };
  int64_t bad_x = 0, bad_y = 0;
  const auto [images_x, list_x] = bad_rows(x, &bad_x);
  const auto [images_y, list_y] = bad_rows(y, &bad_y);
  if (bad_x)
    std::fprintf(stderr, "predict: warning: %s holds %lld non-finite values, in %zu images (%s); their logits "
                 "mean nothing\n", o.input.c_str(), static_cast<long long>(bad_x), images_x, list_x.c_str());
  if (bad_y)
    std::fprintf(stderr, "predict: warning: %lld logits of %zu images are not finite (images %s)\n",
                 static_cast<long long>(bad_y), images_y, list_y.c_str());
  write_npy(o.output, y);
  std::printf("%s: logits (%lld, %lld) of %s written to %s\n", o.checkpoint.c_str(), static_cast<long long>(y.size(0)),
              static_cast<long long>(y.size(1)), o.input.c_str(), o.output.c_str());
  return 0;
}

}  // namespace apps
