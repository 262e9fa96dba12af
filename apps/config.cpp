// One table of typed fields drives the flags, the config file and the resolved-config writer, so a new option
// is added in one place. The config file goes through the same CLI11 options as the command line: one
// conversion, one set of checks, whichever way a value arrives.
#include "apps/config.h"

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <variant>

#include "apps/machine.h"
#include "apps/limits.h"
#include "engine/check.h"

namespace apps {

using engine::Error;
using engine::str_cat;

namespace {

using FieldPtr = std::variant<std::string*, int64_t*, double*, bool*, uint64_t*, std::vector<std::string>*,
                              std::vector<int64_t>*, std::vector<double>*>;
struct Field {
  const char* name;  // flag name without dashes; the TOML key (dashes or underscores)
  FieldPtr ptr;
  const char* help;
  std::optional<CLI::Validator> check = std::nullopt;  // applied to each value (each list element)
  const char* bare = nullptr;  // a string flag given without a value takes this one (`--int8-forward` = true)
  // What a config.toml without this key ran as, where that is not the default: a default resolved when the run
  // starts (auto) is recorded as what it resolved to, so a file from before the key means the old behaviour.
  const char* absent = nullptr;
};

CLI::Validator at_least(const char* flag, double min) {
  return number_check(std::string("--") + flag, [min](double v) { return v >= min; },
                      str_cat("must be at least ", min), str_cat(">=", min));
}
// Thread counts far beyond the machine overflow the OpenMP runtime's stack (a crash, not an error).
CLI::Validator in_range(const char* flag, double lo, double hi) {
  return number_check(std::string("--") + flag, [lo, hi](double v) { return v >= lo && v <= hi; },
                      str_cat("must be in ", lo, "..", hi), str_cat("[", lo, "..", hi, "]"));
}
CLI::Validator non_negative(const char* flag) {
  return number_check(std::string("--") + flag, [](double v) { return v >= 0; }, "must be >= 0", "NONNEGATIVE");
}
CLI::Validator positive(const char* flag) {
  return number_check(std::string("--") + flag, [](double v) { return v > 0; }, "must be positive", "POSITIVE");
}
CLI::Validator unit_interval(const char* flag) {  // [0, 1)
  return number_check(std::string("--") + flag, [](double v) { return v >= 0 && v < 1; }, "must be in [0, 1)",
                      "[0,1)");
}
CLI::Validator stage_entry() {
  return CLI::Validator([](std::string& s) { return training::parse_stage_entry(s), std::string(); },
                        "32, 2..8 or wNaM");
}
// One of a few names. CLI::IsMember would say "--progress: x not in {auto,bar,lines,none}"; these keep the
// wording users and tests know: "--progress must be auto, bar, lines or none, got 'x'".
CLI::Validator one_of(const char* flag, std::vector<std::string> names) {
  std::string list;
  for (size_t i = 0; i < names.size(); ++i)
    list += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  std::string help;
  for (const std::string& n : names) help += (help.empty() ? "" : "|") + n;
  return CLI::Validator(
      [flag = std::string("--") + flag, names, list](std::string& s) {
        QIL_CHECK(std::find(names.begin(), names.end(), s) != names.end(), flag, " must be ", list, ", got '", s, "'");
        return std::string();
      },
      "{" + help + "}");
}
CLI::Validator schedule_name() {
  return CLI::Validator(
      [](std::string& s) {
        QIL_CHECK(s == "cosine" || s == "multistep" || s == "constant", "--schedule: unknown schedule '", s,
                  "' (cosine, multistep, constant)");
        return std::string();
      },
      "cosine | multistep | constant");
}

// `--quantizer`'s help: each family of the registry and what it learns.
const char* quantizer_help() {
  static const std::string help = [] {
    std::string families;
    for (const quant::QuantizerFamily& f : quant::quantizer_families())
      families += (families.empty() ? "" : " | ") + f.name + " (" + f.summary + ")";
    return "quantizer of every quantized layer (docs/quantizers.md): " + families;
  }();
  return help.c_str();
}

// Model, data and optimization.
std::vector<Field> data_and_optimizer_fields(TrainConfig& c) {
  using CLI::IsMember;
  return {
      {"model", &c.model, "model name (see `qil models`)"},
      {"precision", &c.precision, kPrecisionHelp, one_of("precision", {"fp32", "bf16"})},
      {"int8-forward", &c.int8_forward,
       "auto | true | false. Quantized layers (weights and input quantized) compute their training "
       "forward in integers: levels in, exact int32 sums, one scale out; backward stays float (docs/int8.md). auto "
       "(the default): on where it was measured faster, fp32 on a CPU whose int8 kernels have VNNI with images of "
       "224 pixels or more a side; the run's log and config.toml say what auto chose",
       one_of("int8-forward", {"auto", "true", "false"}), "true", "false"},
      {"data", &c.data, "training data: fashion-mnist | idx | cifar10 | cifar100 | imagenet"},
      {"data-dir", &c.data_dir, "folder of the training data (fashion-mnist default: /usr/share/datasets/fashion-mnist)"},
      {"eval-data", &c.eval_data, "evaluation data kind (default: the training data's own test split)"},
      {"eval-data-dir", &c.eval_data_dir, "folder of the evaluation data"},
      {"val-size", &c.val_size, "images held out of the training set to pick `best`", non_negative("val-size")},
      {"train-subset", &c.train_subset, "train on the first N training images only (0 = all)", non_negative("train-subset")},
      {"test-subset", &c.test_subset, "evaluate on the first N test images only (0 = all)", non_negative("test-subset")},
      {"image-size", &c.image_size, "input side in pixels (0 = the data's own; ImageNet 224)", non_negative("image-size")},
      {"augment", &c.augment, "training augmentation: comma list of crop, flip; or none", IsMember({"crop", "flip", "none"})},
      {"crop-padding", &c.crop_padding, "zero padding of the random crop, in pixels",
       in_range("crop-padding", 0, 64)},
      {"max-bad-files", &c.max_bad_files, "imagenet: undecodable files skipped (with a warning) before the run stops", non_negative("max-bad-files")},
      {"batch", &c.batch, "batch size per process (and per micro-batch with --accumulate)", at_least("batch", 1)},
      {"accumulate", &c.accumulate,
       "micro-batches of --batch images per optimizer step: the step uses their mean gradient (global batch = "
       "batch x accumulate x ranks; BatchNorm still sees each micro-batch alone; docs/cluster.md)",
       in_range("accumulate", 1, 65536)},
      {"lr", &c.lr, "base learning rate of the weights", positive("lr")},
      {"momentum", &c.momentum, "SGD momentum", unit_interval("momentum")},
      {"nesterov", &c.nesterov, "Nesterov momentum"},
      {"weight-decay", &c.weight_decay, "weight decay of conv and linear weights (none on BN, biases, quantizers)", non_negative("weight-decay")},
      {"schedule", &c.schedule, "LR schedule within each stage: cosine | multistep | constant", schedule_name()},
      {"milestones", &c.milestones, "multistep: comma-separated epochs (within a stage) where LR is multiplied by --lr-gamma", positive("milestones")},
      {"lr-gamma", &c.lr_gamma, "multistep LR factor", positive("lr-gamma")},
      {"warmup-epochs", &c.warmup_epochs, "linear LR warm-up at the start of each stage, in epochs", non_negative("warmup-epochs")},
      {"label-smoothing", &c.label_smoothing, "label smoothing of the cross-entropy", unit_interval("label-smoothing")},
  };
}

// Stages, quantization and the run itself.
std::vector<Field> quantization_and_run_fields(TrainConfig& c) {
  return {
      {"stages", &c.stages, "bit widths per stage, e.g. 32,4,3,2 or w4a8 (32 = full precision)", stage_entry()},
      {"stage-epochs", &c.stage_epochs, "epochs per stage, one number or one per stage (default: --epochs)", at_least("stage-epochs", 1)},
      {"stage-lr", &c.stage_lr, "base LR per stage, one number or one per stage (default: --lr), e.g. 0.05,0.005,0.005", positive("stage-lr")},
      {"epochs", &c.epochs, "epochs of each stage when --stage-epochs is not given", at_least("epochs", 1)},
      {"quant-lr-scale", &c.quant_lr_scale, "quantizer parameters' LR as a multiple of the weights' LR", positive("quant-lr-scale")},
      {"quant-grad-scale", &c.quant_grad_scale,
       "quantizer gradients: sqrt (each layer's c, d, gamma scaled by 1/sqrt(N*levels)) | relative (c and d by "
       "d squared, out_scale by its square: steps relative to the interval's width) | none",
       one_of("quant-grad-scale", {"sqrt", "relative", "none"})},
      {"fix-gamma", &c.fix_gamma, "pin the weight transformer's gamma to 1"},
      {"weight-calib", &c.weight_calib,
       "how calibration sets a QIL weight interval [0, p]: mse (default: p minimizing the error of the "
       "least-squares-scaled quantized weights) | max (p = max|w|; at 2 bits it zeroes most weights, docs/qil.md)",
       one_of("weight-calib", {"max", "mse"})},
      {"act-calib", &c.act_calib,
       "how calibration sets a QIL activation interval [0, p]: mse (default: the least-squares clip point, as "
       "--weight-calib mse) | percentile (p = the 99.9th percentile)",
       one_of("act-calib", {"percentile", "mse"})},
      {"recalibrate-weights", &c.recalibrate_weights,
       "at a stage that changes the weight width, calibrate the weight intervals (and output scales) again "
       "instead of keeping the previous stage's"},
      {"recalibrate-activations", &c.recalibrate_activations,
       "at a stage that changes the activation width, calibrate the activation intervals (and output scales) "
       "again instead of keeping the previous stage's"},
      {"act-quant-lr-scale", &c.act_quant_lr_scale,
       "activation intervals' LR as a multiple of the quantizer LR (their loss sensitivity is far below the weight "
       "intervals', docs/qil.md)",
       positive("act-quant-lr-scale")},
      {"freeze-intervals", &c.freeze_intervals,
       "keep every quantizer's c, d, gamma at their calibration values (the weights and output scales still train)"},
      {"freeze-weight-intervals", &c.freeze_weight_intervals,
       "keep the weight quantizers' parameters at their calibration values (activation intervals still learn)"},
      {"freeze-act-intervals", &c.freeze_act_intervals,
       "keep the activation quantizers' parameters at their calibration values (weight intervals still learn)"},
      {"no-pruning", &c.no_pruning,
       "QIL weights: tie c to d after every step, so the pruning point c - d stays at 0 and only the clipping "
       "point c + d learns (an ablation of the learned pruning interval)"},
      {"quant-recipe", &c.quant_recipe,
       "qil (default: per-layer gradient balancing, learned output scales) | paper (the paper's rule alone: raw "
       "interval gradients, output scales fixed at their least-squares fit)",
       one_of("quant-recipe", {"qil", "paper"})},
      {"quantizer", &c.quantizer, quantizer_help(), one_of("quantizer", quant::quantizer_names())},
      {"lsq-symmetric", &c.lsq_symmetric,
       "LSQ weights on a symmetric grid, Q_N = Q_P = 2^(b-1) - 1: the level count of QIL's weights (ternary at 2 "
       "bits, where LSQ's own grid has 4 levels), for comparisons at equal levels"},
      {"pact-calib", &c.pact_calib,
       "PACT: how calibration sets the first clipping level alpha: percentile (default: the 99.9th percentile of "
       "the inputs) | mse (the least-squares clip point, as QIL's --act-calib mse)",
       one_of("pact-calib", {"percentile", "mse"})},
      {"pact-alpha-decay", &c.pact_alpha_decay,
       "PACT: L2 penalty lambda on each clipping level alpha (adds lambda*alpha to its gradient; 0 = none)",
       non_negative("pact-alpha-decay")},
      {"first-last", &c.first_last,
       "first conv and last linear: fp (full precision, the paper's rule) | 8 (8-bit) | same (each stage's widths; "
       "the first conv's input quantizer is signed)",
       one_of("first-last", {"fp", "8", "same"})},
      {"calib-batches", &c.calib_batches, "batches observed to initialize the intervals of a new quantized stage", at_least("calib-batches", 1)},
      {"init", &c.init, "checkpoint (or safetensors) to start the first stage from"},
      {"freeze-weights", &c.freeze_weights, "quantizer-only training: weights and BatchNorm frozen"},
      {"targets", &c.targets, "training targets: labels | teacher (the --init network's predictions; for data whose labels are another task)", one_of("targets", {"labels", "teacher"})},
      {"distill", &c.distill,
       "knowledge distillation from the --init network at temperature T (0 = off): the loss is "
       "(1 - w)*CE(labels) + w*T^2*CE(teacher's softmax at T), w = --distill-weight (docs/qil.md)",
       non_negative("distill")},
      {"distill-weight", &c.distill_weight, "--distill: the weight w of the teacher's term, in [0, 1]",
       in_range("distill-weight", 0, 1)},
      {"out", &c.out, "run directory (default runs/<model>-<stages>)"},
      {"resume", &c.resume, "continue the run in this directory from its last checkpoint"},
      {"seed", &c.seed, "seed of initialization, data order and augmentation", non_negative("seed")},
      {"threads", &c.threads, "compute threads (0 = OpenMP's default)", in_range("threads", 0, kMaxThreads)},
      {"workers", &c.workers, "data decode threads", in_range("workers", 1, kMaxWorkers)},
      {"max-idx-mb", &c.max_idx_mb, kMaxIdxHelp, in_range("max-idx-mb", 1, kMaxIdxMb)},
      {"progress", &c.progress, "progress display: auto | bar | lines | none", one_of("progress", {"auto", "bar", "lines", "none"})},
      {"checkpoint-every-steps", &c.checkpoint_every_steps,
       "also save last.ckpt every N optimizer steps within an epoch, so a kill loses at most N steps (0 = off; "
       "last.ckpt is always saved every 10 minutes and at the end of each epoch)",
       non_negative("checkpoint-every-steps")},
      {"on-nan", &c.on_nan,
       "a non-finite loss or gradient: stop (the run ends with an error naming the step, stage and tensor; the "
       "checkpoints keep the last good state) | skip (the optimizer step is skipped, counted and reported)",
       one_of("on-nan", {"stop", "skip"})},
      {"stop-after-steps", &c.stop_after_steps, "stop as if interrupted after N optimizer steps (saves last.ckpt; for testing --resume)", non_negative("stop-after-steps")},
      {"rank-check-every", &c.rank_check_every,
       "under mpirun: compare the ranks' parameters every N optimizer steps and at each epoch end, stopping the "
       "run if they differ (0 = at epoch ends only)",
       non_negative("rank-check-every")},
      {"collective-timeout", &c.collective_timeout,
       "under mpirun: seconds a rank may wait for the others in one collective before it ends the job (0 = no "
       "limit)",
       non_negative("collective-timeout")},
      {"allreduce", &c.allreduce,
       "under mpirun, how gradients are averaged: end (one all-reduce of all of them after backward) | overlap "
       "(in buckets of --bucket-mb, each started during backward as soon as its gradients are final; the same "
       "parameters, docs/cluster.md)",
       one_of("allreduce", {"end", "overlap"})},
      {"bucket-mb", &c.bucket_mb, "--allreduce overlap: the largest bucket of gradients, in MiB",
       positive("bucket-mb")},
  };
}

std::vector<Field> fields(TrainConfig& c) {
  std::vector<Field> all = data_and_optimizer_fields(c);
  for (Field& f : quantization_and_run_fields(c)) all.push_back(std::move(f));
  return all;
}

std::string to_key(std::string flag) {
  std::replace(flag.begin(), flag.end(), '-', '_');
  return flag;
}
std::string to_flag(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return "--" + key;
}

template <class T>
std::string join(const std::vector<T>& items, char sep) {
  std::ostringstream os;
  for (size_t i = 0; i < items.size(); ++i) os << (i ? std::string(1, sep) : "") << items[i];
  return os.str();
}

}  // namespace

std::vector<training::Stage> TrainConfig::stage_list() const {
  return training::parse_stages(stages, stage_epochs.empty() ? std::vector<int64_t>{epochs} : stage_epochs, stage_lr);
}

std::string TrainConfig::stages_text(char sep) const { return join(stages, sep); }

void add_train_flags(CLI::App& app, TrainConfig& cfg) {
  for (const Field& f : fields(cfg)) {
    const std::string flag = std::string("--") + f.name;
    CLI::Option* opt = std::visit(
        [&](auto* p) -> CLI::Option* {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, bool>) {
            return app.add_flag(flag, *p, f.help);
          } else if constexpr (CLI::detail::is_mutable_container<T>::value) {
            // Lists are comma-separated ("--stages 32,4"); TakeAll, or the command's TakeLast default would
            // keep the last element only.
            return app.add_option(flag, *p, f.help)
                ->delimiter(',')
                ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
                ->capture_default_str();
          } else if (f.bare) {  // `--flag` alone means f.bare; the help text names the default
            return app.add_option(flag, *p, f.help)
                ->expected(0, 1)
                ->default_str(f.bare)
                ->option_text(str_cat("TEXT (default ", *p, "; alone: ", f.bare, ")"));
          } else {
            return app.add_option(flag, *p, f.help)->capture_default_str();
          }
        },
        f.ptr);
    if (f.check) opt->check(*f.check);
  }
  app.add_option("--config", cfg.config, "TOML file setting any of these flags (flags given here win)");
}

