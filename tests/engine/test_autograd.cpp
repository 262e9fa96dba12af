// Autograd core: accumulation, fan-out, graph freeing, no-grad, misuse errors; elementwise ops and the loss.
#include "gradcheck.h"
#include "fresh_check.h"
#include "op_check.h"

#include <cmath>
#include <functional>

#include "engine/ops.h"

using namespace engine;
using namespace qiltest;

TEST_CASE("backward accumulates into pre-filled parameter gradients") {
  Tensor w = Tensor::from_vector({1.f, -2.f, 3.f}, {3}).set_requires_grad(true);
  w.grad() = Tensor::from_vector({10.f, 10.f, 10.f}, {3});
  Tensor loss = ops::sum(ops::relu(w));  // d/dw = [1, 0, 1]
  loss.backward();
  CHECK(w.grad().to_vector() == std::vector<float>{11.f, 10.f, 11.f});
}

TEST_CASE("fan-out: a tensor used twice gets both gradients") {
  Tensor x = Tensor::from_vector({1.f, 2.f}, {2}).set_requires_grad(true);
  Tensor y = ops::add(x, x);  // dy/dx = 2
  Tensor z = ops::add(y, x);  // dz/dx = 3
  ops::sum(z).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{3.f, 3.f});
}

TEST_CASE("backward frees the graph: a second backward is a no-op on the parameters") {
  Tensor x = Tensor::from_vector({1.f}, {1}).set_requires_grad(true);
  Tensor l = ops::sum(ops::relu(x));
  l.backward();
  CHECK(x.grad().item() == 1.f);
  l.backward();  // the nodes were released; the root node has nothing left to do
  CHECK(x.grad().item() == 1.f);
}

TEST_CASE("NoGradGuard records nothing") {
  Tensor x = Tensor::from_vector({1.f}, {1}).set_requires_grad(true);
  NoGradGuard ng;
  Tensor y = ops::relu(x);
  CHECK_FALSE(y.requires_grad());
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("does not require grad"), Error);
}

TEST_CASE("misuse names the op and the shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(ops::add(a, b), doctest::Contains("add: shapes differ: [2, 3] and [3, 2]"), Error);
  Tensor x = Tensor::zeros({2, 3}).set_requires_grad(true);
  Tensor y = ops::relu(x);
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("scalar"), Error);
  CHECK_THROWS_WITH_AS(ops::reshape(a, {4, 2}), doctest::Contains("cannot reshape [2, 3]"), Error);
  Tensor labels = Tensor::zeros({2}, DType::s32);
  labels.data<int32_t>()[1] = 7;
  CHECK_THROWS_WITH_AS(ops::softmax_cross_entropy(a, labels), doctest::Contains("label 7 at row 1"), Error);
  CHECK_THROWS_WITH_AS(a.data<int32_t>(), doctest::Contains("s32 data of a f32 tensor"), Error);
}

TEST_CASE("gradients of elementwise ops match finite differences") {
  Generator g(7);
  // Keep relu inputs off the kink at 0.
  Tensor x = randn({3, 5, 4}, g);
  for (int64_t i = 0; i < x.numel(); ++i)
    if (std::fabs(x.data()[i]) < 0.05f) x.data()[i] = 0.3f;
  x.set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return ops::relu(in[0]); }, {x}, {}, "relu");

  Tensor a = randn({4, 6}, g).set_requires_grad(true), b = randn({4, 6}, g).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); }, {a, b}, {}, "add");

  // add_relu: a + b kept off the kink.
  Tensor ar = randn({4, 6}, g).set_requires_grad(true), br = randn({4, 6}, g);
  for (int64_t i = 0; i < br.numel(); ++i)
    if (std::fabs(ar.data()[i] + br.data()[i]) < 0.05f) br.data()[i] += 0.3f;
  br.set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return ops::add_relu(in[0], in[1]); }, {ar, br}, {}, "add_relu");

  Tensor s = Tensor::scalar(0.7f).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return ops::mul_scalar(in[0], in[1]); }, {a, s}, {}, "mul_scalar");

  gradcheck([](const std::vector<Tensor>& in) { return ops::reshape(in[0], {2, -1, 3}); }, {a}, {}, "reshape");
  gradcheck([](const std::vector<Tensor>& in) { return ops::mean(in[0]); }, {a}, {}, "mean");
}

