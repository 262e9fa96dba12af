// The fresh-gradient-buffer check shared by the op suites (engine::record_fresh): an op's gradients computed into
// buffers autograd allocates fresh (the op overwrites them; NaN-poisoned, so an element left unwritten shows) must
// equal, bit for bit, the same gradients accumulated into zero-filled buffers.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "gradcheck.h"

namespace qiltest {

using engine::Generator;
using engine::Tensor;

// Turns NaN-filling of fresh gradient buffers on for one scope: an op that leaves an element unwritten shows.
struct PoisonFresh {
  PoisonFresh() { engine::set_poison_fresh_grads(true); }
  ~PoisonFresh() { engine::set_poison_fresh_grads(false); }
};

// The gradients of every input of f, computed twice on the same inputs and upstream gradient: with no gradient
// buffers (autograd allocates them fresh and the ops overwrite them) and with zero-filled ones (the ops add).
// They must agree, and no element may be left unwritten.
inline void check_fresh_equals_accumulated(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                           std::vector<Tensor> inputs, const std::string& what) {
  PoisonFresh poison;
  Generator g(17);
  for (Tensor& t : inputs) t.grad() = Tensor();
  Tensor y = f(inputs);
  const Tensor gy = randn(y.shape(), g);
  y.backward(gy);
  std::vector<Tensor> fresh;
  for (Tensor& t : inputs) {
    if (!t.requires_grad()) continue;
    REQUIRE_MESSAGE(t.grad().defined(), what << ": no gradient");
    fresh.push_back(t.grad().clone());
    t.grad() = Tensor::zeros(t.shape());
  }
  f(inputs).backward(gy);
  size_t k = 0;
  for (Tensor& t : inputs) {
    if (!t.requires_grad()) continue;
    const std::string which = engine::str_cat(what, ": input ", k);
    for (float v : fresh[k].to_vector()) REQUIRE_MESSAGE(std::isfinite(v), which << ": an element left unwritten");
    check_close(fresh[k], t.grad(), 0.f, 0.f, which + ": fresh != accumulated into zeros");
    ++k;
  }
}

inline Tensor req(Tensor t) { return t.set_requires_grad(true); }

}  // namespace qiltest