namespace {

[[noreturn]] void config_error(const std::string& path, const std::string& what) {
  throw Error(str_cat("config ", path, ": ", what));
}

// A TOML value as the strings CLI11 reads from a command line: one per scalar, one per array element.
// A TOML value as written in the file, for messages ("3" keeps its quotes).
std::string toml_text(const toml::node& n) {
  std::ostringstream os;
  n.visit([&](const auto& v) { os << v; });
  return os.str();
}

std::vector<std::string> node_values(const toml::node& n, const std::string& key, const std::string& path) {
  if (const toml::array* a = n.as_array()) {
    std::vector<std::string> out;
    for (const toml::node& e : *a) {
      QIL_CHECK(!e.is_array() && !e.is_table(), "config ", path, ": key '", key, "' holds a nested list");
      out.push_back(node_values(e, key, path)[0]);
    }
    return out;
  }
  if (n.is_string()) return {*n.value<std::string>()};
  if (n.is_boolean()) return {*n.value<bool>() ? "true" : "false"};
  if (n.is_integer()) return {std::to_string(*n.value<int64_t>())};
  if (n.is_floating_point()) {
    std::ostringstream os;
    os << toml::value<double>(*n.value<double>());  // the shortest text that reads back as the same double
    return {os.str()};
  }
  config_error(path, str_cat("key '", key, "' has a value of an unsupported type"));
}

// Feeds a file's value through the option, as if given on the command line: CLI11 converts and checks it.
void set_from_file(CLI::Option& opt, const std::vector<std::string>& values, const std::string& key,
                   const std::string& path) {
  const std::string shown = values.size() == 1 ? values[0] : str_cat("[", values.size(), " values]");
  QIL_CHECK(values.size() <= 1 || opt.get_items_expected_max() > 1, "config ", path, ": key '", key,
            "' takes one value, got a list");
  try {
    for (const std::string& v : values) opt.add_result(v);
    opt.run_callback();
  } catch (const CLI::ParseError& e) {
    config_error(path, str_cat("key '", key, "' = '", shown, "': ", e.what()));
  } catch (const Error& e) {
    config_error(path, str_cat("key '", key, "': ", e.what()));
  }
}

// A file's value must have its field's type: a number field given "3" (a string) is refused rather than
// converted, since the file says something else than what was meant. List fields also take one string of
// comma-separated entries, as typed on the command line (stage_epochs = "3,1").
template <class T>
struct Element {  // a field's value type, or its elements' for a list field
  using type = T;
  static constexpr bool list = false;
};
template <class T>
struct Element<std::vector<T>> {
  using type = T;
  static constexpr bool list = true;
};

void check_toml_type(const Field& f, const toml::node& n, const std::string& key, const std::string& path) {
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        constexpr bool list = Element<T>::list;
        using E = typename Element<T>::type;
        auto fits = [](const toml::node& e) {
          if constexpr (std::is_same_v<E, bool>) return e.is_boolean();
          else if constexpr (std::is_integral_v<E>) return e.is_integer();
          else if constexpr (std::is_floating_point_v<E>) return e.is_integer() || e.is_floating_point();
          else return e.is_string();
        };
        const char* want = std::is_same_v<E, bool> ? "true or false" : std::is_integral_v<E> ? "an integer"
                           : std::is_floating_point_v<E>                                    ? "a number"
                                                                                            : "a string";
        bool ok = true;
        if (const toml::array* a = n.as_array()) {
          if (!list) return;  // set_from_file says "takes one value, got a list"
          for (const toml::node& e : *a) ok = ok && fits(e);
        } else {
          // A flag-like string (`bare`: auto | true | false) also reads a boolean, as older files wrote it.
          ok = fits(n) || (list && n.is_string()) || (f.bare && n.is_boolean());
        }
        QIL_CHECK(ok, "config ", path, ": key '", key, "' must be ", want, list ? " or a list of them" : "",
                  ", got ", toml_text(n));
      },
      f.ptr);
}

