// The closed op list of qil's engine. Each op returns its output and, when gradients are on and an input
// needs one, records a backward closure (autograd.h). Shapes are outermost-first: activations (N, C, H, W),
// conv weights (O, I/groups, KH, KW), linear weights (out, in). All f32; activations plain, or blocked
// between the ops that support it when set_keep_blocked is on (below).
// Heavy ops (conv2d, max/avg pools, linear, and their int8 twins) run on oneDNN; batch_norm2d and elementwise
// ops use OpenMP loops.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"

namespace engine::ops {

struct Conv2dGeom {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;  // symmetric zero padding
  int64_t dil_h = 1, dil_w = 1;  // 1 = no dilation (PyTorch convention)
  int64_t groups = 1;
};
// x (N, C, H, W), w (O, C/groups, KH, KW), b (O) or undefined -> (N, O, H', W').
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dGeom& g);
// Output spatial size of a convolution or pooling window.
int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil = 1, bool ceil_mode = false);

// x (N, in), w (out, in), b (out) or undefined -> (N, out).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

// Integer layers of integer inference (no autograd): input levels xk (u8, or s8 for a signed input) times s8
// weight codes wk, summed exactly in s32 (acc), then y = fl(fl(scale·fl(acc)) + b[o]) in f32 — the scaling and
// the bias in that order, whatever oneDNN's own bias semantics. Level 0 is the value 0 (zero padding).
// xk (N, C, H, W) plain or blocked, wk (O, C/groups, KH, KW), b (O) f32 or undefined -> (N, O, H', W') f32,
// blocked when set_keep_blocked is on and O is a multiple of 16.
Tensor conv2d_int8(const Tensor& xk, const Tensor& wk, const Tensor& b, float scale, const Conv2dGeom& g);
// xk (N, in) u8/s8, wk (out, in) s8, b (out) f32 or undefined -> (N, out) f32; the same arithmetic.
Tensor linear_int8(const Tensor& xk, const Tensor& wk, const Tensor& b, float scale);
// Whether oneDNN's int8 kernels here multiply-add u8×s8 in one instruction (VNNI: avx512_core_vnni, avx2_vnni or
// later, as oneDNN detects the CPU; DNNL_MAX_CPU_ISA can lower it). Without it they are about half as fast.
bool int8_kernels_have_vnni();

// Integer forward in training (`qil train --int8-forward`): the forward of conv2d_int8(xk, wk, b, scale, g), the
// gradients of conv2d(x, w, b, g) (x, w and b receive them; xk and wk none). The caller's contract: x and w hold
// the values whose levels are xk and wk, x = xk·step_x and w = wk·step_w up to f32 rounding, with scale =
// step_x·step_w, so the two forwards agree up to the rounding of conv2d's f32 sums (bit for bit with levels as the
// operands, step 1, while the sums are exact). Backward reads x and w as conv2d's does, under bf16 too.
// Without gradients (or with x or w undefined) it is conv2d_int8.
Tensor conv2d_int_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& xk, const Tensor& wk,
                          float scale, const Conv2dGeom& g);
// The same for linear and linear_int8.
Tensor linear_int_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& xk, const Tensor& wk,
                          float scale);

// x (N, C, H, W); gamma, beta (C); running_mean, running_var (C) are buffers updated in place in training
// mode (running = (1 - momentum) * running + momentum * batch, the variance unbiased, as PyTorch does).
// Training normalizes with the batch statistics (biased variance); eval with the running ones.
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f);
// relu(batch_norm2d(...)) fused: the same values, gradients and running-statistics update as the two ops,
// one pass fewer each way and no intermediate tensor (the ReLU's mask is recomputed from x in backward).
Tensor batch_norm2d_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f);

struct Pool2dGeom {
  int64_t kh = 2, kw = 2;
  int64_t stride_h = 2, stride_w = 2;
  int64_t pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg pool only, PyTorch's default
};
Tensor max_pool2d(const Tensor& x, const Pool2dGeom& g);  // (N, C, H, W) -> (N, C, H', W')
Tensor avg_pool2d(const Tensor& x, const Pool2dGeom& g);
// Adaptive average pooling to (oh, ow) with PyTorch's bin edges: floor(i*H/oh) .. ceil((i+1)*H/oh).
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t oh, int64_t ow);
Tensor global_avg_pool(const Tensor& x);  // (N, C, H, W) -> (N, C)

Tensor relu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);  // same shapes
Tensor add_relu(const Tensor& a, const Tensor& b);  // relu(add(a, b)) in one pass forward and one backward
// y = x * s for a one-element tensor s (a learnable scalar, e.g. a quantized layer's output scale).
Tensor mul_scalar(const Tensor& x, const Tensor& s);
// Inverted dropout: zeroes with probability p and scales the rest by 1/(1-p) in training; identity in eval.
Tensor dropout(const Tensor& x, float p, bool training, Generator& gen);
Tensor reshape(const Tensor& x, const Shape& shape);  // same storage; -1 infers one dimension
Tensor flatten(const Tensor& x);                      // (N, ...) -> (N, prod(...))

