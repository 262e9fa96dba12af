// Helpers for the heavy-op suites: double-precision reference results with the magnitude of what they summed,
// plain data copied into the blocked layout, the "poison" backward check (pre-filled gradients must come out as
// poison + reference), and error-message checks. Not a reference implementation of any op: each suite writes
// its own loops.
#pragma once
#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "gradcheck.h"

namespace qiltest {

// A square convolution geometry: stride, padding, dilation and groups the same along both sides.
inline engine::ops::Conv2dGeom geom(int64_t s, int64_t p, int64_t d, int64_t groups) {
  engine::ops::Conv2dGeom g;
  g.stride_h = g.stride_w = s;
  g.pad_h = g.pad_w = p;
  g.dil_h = g.dil_w = d;
  g.groups = groups;
  return g;
}

// A reference value per element and the sum of |terms| that produced it. Float32 summation error grows with
// that sum, not with the (possibly cancelled) result, so it sets the absolute floor of the comparison.
struct Ref {
  std::vector<double> val, mag;
  explicit Ref(int64_t n = 0) : val(static_cast<size_t>(n), 0.0), mag(static_cast<size_t>(n), 0.0) {}
  void add(int64_t i, double term) {
    val[i] += term;
    mag[i] += std::fabs(term);
  }
};

// |actual - (base + ref)| <= 1e-4 |base + ref| + 1e-6 (mag + |base|). 1e-6 is ~16 float32 roundoffs of the
// summed magnitude: far above the ~sqrt(terms) roundoffs a float sum really accumulates, far below any real
// error (a missing term, a wrong index, an overwritten gradient).
inline void check_ref(const Tensor& actual, const Ref& ref, const std::string& what, const Tensor& base = Tensor()) {
  REQUIRE_MESSAGE(static_cast<size_t>(actual.numel()) == ref.val.size(), what << ": size " << actual.numel()
                                                                              << " vs reference " << ref.val.size());
  const float* a = actual.data();
  const float* b = base.defined() ? base.data() : nullptr;
  for (size_t i = 0; i < ref.val.size(); ++i) {
    const double bi = b ? b[i] : 0.0;
    const double want = bi + ref.val[i];
    const double tol = 1e-4 * std::fabs(want) + 1e-6 * (ref.mag[i] + std::fabs(bi));
    if (!(std::fabs(a[i] - want) <= tol)) {
      FAIL_CHECK(what << ": element " << i << " is " << a[i] << ", expected " << want << " (tol " << tol << ")");
      return;
    }
  }
}

// The blocked copy of plain (N, C, H, W) data, written by the layout's definition (B = block_channels()):
// element (n, c, h, w) lives at (((n * C/B + c/B) * H + h) * W + w) * B + c % B.
inline Tensor to_blocked(const Tensor& p) {
  const int64_t kBlock = engine::block_channels();
  const int64_t n = p.size(0), c = p.size(1), hw = p.size(2) * p.size(3);
  Tensor b = Tensor::empty(p.shape(), engine::DType::f32, engine::Layout::blocked);
  const float* s = p.data();
  float* d = b.data();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t k = 0; k < hw; ++k) d[((i * (c / kBlock) + ch / kBlock) * hw + k) * kBlock + ch % kBlock] =
          s[(i * c + ch) * hw + k];
  return b;
}

// Gives t a random "poison" gradient and returns a copy of it: backward must add to it, never overwrite it.
inline Tensor poison_grad(Tensor& t, Generator& g) {
  t.grad() = randn(t.shape(), g, 3.f);
  return t.grad().clone();
}

// The call throws engine::Error whose message contains every one of `parts`.
template <class F>
void check_error(F&& f, std::initializer_list<const char*> parts) {
  std::string msg;
  try {
    f();
  } catch (const engine::Error& e) {
    msg = e.what();
  }
  REQUIRE_MESSAGE(!msg.empty(), "expected an engine::Error containing '" << *parts.begin() << "'");
  for (const char* p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "'" << p << "' not in: " << msg);
}

}  // namespace qiltest
