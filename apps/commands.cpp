// eval, models, inspect.
#include "apps/commands.h"

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "apps/data_setup.h"
#include "apps/export.h"
#include "apps/quant_flags.h"
#include "apps/inspect/activations.h"
#include "apps/inspect/page.h"
#include "apps/inspect/target.h"
#include "layers/model_io.h"
#include "apps/training/report.h"
#include "apps/training/stages.h"
#include "apps/training/evaluate.h"
#include "data/imagenet.h"
#include "engine/check.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/serialize.h"
#include "layers/models.h"
#include "layers/quantize.h"

namespace apps {

namespace fs = std::filesystem;
using nlohmann::json;

void add_eval_flags(CLI::App& app, EvalOptions& o) {
  app.add_option("checkpoint", o.checkpoint,
                 "checkpoint (e.g. runs/NAME/best.ckpt), or a .safetensors file with torchvision's names (F32, F16 "
                 "or BF16; the --model ... flags below fill in what it does not say)")
      ->required();
  app.add_option("--data", o.data,
                 "data kind: fashion-mnist | idx | cifar10 | cifar100 | imagenet (default: the kind the checkpoint "
                 "was trained on, else fashion-mnist; another kind is said on stderr)");
  app.add_option("--data-dir", o.data_dir,
                 "data folder (fashion-mnist default: Debian's; imagenet: the folder holding val/<class>/*.JPEG)");
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--subset", o.subset, "evaluate the first N images only (0 = all)");
  add_workers_flag(app, o.workers, "data decode threads");
  add_threads_flag(app, o.threads);
  add_max_idx_flag(app, o.max_idx_mb);
  app.add_option("--progress", o.progress, "auto | bar | lines | none")->capture_default_str();
  app.add_flag("--json", o.json, "print the result as JSON");
  app.add_option("--quant", o.quant,
                 "quantize at these widths first (4, w4a8, ...), with intervals from calibration alone: the "
                 "baseline that training the intervals must beat");
  app.add_option("--quantizer", o.quantizer, "with --quant: qil | lsq | pact | dorefa")
      ->check(CLI::IsMember({"qil", "lsq", "pact", "dorefa"}))
      ->capture_default_str();
  app.add_option("--first-last", o.first_last, "with --quant: first conv and last linear fp | 8 | same (the --quant width)")
      ->check(CLI::IsMember({"fp", "8"}))
      ->capture_default_str();
  app.add_option("--weight-calib", o.weight_calib, "with --quant: QIL weight intervals from mse | max (docs/qil.md)")
      ->check(CLI::IsMember({"max", "mse"}))
      ->capture_default_str();
  app.add_option("--act-calib", o.act_calib, "with --quant: QIL activation intervals from mse | percentile")
      ->check(CLI::IsMember({"percentile", "mse"}))
      ->capture_default_str();
  app.add_option("--calib-batches", o.calib_batches, "with --quant: training batches observed to set the intervals")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  add_model_file_flags(app, o.file);
  app.add_flag("--int8", o.int8, kInt8FlagHelp);
  add_precision_flag(app, o.precision);
}

void add_precision_flag(CLI::App& app, std::string& precision) {
  app.add_option("--precision", precision, kPrecisionHelp)
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

std::string cpu_simd_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> picked;
    for (std::string w; words >> w;)
      if (w == "avx2" || w == "fma" || w.rfind("avx512", 0) == 0 || w.rfind("amx", 0) == 0) picked.insert(w);
    std::string out;
    for (const auto& w : picked) out += (out.empty() ? "" : " ") + w;
    return out.empty() ? "none of avx2, fma, avx512*, amx*" : out;
  }
  return "unknown";
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    const size_t start = line.find_first_not_of(" \t", colon + 1);
    if (colon != std::string::npos && start != std::string::npos) return line.substr(start);
  }
  return "unknown";
}

