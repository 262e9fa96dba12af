// `qil eval`: top-1 / top-5 accuracy and loss of a checkpoint (or a torchvision-named safetensors file) on the
// evaluation split of a dataset, made the way the checkpoint records its inputs; optionally quantized first from
// calibration alone (--quant) or run in integers (--int8). Not the evaluation pass (apps/training/evaluate.h).
#pragma once
#include <cstdint>
#include <string>

#include "apps/limits.h"
#include "apps/model_file.h"

namespace CLI {
class App;
}

namespace apps {

struct EvalOptions {
  std::string checkpoint;  // or a .safetensors file (file describes it)
  std::string data;  // "" = the kind the checkpoint records, else fashion-mnist
  std::string data_dir;
  int64_t batch = 256;
  int64_t subset = 0;
  int64_t workers = 1;
  int64_t threads = 0;
  int64_t max_idx_mb = kDefaultMaxIdxMb;  // the largest IDX file read, MiB (apps/limits.h)
  std::string progress = "auto";
  bool json = false;
  // Calibration-only quantization: quantize a full-precision checkpoint at these widths, calibrate on the
  // data's training images, evaluate. "" = evaluate the network as saved.
  std::string quant;
  std::string quantizer = quant::kDefaultQuantizer;  // with quant: a family of quant/registry.h
  std::string first_last = "fp";
  std::string weight_calib = "mse";  // with quant: max | mse (QIL weight intervals), as qil train
  std::string act_calib = "mse";  // with quant: percentile | mse (QIL activation intervals)
  int64_t calib_batches = 8;
  bool int8 = false;  // integer inference for the layers whose weights and input are quantized (docs/int8.md)
  std::string precision = "fp32";  // fp32 | bf16 (convolutions and linear layers)
  ModelFileOptions file;  // for a safetensors file: what it does not say itself
};
void add_eval_flags(CLI::App& app, EvalOptions& o);
void add_eval_flags(CLI::App& app, EvalOptions& o);
int run_eval(const EvalOptions& o);

}  // namespace apps
