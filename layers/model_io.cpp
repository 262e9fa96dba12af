// Checkpoint <-> network: meta, quantization layout, strict tensor loading, re-arming the quantizers.
#include "layers/model_io.h"

#include <algorithm>
#include <cmath>
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

namespace {
// An integer field of a file's JSON, range-checked before it is narrowed (a float, a string or 2^32 + 1 in
// an int field is an error naming it, never a wrapped value).
int64_t json_int(const json& j, const char* key, int64_t lo, int64_t hi, const std::string& file, const char* what) {
  const json& v = j.at(key);
  QIL_CHECK(v.is_number_integer(), file, ": ", what, " '", key, "' is ", v.dump(), ", not an integer");
  // Non-negative JSON integers are stored unsigned: compare them unsigned, or 2^64 - 1 would read as -1.
  QIL_CHECK(v.is_number_unsigned()
                ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v.get<uint64_t>()) >= lo
                : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi,
            file, ": ", what, " '", key, "' is ", v.dump(), ", outside ", lo, "..", hi);
  return v.get<int64_t>();
}
}  // namespace

void check_spec(const ModelSpec& spec, const std::string& file) {
  QIL_CHECK(spec.in_channels >= 1 && spec.in_channels <= kMaxMetaChannels, file, ": the network would have ",
            spec.in_channels, " input channels (1..", kMaxMetaChannels, ")");
  QIL_CHECK(spec.num_classes >= 1 && spec.num_classes <= kMaxMetaClasses, file, ": the network would have ",
            spec.num_classes, " classes (1..", kMaxMetaClasses, ")");
  QIL_CHECK(spec.image_size >= 1 && spec.image_size <= kMaxMetaImageSize, file, ": the network would take images of ",
            spec.image_size, " pixels (1..", kMaxMetaImageSize, ")");
}

void check_meta(const ModelMeta& m, const std::string& file) {
  const std::vector<ModelInfo>& infos = model_infos();
  QIL_CHECK(std::any_of(infos.begin(), infos.end(), [&](const ModelInfo& i) { return i.name == m.model; }), file,
            ": model description names an unknown model '", m.model, "'");
  check_spec(m.spec, file);
  // One mean and one std per input channel, and a std the inputs can be divided by.
  for (const auto& [name, v] : {std::pair<const char*, const std::vector<float>*>{"mean", &m.mean}, {"std", &m.std}}) {
    QIL_CHECK(static_cast<int64_t>(v->size()) == m.spec.in_channels, file, ": model description's ", name, " has ",
              v->size(), " values for ", m.spec.in_channels, " input channels");
    for (size_t c = 0; c < v->size(); ++c)
      QIL_CHECK(std::isfinite((*v)[c]) && (name[0] == 'm' || (*v)[c] > 0.f), file, ": model description's ", name,
                "[", c, "] is ", (*v)[c], name[0] == 'm' ? " (must be finite)" : " (must be positive and finite)");
  }
}

ModelMeta meta_from_json(const json& j, const std::string& file) {
  ModelMeta m;
  try {
    QIL_CHECK(j.is_object(), file, ": model description is not a JSON object");
    m.model = j.at("model").get<std::string>();
    const char* what = "model description field";
    m.spec.in_channels = json_int(j, "in_channels", 1, kMaxMetaChannels, file, what);
    m.spec.num_classes = json_int(j, "num_classes", 1, kMaxMetaClasses, file, what);
    m.spec.image_size = json_int(j, "image_size", 1, kMaxMetaImageSize, file, what);
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
  } catch (const json::exception& e) {
    throw Error(str_cat(file, ": model description is incomplete (", e.what(), ")"));
  }
  check_meta(m, file);
  return m;
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
                 {"has_wq", l->weight_quantizer() != nullptr},
                 {"has_aq", l->act_quantizer() != nullptr}};
    for (const quant::RecordedSwitch& r : quant::recorded_switches())
      if (r.written_when_false || s.options.*r.option) out[name][r.key] = s.options.*r.option;
  }
  return out;
}