HostLoad parse_loadavg(const std::string& text) {
  HostLoad h;
  std::istringstream in(text);
  double l1 = 0, l5 = 0, l15 = 0;
  std::string tasks;
  if (!(in >> l1 >> l5 >> l15 >> tasks)) return h;
  h.load1 = l1;
  const size_t slash = tasks.find('/');
  if (slash != std::string::npos && slash > 0 && slash < 9 && tasks.find_first_not_of("0123456789") == slash)
    h.others_running = std::max(0, std::stoi(tasks.substr(0, slash)) - 1);
  return h;
}

HostLoad host_load(int samples) {
  HostLoad out;
  for (int i = 0; i < samples; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::ifstream f("/proc/loadavg");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const HostLoad h = parse_loadavg(text);
    out.load1 = h.load1;
    if (h.others_running >= 0 && (out.others_running < 0 || h.others_running < out.others_running))
      out.others_running = h.others_running;
  }
  return out;
}

HostLoad load_at_start() {
  HostLoad h = host_load(5);
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (local && h.others_running > 0) h.others_running = std::max(0, h.others_running - (std::atoi(local) - 1));
  return h;
}

std::string wait_policy_hint(const HostLoad& h) {
  if (h.others_running <= 0 || std::getenv("OMP_WAIT_POLICY")) return "";
  return engine::str_cat("qil train: ", h.others_running,
                         " other task(s) running on this machine as training starts (load average ", h.load1,
                         "). OpenMP's default spinning wait makes its threads fight them at every barrier (a "
                         "ResNet-20 step: 794 ms spinning, 467 ms passive; docs/performance.md): on a shared "
                         "machine, set OMP_WAIT_POLICY=passive");
}

void apply_precision(const std::string& precision) {
  const engine::ops::Precision p = engine::ops::parse_precision(precision);
  engine::ops::set_precision(p);
  if (p != engine::ops::Precision::bf16 || engine::dist::rank() != 0) return;
  if (engine::ops::bf16_emulated())
    std::cerr << "qil: --precision bf16: this CPU has no native bf16 (that needs " << engine::ops::bf16_isa_note()
              << "; this CPU has: " << cpu_simd_flags()
              << "). Running the exact emulation: operands rounded to bf16 on the f32 kernels, bf16's numerics, no "
                 "faster than fp32."
              << std::endl;
  else
    std::cerr << "qil: --precision bf16: oneDNN's native bf16 kernels (SIMD flags: " << cpu_simd_flags() << ")"
              << std::endl;
}

