// Training-step throughput on synthetic data.
#include "apps/bench.h"

#include <sys/resource.h>

#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "apps/machine.h"
#include "apps/limits.h"
#include "apps/training/stages.h"
#include "apps/training/trainer.h"
#include "engine/autograd.h"
#include "engine/dist.h"
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
  add_threads_flag(app, o.threads);
  app.add_option("--quant", o.quant, "widths: 32 (full precision), 4, w4a8, ...")->capture_default_str();
  app.add_option("--quantizer", o.quantizer, "quantizer of the quantized layers: " + quant::quantizer_list(" | "))
      ->capture_default_str();
  add_precision_flag(app, o.precision);
  app.add_flag("--json", o.json, "print JSON");
  app.add_flag("--plain", o.plain, "plain NCHW activations between ops (default: blocked where oneDNN picks it)");
  app.add_flag("--profile", o.profile, "print the time per op type (forward and backward) per step");
  app.add_flag("--infer", o.infer,
               "time inference instead: eval-mode forward passes without gradients (a step = one forward)");
  app.add_flag("--int8", o.int8,
               "with --infer and a quantized --quant: integer inference for the layers whose weights and input are "
               "quantized (docs/int8.md)");
  app.add_flag("--int8-forward", o.int8_forward,
               "training steps (no --infer) with a quantized --quant: the quantized layers' forward in integers, "
               "as `qil train --int8-forward` (docs/int8.md)");
  app.add_option("--allreduce", o.allreduce,
                 "under mpirun: gradients averaged after backward (end) or in buckets started during it (overlap)")
      ->capture_default_str();
  app.add_option("--bucket-mb", o.bucket_mb, "--allreduce overlap: the largest bucket of gradients, in MiB")
      ->capture_default_str();
  app.add_option("--peak-gflops", o.peak_gflops,
                 "the machine's FMA peak (scripts/fma_peak.sh): also print the step's GFLOP/s as a share of it")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--allreduce-only", o.allreduce_only,
               "under mpirun (2+ ranks): instead of a step, time one all-reduce of the model's whole gradient "
               "(--allreduce end: one buffer; overlap: its buckets, all started at once) and of one 8-byte value; "
               "the median ms of --steps x --repeat calls after --warmup");
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

