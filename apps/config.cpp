// One table of fields drives the flags, the config file and the resolved-config writer, so a new option is
// added in one place.
#include "apps/config.h"

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include <iomanip>
#include <sstream>
#include <variant>

#include "apps/stages.h"
#include "engine/check.h"

namespace apps {

using engine::Error;
using engine::str_cat;

namespace {

using FieldPtr = std::variant<std::string*, int64_t*, double*, bool*, uint64_t*>;
struct Field {
  const char* name;  // flag name without dashes; the TOML key (dashes or underscores)
  FieldPtr ptr;
  const char* help;
};

std::vector<Field> fields(TrainConfig& c) {
  return {
      {"model", &c.model, "model name (see `qil models`)"},
      {"data", &c.data, "training data: fashion-mnist | idx | cifar10 | cifar100 | imagenet"},
      {"data-dir", &c.data_dir, "folder of the training data (fashion-mnist default: /usr/share/datasets/fashion-mnist)"},
      {"eval-data", &c.eval_data, "evaluation data kind (default: the training data's own test split)"},
      {"eval-data-dir", &c.eval_data_dir, "folder of the evaluation data"},
      {"val-size", &c.val_size, "images held out of the training set to pick `best`"},
      {"train-subset", &c.train_subset, "train on the first N training images only (0 = all)"},
      {"test-subset", &c.test_subset, "evaluate on the first N test images only (0 = all)"},
      {"image-size", &c.image_size, "input side in pixels (0 = the data's own; ImageNet 224)"},
      {"augment", &c.augment, "training augmentation: comma list of crop, flip; or none"},
      {"crop-padding", &c.crop_padding, "zero padding of the random crop, in pixels"},
      {"max-bad-files", &c.max_bad_files, "imagenet: undecodable files skipped (with a warning) before the run stops"},
      {"batch", &c.batch, "batch size (per process)"},
      {"lr", &c.lr, "base learning rate of the weights"},
      {"momentum", &c.momentum, "SGD momentum"},
      {"nesterov", &c.nesterov, "Nesterov momentum"},
      {"weight-decay", &c.weight_decay, "weight decay of conv and linear weights (none on BN, biases, quantizers)"},
      {"schedule", &c.schedule, "LR schedule within each stage: cosine | multistep | constant"},
      {"milestones", &c.milestones, "multistep: comma-separated epochs (within a stage) where LR is multiplied by --lr-gamma"},
      {"lr-gamma", &c.lr_gamma, "multistep LR factor"},
      {"warmup-epochs", &c.warmup_epochs, "linear LR warm-up at the start of each stage, in epochs"},
      {"label-smoothing", &c.label_smoothing, "label smoothing of the cross-entropy"},
      {"stages", &c.stages, "bit widths per stage, e.g. 32,4,3,2 or w4a8 (32 = full precision)"},
      {"stage-epochs", &c.stage_epochs, "epochs per stage, one number or one per stage (default: --epochs)"},
      {"stage-lr", &c.stage_lr, "base LR per stage, one number or one per stage (default: --lr), e.g. 0.05,0.005,0.005"},
      {"epochs", &c.epochs, "epochs of each stage when --stage-epochs is not given"},
      {"quant-lr-scale", &c.quant_lr_scale, "quantizer parameters' LR as a multiple of the weights' LR"},
      {"quant-grad-scale", &c.quant_grad_scale, "quantizer gradients: sqrt (each layer's scaled by 1/sqrt(N*levels)) | relative (c, d, out_scale "
       "by their value squared: steps in log-space) | none"},
      {"fix-gamma", &c.fix_gamma, "pin the weight transformer's gamma to 1"},
      {"act-quant-lr-scale", &c.act_quant_lr_scale,
       "activation intervals' LR as a multiple of the quantizer LR (their loss sensitivity is far below the weight "
       "intervals', docs/qil.md)"},
      {"freeze-intervals", &c.freeze_intervals,
       "keep every quantizer's c, d, gamma at their calibration values (the weights and output scales still train)"},
      {"quant-recipe", &c.quant_recipe,
       "qil (default: per-layer gradient balancing, learned output scales) | paper (the paper's rule alone: raw "
       "interval gradients, output scales fixed at their least-squares fit)"},
      {"first-last", &c.first_last, "first conv and last linear: fp | 8 (8-bit)"},
      {"calib-batches", &c.calib_batches, "batches observed to initialize the intervals of a new quantized stage"},
      {"init", &c.init, "checkpoint (or safetensors) to start the first stage from"},
      {"freeze-weights", &c.freeze_weights, "quantizer-only training: weights and BatchNorm frozen"},
      {"targets", &c.targets, "training targets: labels | teacher (the --init network's predictions; for data whose labels are another task)"},
      {"out", &c.out, "run directory (default runs/<model>-<stages>)"},
      {"resume", &c.resume, "continue the run in this directory from its last checkpoint"},
      {"seed", &c.seed, "seed of initialization, data order and augmentation"},
      {"threads", &c.threads, "compute threads (0 = OpenMP's default)"},
      {"workers", &c.workers, "data decode threads"},
      {"progress", &c.progress, "progress display: auto | bar | lines | none"},
      {"stop-after-steps", &c.stop_after_steps, "stop as if interrupted after N optimizer steps (saves last.ckpt; for testing --resume)"},
  };
}

// The shortest decimal that reads back as the same double, always with a '.' or exponent (a TOML float).
std::string shortest(double v) {
  std::string out;
  for (int prec = 6; prec <= 17; ++prec) {
    std::ostringstream os;
    os << std::setprecision(prec) << v;
    out = os.str();
    if (std::stod(out) == v) break;
  }
  if (out.find_first_of(".eEn") == std::string::npos) out += ".0";
  return out;
}

std::string toml_key_to_flag(std::string k) {
  for (char& ch : k)
    if (ch == '_') ch = '-';
  return k;
}

std::string node_to_string(const toml::node& n, const std::string& key, const std::string& path) {
  if (auto s = n.value<std::string>(); s && n.is_string()) return *s;
  if (n.is_boolean()) return *n.value<bool>() ? "true" : "false";
  if (n.is_integer()) return std::to_string(*n.value<int64_t>());
  if (n.is_floating_point()) {
    std::ostringstream os;
    os << std::setprecision(17) << *n.value<double>();
    return os.str();
  }
  if (const toml::array* a = n.as_array()) {
    std::string out;
    for (const toml::node& e : *a) out += (out.empty() ? "" : ",") + node_to_string(e, key, path);
    return out;
  }
  throw Error(str_cat("config ", path, ": key '", key, "' has a value of an unsupported type"));
}

}  // namespace

void add_train_flags(CLI::App& app, TrainConfig& cfg) {
  for (const Field& f : fields(cfg)) {
    const std::string flag = std::string("--") + f.name;
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, bool>) {
            app.add_flag(flag, *p, f.help);
          } else {
            app.add_option(flag, *p, f.help)->capture_default_str();
          }
        },
        f.ptr);
  }
  app.add_option("--config", cfg.config, "TOML file setting any of these flags (flags given here win)");
}

