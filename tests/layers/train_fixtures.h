// Shared by the layers suite: a random (N, 1, 28, 28) batch with cyclic labels, and a few plain SGD steps
// (cross-entropy, per-layer quantizer-gradient balancing — a no-op on layers without quantizers —, the step,
// the quantizers' constraints). The training library's Trainer, which adds accumulation, non-finite checks and
// MPI, has its own suite (tests/training/); the layers suite links no apps/ code.
#pragma once
#include "engine/ops.h"
#include "engine/optim.h"
#include "gradcheck.h"
#include "layers/module.h"
#include "layers/quantize.h"

namespace qiltest {

struct Batch {
  engine::Tensor x, y;  // x: (N, 1, 28, 28); y: (N) s32
};

// Calibrates m's quantizers and output scales on the one batch x (layers::calibrate over a single batch).
inline void calibrate_once(layers::Module& m, const engine::Tensor& x) {
  layers::calibrate(m, 1, [&, n = 0](engine::Tensor& b) mutable {
    b = x;
    return n++ < 1;
  });
}

inline Batch random_batch(int64_t n, int64_t classes, uint64_t seed) {
  engine::Generator g(seed);
  Batch b{randn({n, 1, 28, 28}, g), engine::Tensor::empty({n}, engine::DType::s32)};
  for (int64_t i = 0; i < n; ++i) b.y.data<int32_t>()[i] = static_cast<int32_t>(i % classes);
  return b;
}

// `steps` steps of SGD (momentum 0.9) on every trainable parameter; returns the last step's loss.
inline float train_steps(layers::Module& m, const Batch& b, int steps, float lr) {
  std::vector<engine::Tensor> params;
  for (auto& p : m.named_parameters())
    if (p.tensor.requires_grad()) params.push_back(p.tensor);
  engine::SGD opt({engine::ParamGroup("all", params, 1.f, 0.f)}, 0.9f);
  float loss = 0;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    engine::Tensor l = engine::ops::softmax_cross_entropy(m.forward(b.x), b.y);
    loss = l.item();
    l.backward();
    layers::scale_quantizer_gradients(m, layers::GradBalance::sqrt);
    opt.step(lr);
    layers::project_quantizers(m);
  }
  return loss;
}

}  // namespace qiltest