// Convolution and linear FLOPs of one image's step, in GFLOP: forward 2 FLOPs per multiply-accumulate, a
// training step three times that (backward-data and backward-weights each cost a forward), inference once.
// The usual convention (ResNet-18 at 224x224: 1.82 GMAC forward, 10.9 GFLOP a step); it counts the first convolution's backward-data,
// which autograd skips, and nothing of batch norm, pooling or elementwise ops.
double step_gflop(layers::Module& model, const BenchOptions& o) {
  const layers::ModelSpec spec{o.in_channels, o.num_classes, o.image_size, 0};
  return (o.infer ? 2.0 : 6.0) * static_cast<double>(layers::forward_macs(model, spec)) / 1e9;
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

void quantize_for_bench(layers::Module& model, const training::Stage& st, const std::string& quantizer, const Tensor& x) {
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

// A timed step benchmark: the median rate over the repeats, and where the timed steps' time went.
struct StepBench {
  double img_per_s = 0, total_s = 0;
  double gflop_per_img = 0;  // convolution and linear FLOPs of one image's step (step_gflop)
  training::StepTimes times;
  size_t buckets = 0, buckets_in_backward = 0;  // --allreduce overlap under mpirun
  std::string kernel_isa;  // what the quantizers' own kernels picked at run time ("" when none picks)
  HostLoad before, after;  // the machine's load as the command started and as the timing ended
};

// The instruction set the model's quantizers chose for their own kernels (quant::Quantizer::kernel_isa), or "".
std::string quantizer_kernel_isa(layers::Module& model) {
  for (auto& [name, l] : layers::quantizable_layers(model))
    for (const quant::Quantizer* q : {l->active_weight_quantizer(), l->active_act_quantizer()})
      if (q && q->kernel_isa()) return q->kernel_isa();
  return "";
}

StepBench time_steps(const BenchOptions& o, layers::Module& model, const training::Stage& st, const SyntheticBatch& b) {
  std::vector<Tensor> params;
  for (auto& p : model.named_parameters()) params.push_back(p.tensor);
  engine::SGD opt({engine::ParamGroup("all", params, 1.f, 0.f)}, 0.9f);
  training::StepOptions so;
  so.balance = st.quantized() ? layers::GradBalance::sqrt : layers::GradBalance::none;
  so.allreduce = engine::dist::world_size() > 1 && !o.infer;  // every rank steps on the same synthetic batch
  so.overlap = o.allreduce == "overlap";
  so.bucket_bytes = training::bucket_bytes(o.bucket_mb);
  training::Trainer trainer(model, opt, so);
  // A step is an SGD step, or (--infer) one eval-mode forward pass without gradients.
  std::function<void()> step = [&] { trainer.step(b.x, b.y, 0.01f); };
  if (o.infer)
    step = [&] {
      engine::NoGradGuard ng;
      model.forward(b.x);
    };
  if (o.infer)
    model.eval();
  else
    model.train();
  for (int64_t i = 0; i < o.warmup; ++i) step();
  engine::ops::reset_op_profile();  // count the timed steps only
  trainer.reset_times();
  StepBench r;
  std::vector<double> rates;
  for (int64_t k = 0; k < o.repeat; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o.steps; ++i) step();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(o.batch * o.steps / s);
    r.total_s += s;
  }
  std::sort(rates.begin(), rates.end());
  r.img_per_s = rates[rates.size() / 2];
  r.times = trainer.times();
  if (const engine::dist::GradAverager* avg = trainer.averager()) {
    r.buckets = avg->plan().buckets().size();
    r.buckets_in_backward = avg->started_early();
  }
  return r;
}

// The machine's load as the benchmark starts, with a warning on stderr (rank 0) when other tasks run.
HostLoad load_warned() {
  const HostLoad h = load_at_start();
  if (h.others_running > 0 && engine::dist::rank() == 0)
    std::cerr << "qil bench: " << h.others_running << " other task(s) running as the benchmark starts (load "
              << "average " << h.load1 << "): its figures will be low and noisy; take them on a quiet machine "
              << "(uptime)" << std::endl;
  return h;
}

// The process's resident high-water mark so far (getrusage's ru_maxrss, KiB on Linux), in MiB.
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// The most bytes tensors held at once (engine::tensor_bytes_peak), in MiB: what the graph keeps, free of the
// allocator's caching and fragmentation that the resident figure includes.
double peak_tensor_mib() { return static_cast<double>(engine::tensor_bytes_peak()) / (1024.0 * 1024.0); }

void print_steps(const BenchOptions& o, const training::Stage& st, const StepBench& r) {
  const int world = engine::dist::world_size();
  const std::string mode = world > 1 ? o.allreduce : "none";
  const double n = static_cast<double>(std::max<int64_t>(r.times.steps, 1));
  auto ms = [](double s) { return std::round(s * 1e6) / 1e3; };  // ms to 3 decimals
  const double gflops = r.img_per_s * r.gflop_per_img;
  const double peak_share = o.peak_gflops > 0 ? gflops / o.peak_gflops : 0.0;  // 0 without --peak-gflops
  if (o.json) {  // keys in this order, one line; the rate to 3 decimals as before
    std::cout << nlohmann::ordered_json{{"model", o.model},
                                        {"batch", o.batch},
                                        {"image_size", o.image_size},
                                        {"quant", st.name()},
                                        {"quantizer", st.quantized() ? o.quantizer : "none"},
                                        {"precision", o.precision},
                                        {"threads", omp_get_max_threads()},
                                        {"img_per_s", std::round(r.img_per_s * 1e3) / 1e3},
                                        {"ranks", world},
                                        {"allreduce", mode},
                                        {"step_ms", ms(o.batch / r.img_per_s)},
                                        {"forward_ms", ms(r.times.forward / n)},
                                        {"backward_ms", ms(r.times.backward / n)},
                                        {"reduce_ms", ms(r.times.reduce / n)},
                                        {"update_ms", ms(r.times.update / n)},
                                        {"buckets", r.buckets},
                                        {"buckets_in_backward", r.buckets_in_backward},
                                        {"mode", o.infer ? (o.int8 ? "infer-int8" : "infer")
                                                         : (o.int8_forward ? "train-int8-forward" : "train")},
                                        {"gflops", std::round(gflops * 10) / 10},
                                        {"peak_pct", std::round(1e3 * peak_share) / 10},
                                        {"peak_rss_mib", std::round(peak_rss_mib() * 10) / 10},
                                        {"peak_tensor_mib", std::round(peak_tensor_mib() * 10) / 10},
                                        {"cpu", cpu_model_name()},
                                        {"simd", cpu_simd_flags()},
                                        {"load_before", r.before.load1},
                                        {"load_after", r.after.load1},
                                        {"others_running", r.before.others_running}}
                     .dump()
              << std::endl;
    return;
  }
  if (o.peak_gflops > 0)
    std::printf("%.2f GFLOP per image, %.1f GFLOP/s, %.1f%% of a %.1f GFLOP/s peak\n", r.gflop_per_img, gflops,
                100 * peak_share, o.peak_gflops);
  else
    std::printf("%.2f GFLOP per image, %.1f GFLOP/s\n", r.gflop_per_img, gflops);
  std::printf("peak resident memory %.0f MiB (tensors at most %.0f MiB at once)\n", peak_rss_mib(),
              peak_tensor_mib());
  std::printf("cpu: %s [%s]; load average %.2f before, %.2f after\n", cpu_model_name().c_str(),
              cpu_simd_flags().c_str(), r.before.load1, r.after.load1);
  if (!r.kernel_isa.empty()) std::printf("quantizer kernels: %s\n", r.kernel_isa.c_str());
  const std::string buckets = o.allreduce == "overlap" ? engine::str_cat(" (", r.buckets, " buckets)") : "";
  if (world > 1)
    std::printf("%d ranks, all-reduce %s%s: step %.1f ms per rank (forward %.1f, backward %.1f, all-reduce wait "
                "%.1f, update %.1f)\n",
                world, mode.c_str(), buckets.c_str(), 1e3 * o.batch / r.img_per_s, 1e3 * r.times.forward / n,
                1e3 * r.times.backward / n, 1e3 * r.times.reduce / n, 1e3 * r.times.update / n);
  std::printf("%s batch %lld @%lld %s%s%s%s, %d threads: img/s=%.2f\n", o.model.c_str(),
              static_cast<long long>(o.batch), static_cast<long long>(o.image_size), st.name().c_str(),
              st.quantized() ? (" " + o.quantizer).c_str() : "", o.precision == "bf16" ? ", bf16 compute" : "",
              o.infer ? (o.int8 ? " inference int8" : " inference") : (o.int8_forward ? " integer forward" : ""),
              omp_get_max_threads(), r.img_per_s);
}

// Median of `n` timed calls of fn (ms), each after a barrier so that the ranks start it together.
double median_ms(int64_t n, const std::function<void()>& fn) {
  std::vector<double> t;
  for (int64_t i = 0; i < n; ++i) {
    engine::dist::barrier();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// --allreduce-only: one all-reduce of as many floats as the model has parameters, in its tensors' sizes, the
// way a training step averages them (packing and unpacking included), and one of a single value (latency).
int run_allreduce_only(const BenchOptions& o, layers::Module& model) {
  const int world = engine::dist::world_size();
  QIL_CHECK(world > 1, "bench --allreduce-only: needs 2 or more ranks (start it with mpirun -np N), got ", world);
  std::vector<Tensor> params, grads;
  for (auto& p : model.named_parameters()) {
    params.push_back(p.tensor);
    p.tensor.grad() = Tensor::full(p.tensor.shape(), 1e-3f);
    grads.push_back(p.tensor.grad());
  }
  engine::dist::GradAverager avg(params, training::bucket_bytes(o.bucket_mb));
  std::function<void()> once = [&] { engine::dist::allreduce_mean(grads); };
  if (o.allreduce == "overlap")
    once = [&] {
      avg.begin();
      for (size_t i = params.size(); i-- > 0;) avg.ready(params[i]);  // the order backward finishes them
      avg.finish();
    };
  median_ms(o.warmup, once);
  const double full = median_ms(o.steps * o.repeat, once);
  std::vector<double> one{1.0};
  const double small =
      median_ms(std::max<int64_t>(100, o.steps * o.repeat), [&] { engine::dist::allreduce_sum_f64(one); });
  if (engine::dist::rank() != 0) return 0;
  const int64_t n = model.num_parameters();
  const size_t buckets = o.allreduce == "overlap" ? avg.plan().buckets().size() : 1;
  if (o.json)
    std::cout << nlohmann::ordered_json{{"model", o.model}, {"parameters", n}, {"bytes", 4 * n}, {"ranks", world},
                                        {"allreduce", o.allreduce}, {"buckets", buckets},
                                        {"median_ms", std::round(full * 1e3) / 1e3},
                                        {"small_ms", std::round(small * 1e4) / 1e4}}
                     .dump()
              << std::endl;
  else
    std::printf("%s: all-reduce of %lld gradients (%.1f MB) over %d ranks, %s (%zu buckets): median %.2f ms; "
                "8-byte all-reduce: %.4f ms\n",
                o.model.c_str(), static_cast<long long>(n), 4e-6 * n, world, o.allreduce.c_str(), buckets, full,
                small);
  return 0;
}

}  // namespace

// The activation layout (--plain) and the op profiler (--profile) are process settings made by main().
int run_bench(const BenchOptions& o) {
  QIL_CHECK(o.batch >= 1 && o.steps >= 1 && o.repeat >= 1 && o.warmup >= 0, "bench: batch, steps and repeat must be >= 1");
  QIL_CHECK(o.allreduce == "end" || o.allreduce == "overlap", "bench: --allreduce must be end or overlap, got '",
            o.allreduce, "'");
  QIL_CHECK(o.bucket_mb > 0, "bench: --bucket-mb must be positive, got ", o.bucket_mb);
  if (o.threads > 0) omp_set_num_threads(static_cast<int>(o.threads));
  const HostLoad before = load_warned();  // before any OpenMP thread exists: only other processes count
  layers::ModelSpec spec{o.in_channels, o.num_classes, o.image_size, 0};
  auto model = layers::build_model(o.model, spec);
  if (o.allreduce_only) return run_allreduce_only(o, *model);
  const training::Stage st = training::parse_stage_entry(o.quant);
  QIL_CHECK(!o.int8 || (o.infer && st.quantized()), "bench: --int8 needs --infer and a quantized --quant (got --quant ",
            o.quant, o.infer ? "" : ", no --infer", ")");
  const SyntheticBatch b = synthetic_batch(o);
  if (st.quantized()) quantize_for_bench(*model, st, o.quantizer, b.x);
  QIL_CHECK(!o.int8_forward || (!o.infer && st.quantized()),
            "bench: --int8-forward times training steps of a quantized --quant (got --quant ", o.quant,
            o.infer ? ", --infer" : "", "; for inference use --infer --int8)");
  if (o.int8) layers::set_int8_inference(*model, true);
  if (o.int8_forward) {
    const layers::Int8Layers ints = layers::set_int8_forward(*model, true);
    QIL_CHECK(!ints.integer.empty(), "bench: --int8-forward: no layer of ", o.model, " at --quant ", o.quant,
              " has both its weights and its input quantized with levels that fit 8 bits");
  }
  const double gflop_per_img = step_gflop(*model, o);  // a batch-1 forward: before the timing and the profile
  StepBench r = time_steps(o, *model, st, b);
  r.gflop_per_img = gflop_per_img;
  r.kernel_isa = quantizer_kernel_isa(*model);
  r.before = before;
  r.after = host_load(1);
  if (engine::dist::rank() != 0) return 0;  // rank 0 reports
  if (o.profile) print_profile(r.total_s, o.steps * o.repeat);
  print_steps(o, st, r);
  return 0;
}

}  // namespace apps