std::string find_config_arg(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) return args[i + 1];
    if (args[i].rfind("--config=", 0) == 0) return args[i].substr(9);
  }
  return "";
}

std::vector<std::string> config_file_tokens(const std::string& path, const CLI::App& app, TrainConfig& cfg) {
  toml::table tbl;
  try {
    tbl = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << e.description() << " at line " << e.source().begin.line;
    throw Error(str_cat("config ", path, ": ", os.str()));
  }
  std::vector<std::string> tokens;
  for (const auto& [k, v] : tbl) {
    const std::string key(k.str());
    if (key == "layers") {
      const toml::table* layers = v.as_table();
      QIL_CHECK(layers, "config ", path, ": 'layers' must be a table of per-layer tables");
      for (const auto& [lname, lv] : *layers) {
        const toml::table* lt = lv.as_table();
        QIL_CHECK(lt, "config ", path, ": layers.", lname.str(), " must be a table");
        LayerOverride o;
        for (const auto& [fk, fv] : *lt) {
          const std::string f(fk.str());
          if (f == "wbits" || f == "abits") {
            auto b = fv.value<int64_t>();
            QIL_CHECK(b && fv.is_integer() && ((*b >= 2 && *b <= 8) || *b == 32), "config ", path, ": layers.",
                      lname.str(), ".", f, " must be an integer in 2..8 or 32");
            (f == "wbits" ? o.wbits : o.abits) = static_cast<int>(*b);
          } else if (f == "exclude") {
            QIL_CHECK(fv.is_boolean(), "config ", path, ": layers.", lname.str(), ".exclude must be true or false");
            o.exclude = *fv.value<bool>();
          } else {
            throw Error(str_cat("config ", path, ": unknown key 'layers.", lname.str(), ".", f,
                                "' (known: wbits, abits, exclude)"));
          }
        }
        cfg.layers[std::string(lname.str())] = o;
      }
      continue;
    }
    const std::string flag = "--" + toml_key_to_flag(key);
    QIL_CHECK(flag != "--config" && flag != "--resume" && app.get_option_no_throw(flag) != nullptr, "config ",
              path, ": unknown key '", key, "'");
    const std::string value = node_to_string(v, key, path);
    if (value.empty()) continue;  // an empty string is the flag's default ("not given")
    tokens.push_back(flag + "=" + value);
  }
  return tokens;
}