LayerOverride read_layer_table(const toml::table& lt, const std::string& lname, const std::string& path) {
  LayerOverride o;
  for (const auto& [fk, fv] : lt) {
    const std::string f(fk.str());
    if (f == "wbits" || f == "abits") {
      auto b = fv.value<int64_t>();
      QIL_CHECK(b && fv.is_integer() && ((*b >= 2 && *b <= 8) || *b == 32), "config ", path, ": layers.", lname,
                ".", f, " must be an integer in 2..8 or 32");
      (f == "wbits" ? o.wbits : o.abits) = static_cast<int>(*b);
    } else if (f == "exclude") {
      QIL_CHECK(fv.is_boolean(), "config ", path, ": layers.", lname, ".exclude must be true or false");
      o.exclude = *fv.value<bool>();
    } else if (f == "quantizer") {
      const auto k = fv.value<std::string>();
      const std::vector<std::string> names = quant::quantizer_names();
      QIL_CHECK(k && std::find(names.begin(), names.end(), *k) != names.end(), "config ", path, ": layers.", lname,
                ".quantizer must be ", quant::quantizer_list(", ", " or "));
      o.quantizer = *k;
    } else {
      config_error(path,
                   str_cat("unknown key 'layers.", lname, ".", f, "' (known: wbits, abits, exclude, quantizer)"));
    }
  }
  return o;
}

