// conv2d and conv_out_size: oneDNN results against a plain-loop twin (forward, dx, dw, db, with poisoned
// gradient buffers), finite differences, accumulation and misuse errors.
#include "op_check.h"

#include "engine/ops.h"

using namespace engine;
using namespace qiltest;

namespace {

struct ConvCase {
  int64_t n, c, h, w, o, kh, kw;
  ops::Conv2dGeom g;
  bool bias;
};

struct ConvRef {
  Ref y, dx, dw, db;
};

// Direct definition: every (output, input tap) pair once; backward scatters the same products.
ConvRef conv_reference(const ConvCase& k, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& gy) {
  const auto& g = k.g;
  const int64_t oh = gy.size(2), ow = gy.size(3), cg = k.c / g.groups, og = k.o / g.groups;
  ConvRef r{Ref(gy.numel()), Ref(x.numel()), Ref(w.numel()), Ref(k.o)};
  const float* xp = x.data();
  const float* wp = w.data();
  const float* gp = gy.data();
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t o = 0; o < k.o; ++o)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t yi = ((n * k.o + o) * oh + i) * ow + j;
          const double gv = gp[yi];
          if (k.bias) {
            r.y.add(yi, b.data()[o]);
            r.db.add(o, gv);
          }
          for (int64_t ci = 0; ci < cg; ++ci) {
            const int64_t c = (o / og) * cg + ci;
            for (int64_t p = 0; p < k.kh; ++p)
              for (int64_t q = 0; q < k.kw; ++q) {
                const int64_t hh = i * g.stride_h - g.pad_h + p * g.dil_h;
                const int64_t ww = j * g.stride_w - g.pad_w + q * g.dil_w;
                if (hh < 0 || hh >= k.h || ww < 0 || ww >= k.w) continue;
                const int64_t xi = ((n * k.c + c) * k.h + hh) * k.w + ww;
                const int64_t wi = ((o * cg + ci) * k.kh + p) * k.kw + q;
                r.y.add(yi, static_cast<double>(xp[xi]) * wp[wi]);
                r.dx.add(xi, gv * wp[wi]);
                r.dw.add(wi, gv * xp[xi]);
              }
          }
        }
  return r;
}

std::vector<ConvCase> conv_cases() {
  ops::Conv2dGeom asym = geom(1, 0, 1, 1);
  asym.stride_h = 2;
  asym.pad_h = 1;
  asym.dil_w = 2;
  return {
      {2, 3, 9, 7, 5, 3, 3, geom(1, 1, 1, 1), true},      // odd channels, non-square
      {1, 5, 11, 8, 17, 3, 3, geom(2, 1, 1, 1), true},    // batch 1, stride 2
      {2, 17, 10, 9, 6, 3, 3, geom(1, 2, 2, 1), false},   // dilation 2
      {2, 6, 8, 10, 9, 3, 2, geom(2, 1, 1, 3), true},     // groups 3, rectangular kernel
      {2, 17, 9, 9, 17, 3, 3, geom(1, 1, 1, 17), true},   // depthwise
      {2, 4, 7, 7, 8, 3, 3, geom(2, 1, 1, 4), false},     // depthwise with multiplier 2
      {3, 5, 6, 7, 16, 1, 1, geom(1, 0, 1, 1), true},     // 1x1
      {2, 16, 7, 6, 32, 1, 1, geom(2, 0, 1, 1), false},   // 1x1 stride 2 (projection shortcut)
      {1, 3, 17, 15, 8, 7, 7, geom(2, 3, 1, 1), true},    // 7x7 stem
      {2, 5, 9, 11, 7, 3, 3, asym, true},                 // stride, padding, dilation differ per axis
      {2, 32, 8, 8, 64, 3, 3, geom(1, 1, 1, 1), true},    // channel counts oneDNN blocks by 16
  };
}

std::string describe(const ConvCase& k) {
  return str_cat("conv2d x(", k.n, ",", k.c, ",", k.h, ",", k.w, ") w(", k.o, ",", k.c / k.g.groups, ",", k.kh, ",",
                 k.kw, ") stride (", k.g.stride_h, ",", k.g.stride_w, ") pad (", k.g.pad_h, ",", k.g.pad_w,
                 ") dil (", k.g.dil_h, ",", k.g.dil_w, ") groups ", k.g.groups, k.bias ? " bias" : "");
}

}  // namespace

TEST_CASE("conv_out_size follows PyTorch, ceil mode included") {
  CHECK(ops::conv_out_size(224, 7, 2, 3) == 112);        // (224 + 6 - 7) / 2 + 1 = 112
  CHECK(ops::conv_out_size(10, 3, 1, 2, 2) == 10);       // span 10 + 4 - 5 = 9 -> 10
  CHECK(ops::conv_out_size(8, 3, 2, 0) == 3);            // floor(5 / 2) + 1
  CHECK(ops::conv_out_size(8, 3, 2, 0, 1, true) == 4);   // ceil(5 / 2) + 1
  CHECK(ops::conv_out_size(5, 2, 2, 1, 1, true) == 3);   // ceil(5/2)+1 = 4, but window 3 starts at 6 >= 5 + 1
  CHECK(ops::conv_out_size(2, 5, 1, 0) == 0);            // kernel larger than the input
  check_error([] { ops::conv_out_size(8, 3, 0, 0); }, {"conv_out_size", "stride 0"});
}