namespace {
void note(const std::string& text) {
  if (engine::dist::rank() == 0) std::cerr << text << std::endl;
}

// The data `qil eval` reads: --data, else the kind the checkpoint records, else Fashion-MNIST. A kind other than
// the recorded one is a deliberate choice (a network evaluated on other images of the same shape), and said.
std::string eval_data_kind(const EvalOptions& o, const InputGeometry& net) {
  if (o.data.empty()) return net.data.empty() ? "fashion-mnist" : net.data;
  if (!net.data.empty() && o.data != net.data)
    note(engine::str_cat("--data ", o.data, ": ", o.checkpoint, " was trained on ", net.data, " data; evaluating it on ",
                         o.data));
  return o.data;
}

// Whether the network's parameters keep their shapes at another input side (LeNet's fc1 does not).
bool takes_any_size(const layers::ModelMeta& meta, layers::Module& model, int64_t size) {
  layers::ModelSpec spec = meta.spec;
  spec.image_size = size;
  std::unique_ptr<layers::Module> other;
  try {
    other = layers::build_model(meta.model, spec);
  } catch (const engine::Error&) {
    return false;
  }
  // By name: the loaded network also holds its quantizers' parameters, which a fresh one has not.
  std::map<std::string, engine::Shape> shapes;
  for (const auto& p : model.named_parameters()) shapes[p.name] = p.tensor.shape();
  for (const auto& p : other->named_parameters()) {
    auto it = shapes.find(p.name);
    if (it == shapes.end() || it->second != p.tensor.shape()) return false;
  }
  return true;
}

// The checkpoint's geometry, or --image-size instead of it: a deliberate override for ImageNet-style folders
// (said on stderr), refused where the images have a fixed size or the network a fixed input.
InputGeometry eval_geometry(const EvalOptions& o, const layers::LoadedModel& lm, bool checkpoint,
                            int64_t image_size, const std::string& kind) {
  InputGeometry in = network_input(lm.meta);
  if (!checkpoint && !in.recorded) {  // a safetensors file: its side (flags, metadata, the model's), torchvision's resize
    in.recorded = true;
    in.resize = data::ImageNetTransform::default_resize(in.size);
  }
  if (image_size == 0 || (in.recorded && image_size == in.size))
    return kind == "imagenet" ? imagenet_eval_input(in) : in;
  if (image_size == in.size && kind != "imagenet") return in;  // the side the network and the images have
  QIL_CHECK(kind == "imagenet", "--image-size ", image_size, ": ", kind, " images are evaluated at their own size ",
            "(resizing applies to imagenet data only)");
  QIL_CHECK(image_size == in.size || takes_any_size(lm.meta, *lm.model, image_size), "--image-size ", image_size, ": ",
            o.checkpoint, " holds a '", lm.meta.model, "' network built for ", in.size,
            "-pixel inputs, whose layers do not fit another size");
  if (in.recorded || image_size != in.size)
    note(engine::str_cat("--image-size ", image_size, ": evaluating at ", image_size, " pixels (shorter side ",
                         data::ImageNetTransform::default_resize(image_size), ", center crop ", image_size,
                         ") instead of the ", in.size, " pixels ", o.checkpoint,
                         in.recorded ? " was trained at" : " was built for"));
  in.size = image_size;
  in.resize = data::ImageNetTransform::default_resize(image_size);
  in.recorded = true;
  return in;
}

// --quant: the plan applied to layers that have no quantizer yet, calibrated on the training images, made as
// the evaluation images are (`in`).
void quantize_for_eval(layers::LoadedModel& lm, const EvalOptions& o, const std::string& kind,
                       const InputGeometry& in) {
  const training::Stage st = training::parse_stage_entry(o.quant);
  QIL_CHECK(st.quantized(), "--quant ", o.quant, ": a width below 32 is needed");
  for (auto& [name, l] : layers::quantizable_layers(*lm.model))
    QIL_CHECK(!l->weight_quantizer() && !l->act_quantizer(), "--quant: ", o.checkpoint,
              " is already quantized (layer ", name, "); --quant takes a full-precision checkpoint");
  layers::QuantPlan plan = quant_plan(o.quantizer, o.first_last, o.weight_calib, o.act_calib);
  plan.wbits = st.wbits;
  plan.abits = st.abits;
  layers::apply_quant_plan(*lm.model, plan);
  // The training images as `qil train` holds them out by default (its data flags' defaults), made as `in` says.
  DataOptions data;
  data.data = kind;
  data.data_dir = o.data_dir;
  data.max_idx_mb = o.max_idx_mb;
  const RunData rd = load_run_data(data, &in);
  training::calibrate_on(*lm.model, rd.calib, o.batch, o.calib_batches, o.workers);
}
}  // namespace