TEST_CASE("softmax cross-entropy: value by hand and gradient") {
  // Two classes, logits (0, 0): loss = log 2 whatever the label.
  Tensor z = Tensor::zeros({1, 2});
  Tensor lab = Tensor::zeros({1}, DType::s32);
  CHECK(ops::softmax_cross_entropy(z, lab).item() == doctest::Approx(std::log(2.0)).epsilon(1e-6));
  // Smoothing 0.2 over K=2 at logits (log 3, 0): p = (3/4, 1/4); target (0.9, 0.1);
  // loss = -(0.9 log 0.75 + 0.1 log 0.25).
  Tensor z2 = Tensor::from_vector({std::log(3.f), 0.f}, {1, 2});
  const double want = -(0.9 * std::log(0.75) + 0.1 * std::log(0.25));
  CHECK(ops::softmax_cross_entropy(z2, lab, 0.2f).item() == doctest::Approx(want).epsilon(1e-5));

  Generator g(3);
  Tensor logits = randn({5, 7}, g).set_requires_grad(true);
  Tensor labels = Tensor::empty({5}, DType::s32);
  for (int i = 0; i < 5; ++i) labels.data<int32_t>()[i] = (i * 3) % 7;
  for (float eps : {0.f, 0.1f})
    gradcheck([&](const std::vector<Tensor>& in) { return ops::softmax_cross_entropy(in[0], labels, eps); },
              {logits}, {}, "softmax_cross_entropy");
}

TEST_CASE("dropout: eval is identity, training scales kept values and passes gradient through the mask") {
  Generator g(1);
  Tensor x = Tensor::full({1000}, 1.f).set_requires_grad(true);
  CHECK(ops::dropout(x, 0.5f, false, g).same(x));
  Tensor y = ops::dropout(x, 0.25f, true, g);
  int zeros = 0;
  for (float v : y.to_vector()) {
    CHECK((v == 0.f || std::fabs(v - 1.f / 0.75f) < 1e-6f));
    zeros += v == 0.f;
  }
  CHECK(zeros > 200);
  CHECK(zeros < 300);
  ops::sum(y).backward();
  CHECK(x.grad().to_vector() == y.detach().to_vector());
}

TEST_CASE("top-k counts") {
  Tensor logits = Tensor::from_vector({0.1f, 0.5f, 0.4f, 0.9f, 0.0f, 0.2f}, {2, 3});
  Tensor labels = Tensor::empty({2}, DType::s32);
  labels.data<int32_t>()[0] = 2;  // row 0: 0.4 is second -> top-2 yes, top-1 no
  labels.data<int32_t>()[1] = 0;  // row 1: 0.9 is first
  CHECK(ops::topk_correct(logits, labels, 1) == 1);
  CHECK(ops::topk_correct(logits, labels, 2) == 2);
}

TEST_CASE("soft-target cross-entropy: one-hot targets match the label loss, gradient, softmax rows") {
  Generator g(9);
  Tensor logits = randn({4, 6}, g).set_requires_grad(true);
  Tensor labels = Tensor::empty({4}, DType::s32);
  Tensor onehot = Tensor::zeros({4, 6});
  for (int i = 0; i < 4; ++i) {
    labels.data<int32_t>()[i] = (i * 5) % 6;
    onehot.data()[i * 6 + (i * 5) % 6] = 1.f;
  }
  CHECK(ops::soft_cross_entropy(logits, onehot).item() ==
        doctest::Approx(ops::softmax_cross_entropy(logits, labels).item()).epsilon(1e-6));
  // Targets equal to the model's own softmax: the gradient (p - t)/N vanishes; the loss is the entropy.
  Tensor p = ops::softmax(logits);
  for (int i = 0; i < 4; ++i) {
    double s = 0;
    for (int j = 0; j < 6; ++j) s += p.data()[i * 6 + j];
    CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
  }
  Tensor l = ops::soft_cross_entropy(logits, p);
  l.backward();
  for (float v : logits.grad().to_vector()) CHECK(std::fabs(v) < 1e-6f);
  Tensor t = ops::softmax(randn({4, 6}, g));
  logits.grad() = Tensor();
  gradcheck([&](const std::vector<Tensor>& in) { return ops::soft_cross_entropy(in[0], t); }, {logits}, {},
            "soft_cross_entropy");
  CHECK_THROWS_WITH_AS(ops::soft_cross_entropy(logits, Tensor::zeros({4, 5})), doctest::Contains("must match"), Error);
}