Tensor sum(const Tensor& x);   // -> one-element tensor, shape {}
Tensor mean(const Tensor& x);  // -> one-element tensor, shape {}

// Mean over the batch of -log softmax(logits)[label], with optional label smoothing eps (the target is
// (1-eps) one-hot + eps/K uniform, as PyTorch's CrossEntropyLoss). logits (N, K), labels s32 (N).
Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing = 0.f);

// Mean over the batch of -sum_j t_ij log softmax(logits)_ij for soft targets t (N, K), rows summing to 1
// (e.g. a teacher network's softmax). No gradient flows to the targets.
Tensor soft_cross_entropy(const Tensor& logits, const Tensor& targets);
// Row-wise softmax of (N, K) logits, no autograd.
Tensor softmax(const Tensor& logits);

// How many rows of logits (N, K) have their label among the k largest values (no autograd).
int64_t topk_correct(const Tensor& logits, const Tensor& labels, int64_t k);

// Blocked activations between ops (Layout::blocked, tensor.h). When on, conv2d returns oneDNN's nChw16c (nChw8c
// on AVX2) whenever oneDNN picks it for the output and the channels are a multiple of the block, so no reorder
// runs between convolutions; batch_norm2d(_relu), relu, add, add_relu, mul_scalar, dropout, max_pool2d and the QIL ops keep
// their input's layout; reshape/flatten, linear, avg/adaptive/global pooling and the loss convert to plain first. Each
// gradient buffer is in the layout of the tensor it belongs to. Off by default (process-wide): read op
// outputs with to_vector() or Tensor::plain() when it is on.
void set_keep_blocked(bool on);
bool keep_blocked();
// x in plain layout, recorded: backward converts the gradient back. Returns x itself when x is plain.
Tensor to_plain(const Tensor& x);

// Mixed precision for convolutions and linear layers (process-wide; f32 by default). Under bf16, conv2d and linear
// read their input, their weight and, backward, their output gradient as bf16 (rounded to nearest even) and sum
// in f32; their outputs and the gradients they hand back are f32, and every other op (batch norm, the loss, the
// quantizers, the optimizer with its f32 master weights) runs in f32 as before. Native where the CPU runs
// oneDNN's bf16 kernels at full speed (AVX512_BF16 or AMX: bf16_native()); elsewhere an exact emulation: the
// operands rounded to bf16 values held in f32 and the f32 kernels (the same products, each exact in f32, summed
// in f32 in oneDNN's order: the numerics of bf16 training, no faster than f32).
enum class Precision { f32, bf16 };
void set_precision(Precision p);
Precision precision();
Precision parse_precision(const std::string& s);  // "fp32" (or "f32"), "bf16"; throws naming s otherwise
bool bf16_native();  // this CPU runs oneDNN's bf16 convolutions natively
// What bf16_native() needs, for messages: "AVX512_BF16 or AMX: the avx512_bf16 or amx_bf16 flag in /proc/cpuinfo".
std::string bf16_isa_note();
// Tests: run the emulation under bf16 even where the CPU is native (to compare the two).
void set_bf16_emulation(bool force);
bool bf16_emulated();  // precision() is bf16 and the emulation runs
// x's values rounded to the nearest bf16 (ties to even; NaN stays NaN), held in f32 in x's shape and layout.
// No autograd.
Tensor round_bf16(const Tensor& x);
// y + b with b (C) added along dimension 1 of y (N, C) or (N, C, H, W), plain or blocked; the gradient reaches
// y as is and b summed over the other dimensions.
Tensor add_bias(const Tensor& y, const Tensor& b);

// Per-op wall-clock totals for `qil bench --profile`. Off by default; when on, every op's forward and backward
// adds its elapsed time to a counter named after it ("conv2d", "conv2d.bwd", ...). One clock-read pair per
// call, so the totals are honest for ops of a few microseconds and up; not a sampling profiler.
void set_op_profiling(bool on);
bool op_profiling();
struct OpTime {
  std::string name;
  double seconds = 0;
  int64_t calls = 0;
};
std::vector<OpTime> op_profile();  // largest total first
void reset_op_profile();

// Process-wide: glibc keeps freed memory in the heap instead of returning large blocks to the kernel (a step
// reallocates the same buffers every time). Set once by a program that trains (qil's main); speed only.
void tune_malloc_for_training();
void add_op_time(const char* name, double seconds);

// Times one op call into the counter `name` (a string literal) when profiling is on.
class OpTimer {
 public:
  explicit OpTimer(const char* name) : name_(op_profiling() ? name : nullptr) {
    if (name_) t0_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (name_) add_op_time(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace engine::ops