void read_layer_tables(const toml::node& v, const std::string& path, TrainConfig& cfg) {
  const toml::table* layers = v.as_table();
  QIL_CHECK(layers, "config ", path, ": 'layers' must be a table of per-layer tables");
  for (const auto& [lname, lv] : *layers) {
    const std::string name(lname.str());
    const toml::table* lt = lv.as_table();
    QIL_CHECK(lt, "config ", path, ": layers.", name, " must be a table");
    cfg.layers[name] = read_layer_table(*lt, name, path);
  }
}

// Debian's toml++ prints every float with 17 significant digits ("lr = 0.10000000000000001"). Its relaxed
// precision (6 digits) reads better but loses digits of some values: use it when the text reads back to the
// same table, full precision otherwise.
std::string print_toml(const toml::table& tbl) {
  for (const bool relaxed : {true, false}) {
    std::ostringstream os;
    auto flags = toml::toml_formatter::default_flags;
    if (relaxed) flags |= toml::format_flags::relaxed_float_precision;
    os << toml::toml_formatter(tbl, flags);
    if (!relaxed || toml::parse(os.str()) == tbl) return os.str();
  }
  return "";  // not reached
}

toml::table parse_toml(const std::string& path) {
  std::error_code ec;  // a FIFO would block the read until a writer came
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    config_error(path, "not a regular file");
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    config_error(path, str_cat(e.description(), " at line ", e.source().begin.line));
  }
}

}  // namespace

