// The training configuration: every `qil train` flag, the TOML config file that can set any of them (flags on
// the command line win), per-layer quantization overrides, and the resolved config written into a run.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "layers/quantize.h"

namespace CLI {
class App;
}

namespace apps {

// A per-layer table in the config file: [layers."layer1.0.conv1"] wbits = 3, abits = 4, exclude = false.
using layers::LayerOverride;

struct TrainConfig {
  // Model and data.
  std::string model = "lenet";
  std::string data = "fashion-mnist";  // fashion-mnist | idx | cifar10 | cifar100 | imagenet
  std::string data_dir;                // default for fashion-mnist: Debian's folder
  std::string eval_data;               // default: the training data's own test split
  std::string eval_data_dir;
  int64_t val_size = 5000;             // hold-out from the training set that picks `best`
  int64_t train_subset = 0;            // use only the first N training samples (0 = all)
  int64_t test_subset = 0;             // evaluate only the first N test samples (0 = all)
  int64_t image_size = 0;              // 0 = the data's own size (IDX/CIFAR) or 224 (ImageNet)
  std::string augment = "crop,flip";   // comma list of crop, flip; or none
  int64_t crop_padding = 2;
  int64_t max_bad_files = 100;         // imagenet: undecodable files tolerated before the run stops
  // Optimization.
  int64_t batch = 128;
  double lr = 0.1;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";  // cosine | multistep | constant
  std::string milestones;           // multistep: comma-separated epochs within a stage
  double lr_gamma = 0.1;
  double warmup_epochs = 0;
  double label_smoothing = 0;
  // Stages and quantization.
  std::string stages = "32";
  std::string stage_epochs;  // default: --epochs for every stage
  std::string stage_lr;      // default: --lr for every stage
  int64_t epochs = 10;
  double quant_lr_scale = 1.0;  // quantizer parameters' LR = this x the weights' LR (with sqrt balancing)
  std::string quant_grad_scale = "sqrt";  // sqrt: per-layer 1/sqrt(N*q) gradient balancing; none
  bool fix_gamma = false;
  double act_quant_lr_scale = 1.0;  // activation intervals' LR = this x the quantizer LR
  bool freeze_intervals = false;      // c, d, γ fixed at calibration; weights and output scales train
  std::string quant_recipe = "qil";  // qil | paper: raw gradients and fixed output scales
  std::string first_last = "fp";  // fp | 8: the first conv and the last linear
  int64_t calib_batches = 8;
  std::string init;           // checkpoint or safetensors to start from
  bool freeze_weights = false;  // quantizer-only training
  std::string targets = "labels";  // labels | teacher: the --init network's softmax (data with other labels)
  std::map<std::string, LayerOverride> layers;
  // Run.
  std::string out;     // run directory (default runs/<model>-<stages>)
  std::string resume;  // run directory to continue
  uint64_t seed = 0;
  int64_t threads = 0;  // 0 = OpenMP's default
  int64_t workers = 1;  // data decode threads
  std::string progress = "auto";  // auto | bar | lines | none
  std::string config;             // the TOML file these came from, if any
  int64_t stop_after_steps = 0;   // stop as if interrupted after N steps of this process (resume testing)
};

// Registers every TrainConfig field as a flag on `app`.
void add_train_flags(CLI::App& app, TrainConfig& cfg);
// Reads a TOML config file into command-line tokens (placed before the real ones, so flags win) and the
// per-layer table. Unknown keys are errors naming the key and the file.
std::vector<std::string> config_file_tokens(const std::string& path, const CLI::App& app, TrainConfig& cfg);
// Finds `--config FILE` / `--config=FILE` among raw arguments ("" if absent).
std::string find_config_arg(const std::vector<std::string>& args);
// Validates values that CLI11's checks cannot express; throws engine::Error naming the flag and value.
void validate(const TrainConfig& cfg);
// The resolved configuration as TOML (every field), loadable with --config.
std::string to_toml(const TrainConfig& cfg);

}  // namespace apps
