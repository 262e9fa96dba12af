// Float and integer safetensors exports.
#include "apps/export.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "apps/data_setup.h"
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

// The rule of every family whose input quantizers the model uses: the rule alone when there is one family (or none:
// the default family's, as files have always had it), else "<family> layers: <rule>" joined by " | ".
std::string activation_rules(layers::Module& model) {
  std::set<std::string> families;
  for (auto& [name, l] : layers::quantizable_layers(model))
    if (input_quantized(*l)) families.insert(l->quant_spec().quantizer);
  // Each family states its rule (quant/registry.h: QuantizerFamily::input_rule).
  const auto rule = [](const std::string& f) { return quant::quantizer_family(f).input_rule; };
  if (families.size() <= 1) return rule(families.empty() ? quant::kDefaultQuantizer : *families.begin());
  std::string o;
  for (const std::string& f : families) o += (o.empty() ? "" : " | ") + f + " layers: " + rule(f);
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

}  // namespace apps
