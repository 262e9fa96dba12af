// Private glue between engine ops and oneDNN (v2 API): the one CPU engine, a stream per thread, wrapping a
// Tensor as a dnnl::memory, reorders at op boundaries and the accumulate-into-gradient step.
// Included only by engine/ops/*.cpp; no public header may include dnnl.hpp.
#pragma once
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/ops.h"
#include "engine/tensor.h"

namespace engine::ops::dnnl_glue {

using dnnl::memory;
using tag = dnnl::memory::format_tag;

// One engine for the whole process: oneDNN's primitive cache is keyed per engine.
inline dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// Streams are not meant to be shared across threads; ops may run on a loader or evaluation thread too.
inline dnnl::stream& cpu_stream() {
  thread_local dnnl::stream s(cpu_engine());
  return s;
}

inline memory::dims dims_of(const Tensor& t) { return memory::dims(t.shape().begin(), t.shape().end()); }

inline memory::desc plain_md(const memory::dims& d, tag t) { return memory::desc(d, memory::data_type::f32, t); }

// oneDNN's name for a tensor's dtype (f32, s8, u8, s32).
inline memory::data_type dnnl_dtype(DType t) {
  switch (t) {
    case DType::s8: return memory::data_type::s8;
    case DType::u8: return memory::data_type::u8;
    case DType::s32: return memory::data_type::s32;
    case DType::bf16: return memory::data_type::bf16;
    default: return memory::data_type::f32;
  }
}

// oneDNN's tag of Layout::blocked: nChw16c or nChw8c (block_channels()).
inline tag blocked_tag() { return block_channels() == 16 ? tag::nChw16c : tag::nChw8c; }
// An activation (N, C, H, W) as oneDNN sees it: nchw, or blocked_tag() for Layout::blocked; its own dtype.
inline memory::desc act_md(const Tensor& t) {
  return memory::desc(dims_of(t), dnnl_dtype(t.dtype()), t.layout() == Layout::blocked ? blocked_tag() : tag::nchw);
}
inline memory::desc blocked_md(const memory::dims& d) { return plain_md(d, blocked_tag()); }

// A dnnl::memory over a tensor's storage (no copy), of any dtype. oneDNN takes non-const pointers even for inputs.
inline memory wrap(const Tensor& t, const memory::desc& md) {
  return memory(md, cpu_engine(), const_cast<void*>(t.bytes()));
}

// Runs a reorder, a small one (up to 256 KiB: weights, biases) on the calling thread alone. Under CPU
// contention every OpenMP fork and join can cost a scheduler time slice, far more than copying a few hundred
// kilobytes: on a loaded 2-core AVX2 machine ResNet-20's ~60 weight reorders per step took a third of it.
inline void run_reorder(const dnnl::reorder& r, memory src, memory dst) {
  const bool small = src.get_desc().get_size() <= (size_t(256) << 10);
  const int threads = omp_get_max_threads();
  if (small) omp_set_num_threads(1);  // oneDNN's OpenMP kernels read the thread count when they run
  r.execute(cpu_stream(), src, dst);
  if (small) omp_set_num_threads(threads);
}

// `src` as memory in layout `want`: the same memory when the layouts agree, else a reordered copy.
inline memory to_layout(memory src, const memory::desc& want) {
  if (src.get_desc() == want) return src;
  memory dst(want, cpu_engine());
  run_reorder(dnnl::reorder(src, dst), src, dst);
  return dst;
}

// A memory in layout `md`: `plain` itself when the layouts agree (the primitive writes the tensor
// directly), else fresh scratch to be reordered back with copy_back().
inline memory output_in(const memory& plain, const memory::desc& md) {
  return plain.get_desc() == md ? plain : memory(md, cpu_engine());
}
inline void copy_back(memory produced, memory plain) {
  if (produced.get_data_handle() == plain.get_data_handle()) return;
  dnnl::reorder(produced, plain).execute(cpu_stream(), produced, plain);
}

// The plain dims of a convolution (conv.cpp, int8.cpp), derived once from the shapes.
struct ConvDims {
  memory::dims src, wei, bias, dst;  // plain dims; grouped weights as (G, O/G, I/G, KH, KW)
  memory::dims strides, dilates, pad_l, pad_r;
  tag wei_tag;
};

// x (N, C, H, W), w (O, C/groups, KH, KW), output (oh, ow).
inline ConvDims conv_dims(const Tensor& x, const Tensor& w, const Conv2dGeom& g, int64_t oh, int64_t ow) {
  ConvDims d;
  const int64_t n = x.size(0), c = x.size(1), o = w.size(0), kh = w.size(2), kw = w.size(3);
  d.src = {n, c, x.size(2), x.size(3)};
  d.dst = {n, o, oh, ow};
  d.bias = {o};
  if (g.groups == 1) {
    d.wei = {o, c, kh, kw};
    d.wei_tag = tag::oihw;
  } else {  // (O, I/G, KH, KW) in memory is exactly goihw with O split as (G, O/G)
    d.wei = {g.groups, o / g.groups, c / g.groups, kh, kw};
    d.wei_tag = tag::goihw;
  }
  d.strides = {g.stride_h, g.stride_w};
  d.dilates = {g.dil_h - 1, g.dil_w - 1};  // oneDNN counts dilation from 0
  d.pad_l = {g.pad_h, g.pad_w};
  d.pad_r = {g.pad_h, g.pad_w};  // oneDNN floors the output size as PyTorch does
  return d;
}

// dst += src, converting layouts on the way. A reorder with a sum post-op reads dst and adds, so a gradient
// in oneDNN's blocked layout accumulates into a plain gradient buffer in one pass (the accumulate contract).
// In one layout (f32) a vector add instead: oneDNN 2.6 runs a same-format reorder with a sum on its generic
// `simple:any` kernel, which cost ~18 ms per ResNet-20 activation gradient under load.
inline void accumulate(memory src, memory dst) {
  if (src.get_desc() == dst.get_desc() && src.get_desc().data.data_type == dnnl_f32) {
    const float* s = static_cast<const float*>(src.get_data_handle());
    float* d = static_cast<float*>(dst.get_data_handle());
    const int64_t n = static_cast<int64_t>(src.get_desc().get_size() / sizeof(float));
#pragma omp parallel for simd if (n > 16384)
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
    return;
  }
  dnnl::post_ops po;
  po.append_sum(1.f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  dnnl::reorder::primitive_desc pd(cpu_engine(), src.get_desc(), cpu_engine(), dst.get_desc(), attr);
  run_reorder(dnnl::reorder(pd), src, dst);
}

// The gradient buffer `dst` gets `src`: copied (converting layouts) when dst is fresh (autograd.h: allocated
// for this backward, holding nothing yet), else added (accumulate). Nothing to do when src is dst itself.
inline void write_or_accumulate(memory src, memory dst, bool fresh) {
  if (!fresh) return accumulate(src, dst);
  if (src.get_data_handle() == dst.get_data_handle()) return;
  run_reorder(dnnl::reorder(src, dst), src, dst);
}

// Where a backward primitive writes a gradient: the buffer itself when it is fresh and in the layout the
// primitive wants (no scratch, no second pass), else scratch for write_or_accumulate.
inline memory grad_target(const memory& buffer, const memory::desc& want, bool fresh) {
  return fresh && buffer.get_desc() == want ? buffer : memory(want, cpu_engine());
}

}  // namespace engine::ops::dnnl_glue
