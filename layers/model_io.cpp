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
  json j{{"model", m.model},
         {"in_channels", m.spec.in_channels},
         {"num_classes", m.spec.num_classes},
         {"image_size", m.spec.image_size},
         {"mean", m.mean},
         {"std", m.std}};
  // A key of its own: readers that predate it ignore it, and its absence marks an older file.
  if (m.input.recorded)
    j["input"] = {{"data", m.input.data},
                  {"transform", m.input.resize > 0 ? "resize-center-crop" : "none"},
                  {"resize", m.input.resize},
                  {"crop", m.input.resize > 0 ? m.spec.image_size : 0}};
  return j;
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
    if (j.contains("input")) {
      const json& in = j.at("input");
      m.input.recorded = true;
      m.input.data = in.at("data").get<std::string>();
      m.input.resize = in.at("resize").get<int64_t>();
      QIL_CHECK(m.input.resize >= 0 && m.input.resize <= (int64_t{1} << 20), file, ": model_meta input.resize ",
                m.input.resize, " is not a size in pixels");
      QIL_CHECK(m.input.resize == 0 || m.input.resize >= m.spec.image_size, file, ": model_meta input.resize ",
                m.input.resize, " is smaller than the center crop of ", m.spec.image_size);
    }
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
    if (s.no_pruning) out[name]["no_pruning"] = true;  // written only when set: other layouts stay as they were
    if (s.lsq_symmetric) out[name]["lsq_symmetric"] = true;
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
    s.no_pruning = v.value("no_pruning", false);
    s.lsq_symmetric = v.value("lsq_symmetric", false);
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

namespace {
// "a, b, c and 4 more": at most `shown` entries of a list, for an error message.
std::string name_list(const std::vector<std::string>& names, size_t shown = 12) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < shown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > shown) out += str_cat(" and ", names.size() - shown, " more");
  return out;
}

bool is_batch_counter(const std::string& n) {  // PyTorch's BatchNorm counter has no role here (momentum is fixed)
  const std::string nbt = "num_batches_tracked";
  return n.size() >= nbt.size() && n.compare(n.size() - nbt.size(), nbt.size(), nbt) == 0;
}

// Every way the file's tensors fail to fit the network, in one error: missing names, names the network does
// not have, and shape (or dtype) mismatches.
void check_tensors_fit(const std::vector<NamedTensor>& all, const std::map<std::string, const engine::Tensor*>& have,
                       const std::string& file, bool allow_missing_quant) {
  std::vector<std::string> missing, unexpected, misfit;
  std::set<std::string> names;
  for (const auto& p : all) {
    names.insert(p.name);
    auto it = have.find(p.name);
    if (it == have.end()) {
      if (!(allow_missing_quant && p.kind == ParamKind::quant)) missing.push_back("'" + p.name + "'");
    } else if (it->second->shape() != p.tensor.shape() || it->second->dtype() != p.tensor.dtype()) {
      const engine::Tensor& t = *it->second;
      const std::string dt = t.dtype() == p.tensor.dtype() ? "" : str_cat(" ", engine::dtype_name(t.dtype()));
      misfit.push_back(str_cat("'", p.name, "' ", t.shape(), dt, " (the model's: ", p.tensor.shape(), ")"));
    }
  }
  for (const auto& [n, t] : have)
    if (!names.count(n) && !is_batch_counter(n)) unexpected.push_back("'" + n + "'");
  if (missing.empty() && unexpected.empty() && misfit.empty()) return;
  std::string msg = str_cat(file, ": its tensors do not fit this network");
  if (!misfit.empty()) msg += str_cat("; ", misfit.size(), " with another shape: tensor ", name_list(misfit, 6));
  if (!missing.empty()) msg += str_cat("; ", missing.size(), " missing (the file has no tensor ", name_list(missing), ")");
  if (!unexpected.empty())
    msg += str_cat("; ", unexpected.size(), " the network does not have (tensor ", name_list(unexpected), ")");
  throw engine::Error(msg + " (is it a checkpoint of another model?)");
}
}  // namespace

void load_model_tensors(Module& model, const engine::NamedTensors& tensors, const std::string& file,
                        bool allow_missing_quant) {
  std::map<std::string, const engine::Tensor*> have;
  for (const auto& [n, t] : tensors) have[n] = &t;
  std::vector<NamedTensor> all = model.named_parameters();
  for (auto& b : model.named_buffers()) all.push_back(b);
  // Check everything first: a failed load leaves the network untouched and names every problem at once.
  check_tensors_fit(all, have, file, allow_missing_quant);
  std::set<std::string> loaded_quant;
  for (auto& p : all) {
    auto it = have.find(p.name);
    if (it == have.end()) continue;
    p.tensor.copy_from(*it->second);
    if (p.kind == ParamKind::quant) loaded_quant.insert(p.name);
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