void read_config_file(const std::string& path, CLI::App& app, TrainConfig& cfg) {
  const toml::table tbl = parse_toml(path);
  for (const auto& [k, v] : tbl) {
    const std::string key(k.str());
    if (key == "layers") {
      read_layer_tables(v, path, cfg);
      continue;
    }
    const std::string flag = to_flag(key);
    CLI::Option* opt = flag == "--config" || flag == "--resume" ? nullptr : app.get_option_no_throw(flag);
    QIL_CHECK(opt, "config ", path, ": unknown key '", key, "'");
    if (opt->count() > 0) continue;  // given on the command line, which wins
    for (const Field& f : fields(cfg))
      if (flag == std::string("--") + f.name) check_toml_type(f, v, key, path);
    const std::vector<std::string> values = node_values(v, key, path);
    if (values.empty() || (values.size() == 1 && values[0].empty())) continue;  // "" or [] = not given
    set_from_file(*opt, values, key, path);
  }
}

void apply_config_file(CLI::App& app, TrainConfig& cfg) {
  namespace fs = std::filesystem;
  std::string path = cfg.config;
  if (!path.empty()) {
    QIL_CHECK(fs::exists(path), "--config: no such file '", path, "'");
  } else if (!cfg.resume.empty()) {  // a resumed run continues with its own settings
    path = (fs::path(cfg.resume) / "config.toml").string();
    QIL_CHECK(fs::exists(path), "--resume: '", cfg.resume, "' is not a run directory (no config.toml)");
  }
  if (!path.empty()) read_config_file(path, app, cfg);
}

