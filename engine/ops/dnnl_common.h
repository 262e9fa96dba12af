// Private glue between engine ops and oneDNN (v2 API): the one CPU engine, a stream per thread, wrapping a
// Tensor as a dnnl::memory, reorders at op boundaries and the accumulate-into-gradient step.
// Included only by engine/ops/*.cpp; no public header may include dnnl.hpp.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

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

// An activation (N, C, H, W) as oneDNN sees it: nchw, or nChw16c for Layout::blocked.
inline memory::desc act_md(const Tensor& t) {
  return plain_md(dims_of(t), t.layout() == Layout::blocked ? tag::nChw16c : tag::nchw);
}
inline memory::desc blocked_md(const memory::dims& d) { return plain_md(d, tag::nChw16c); }

// A dnnl::memory over a tensor's storage (no copy). oneDNN takes non-const pointers even for inputs.
inline memory wrap(const Tensor& t, const memory::desc& md) {
  return memory(md, cpu_engine(), const_cast<float*>(t.data()));
}

// `src` as memory in layout `want`: the same memory when the layouts agree, else a reordered copy.
inline memory to_layout(memory src, const memory::desc& want) {
  if (src.get_desc() == want) return src;
  memory dst(want, cpu_engine());
  dnnl::reorder(src, dst).execute(cpu_stream(), src, dst);
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

// dst += src, converting layouts on the way. A reorder with a sum post-op reads dst and adds, so a gradient
// in oneDNN's blocked layout accumulates into a plain gradient buffer in one pass (the accumulate contract).
inline void accumulate(memory src, memory dst) {
  dnnl::post_ops po;
  po.append_sum(1.f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  dnnl::reorder::primitive_desc pd(cpu_engine(), src.get_desc(), cpu_engine(), dst.get_desc(), attr);
  dnnl::reorder(pd).execute(cpu_stream(), src, dst);
}

}  // namespace engine::ops::dnnl_glue
