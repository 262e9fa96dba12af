// The training configuration: every `qil train` flag as a typed field, the CLI11 options bound to those fields
// (with their validators), the TOML config file that can set any of them (flags on the command line win),
// per-layer quantization overrides, and the resolved config written into a run directory.
// Not the training loop (apps/training/) and not the other subcommands' options (each has its own apps/ file).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "apps/limits.h"
#include "apps/training/stages.h"
#include "layers/quantize.h"

namespace CLI {
class App;
}

namespace apps {

// A per-layer table in the config file: [layers."layer1.0.conv1"] wbits = 3, abits = 4, exclude = false,
// quantizer = <a family of quant/registry.h>.
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
  std::vector<std::string> augment = {"crop", "flip"};  // crop, flip; or none
  int64_t crop_padding = 2;
  int64_t max_bad_files = 100;         // imagenet: undecodable files tolerated before the run stops
  // Optimization.
  int64_t batch = 128;       // per process and micro-batch: the global batch is batch x accumulate x ranks
  int64_t accumulate = 1;    // micro-batches whose mean gradient makes one optimizer step
  double lr = 0.1;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";  // cosine | multistep | constant
  std::vector<double> milestones;   // multistep: epochs within a stage
  double lr_gamma = 0.1;
  double warmup_epochs = 0;
  double label_smoothing = 0;
  // Stages and quantization.
  std::vector<std::string> stages = {"32"};  // one entry per stage: 32, 4, w4a8, ...
  std::vector<int64_t> stage_epochs;  // one for all stages or one per stage; empty = --epochs for every stage
  std::vector<double> stage_lr;       // one for all stages or one per stage; empty = --lr for every stage
  int64_t epochs = 10;
  double quant_lr_scale = 1.0;  // quantizer parameters' LR = this x the weights' LR (with sqrt balancing)
  std::string quant_grad_scale = "sqrt";  // sqrt: per-layer 1/sqrt(N*q) gradient balancing; none
  bool fix_gamma = false;
  // How calibration picks a QIL interval: weights max | mse, activations percentile | mse. mse by default: at 2 and
  // 3 bits it starts far closer (docs/results.md, "Calibration"); the library's QuantPlan keeps max | percentile.
  std::string weight_calib = "mse";
  std::string act_calib = "mse";
  bool recalibrate_weights = false;  // a new weight width calibrates the weight interval again
  bool recalibrate_activations = false;  // a new activation width calibrates the activation interval again
  double act_quant_lr_scale = 1.0;  // activation intervals' LR = this x the quantizer LR
  bool freeze_intervals = false;      // c, d, γ fixed at calibration; weights and output scales train
  bool freeze_weight_intervals = false;  // the same for the weight quantizers only
  bool freeze_act_intervals = false;     // the same for the activation quantizers only
  bool no_pruning = false;               // QIL weights: c tied to d (pruning point 0)
  bool lsq_symmetric = false;            // LSQ weights: Q_N = Q_P (ternary at 2 bits)
  std::string pact_calib = "percentile";  // PACT: the first alpha from percentile | mse
  std::string quant_recipe = "qil";  // qil | paper: raw gradients and fixed output scales
  std::string quantizer = quant::kDefaultQuantizer;  // every quantized layer's family (quant/registry.h)
  double pact_alpha_decay = 0;       // PACT: L2 penalty λ on each α, as weight decay of α's optimizer group
  std::string first_last = "fp";  // fp | 8 | same: the first conv and the last linear
  int64_t calib_batches = 8;
  std::string init;           // checkpoint or safetensors to start from
  bool freeze_weights = false;  // quantizer-only training
  std::string targets = "labels";  // labels | teacher: the --init network's softmax (data with other labels)
  double distill = 0;             // > 0: distillation from the --init network at this temperature
  double distill_weight = 0.5;    // the soft term's weight w: (1 − w)·CE(labels) + w·T²·CE(teacher)
  std::map<std::string, LayerOverride> layers;
  // Run.
  std::string out;     // run directory (default runs/<model>-<stages>)
  std::string resume;  // run directory to continue
  uint64_t seed = 0;
  int64_t threads = 0;  // 0 = OpenMP's default
  int64_t workers = 1;  // data decode threads
  int64_t max_idx_mb = kDefaultMaxIdxMb;  // the largest IDX file read, MiB (apps/limits.h)
  std::string progress = "auto";  // auto | bar | lines | none
  std::string config;             // the TOML file these came from, if any
  int64_t stop_after_steps = 0;   // stop as if interrupted after N steps of this process (resume testing)
  int64_t checkpoint_every_steps = 0;  // also save last.ckpt every N optimizer steps (0 = only every 10 minutes)
  std::string precision = "fp32";  // fp32 | bf16: convolutions and linear layers (engine::ops::Precision)
  // Quantized layers' training forward in integers (layers::set_int8_forward): auto | true | false. A run records
  // what auto resolved to (resolve_int8_forward), so a resumed run keeps the forward it started with.
  std::string int8_forward = "auto";
  std::string on_nan = "stop";         // stop | skip: a non-finite loss or gradient stops the run, or skips the step
  // Several processes (mpirun).
  int64_t rank_check_every = 100;   // optimizer steps between cross-rank parameter checks (0 = epoch ends only)
  double collective_timeout = 600;  // seconds a collective may wait for the other ranks (0 = forever)
  std::string allreduce = "end";    // end | overlap: gradients averaged after backward, or in buckets during it
  double bucket_mb = 25;            // overlap: the largest bucket, MiB

  // The stage list with each stage's epochs and LR resolved (throws engine::Error naming the bad entry).
  std::vector<training::Stage> stage_list() const;
  // The stage entries as written on the command line, joined by `sep` ("32,4"; "32-4" for directory names).
  std::string stages_text(char sep = ',') const;
};

// Registers every TrainConfig field as a flag on `app`, with the checks CLI11 can run on one value. A value
// that fails a check throws engine::Error naming the flag and the value ("--batch must be at least 1, got 0").
void add_train_flags(CLI::App& app, TrainConfig& cfg);

// After `app` parsed the command line: fills every field the command line did not set from the config file
// (--config FILE, or the resumed run's own config.toml), through the same options and checks.
void apply_config_file(CLI::App& app, TrainConfig& cfg);
// Reads one TOML config file into the fields whose flags `app` did not receive, and the per-layer tables.
// Unknown keys, bad values and TOML syntax errors throw engine::Error naming the key, the value and the file.
void read_config_file(const std::string& path, CLI::App& app, TrainConfig& cfg);

// Checks across fields (stage lists against each other, options that need another); throws engine::Error.
void validate(const TrainConfig& cfg);

// The resolved configuration as TOML (every field but --config, --resume and --stop-after-steps), loadable
// with --config.
std::string to_toml(const TrainConfig& cfg);
// The configuration a config.toml's missing keys stand for (qil compare): the defaults, except a setting whose
// default is resolved when a run starts, which reads as what binaries from before the key did (int8_forward:
// false).
TrainConfig absent_key_config();

}  // namespace apps