void validate(const TrainConfig& c) {
  QIL_CHECK(!c.freeze_weights || !c.init.empty() || !c.resume.empty(),
            "--freeze-weights needs --init: quantizer-only training starts from a trained network");
  QIL_CHECK(c.targets == "labels" || !c.init.empty() || !c.resume.empty(),
            "--targets teacher needs --init: the teacher is the network it names");
  QIL_CHECK(c.distill == 0 || !c.init.empty() || !c.resume.empty(),
            "--distill needs --init: the teacher is the network it names");
  QIL_CHECK(c.distill == 0 || c.targets == "labels",
            "--distill mixes the labels with the teacher's softmax; --targets teacher replaces the labels: give one");
  // A family's own options need a family that reads them (quant/registry.h).
  using quant::Option;
  QIL_CHECK(!c.lsq_symmetric || quant::family_reads(c.quantizer, Option::symmetric_weights),
            "--lsq-symmetric sets LSQ's weight grid: it needs --quantizer ",
            quant::families_reading(Option::symmetric_weights), ", got --quantizer ", c.quantizer);
  QIL_CHECK(c.pact_calib == "percentile" || quant::family_reads(c.quantizer, Option::pact_calib),
            "--pact-calib ", c.pact_calib, " sets PACT's first clipping level: it needs --quantizer ",
            quant::families_reading(Option::pact_calib), ", got --quantizer ", c.quantizer);
  QIL_CHECK(!c.no_pruning || quant::family_reads(c.quantizer, Option::no_pruning),
            "--no-pruning ties QIL's weight interval (c = d): it needs --quantizer ",
            quant::families_reading(Option::no_pruning), ", got --quantizer ", c.quantizer);
  QIL_CHECK(c.schedule != "multistep" || !c.milestones.empty(), "--schedule multistep needs --milestones (e.g. 30,60)");
  QIL_CHECK(c.augment.size() == 1 || std::find(c.augment.begin(), c.augment.end(), "none") == c.augment.end(),
            "--augment: 'none' cannot be combined with other augmentations, got '", join(c.augment, ','), "'");
  bool penalized = quant::family_reads(c.quantizer, Option::l2_penalty);
  for (const auto& [name, o] : c.layers) penalized = penalized || quant::family_reads(o.quantizer, Option::l2_penalty);
  const std::string penalty_readers = quant::families_reading(Option::l2_penalty);
  QIL_CHECK(c.pact_alpha_decay == 0 || penalized, "--pact-alpha-decay applies to PACT's alpha: it needs --quantizer ",
            penalty_readers, " (or a layer with quantizer = \"", penalty_readers, "\" in the config file), got "
            "--quantizer ", c.quantizer);
  c.stage_list();
}

