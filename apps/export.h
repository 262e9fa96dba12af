// `qil export` and `qil predict`: a trained network out of qil. export writes safetensors, either float
// tensors under torchvision's names (quantized layers as the effective weight w̄·s they compute with) or
// integer weight codes with their scales and the activation quantizers' parameters, or the whole network as
// an ONNX graph (apps/export_onnx.h); predict runs a NumPy `.npy` batch through a checkpoint (or
// torchvision-named safetensors, apps/model_file.h) and writes the logits as `.npy`. No TorchScript.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "apps/model_file.h"
#include "layers/model_io.h"
#include "engine/serialize.h"

namespace CLI {
class App;
}

namespace apps {

// The value of "format" in the metadata of each kind of file.
constexpr const char* kExportFormatFloat = "qil-export-v1";
constexpr const char* kExportFormatInt = "qil-export-int-v1";

struct ExportOptions {
  std::string checkpoint;
  std::string out;
  std::string format = "safetensors";  // safetensors | int
  bool with_quant_params = false;      // safetensors: also <layer>.weight_quant.c ... and <layer>.out_scale
};
void add_export_flags(CLI::App& app, ExportOptions& o);
int run_export(const ExportOptions& o);

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

struct PredictOptions {
  std::string checkpoint;  // or a .safetensors file (file describes it)
  std::string input;
  std::string output;
  int64_t batch = 64;
  int64_t threads = 0;  // 0 = OpenMP's default
  bool int8 = false;    // integer inference for the layers whose weights and input are quantized
  std::string precision = "fp32";  // fp32 | bf16 (convolutions and linear layers)
  ModelFileOptions file;  // for a safetensors file: what it does not say itself
};

// `--int8` of eval and predict: its help text, and switching integer inference on for every layer whose weights
// and input are both quantized (layers::set_int8_inference), with a line on stderr saying which layers run it.
// A network with no such layer is an error naming the checkpoint.
extern const char* const kInt8FlagHelp;
void enable_int8_inference(layers::Module& model, const std::string& checkpoint);
void add_predict_flags(CLI::App& app, PredictOptions& o);
int run_predict(const PredictOptions& o);

// Logits (N, K) of x (N, C, H, W), in eval mode without gradients, `batch` images at a time. x must have the
// network's C, H, W (spec); `where` names the input in errors.
engine::Tensor predict_logits(layers::Module& model, const layers::ModelSpec& spec, const engine::Tensor& x,
                              int64_t batch, const std::string& where);

}  // namespace apps
