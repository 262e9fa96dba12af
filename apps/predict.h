// `qil predict`: a NumPy `.npy` batch through a checkpoint (or torchvision-named safetensors, apps/model_file.h),
// the logits written as `.npy`. No TorchScript.
#pragma once
#include <cstdint>
#include <string>

#include "apps/model_file.h"
#include "engine/tensor.h"
#include "layers/model_io.h"

namespace CLI {
class App;
}

namespace apps {

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
void add_predict_flags(CLI::App& app, PredictOptions& o);
int run_predict(const PredictOptions& o);

// Logits (N, K) of x (N, C, H, W), in eval mode without gradients, `batch` images at a time. x must have the
// network's C, H, W (spec); `where` names the input in errors.
engine::Tensor predict_logits(layers::Module& model, const layers::ModelSpec& spec, const engine::Tensor& x,
                              int64_t batch, const std::string& where);

}  // namespace apps