TrainConfig absent_key_config() {
  TrainConfig c;
  for (const Field& f : fields(c))
    if (f.absent) *std::get<std::string*>(f.ptr) = f.absent;
  return c;
}

std::string to_toml(const TrainConfig& cfg) {
  TrainConfig c = cfg;  // fields() needs non-const pointers
  toml::table tbl;
  for (const Field& f : fields(c)) {
    const std::string key = to_key(f.name);
    if (key == "resume" || key == "stop_after_steps") continue;  // a run's config never points elsewhere
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            tbl.insert(key, join(*p, ','));  // as typed on the command line: stages = '32,4'
          } else if constexpr (CLI::detail::is_mutable_container<T>::value) {
            toml::array a;
            for (const auto& v : *p) a.push_back(v);
            tbl.insert(key, std::move(a));
          } else if constexpr (std::is_same_v<T, uint64_t>) {
            tbl.insert(key, static_cast<int64_t>(*p));  // TOML integers are signed 64-bit
          } else {
            tbl.insert(key, *p);
          }
        },
        f.ptr);
  }
  toml::table layers;
  for (const auto& [name, o] : c.layers) {
    toml::table t;
    if (o.wbits) t.insert("wbits", o.wbits);
    if (o.abits) t.insert("abits", o.abits);
    if (o.exclude) t.insert("exclude", true);
    if (!o.quantizer.empty()) t.insert("quantizer", o.quantizer);
    layers.insert(name, std::move(t));
  }
  if (!layers.empty()) tbl.insert("layers", std::move(layers));
  return "# Resolved configuration of this run; `qil train --config FILE` reads it back.\n" + print_toml(tbl) + "\n";
}

}  // namespace apps
