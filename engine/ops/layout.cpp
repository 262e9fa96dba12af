// The blocked-activation switch, the block width (tensor.h: block_channels) and the recorded conversion to
// plain layout (ops.h). The conversion is a
// oneDNN reorder both ways; backward accumulates into the blocked gradient with a sum post-op.
#include <atomic>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/dnnl_common.h"

namespace engine::ops {

using namespace dnnl_glue;

namespace {
std::atomic<bool> g_keep_blocked{false};
}  // namespace

void set_keep_blocked(bool on) { g_keep_blocked.store(on, std::memory_order_relaxed); }
bool keep_blocked() { return g_keep_blocked.load(std::memory_order_relaxed); }

Tensor to_plain(const Tensor& x) {
  QIL_CHECK(x.defined(), "to_plain: undefined input");
  if (x.layout() == Layout::plain) return x;
  OpTimer timer("to_plain");
  Tensor y = Tensor::empty(x.shape());  // (N, C, H, W)
  const memory::desc bmd = act_md(x), pmd = plain_md(dims_of(x), tag::nchw);
  memory src = wrap(x, bmd), dst = wrap(y, pmd);
  dnnl::reorder(src, dst).execute(cpu_stream(), src, dst);
  cpu_stream().wait();
  return record("to_plain", y, {x}, [bmd, pmd](const Tensor& gy, std::vector<Tensor>& gx) {
    OpTimer timer("to_plain.bwd");
    accumulate(wrap(gy, pmd), wrap(gx[0], bmd));
    cpu_stream().wait();
  });
}

}  // namespace engine::ops

namespace engine {

// oneDNN's direct convolutions block channels by the vector width of the ISA they dispatch to (which
// ONEDNN_MAX_CPU_ISA may lower): 16 floats with AVX-512, 8 with AVX2. A blocked layout of the other width
// would cost a reorder at every convolution.
int64_t block_channels() {
  static const int64_t b = [] {
    const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
    const bool avx512 = isa == dnnl::cpu_isa::avx512_core || isa == dnnl::cpu_isa::avx512_core_vnni ||
                        isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx ||
                        isa == dnnl::cpu_isa::avx512_mic || isa == dnnl::cpu_isa::avx512_mic_4ops;
    return avx512 ? int64_t(16) : int64_t(8);
  }();
  return b;
}

}  // namespace engine