void validate(const TrainConfig& c) {
  QIL_CHECK(c.batch >= 1, "--batch must be at least 1, got ", c.batch);
  QIL_CHECK(c.lr > 0, "--lr must be positive, got ", c.lr);
  QIL_CHECK(c.momentum >= 0 && c.momentum < 1, "--momentum must be in [0, 1), got ", c.momentum);
  QIL_CHECK(c.weight_decay >= 0, "--weight-decay must be >= 0, got ", c.weight_decay);
  QIL_CHECK(c.epochs >= 1, "--epochs must be at least 1, got ", c.epochs);
  QIL_CHECK(c.val_size >= 0, "--val-size must be >= 0, got ", c.val_size);
  QIL_CHECK(c.train_subset >= 0 && c.test_subset >= 0, "--train-subset/--test-subset must be >= 0");
  QIL_CHECK(c.label_smoothing >= 0 && c.label_smoothing < 1, "--label-smoothing must be in [0, 1), got ",
            c.label_smoothing);
  QIL_CHECK(c.warmup_epochs >= 0, "--warmup-epochs must be >= 0, got ", c.warmup_epochs);
  QIL_CHECK(c.schedule == "cosine" || c.schedule == "multistep" || c.schedule == "constant",
            "--schedule: unknown schedule '", c.schedule, "' (cosine, multistep, constant)");
  QIL_CHECK(c.quant_lr_scale > 0, "--quant-lr-scale must be positive, got ", c.quant_lr_scale);
  QIL_CHECK(c.act_quant_lr_scale > 0, "--act-quant-lr-scale must be positive, got ", c.act_quant_lr_scale);
  QIL_CHECK(c.quant_grad_scale == "sqrt" || c.quant_grad_scale == "relative" || c.quant_grad_scale == "none",
            "--quant-grad-scale must be sqrt, relative or none, got '", c.quant_grad_scale, "'");
  QIL_CHECK(c.quant_recipe == "qil" || c.quant_recipe == "paper", "--quant-recipe must be qil or paper, got '",
            c.quant_recipe, "'");
  QIL_CHECK(c.first_last == "fp" || c.first_last == "8", "--first-last must be fp or 8, got '", c.first_last, "'");
  QIL_CHECK(c.calib_batches >= 1, "--calib-batches must be at least 1, got ", c.calib_batches);
  QIL_CHECK(c.stop_after_steps >= 0, "--stop-after-steps must be >= 0, got ", c.stop_after_steps);
  QIL_CHECK(c.threads >= 0, "--threads must be >= 0, got ", c.threads);
  QIL_CHECK(c.workers >= 1, "--workers must be at least 1, got ", c.workers);
  QIL_CHECK(c.max_bad_files >= 0, "--max-bad-files must be >= 0, got ", c.max_bad_files);
  QIL_CHECK(c.crop_padding >= 0, "--crop-padding must be >= 0, got ", c.crop_padding);
  QIL_CHECK(c.image_size >= 0, "--image-size must be >= 0, got ", c.image_size);
  QIL_CHECK(c.progress == "auto" || c.progress == "bar" || c.progress == "lines" || c.progress == "none",
            "--progress must be auto, bar, lines or none, got '", c.progress, "'");
  QIL_CHECK(!c.freeze_weights || !c.init.empty() || !c.resume.empty(),
            "--freeze-weights needs --init: quantizer-only training starts from a trained network");
  QIL_CHECK(c.targets == "labels" || c.targets == "teacher", "--targets must be labels or teacher, got '", c.targets, "'");
  QIL_CHECK(c.targets == "labels" || !c.init.empty() || !c.resume.empty(),
            "--targets teacher needs --init: the teacher is the network it names");
  parse_stages(c.stages, c.stage_epochs.empty() ? std::to_string(c.epochs) : c.stage_epochs, c.stage_lr);
  if (c.augment != "none") {
    std::stringstream ss(c.augment);
    std::string a;
    while (std::getline(ss, a, ','))
      QIL_CHECK(a == "crop" || a == "flip", "--augment: unknown augmentation '", a, "' (crop, flip, none)");
  }
}

std::string to_toml(const TrainConfig& cfg) {
  TrainConfig c = cfg;  // fields() needs non-const pointers
  std::ostringstream os;
  os << "# Resolved configuration of this run; `qil train --config FILE` reads it back.\n";
  for (const Field& f : fields(c)) {
    std::string key = f.name;
    for (char& ch : key)
      if (ch == '-') ch = '_';
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::string>) {
            if (key == "resume" || key == "config") return;  // a run's config never points elsewhere
            os << key << " = " << toml::value<std::string>(*p) << "\n";
          } else if constexpr (std::is_same_v<T, bool>) {
            os << key << " = " << (*p ? "true" : "false") << "\n";
          } else if constexpr (std::is_same_v<T, double>) {
            os << key << " = " << shortest(*p) << "\n";
          } else {
            if (key == "stop_after_steps") return;  // a test hook, never part of a run's configuration
            os << key << " = " << *p << "\n";
          }
        },
        f.ptr);
  }
  for (const auto& [name, o] : c.layers) {
    os << "\n[layers.\"" << name << "\"]\n";
    if (o.wbits) os << "wbits = " << o.wbits << "\n";
    if (o.abits) os << "abits = " << o.abits << "\n";
    if (o.exclude) os << "exclude = true\n";
  }
  return os.str();
}

}  // namespace apps