// ------------------------------------------------------------------ fresh gradient buffers (record_fresh)


TEST_CASE("fresh gradient buffers: every record_fresh op writes all of them, equal to accumulating into zeros") {
  Generator g(3);
  ops::Conv2dGeom same;
  same.pad_h = same.pad_w = 1;
  for (bool blocked : {false, true}) {
    CAPTURE(blocked);
    ops::set_keep_blocked(blocked);
    check_fresh_equals_accumulated(
        [&](const std::vector<Tensor>& t) { return ops::conv2d(t[0], t[1], t[2], same); },
        {req(randn({2, 16, 5, 5}, g)), req(randn({16, 16, 3, 3}, g)), req(randn({16}, g))}, "conv2d");
    Tensor rm = Tensor::zeros({16}), rv = Tensor::full({16}, 1.f);
    for (bool relu : {false, true})
      check_fresh_equals_accumulated(
          [&](const std::vector<Tensor>& t) {
            // A convolution first, so the normalization sees the layout the network would give it.
            Tensor h = ops::conv2d(t[0], t[3], Tensor(), same);
            return relu ? ops::batch_norm2d_relu(h, t[1], t[2], rm, rv, true)
                        : ops::batch_norm2d(h, t[1], t[2], rm, rv, true);
          },
          {req(randn({2, 16, 4, 4}, g)), req(randn({16}, g)), req(randn({16}, g)), req(randn({16, 16, 3, 3}, g))},
          relu ? "batch_norm2d_relu" : "batch_norm2d");
    ops::Pool2dGeom pool;
    check_fresh_equals_accumulated(
        [&](const std::vector<Tensor>& t) {
          Tensor h = ops::relu(ops::conv2d(t[0], t[1], Tensor(), same));
          return ops::max_pool2d(ops::add(h, ops::conv2d(t[0], t[2], Tensor(), same)), pool);
        },
        {req(randn({2, 16, 6, 6}, g)), req(randn({16, 16, 3, 3}, g)), req(randn({16, 16, 3, 3}, g))},
        "relu, add, max_pool2d and fan-out");
    check_fresh_equals_accumulated(
        [&](const std::vector<Tensor>& t) {
          Tensor h = ops::conv2d(t[0], t[1], Tensor(), same);
          return ops::add_relu(h, ops::conv2d(t[0], t[2], Tensor(), same));
        },
        {req(randn({2, 16, 6, 6}, g)), req(randn({16, 16, 3, 3}, g)), req(randn({16, 16, 3, 3}, g))},
        "add_relu and fan-out");
    ops::set_keep_blocked(false);
  }
  check_fresh_equals_accumulated([](const std::vector<Tensor>& t) { return ops::linear(t[0], t[1], t[2]); },
                                 {req(randn({3, 7}, g)), req(randn({5, 7}, g)), req(randn({5}, g))}, "linear");
  // The same tensor twice in one op: its buffer is handed over twice and must sum both contributions.
  check_fresh_equals_accumulated([](const std::vector<Tensor>& t) { return ops::add(t[0], t[0]); },
                                 {req(randn({4, 5}, g))}, "add(x, x)");
  // Above kParallelMin, so the scale's sum runs on every thread; and a small one on one thread.
  for (int64_t n : {int64_t{40001}, int64_t{7}})
    check_fresh_equals_accumulated([](const std::vector<Tensor>& t) { return ops::mul_scalar(t[0], t[1]); },
                                   {req(randn({n}, g)), req(Tensor::scalar(0.7f))}, "mul_scalar");
}