void apply_quant_layout(Module& model, const json& layout, const std::string& file) {
  QIL_CHECK(layout.is_object(), file, ": quant_layout is not a JSON object");
  std::map<std::string, QuantizableModule*> by_name;
  for (auto& [name, l] : quantizable_layers(model)) by_name[name] = l;
  for (auto& [name, v] : layout.items()) {
    auto it = by_name.find(name);
    QIL_CHECK(it != by_name.end(), file, ": quantized layer '", name, "' does not exist in this model");
    const std::string where = str_cat(file, ": quant_layout of layer '", name, "'");
    QIL_CHECK(v.is_object(), where, " is not a JSON object");
    LayerQuantSpec s;
    int wbits = 32, abits = 32;
    bool has_wq = false, has_aq = false;
    try {
      s.quantizer = v.value("quantizer", std::string(quant::kDefaultQuantizer));
      s.signed_input = v.value("signed", false);
      for (const quant::RecordedSwitch& r : quant::recorded_switches()) s.options.*r.option = v.value(r.key, false);
      // A width is what the levels and the integer export are sized by: 2..8 bits, or 32 = not quantized.
      for (auto [key, bits] : {std::pair<const char*, int*>{"wbits", &wbits}, {"abits", &abits}}) {
        if (!v.contains(key)) continue;
        const int64_t b = json_int(v, key, 2, 32, where, "field");
        QIL_CHECK(b <= 8 || b == 32, where, ": ", key, " is ", b, " (a width is 2..8 bits, or 32)");
        *bits = static_cast<int>(b);
      }
      has_wq = v.value("has_wq", wbits < 32);
      has_aq = v.value("has_aq", abits < 32);
    } catch (const json::exception& e) {
      throw Error(str_cat(where, " is not readable (", e.what(), ")"));
    }
    try {  // the quantizer factory names an unknown kind, not the file
      // Create the quantizers the file has (at their widths, even where the current stage switched one off)...
      s.wbits = has_wq ? (wbits < 32 ? wbits : 8) : 32;
      s.abits = has_aq ? (abits < 32 ? abits : 8) : 32;
      it->second->set_quant(s);
      // ...then the widths it ran at.
      s.wbits = wbits;
      s.abits = abits;
      it->second->set_quant(s);
    } catch (const Error& e) {
      throw Error(str_cat(where, ": ", e.what()));
    }
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
// A checksum proves the bytes are the ones written, not that they make sense: every value must be finite, a
// BatchNorm variance non-negative (its square root divides), and a quantizer's scales — QIL's d and γ, LSQ's
// step s, PACT's α, which its ops divide by or raise to — positive.
void check_tensor_values(const NamedTensor& p, const engine::Tensor& t, const std::string& file) {
  if (t.dtype() != engine::DType::f32) return;  // the network's parameters and buffers are all f32
  const std::vector<float> v = t.to_vector();
  const std::string leaf = p.name.substr(p.name.rfind('.') + 1);
  const bool non_negative = leaf == "running_var";
  const bool positive = p.kind == ParamKind::quant && (leaf == "d" || leaf == "gamma" || leaf == "s" || leaf == "alpha");
  for (size_t i = 0; i < v.size(); ++i) {
    QIL_CHECK(std::isfinite(v[i]), file, ": tensor '", p.name, "' holds ", v[i], " at element ", i,
              " (every value must be finite)");
    QIL_CHECK(!non_negative || v[i] >= 0.f, file, ": tensor '", p.name, "' holds ", v[i], " at element ", i,
              " (a variance is never negative)");
    QIL_CHECK(!positive || v[i] > 0.f, file, ": tensor '", p.name, "' holds ", v[i], " at element ", i,
              " (a quantizer's ", leaf, " must be positive)");
  }
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
  for (const auto& p : all)
    if (auto it = have.find(p.name); it != have.end()) check_tensor_values(p, *it->second, file);
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
