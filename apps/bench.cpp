// Training-step throughput on synthetic data.
#include "apps/bench.h"

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "apps/stages.h"
#include "apps/training/trainer.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "layers/models.h"
#include "layers/quantize.h"

namespace apps {

using engine::Tensor;

void add_bench_flags(CLI::App& app, BenchOptions& o) {
  app.add_option("--model", o.model, "model name")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--image-size", o.image_size, "input side")->capture_default_str();
  app.add_option("--in-channels", o.in_channels, "input channels")->capture_default_str();
  app.add_option("--num-classes", o.num_classes, "classes")->capture_default_str();
  app.add_option("--steps", o.steps, "timed steps per repeat")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed steps first")->capture_default_str();
  app.add_option("--repeat", o.repeat, "repeats (the median is reported)")->capture_default_str();
  app.add_option("--threads", o.threads, "compute threads (0 = OpenMP's default)");
  app.add_option("--quant", o.quant, "widths: 32 (full precision), 4, w4a8, ...")->capture_default_str();
  app.add_option("--quantizer", o.quantizer, "quantizer of the quantized layers: qil | lsq | pact | dorefa")
      ->capture_default_str();
  app.add_flag("--json", o.json, "print JSON");
  app.add_flag("--plain", o.plain, "plain NCHW activations between ops (default: blocked where oneDNN picks it)");
  app.add_flag("--profile", o.profile, "print the time per op type (forward and backward) per step");
  app.add_flag("--infer", o.infer,
               "time inference instead: eval-mode forward passes without gradients (a step = one forward)");
  app.add_flag("--int8", o.int8,
               "with --infer and a quantized --quant: integer inference for the layers whose weights and input are "
               "quantized (docs/int8.md)");
}

namespace {

// One row per op counter: ms per step, share of the step, calls per step; the rest of the step (autograd
// bookkeeping and gradient buffers, the optimizer, quantizer projection) as "other".
void print_profile(double total_s, int64_t steps) {
  const auto rows = engine::ops::op_profile();
  double ops_s = 0;
  for (const auto& r : rows) ops_s += r.seconds;
  std::printf("%-28s %10s %7s %8s\n", "op", "ms/step", "share", "calls");
  for (const auto& r : rows)
    std::printf("%-28s %10.2f %6.1f%% %8.1f\n", r.name.c_str(), 1e3 * r.seconds / steps, 100 * r.seconds / total_s,
                static_cast<double>(r.calls) / steps);
  std::printf("%-28s %10.2f %6.1f%%\n", "other", 1e3 * (total_s - ops_s) / steps, 100 * (total_s - ops_s) / total_s);
  std::printf("%-28s %10.2f\n", "step", 1e3 * total_s / steps);
}

// A fixed random batch: images (batch, C, H, W) ~ N(0, 1), labels uniform over the classes.
struct SyntheticBatch {
  Tensor x, y;
};
SyntheticBatch synthetic_batch(const BenchOptions& o) {
  engine::Generator g(1);
  SyntheticBatch b{Tensor::empty({o.batch, o.in_channels, o.image_size, o.image_size}),
                   Tensor::empty({o.batch}, engine::DType::s32)};
  for (int64_t i = 0; i < b.x.numel(); ++i) b.x.data()[i] = g.normal();
  for (int64_t i = 0; i < o.batch; ++i) b.y.data<int32_t>()[i] = static_cast<int32_t>(g.below(o.num_classes));
  return b;
}

void quantize_for_bench(layers::Module& model, const Stage& st, const std::string& quantizer, const Tensor& x) {
  layers::QuantPlan plan;
  plan.wbits = st.wbits;
  plan.abits = st.abits;
  plan.quantizer = quantizer;
  layers::apply_quant_plan(model, plan);
  layers::calibrate(model, 1, [&, done = false](Tensor& in) mutable {
    if (done) return false;
    in = x;
    done = true;
    return true;
  });
}

// What one timed step runs: an SGD step, or (--infer) one eval-mode forward pass without gradients. The
// returned function owns what it needs (optimizer, trainer) and refers to model and b, which outlive it.
std::function<void()> bench_step(layers::Module& model, const SyntheticBatch& b, const Stage& st, bool infer) {
  if (infer) {
    model.eval();
    return [&model, &b] {
      engine::NoGradGuard ng;
      model.forward(b.x);
    };
  }
  std::vector<Tensor> params;
  for (auto& p : model.named_parameters()) params.push_back(p.tensor);
  auto opt = std::make_shared<engine::SGD>(std::vector<engine::ParamGroup>{engine::ParamGroup("all", params, 1.f, 0.f)},
                                           0.9f);
  training::StepOptions so;
  so.balance = st.quantized() ? layers::GradBalance::sqrt : layers::GradBalance::none;
  auto trainer = std::make_shared<training::Trainer>(model, *opt, so);
  model.train();
  return [opt, trainer, &b] { trainer->step(b.x, b.y, 0.01f); };
}

}  // namespace

// The activation layout (--plain) and the op profiler (--profile) are process settings made by main().
int run_bench(const BenchOptions& o) {
  QIL_CHECK(o.batch >= 1 && o.steps >= 1 && o.repeat >= 1 && o.warmup >= 0, "bench: batch, steps and repeat must be >= 1");
  if (o.threads > 0) omp_set_num_threads(static_cast<int>(o.threads));
  layers::ModelSpec spec{o.in_channels, o.num_classes, o.image_size, 0};
  auto model = layers::build_model(o.model, spec);
  const Stage st = parse_stage_entry(o.quant);
  QIL_CHECK(!o.int8 || (o.infer && st.quantized()), "bench: --int8 needs --infer and a quantized --quant (got --quant ",
            o.quant, o.infer ? "" : ", no --infer", ")");
  const SyntheticBatch b = synthetic_batch(o);
  if (st.quantized()) quantize_for_bench(*model, st, o.quantizer, b.x);
  if (o.int8) layers::set_int8_inference(*model, true);
  const std::function<void()> step = bench_step(*model, b, st, o.infer);
  for (int64_t i = 0; i < o.warmup; ++i) step();
  engine::ops::reset_op_profile();  // count the timed steps only
  double total_s = 0;
  std::vector<double> rates;
  for (int64_t r = 0; r < o.repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o.steps; ++i) step();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(o.batch * o.steps / s);
    total_s += s;
  }
  std::sort(rates.begin(), rates.end());
  const double med = rates[rates.size() / 2];
  if (o.profile) print_profile(total_s, o.steps * o.repeat);
  if (o.json)  // keys in this order, one line; the rate to 3 decimals as before
    std::cout << nlohmann::ordered_json{{"model", o.model},          {"batch", o.batch},
                                        {"image_size", o.image_size}, {"quant", st.name()},
                                        {"quantizer", st.quantized() ? o.quantizer : "none"},
                                        {"threads", omp_get_max_threads()}, {"img_per_s", std::round(med * 1e3) / 1e3},
                                        {"mode", o.infer ? (o.int8 ? "infer-int8" : "infer") : "train"}}
                     .dump()
              << std::endl;
  else
    std::printf("%s batch %lld @%lld %s%s%s, %d threads: img/s=%.2f\n", o.model.c_str(),
                static_cast<long long>(o.batch), static_cast<long long>(o.image_size), st.name().c_str(),
                st.quantized() ? (" " + o.quantizer).c_str() : "",
                o.infer ? (o.int8 ? " inference int8" : " inference") : "", omp_get_max_threads(), med);
  return 0;
}

}  // namespace apps
