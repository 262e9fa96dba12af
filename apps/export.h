// A trained network's tensors as qil exports them in safetensors files: float tensors under torchvision's names
// (quantized layers as the effective weight w̄·s they compute with), or integer weight codes with their scales
// and the activation quantizers' parameters, with the metadata that says how to read them; the effective weight
// and weight codes are also what the ONNX graph (apps/export_onnx.h) is made of. Not the `qil export` command
// (export_cmd.h) and not reading such files back (model_file.h, which names their format strings).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "apps/model_file.h"
#include "engine/serialize.h"
#include "layers/model_io.h"

namespace apps {

// Tensors and "__metadata__" of an export, before they are written.
struct ExportedModel {
  engine::NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};

// What a file says about the network's input, from its checkpoint (apps::network_input): "in_channels",
// "image_size", "input_mean", "input_std" (JSON lists), and where the checkpoint records them
// "input_transform" (resize-center-crop with "input_resize", or none: images at their own size) and
// "input_data" (the kind trained on). The metadata of every export format.
std::map<std::string, std::string> input_metadata(const layers::ModelMeta& meta);

// The weight a layer computes with: w̄·s when its weights are quantized, w·s when only its input is, w when it
// is full precision. A new tensor, no autograd history.
engine::Tensor effective_weight(const layers::QuantizableModule& layer);

// A layer with quantized weights as int8 codes and the scale that turns them into the weight it computes with:
// w̄·out_scale = codes·scale (QIL, DoReFa, PACT: odd or symmetric codes in [−q, q]; LSQ: [−2^(b−1), 2^(b−1)−1]).
// Weights whose codes do not fit int8 (8-bit DoReFa) are an error naming the layer.
struct WeightCodes {
  engine::Tensor codes;  // s8, the weight's shape
  float scale;
};
WeightCodes weight_codes(const layers::QuantizableModule& layer, const std::string& name);

// Every parameter and buffer under its own name, quantized layers' `weight` replaced by effective_weight;
// quantizer parameters (weight_quant.*, act_quant.*, out_scale) only when with_quant_params.
ExportedModel export_float(layers::Module& model, const layers::ModelMeta& meta, bool with_quant_params);

// Layers with quantized weights: `<layer>.weight_int` (s8 codes round(ŵ·q_W)) and `<layer>.weight_scale`
// (f32 scalar s/q_W), so that w̄·s = code × scale. Layers with quantized inputs: `<layer>.act_quant.{c,d,bits}`
// (f32 scalars). Everything else (full-precision weights, scaled by s where only the input is quantized,
// biases, BatchNorm) as f32 under its own name. The metadata says how to dequantize.
ExportedModel export_int(layers::Module& model, const layers::ModelMeta& meta);

}  // namespace apps
