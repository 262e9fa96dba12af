// Every oneDNN implementation of every ResNet-18 @224 convolution, timed: for each layer shape (batch N) and
// each direction (forward, backward-data, backward-weights), each implementation oneDNN offers (walked with
// next_impl(), reference kernels skipped) for activations in oneDNN's choice of layout (`any`: nChw8c on AVX2),
// plain NCHW and NHWC. Prints ms (best of 5 after one warm-up) and GFLOP/s. It answers "would another kernel
// or layout run this layer faster?" for docs/performance.md. Not part of qil: built and run by
// scripts/conv_impls.sh.
// `cold` writes 128 MiB (four times the L3 of the machines measured) before every timed call, so each call
// starts with its operands out of cache, as inside a training step where other layers ran in between; `warm`
// (the default) repeats the call back to back. `any`, `nchw` or `nhwc` times one activation layout only.
// Usage: conv_impls [batch] [fwd|bwd_data|bwd_weights|all] [warm|cold] [all|any|nchw|nhwc]
//        (default: 32 all warm all)
#include <dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using Args = std::unordered_map<int, dnnl::memory>;

struct Shape {
  const char* name;
  int ic, oc, hw, k, stride, pad, count;  // count: how many layers of ResNet-18 have this shape
};

// ResNet-18 @224: the stem, the 3x3 convolutions of the four stages, the 1x1 downsamples.
const std::vector<Shape> kShapes = {
    {"stem 7x7", 3, 64, 224, 7, 2, 3, 1},          {"layer1 3x3", 64, 64, 56, 3, 1, 1, 4},
    {"layer2.0 3x3 s2", 64, 128, 56, 3, 2, 1, 1},  {"layer2 3x3", 128, 128, 28, 3, 1, 1, 3},
    {"layer3.0 3x3 s2", 128, 256, 28, 3, 2, 1, 1}, {"layer3 3x3", 256, 256, 14, 3, 1, 1, 3},
    {"layer4.0 3x3 s2", 256, 512, 14, 3, 2, 1, 1}, {"layer4 3x3", 512, 512, 7, 3, 1, 1, 3},
    {"layer2 1x1 s2", 64, 128, 56, 1, 2, 0, 1},    {"layer3 1x1 s2", 128, 256, 28, 1, 2, 0, 1},
    {"layer4 1x1 s2", 256, 512, 14, 1, 2, 0, 1},
};

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

dnnl::memory filled(const dnnl::memory::desc& md, const dnnl::engine& eng) {
  dnnl::memory m(md, eng);
  auto* p = static_cast<float*>(m.get_data_handle());
  size_t n = md.get_size() / sizeof(float);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(i % 7) * 0.1f - 0.3f;
  return m;
}

bool g_cold = false;

// Evicts the caches: writes and reads back a buffer larger than the last-level cache (both threads write).
void flush_caches() {
  static std::vector<float> junk(size_t{32} << 20);
  float* p = junk.data();
  long n = static_cast<long>(junk.size());
#pragma omp parallel for
  for (long i = 0; i < n; ++i) p[i] += 1.0f;
  volatile float sink = p[n / 2];
  (void)sink;
}

double best_of_5(const dnnl::primitive& prim, const Args& args, dnnl::stream& st) {
  prim.execute(st, args);
  st.wait();
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    if (g_cold) flush_caches();
    double t0 = seconds();
    prim.execute(st, args);
    st.wait();
    best = std::min(best, seconds() - t0);
  }
  return best;
}

bool is_reference(const char* impl) { return std::string(impl).find("ref") != std::string::npos; }

const char* tag_name(tag t) { return t == tag::any ? "any" : t == tag::nchw ? "nchw" : "nhwc"; }

