// Checkpoint <-> network: meta, quantization layout, strict tensor loading, re-arming the quantizers.
#include "layers/model_io.h"

#include <map>
#include <set>

#include "engine/check.h"
#include "layers/basic.h"

namespace layers {

using engine::Error;
using engine::str_cat;
using nlohmann::json;

json meta_to_json(const ModelMeta& m) {
  return json{{"model", m.model},
              {"in_channels", m.spec.in_channels},
              {"num_classes", m.spec.num_classes},
              {"image_size", m.spec.image_size},
              {"mean", m.mean},
              {"std", m.std}};
}

ModelMeta meta_from_json(const json& j, const std::string& file) {
  try {
    ModelMeta m;
    m.model = j.at("model").get<std::string>();
    m.spec.in_channels = j.at("in_channels").get<int64_t>();
    m.spec.num_classes = j.at("num_classes").get<int64_t>();
    m.spec.image_size = j.at("image_size").get<int64_t>();
    m.mean = j.at("mean").get<std::vector<float>>();
    m.std = j.at("std").get<std::vector<float>>();
    return m;
  } catch (const json::exception& e) {
    throw Error(str_cat(file, ": model description is incomplete (", e.what(), ")"));
  }
}

json quant_layout(Module& model) {
  json out = json::object();
  for (auto& [name, l] : quantizable_layers(model)) {
    const auto& s = l->quant_spec();
    if (!l->weight_quantizer() && !l->act_quantizer()) continue;
    out[name] = {{"quantizer", s.quantizer},
                 {"wbits", s.wbits},
                 {"abits", s.abits},
                 {"signed", s.signed_input},
                 {"fix_gamma", s.fix_gamma},
                 {"has_wq", l->weight_quantizer() != nullptr},
                 {"has_aq", l->act_quantizer() != nullptr}};
  }
  return out;
}

void apply_quant_layout(Module& model, const json& layout, const std::string& file) {
  std::map<std::string, QuantizableModule*> by_name;
  for (auto& [name, l] : quantizable_layers(model)) by_name[name] = l;
  for (auto& [name, v] : layout.items()) {
    auto it = by_name.find(name);
    QIL_CHECK(it != by_name.end(), file, ": quantized layer '", name, "' does not exist in this model");
    // Create the quantizers the file has (at their widths, even where the current stage switched one off)...
    LayerQuantSpec s;
    s.quantizer = v.value("quantizer", std::string("qil"));
    s.signed_input = v.value("signed", false);
    s.fix_gamma = v.value("fix_gamma", false);
    const int wbits = v.value("wbits", 32), abits = v.value("abits", 32);
    s.wbits = v.value("has_wq", wbits < 32) ? (wbits < 32 ? wbits : 8) : 32;
    s.abits = v.value("has_aq", abits < 32) ? (abits < 32 ? abits : 8) : 32;
    it->second->set_quant(s);
    // ...then the widths it ran at.
    s.wbits = wbits;
    s.abits = abits;
    it->second->set_quant(s);
  }
}

void add_model(engine::Checkpoint& ck, Module& model, const ModelMeta& meta) {
  for (const auto& p : model.named_parameters()) ck.add_tensor("model." + p.name, p.tensor.detach());
  for (const auto& b : model.named_buffers()) ck.add_tensor("model." + b.name, b.tensor.detach());
  ck.add_json("model_meta", meta_to_json(meta).dump());
  ck.add_json("quant_layout", quant_layout(model).dump());
}

void load_model_tensors(Module& model, const engine::NamedTensors& tensors, const std::string& file,
                        bool allow_missing_quant) {
  std::map<std::string, const engine::Tensor*> have;
  for (const auto& [n, t] : tensors) have[n] = &t;
  std::set<std::string> used;
  std::vector<NamedTensor> all = model.named_parameters();
  for (auto& b : model.named_buffers()) all.push_back(b);
  std::set<std::string> loaded_quant;
  for (auto& p : all) {
    auto it = have.find(p.name);
    if (it == have.end()) {
      QIL_CHECK(allow_missing_quant && p.kind == ParamKind::quant, file, ": has no tensor '", p.name,
                "' (is it a checkpoint of another model?)");
      continue;
    }
    const engine::Tensor& src = *it->second;
    QIL_CHECK(src.shape() == p.tensor.shape() && src.dtype() == p.tensor.dtype(), file, ": tensor '", p.name,
              "' has shape ", src.shape(), " but the model's is ", p.tensor.shape(),
              " (is it a checkpoint of another model?)");
    p.tensor.copy_from(src);
    used.insert(p.name);
    if (p.kind == ParamKind::quant) loaded_quant.insert(p.name);
  }
  for (const auto& [n, t] : tensors) {
    // PyTorch's BatchNorm counter has no role here (momentum is fixed).
    const std::string nbt = "num_batches_tracked";
    if (n.size() >= nbt.size() && n.compare(n.size() - nbt.size(), nbt.size(), nbt) == 0) continue;
    QIL_CHECK(used.count(n), file, ": tensor '", n, "' does not belong to this model (another architecture?)");
  }
  // Re-arm: each quantizer hears which of its own parameters came from the file.
  for (auto& [name, l] : quantizable_layers(model)) {
    const std::string pre = name.empty() ? "" : name + ".";
    const std::pair<quant::Quantizer*, const char*> sides[] = {{l->weight_quantizer(), "weight_quant."},
                                                               {l->act_quantizer(), "act_quant."}};
    for (auto [q, side] : sides) {
      if (!q) continue;
      std::vector<std::string> loaded;
      for (const auto& [n, t] : q->named_parameters())
        if (loaded_quant.count(pre + side + n)) loaded.push_back(n);
      q->parameters_loaded(loaded);
    }
    if (loaded_quant.count(pre + "out_scale")) l->set_scale_fitted(true);
  }
}

bool is_safetensors_path(const std::string& path) {
  const std::string ext = ".safetensors";
  return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
}

LoadedModel load_model_checkpoint(const std::string& path) {
  engine::Checkpoint ck = engine::read_checkpoint(path);
  QIL_CHECK(ck.has("model_meta"), path, ": not a model checkpoint (no model_meta section)");
  LoadedModel out;
  out.meta = meta_from_json(json::parse(ck.text("model_meta")), path);
  out.model = build_model(out.meta.model, out.meta.spec);
  if (ck.has("quant_layout")) apply_quant_layout(*out.model, json::parse(ck.text("quant_layout")), path);
  load_model_tensors(*out.model, ck.tensors("model."), path, false);
  return out;
}

}  // namespace layers