int run_eval(const EvalOptions& o) {
  QIL_CHECK(o.batch >= 1, "--batch must be at least 1, got ", o.batch);
  if (o.threads > 0) omp_set_num_threads(static_cast<int>(o.threads));
  // With a checkpoint, --image-size is not a description of the file (as for safetensors) but the evaluation
  // side: eval_geometry decides about it.
  ModelFileOptions file = o.file;
  const bool checkpoint = !layers::is_safetensors_path(o.checkpoint);
  if (checkpoint) file.image_size = 0;
  layers::LoadedModel lm = load_model_file(o.checkpoint, file, true);
  const std::string kind = eval_data_kind(o, network_input(lm.meta));
  const InputGeometry in = eval_geometry(o, lm, checkpoint, checkpoint ? o.file.image_size : 0, kind);
  if (!o.quant.empty()) quantize_for_eval(lm, o, kind, in);
  if (o.int8) enable_int8_inference(*lm.model, o.checkpoint);
  std::string name;
  auto ds = load_eval_data(kind, o.data_dir, o.subset, in, &name, o.max_idx_mb);
  // Under mpirun the ranks share the images out (training::evaluate) and rank 0 reports.
  const bool lead = engine::dist::rank() == 0;
  training::EvalResult r =
      training::evaluate(*lm.model, ds, o.batch, o.workers,
                         lead ? training::progress_mode(o.progress) : training::ProgressMode::none, "eval");
  if (!lead) return 0;
  if (o.json) {
    json j{{"checkpoint", o.checkpoint}, {"data", name}, {"images", r.count}, {"loss", r.loss},
           {"top1", r.top1}, {"top5", r.top5}, {"image_size", in.size}};
    if (kind == "imagenet") j["resize"] = in.resize;
    if (!o.quant.empty()) {
      j["quant"] = o.quant;
      j["quantizer"] = o.quantizer;
      j["weight_calib"] = o.weight_calib;
      j["act_calib"] = o.act_calib;
    }
    if (o.int8) j["int8"] = true;
    std::cout << j.dump() << "\n";
  } else {
    std::printf("%s%s%s on %s (%lld images): top-1 %.2f%%  top-5 %.2f%%  loss %.4f\n", o.checkpoint.c_str(),
                o.quant.empty() ? "" : (" quantized " + o.quant + " " + o.quantizer + " (calibration only)").c_str(),
                o.int8 ? " int8" : "", name.c_str(), static_cast<long long>(r.count), r.top1, r.top5, r.loss);
  }
  return 0;
}

void add_models_flags(CLI::App& app, ModelsOptions& o) {
  app.add_option("--image-size", o.image_size, "input side for the FLOP count (0 = each model's usual size)");
  app.add_option("--in-channels", o.in_channels, "input channels (0 = each model's usual: 1 for lenet, else 3)");
  app.add_option("--num-classes", o.num_classes, "classes (0 = each model's usual: 10 or 1000)");
}

int run_models(const ModelsOptions& o) {
  std::printf("%-10s %14s %10s %8s %12s  %s\n", "model", "parameters", "input", "classes", "GMAC/image",
              "description");
  for (const auto& info : layers::model_infos()) {
    layers::ModelSpec spec{o.in_channels ? o.in_channels : info.default_channels,
                           o.num_classes ? o.num_classes : info.default_classes,
                           o.image_size ? o.image_size : info.default_image_size, 0};
    auto m = layers::build_model(info.name, spec);
    const double gmac = layers::forward_macs(*m, spec) / 1e9;
    const std::string input = std::to_string(spec.in_channels) + "x" + std::to_string(spec.image_size) + "^2";
    std::printf("%-10s %14lld %10s %8lld %12.4f  %s\n", info.name.c_str(), static_cast<long long>(m->num_parameters()),
                input.c_str(), static_cast<long long>(spec.num_classes), gmac, info.description.c_str());
  }
  std::printf("(GMAC: multiply-accumulates of one forward pass; a training step costs about 3x, 2 FLOP each)\n");
  return 0;
}

void add_inspect_flags(CLI::App& app, InspectOptions& o) {
  app.add_option("target", o.target, "run directory or checkpoint file")->required();
  app.add_flag("--json", o.json, "print JSON (one object per layer)");
  app.add_flag("--csv", o.csv, "print CSV");
  app.add_option("--html", o.html, "write a self-contained HTML report to this file");
  app.add_option("--data", o.data,
                 "also measure each quantized layer's input on this data (fashion-mnist | idx | cifar10 | cifar100): "
                 "share zeroed and saturated by its activation quantizer");
  app.add_option("--data-dir", o.data_dir, "data folder for --data (fashion-mnist default: Debian's)");
  app.add_option("--batches", o.batches, "batches of --data to run")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size for --data")->capture_default_str();
  add_max_idx_flag(app, o.max_idx_mb);
}