// Times every non-reference implementation of one direction of one shape in one activation layout.
void time_shape(const Shape& s, int n, tag t, const std::string& dir, const dnnl::engine& eng,
                dnnl::stream& st) {
  using namespace dnnl;
  int oh = (s.hw + 2 * s.pad - s.k) / s.stride + 1;
  double flop = 2.0 * n * s.oc * oh * oh * s.ic * s.k * s.k;
  memory::desc src({n, s.ic, s.hw, s.hw}, dt::f32, t), dst({n, s.oc, oh, oh}, dt::f32, t);
  memory::desc w({s.oc, s.ic, s.k, s.k}, dt::f32, tag::any);
  memory::dims strides{s.stride, s.stride}, pads{s.pad, s.pad};
  auto alg = algorithm::convolution_direct;
  convolution_forward::primitive_desc fwd(
      convolution_forward::desc(prop_kind::forward_training, alg, src, w, dst, strides, pads, pads), eng);
  auto report = [&](const char* impl, double sec) {
    std::printf("%-11s %-16s N=%-3d %-4s %-4s %-16s %8.2f ms %6.1f GFLOP/s  x%d\n", dir.c_str(), s.name, n,
                tag_name(t), g_cold ? "cold" : "warm", impl, sec * 1e3, flop / sec * 1e-9, s.count);
    std::fflush(stdout);
  };
  if (dir == "fwd") {
    auto pd = fwd;
    do {
      if (is_reference(pd.impl_info_str())) break;
      Args a{{DNNL_ARG_SRC, filled(pd.src_desc(), eng)}, {DNNL_ARG_WEIGHTS, filled(pd.weights_desc(), eng)},
             {DNNL_ARG_DST, memory(pd.dst_desc(), eng)}};
      report(pd.impl_info_str(), best_of_5(convolution_forward(pd), a, st));
    } while (pd.next_impl());
  } else if (dir == "bwd_data") {
    convolution_backward_data::primitive_desc pd(
        convolution_backward_data::desc(alg, src, w, dst, strides, pads, pads), eng, fwd);
    do {
      if (is_reference(pd.impl_info_str())) break;
      Args a{{DNNL_ARG_DIFF_DST, filled(pd.diff_dst_desc(), eng)},
             {DNNL_ARG_WEIGHTS, filled(pd.weights_desc(), eng)}, {DNNL_ARG_DIFF_SRC, memory(pd.diff_src_desc(), eng)}};
      report(pd.impl_info_str(), best_of_5(convolution_backward_data(pd), a, st));
    } while (pd.next_impl());
  } else {
    convolution_backward_weights::primitive_desc pd(
        convolution_backward_weights::desc(alg, src, w, dst, strides, pads, pads), eng, fwd);
    do {
      if (is_reference(pd.impl_info_str())) break;
      Args a{{DNNL_ARG_SRC, filled(pd.src_desc(), eng)}, {DNNL_ARG_DIFF_DST, filled(pd.diff_dst_desc(), eng)},
             {DNNL_ARG_DIFF_WEIGHTS, memory(pd.diff_weights_desc(), eng)}};
      report(pd.impl_info_str(), best_of_5(convolution_backward_weights(pd), a, st));
    } while (pd.next_impl());
  }
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 32;
  std::string which = argc > 2 ? argv[2] : "all";
  std::string cache = argc > 3 ? argv[3] : "warm";
  std::string layout = argc > 4 ? argv[4] : "all";
  bool bad_dir = which != "all" && which != "fwd" && which != "bwd_data" && which != "bwd_weights";
  bool bad_layout = layout != "all" && layout != "any" && layout != "nchw" && layout != "nhwc";
  if (n <= 0 || bad_dir || (cache != "warm" && cache != "cold") || bad_layout) {
    std::fprintf(stderr,
                 "usage: conv_impls [batch > 0] [fwd|bwd_data|bwd_weights|all] [warm|cold] [all|any|nchw|nhwc]\n");
    return 2;
  }
  g_cold = cache == "cold";
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream st(eng);
  for (const std::string dir : {"fwd", "bwd_data", "bwd_weights"}) {
    if (which != "all" && which != dir) continue;
    for (const Shape& s : kShapes)
      for (tag t : {tag::any, tag::nchw, tag::nhwc})
        if (layout == "all" || layout == tag_name(t)) time_shape(s, n, t, dir, eng, st);
  }
  return 0;
}
