// Test helpers shared by every suite: random tensors, a central-finite-difference gradient check of
// sum(G ⊙ f(inputs)) for a fixed random G, and closeness checks with a relative tolerance.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/random.h"
#include "engine/tensor.h"

namespace qiltest {

using engine::Generator;
using engine::Shape;
using engine::Tensor;

inline Tensor randn(const Shape& s, Generator& g, float scale = 1.f) {
  Tensor t = Tensor::empty(s);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = g.normal() * scale;
  return t;
}

inline Tensor rand_uniform(const Shape& s, Generator& g, float lo, float hi) {
  Tensor t = Tensor::empty(s);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = g.uniform(lo, hi);
  return t;
}

// max |a-b| / (atol + rtol*|b|) <= 1 elementwise, with a message naming the first offender.
inline void check_close(const Tensor& a, const Tensor& b, float rtol, float atol, const std::string& what) {
  REQUIRE_MESSAGE(a.shape() == b.shape(), what);
  const float* ap = a.data();
  const float* bp = b.data();
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float tol = atol + rtol * std::fabs(bp[i]);
    if (!(std::fabs(ap[i] - bp[i]) <= tol)) {
      FAIL_CHECK(what << ": element " << i << " is " << ap[i] << ", expected " << bp[i] << " (tol " << tol
                      << ")");
      return;
    }
  }
}

struct GradCheckOptions {
  float eps = 1e-2f;       // finite-difference step
  float rtol = 2e-2f;      // relative tolerance against the numeric derivative
  float atol = 2e-3f;      // absolute floor
  int samples = 24;        // coordinates sampled per input
  uint64_t seed = 1234;
};

// Checks d/dinput sum(G ⊙ f(inputs)) for every input with requires_grad set, at sampled coordinates.
// f must be deterministic in its inputs (no dropout randomness between calls).
inline void gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                      const GradCheckOptions& opt = {}, const std::string& what = "gradcheck") {
  Generator g(opt.seed);
  for (Tensor& t : inputs)
    if (t.requires_grad()) t.grad() = Tensor();
  Tensor y = f(inputs);
  Tensor G = randn(y.shape(), g);
  REQUIRE_MESSAGE(y.requires_grad(), what << ": output does not require grad");
  y.backward(G);
  auto objective = [&]() {
    engine::NoGradGuard ng;
    Tensor out = f(inputs);
    const float* o = out.data();
    const float* gp = G.data();
    double s = 0.0;
    for (int64_t i = 0; i < out.numel(); ++i) s += static_cast<double>(o[i]) * gp[i];
    return s;
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    REQUIRE_MESSAGE(x.grad().defined(), what << ": input " << k << " received no gradient");
    const float* an = x.grad().data();
    float* xp = x.data();
    const int n = static_cast<int>(std::min<int64_t>(x.numel(), opt.samples));
    for (int s = 0; s < n; ++s) {
      const int64_t i = x.numel() <= opt.samples ? s : static_cast<int64_t>(g.below(x.numel()));
      const float orig = xp[i];
      xp[i] = orig + opt.eps;
      const double up = objective();
      xp[i] = orig - opt.eps;
      const double dn = objective();
      xp[i] = orig;
      const double num = (up - dn) / (2.0 * opt.eps);
      const double tol = opt.atol + opt.rtol * std::fabs(num);
      if (!(std::fabs(an[i] - num) <= tol)) {
        FAIL_CHECK(what << ": input " << k << " element " << i << ": analytic " << an[i] << ", numeric " << num);
        return;
      }
    }
  }
}

}  // namespace qiltest
