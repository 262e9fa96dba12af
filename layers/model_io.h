// Models in and out of files: what a checkpoint records about the network (architecture, input
// normalization, each layer's quantization), building a network back from it, and strict loading of named
// tensors that names every mismatch, and re-arming the quantizers that received parameters from a file (each
// is told which of its parameters were loaded). The run state (optimizer, position) is
// apps/training/run_state.h's business; files of other formats (safetensors export) are apps/export.h's.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/serialize.h"
#include "layers/models.h"
#include "layers/quantize.h"

namespace layers {

// How the network's inputs were made from the images it was trained on, beyond the channels and side that
// `spec` holds (the "input" object of model_meta). Checkpoints written before it was recorded have none
// (`recorded` false): their readers fall back to what the commands did before and say so.
struct InputRecord {
  bool recorded = false;
  std::string data;     // the data kind trained on: fashion-mnist | idx | mnist | cifar10 | cifar100 | imagenet
  int64_t resize = 0;   // evaluation transform of ImageNet-style folders: shorter side resized to this, then a
                        // center crop of spec.image_size; 0 = the images are used at their own size (IDX, CIFAR)
};

struct ModelMeta {
  std::string model;
  ModelSpec spec;
  std::vector<float> mean, std;  // input normalization the network was trained with
  InputRecord input = {};  // "= {}": a brace initialization that stops at `std` leaves it unrecorded
};

// The bounds a file's model description must keep (a checksum does not make edited values sensible).
constexpr int64_t kMaxMetaChannels = 1024, kMaxMetaClasses = 1000000, kMaxMetaImageSize = 16384;

nlohmann::json meta_to_json(const ModelMeta& m);
// Reads a checkpoint's model description and checks it (check_meta); errors name the file and the field.
ModelMeta meta_from_json(const nlohmann::json& j, const std::string& file);
// Every field of a model description against its meaning, in one place (a new field adds its check here): a
// known model, channels, classes and image size in range, one finite mean and one positive finite std per
// input channel.
void check_meta(const ModelMeta& m, const std::string& file);
// The network sizes alone (channels, classes, image size in the bounds above), for specs read from elsewhere
// (a safetensors file's metadata or tensor shapes): errors name the file and the size.
void check_spec(const ModelSpec& spec, const std::string& file);
// Per-layer quantization of a network: {"layer1.0.conv1": {"quantizer":<family>,"wbits":4,"abits":4,"signed":false,
// "has_wq":true,"has_aq":true, and the families' recorded switches, e.g. "fix_gamma":false}} (quant/registry.h:
// recorded_switches). Keys a file lacks take the defaults files had before them (quantizer: quant::kDefaultQuantizer;
// has_wq/has_aq: the width is below 32; a switch: false).
nlohmann::json quant_layout(Module& model);
// Checks every entry before using it: the layer exists, the widths are 2..8 or 32, the quantizer kind is known,
// the flags are booleans; errors name the file and the layer.
void apply_quant_layout(Module& model, const nlohmann::json& layout, const std::string& file);

// Adds the network's parameters and buffers as "model.<name>" tensor sections, the meta as JSON "model_meta"
// and the quantization layout as JSON "quant_layout".
void add_model(engine::Checkpoint& ck, Module& model, const ModelMeta& meta);

// Copies tensors into the network. Every parameter and buffer of the network must be present with its shape
// and dtype, except quantizer parameters when allow_missing_quant (starting a quantized stage from a
// full-precision file); keys the network does not have are errors (PyTorch's `num_batches_tracked` aside).
// Everything is checked before anything is copied, and one error lists every missing, unexpected and
// misshapen tensor; then every value (finite; BatchNorm variances >= 0; quantizer scales d, γ, s, α > 0),
// naming the first bad tensor and element. Each quantizer is told which of its parameters were loaded
// (quant::Quantizer::parameters_loaded: one that received any counts as calibrated); a layer whose out_scale
// was loaded counts as scale-fitted.
void load_model_tensors(Module& model, const engine::NamedTensors& tensors, const std::string& file,
                        bool allow_missing_quant);

struct LoadedModel {
  std::unique_ptr<Module> model;
  ModelMeta meta;
};
// Builds the network a checkpoint describes, with its quantization, and loads its tensors.
LoadedModel load_model_checkpoint(const std::string& path);

bool is_safetensors_path(const std::string& path);

}  // namespace layers
