// Blocked activations (Layout::blocked = nChw16c, nChw8c on AVX2, ops::set_keep_blocked): the tensor conversions
// against an index formula, each op that keeps the layout against the same op on plain data (outputs and gradients,
// which arrive in the blocked layout), and a small residual network trained one step in both modes.
#include "op_check.h"

#include "engine/ops.h"

using namespace engine;
using namespace qiltest;

namespace {

// Turns blocked mode on for one scope.
struct KeepBlocked {
  explicit KeepBlocked(bool on) { ops::set_keep_blocked(on); }
  ~KeepBlocked() { ops::set_keep_blocked(false); }
};

}  // namespace

TEST_CASE("blocked tensors: plain(), to_vector() and clone() see the layout's definition") {
  Generator g(1);
  Tensor p = randn({2, 32, 3, 5}, g);
  Tensor b = to_blocked(p);
  CHECK(b.layout() == Layout::blocked);
  CHECK(b.nbytes() == p.nbytes());
  check_close(b.plain(), p, 0.f, 0.f, "plain()");
  CHECK(b.to_vector() == p.to_vector());
  Tensor c = b.clone();
  CHECK(c.layout() == Layout::blocked);
  CHECK(c.to_vector() == p.to_vector());
  CHECK(b.plain().layout() == Layout::plain);
  CHECK_THROWS_WITH_AS(Tensor::empty({2, 12, 3, 3}, DType::f32, Layout::blocked),  // 12: no multiple of 8 or 16
                       doctest::Contains(str_cat("multiple of ", block_channels()).c_str()), Error);
  CHECK_THROWS_WITH_AS(b.view({2, 480}), doctest::Contains("blocked"), Error);
}

TEST_CASE("batch_norm2d, relu, add, max_pool2d and to_plain on blocked inputs match the plain ops") {
  Generator g(3);
  const Shape s{3, 32, 5, 6};
  Tensor xp = randn(s, g, 2.f).set_requires_grad(true);
  Tensor xb = to_blocked(xp.detach()).set_requires_grad(true);
  Tensor rp = randn(s, g).set_requires_grad(true);
  Tensor rb = to_blocked(rp.detach()).set_requires_grad(true);
  Tensor gamma_p = rand_uniform({32}, g, 0.5f, 1.5f).set_requires_grad(true);
  Tensor beta_p = randn({32}, g).set_requires_grad(true);
  Tensor gamma_b = gamma_p.clone().set_requires_grad(true);
  Tensor beta_b = beta_p.clone().set_requires_grad(true);
  Tensor seed = randn({3, 32, 2, 3}, g);  // the upstream gradient of the pooled output
  ops::Pool2dGeom pg;                     // 2x2, stride 2

  for (bool training : {true, false}) {
    CAPTURE(training);
    Tensor mean_p = randn({32}, g, 0.1f), var_p = rand_uniform({32}, g, 0.5f, 2.f);
    Tensor mean_b = mean_p.clone(), var_b = var_p.clone();
    for (Tensor* t : {&xp, &xb, &rp, &rb, &gamma_p, &beta_p, &gamma_b, &beta_b}) t->grad() = Tensor();
    auto net = [&](const Tensor& x, const Tensor& r, const Tensor& gm, const Tensor& bt, Tensor& rm, Tensor& rv) {
      Tensor h = ops::relu(ops::add(ops::batch_norm2d(x, gm, bt, rm, rv, training), r));
      return ops::max_pool2d(h, pg);
    };
    Tensor yp = net(xp, rp, gamma_p, beta_p, mean_p, var_p);
    Tensor yb = net(xb, rb, gamma_b, beta_b, mean_b, var_b);
    REQUIRE(yb.layout() == Layout::blocked);
    check_close(yb.plain(), yp, 1e-5f, 1e-5f, "forward");
    check_close(mean_b, mean_p, 1e-5f, 1e-6f, "running mean");
    check_close(var_b, var_p, 1e-5f, 1e-6f, "running variance");
    // The same upstream gradient into each; a blocked tensor's gradient buffer is in its blocked layout.
    yp.backward(seed);
    yb.backward(to_blocked(seed));
    Tensor dxb = Tensor::empty(s, DType::f32, Layout::blocked);
    std::copy(xb.grad().data(), xb.grad().data() + xb.grad().numel(), dxb.data());
    check_close(dxb.plain(), xp.grad(), 1e-4f, 1e-5f, "dx");
    Tensor drb = Tensor::empty(s, DType::f32, Layout::blocked);
    std::copy(rb.grad().data(), rb.grad().data() + rb.grad().numel(), drb.data());
    check_close(drb.plain(), rp.grad(), 1e-4f, 1e-5f, "d(residual)");
    check_close(gamma_b.grad(), gamma_p.grad(), 1e-4f, 1e-5f, "dgamma");
    check_close(beta_b.grad(), beta_p.grad(), 1e-4f, 1e-5f, "dbeta");
  }
}