namespace {
// How the network's inputs are made, in one line (what `qil predict` wants its .npy to hold).
std::string input_description(const InputGeometry& in) {
  std::ostringstream os;
  os << "input: " << in.channels << "x" << in.size << "x" << in.size;
  if (!in.recorded)
    os << " (how images were resized for it is not recorded: a checkpoint from before it was)";
  else if (in.resize > 0)
    os << " (" << (in.data.empty() ? "" : in.data + " images: ") << "shorter side resized to " << in.resize
       << ", center crop " << in.size << ")";
  else if (!in.data.empty())
    os << " (" << in.data << " images at their own size)";
  os << ", normalized with mean " << json(in.mean).dump() << " std " << json(in.std).dump();
  return os.str();
}
}  // namespace

int run_inspect(const InspectOptions& o) {
  QIL_CHECK(o.data.empty() || (o.batches >= 1 && o.batch >= 1), "inspect: --batches and --batch must be at least 1, "
            "got ", o.batches, " and ", o.batch);
  QIL_CHECK(!o.data.empty() || o.data_dir.empty(), "inspect: --data-dir needs --data");
  std::unique_ptr<layers::Module> model;
  InspectData in = load_inspect_data(o.target, &model);
  if (!o.data.empty()) {
    auto ds = load_eval_data(o.data, o.data_dir, o.batches * o.batch, network_input(in.meta), &in.data_name,
                             o.max_idx_mb);
    in.activations = activation_stats(*model, ds, o.batches, o.batch);
  }
  auto stats_of = [&](const std::string& layer) -> const ActivationStats* {
    for (const auto& s : in.activations)
      if (s.layer == layer) return &s;
    return nullptr;
  };
  if (!o.html.empty()) {
    engine::check_output_file(o.html, {{"target", o.target}}, "--html");
    std::ofstream f(o.html, std::ios::binary);
    QIL_CHECK(f.good(), "inspect: cannot write '", o.html, "'");
    f << html_report(in);
    f.close();
    QIL_CHECK(f.good(), "inspect: writing '", o.html, "' failed");
    if (!o.json && !o.csv) std::cerr << "inspect: wrote " << o.html << "\n";
  }
  if (o.json) {
    json arr = json::array();
    for (const auto& r : in.reports) {
      json j = training::layer_report_json(r);
      if (const ActivationStats* s = stats_of(r.name)) j["input_stats"] = activation_stats_json(*s);
      arr.push_back(j);
    }
    std::cout << arr.dump(2) << "\n";
  } else if (o.csv) {
    std::cout << training::interval_csv(in.reports);
  } else if (o.html.empty() || !o.data.empty()) {
    std::cout << in.checkpoint << ": " << in.meta.model << ", " << in.reports.size() << " quantized layers\n"
              << input_description(network_input(in.meta)) << "\n";
    if (!in.reports.empty()) std::cout << training::interval_table(in.reports);
    if (!in.activations.empty()) {
      std::printf("\ninputs of the activation quantizers on %s:\n%-24s %10s %10s %10s %10s %12s\n",
                  in.data_name.c_str(), "layer", "%zeroed", "%saturated", "mean", "max", "values");
      for (const auto& s : in.activations)
        std::printf("%-24s %10.2f %10.2f %10.4f %10.4f %12lld\n", s.layer.c_str(), 100 * s.zeroed_fraction,
                    100 * s.saturated_fraction, s.mean, s.max, static_cast<long long>(s.values));
    }
  }
  return 0;
}

}  // namespace apps
