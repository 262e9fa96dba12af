// qil eval.
#include "apps/eval.h"

#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "apps/data_setup.h"
#include "apps/machine.h"
#include "apps/quant_flags.h"
#include "apps/training/evaluate.h"
#include "apps/training/stages.h"
#include "data/imagenet.h"
#include "engine/check.h"
#include "engine/dist.h"
#include "layers/model_io.h"
#include "layers/models.h"
#include "layers/quantize.h"

namespace apps {

using nlohmann::json;

void add_eval_flags(CLI::App& app, EvalOptions& o) {
  app.add_option("checkpoint", o.checkpoint,
                 kCheckpointArgHelp)
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
  app.add_option("--quantizer", o.quantizer, "with --quant: " + quant::quantizer_list(" | "))
      ->check(CLI::IsMember(quant::quantizer_names()))
      ->capture_default_str();
  app.add_option("--first-last", o.first_last, "with --quant: first conv and last linear fp | 8 | same (the --quant width)")
      ->check(CLI::IsMember({"fp", "8", "same"}))
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
      j["first_last"] = o.first_last;
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

}  // namespace apps