TEST_CASE("to_plain converts forward and accumulates the gradient back in the blocked layout") {
  Generator g(4);
  Tensor p = randn({2, 16, 3, 3}, g);
  Tensor b = to_blocked(p).set_requires_grad(true);
  Tensor seed = randn({2, 16, 3, 3}, g);
  b.grad() = to_blocked(Tensor::full({2, 16, 3, 3}, 1.f));  // poison: backward must add to it
  Tensor y = ops::to_plain(b);
  CHECK(y.layout() == Layout::plain);
  check_close(y, p, 0.f, 0.f, "to_plain forward");
  y.backward(seed);
  Tensor want = Tensor::empty(seed.shape());
  for (int64_t i = 0; i < seed.numel(); ++i) want.data()[i] = seed.data()[i] + 1.f;
  Tensor got = Tensor::empty(seed.shape(), DType::f32, Layout::blocked);
  std::copy(b.grad().data(), b.grad().data() + b.grad().numel(), got.data());
  check_close(got.plain(), want, 1e-6f, 1e-6f, "to_plain backward");
  CHECK(ops::to_plain(p).same(p));
}

TEST_CASE("a residual network trains the same step with blocked and with plain activations") {
  Generator g(5);
  Tensor x0 = randn({4, 3, 12, 12}, g);
  Tensor labels = Tensor::empty({4}, DType::s32);
  for (int64_t i = 0; i < 4; ++i) labels.data<int32_t>()[i] = static_cast<int32_t>(i % 3);
  std::vector<Tensor> init = {randn({16, 3, 3, 3}, g, 0.3f),  randn({16, 16, 3, 3}, g, 0.1f),
                              randn({32, 16, 3, 3}, g, 0.1f), rand_uniform({16}, g, 0.5f, 1.5f),
                              randn({16}, g, 0.1f),           rand_uniform({32}, g, 0.5f, 1.5f),
                              randn({32}, g, 0.1f),           randn({3, 32}, g, 0.2f)};
  struct Result {
    float loss;
    std::vector<Tensor> grads;
    Tensor dx, rm, rv;
    bool saw_blocked;
  };
  auto run = [&](bool blocked) {
    KeepBlocked keep(blocked);
    std::vector<Tensor> p;
    for (const Tensor& t : init) p.push_back(t.clone().set_requires_grad(true));
    Tensor x = x0.clone().set_requires_grad(true);
    Tensor rm1 = Tensor::zeros({16}), rv1 = Tensor::full({16}, 1.f), rm2 = Tensor::zeros({32}),
           rv2 = Tensor::full({32}, 1.f);
    ops::Conv2dGeom same;
    same.pad_h = same.pad_w = 1;
    ops::Conv2dGeom down = same;
    down.stride_h = down.stride_w = 2;
    Tensor h = ops::relu(ops::batch_norm2d(ops::conv2d(x, p[0], Tensor(), same), p[3], p[4], rm1, rv1, true));
    Tensor c2 = ops::conv2d(h, p[1], Tensor(), same);
    const bool saw = c2.layout() == Layout::blocked;
    h = ops::relu(ops::add(c2, h));
    h = ops::max_pool2d(h, ops::Pool2dGeom{});
    h = ops::relu(ops::batch_norm2d(ops::conv2d(h, p[2], Tensor(), down), p[5], p[6], rm2, rv2, true));
    Tensor logits = ops::linear(ops::flatten(ops::global_avg_pool(h)), p[7], Tensor());
    Tensor loss = ops::softmax_cross_entropy(logits, labels);
    loss.backward();
    Result r{loss.item(), {}, x.grad(), rm2, rv2, saw};
    for (Tensor& t : p) r.grads.push_back(t.grad());
    return r;
  };
  const Result plain = run(false);
  const Result blocked = run(true);
  CHECK_FALSE(plain.saw_blocked);
  if (!blocked.saw_blocked) MESSAGE("oneDNN did not pick the blocked layout here: the blocked path was not exercised");
  CHECK(blocked.loss == doctest::Approx(plain.loss).epsilon(1e-5));
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    CAPTURE(i);
    check_close(blocked.grads[i], plain.grads[i], 1e-3f, 1e-5f, "parameter gradient");
  }
  check_close(blocked.dx, plain.dx, 1e-3f, 1e-5f, "input gradient");  // the first conv's input stays plain
  check_close(blocked.rm, plain.rm, 1e-4f, 1e-6f, "running mean");
  check_close(blocked.rv, plain.rv, 1e-4f, 1e-6f, "running variance");
}