TEST_CASE("conv2d matches the plain-loop reference: forward, dx, dw, db into poisoned gradients") {
  for (const ConvCase& k : conv_cases()) {
    const std::string what = describe(k);
    Generator g(17);
    Tensor x = randn({k.n, k.c, k.h, k.w}, g).set_requires_grad(true);
    Tensor w = randn({k.o, k.c / k.g.groups, k.kh, k.kw}, g, 0.5f).set_requires_grad(true);
    Tensor b = k.bias ? randn({k.o}, g).set_requires_grad(true) : Tensor();
    const Tensor px = poison_grad(x, g), pw = poison_grad(w, g);
    const Tensor pb = k.bias ? poison_grad(b, g) : Tensor();
    Tensor y = ops::conv2d(x, w, b, k.g);
    REQUIRE(y.shape() == Shape{k.n, k.o, ops::conv_out_size(k.h, k.kh, k.g.stride_h, k.g.pad_h, k.g.dil_h),
                               ops::conv_out_size(k.w, k.kw, k.g.stride_w, k.g.pad_w, k.g.dil_w)});
    Tensor gy = randn(y.shape(), g);
    y.backward(gy);
    const ConvRef r = conv_reference(k, x, w, b, gy);
    check_ref(y, r.y, what + " forward");
    check_ref(x.grad(), r.dx, what + " dx", px);
    check_ref(w.grad(), r.dw, what + " dw", pw);
    if (k.bias) check_ref(b.grad(), r.db, what + " db", pb);
  }
}

TEST_CASE("conv2d gradients match central finite differences") {
  const std::vector<ConvCase> cases = {
      {2, 3, 7, 6, 4, 3, 3, geom(2, 1, 1, 1), true},
      {1, 6, 6, 5, 6, 3, 3, geom(1, 2, 2, 3), true},
      {2, 5, 5, 5, 5, 3, 3, geom(1, 1, 1, 5), false},
  };
  for (const ConvCase& k : cases) {
    Generator g(5);
    Tensor x = randn({k.n, k.c, k.h, k.w}, g).set_requires_grad(true);
    Tensor w = randn({k.o, k.c / k.g.groups, k.kh, k.kw}, g, 0.5f).set_requires_grad(true);
    std::vector<Tensor> in{x, w};
    if (k.bias) in.push_back(randn({k.o}, g).set_requires_grad(true));
    gradcheck(
        [&](const std::vector<Tensor>& t) { return ops::conv2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor(), k.g); },
        in, {}, describe(k));
  }
}

TEST_CASE("conv2d: only the gradients asked for are written, frozen weights still pass dx") {
  Generator g(2);
  Tensor x = randn({2, 3, 6, 6}, g).set_requires_grad(true);
  Tensor w = randn({4, 3, 3, 3}, g);  // frozen
  Tensor b = randn({4}, g);           // frozen
  Tensor y = ops::conv2d(x, w, b, geom(1, 1, 1, 1));
  ops::sum(y).backward();
  CHECK(x.grad().defined());
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(b.grad().defined());
  // Two uses of one weight: both contributions add up (fan-out through the accumulate contract).
  Tensor w2 = randn({4, 3, 3, 3}, g).set_requires_grad(true);
  Tensor z = ops::add(ops::conv2d(x.detach(), w2, Tensor(), geom(1, 1, 1, 1)),
                      ops::conv2d(x.detach(), w2, Tensor(), geom(1, 1, 1, 1)));
  ops::sum(z).backward();
  const Tensor twice = w2.grad().clone();
  w2.grad() = Tensor();
  ops::sum(ops::conv2d(x.detach(), w2, Tensor(), geom(1, 1, 1, 1))).backward();
  check_close(twice, ops::mul_scalar(w2.grad(), Tensor::scalar(2.f)), 1e-6f, 1e-6f, "conv2d fan-out");
}

TEST_CASE("conv2d misuse errors name the op and the shapes") {
  Tensor x = Tensor::zeros({2, 6, 8, 8});
  check_error([&] { ops::conv2d(Tensor::zeros({6, 8, 8}), Tensor::zeros({4, 6, 3, 3}), Tensor(), {}); },
              {"conv2d", "[6, 8, 8]"});
  check_error([&] { ops::conv2d(x, Tensor::zeros({4, 5, 3, 3}), Tensor(), {}); },
              {"conv2d", "[4, 5, 3, 3]", "[2, 6, 8, 8]"});
  check_error([&] { ops::conv2d(x, Tensor::zeros({4, 6, 3, 3}), Tensor::zeros({5}), {}); },
              {"conv2d", "bias", "[5]"});
  check_error([&] { ops::conv2d(x, Tensor::zeros({4, 2, 3, 3}), Tensor(), geom(1, 0, 1, 4)); },
              {"conv2d", "groups 4", "[2, 6, 8, 8]"});
  check_error([&] { ops::conv2d(x, Tensor::zeros({4, 6, 9, 9}), Tensor(), {}); },
              {"conv2d", "output size", "[4, 6, 9, 9]"});
  check_error([&] { ops::conv2d(x, Tensor::zeros({4, 6, 3, 3}), Tensor(), geom(0, 0, 1, 1)); },
              {"conv2d", "stride (0, 0)"});
}