TEST_CASE("add_relu equals relu(add) on the same inputs: values and both gradients, plain and blocked") {
  Generator g(21);
  for (bool blocked : {false, true}) {
    CAPTURE(blocked);
    Tensor a0 = randn({3, 16, 5, 5}, g), b0 = randn({3, 16, 5, 5}, g), gy = randn({3, 16, 5, 5}, g);
    if (blocked) a0 = to_blocked(a0), b0 = to_blocked(b0), gy = to_blocked(gy);
    Tensor a1 = a0.clone().set_requires_grad(true), b1 = b0.clone().set_requires_grad(true);
    Tensor a2 = a0.clone().set_requires_grad(true), b2 = b0.clone().set_requires_grad(true);
    Tensor fused = ops::add_relu(a1, b1), ref = ops::relu(ops::add(a2, b2));
    CHECK(fused.layout() == ref.layout());
    check_close(fused, ref, 0.f, 0.f, "forward");
    fused.backward(gy);
    ref.backward(gy);
    check_close(a1.grad(), a2.grad(), 0.f, 0.f, "d a");
    check_close(b1.grad(), b2.grad(), 0.f, 0.f, "d b");
    int64_t off = 0;  // the fixture exercises both sides of the mask
    for (float v : fused.to_vector()) off += v == 0.f;
    CHECK(off > fused.numel() / 4);
    CHECK(off < 3 * fused.numel() / 4);
  }
  check_fresh_equals_accumulated([](const std::vector<Tensor>& t) { return ops::add_relu(t[0], t[0]); },
                                 {req(randn({4, 5}, g))}, "add_relu(x, x)");
  CHECK_THROWS_WITH_AS(ops::add_relu(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})),
                       doctest::Contains("add_relu: shapes differ"), Error);
}

TEST_CASE("add(x, x) with a fresh buffer: the gradient is 2 gy") {
  Tensor x = Tensor::from_vector({1.f, -2.f, 3.f}, {3}).set_requires_grad(true);
  ops::add(x, x).backward(Tensor::from_vector({0.5f, 1.f, -4.f}, {3}));
  CHECK(x.grad().to_vector() == std::vector<float>{1.f, 2.f, -8.f});
}

// What a graph keeps alive: only what some backward reads. add's backward reads neither operand and a constant
// scale's mul_scalar does not read its operand, so those intermediates are freed once the forward drops them;
// mul_scalar with a learned scale reads its operand for ds and keeps it. tensor_bytes_live() counts every
// storage (rounded to 64 bytes), so the kept bytes are measured, not inferred.
TEST_CASE("the graph keeps an intermediate alive only where a backward reads it") {
  const int64_t n = 1 << 16;  // 256 KiB of f32 per tensor, far above the scalars' 64-byte storages
  const int64_t bytes = n * 4;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i % 7) - 3.f;
  Tensor x = Tensor::from_vector(v, {n}).set_requires_grad(true);
  Tensor two = Tensor::scalar(2.f);

  SUBCASE("add's operands") {
    const int64_t before = tensor_bytes_live();
    Tensor y;
    {
      Tensor t = ops::mul_scalar(x, two);  // an intermediate only add's node refers to once t goes
      y = ops::add(t, x);
    }
    // y alone: t's storage is gone (a node that held its inputs would keep it: 2·bytes).
    CHECK(tensor_bytes_live() - before == bytes);
    y.backward(Tensor::full({n}, 1.f));
    for (float g : x.grad().to_vector()) REQUIRE(g == 3.f);  // d(2x + x)/dx: the graph still reaches x through t
  }
  SUBCASE("mul_scalar's operand: dropped under a constant scale, kept under a learned one") {
    Tensor s = Tensor::scalar(0.5f).set_requires_grad(true);
    const int64_t before = tensor_bytes_live();
    Tensor y_const, y_learned;
    {
      Tensor t = ops::mul_scalar(x, two);
      y_const = ops::mul_scalar(t, Tensor::scalar(3.f));
    }
    CHECK(tensor_bytes_live() - before == bytes);  // y_const
    {
      Tensor t = ops::mul_scalar(x, two);
      y_learned = ops::mul_scalar(t, s);
    }
    CHECK(tensor_bytes_live() - before == 3 * bytes);  // + y_learned + the t its ds reads
    ops::add(y_const, y_learned).backward(Tensor::full({n}, 1.f));
    for (float g : x.grad().to_vector()) REQUIRE(g == 2.f * 3.f + 2.f * 0.5f);
    double ds = 0;
    for (float xi : v) ds += 2.0 * xi;  // Σ gy·t, t = 2x
    CHECK(s.grad().item() == doctest::Approx(ds).epsilon(1e-6));
  }
}
