// Model zoo: parameter counts against torchvision's, parameter names, shapes through forward, FLOPs; the
// BatchNorm2d + ReLU fusion of Sequential.
#include "gradcheck.h"

#include <set>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "layers/basic.h"
#include "layers/models.h"

using namespace layers;

namespace {
std::set<std::string> names_of(const Module& m) {
  std::set<std::string> s;
  for (const auto& p : m.named_parameters()) s.insert(p.name);
  for (const auto& b : m.named_buffers()) s.insert(b.name);
  return s;
}
}  // namespace

TEST_CASE("parameter counts match torchvision at 1000 classes") {
  ModelSpec spec;  // 3 channels, 1000 classes
  CHECK(build_model("resnet18", spec)->num_parameters() == 11689512);
  CHECK(build_model("resnet34", spec)->num_parameters() == 21797672);
  CHECK(build_model("alexnet", spec)->num_parameters() == 61100840);
  // CIFAR ResNet-20 with 10 classes: 269,722 with He et al.'s parameter-free shortcuts (option A, "0.27M"),
  // plus the two projection shortcuts of option B: 1x1 convs 16*32 + 32*64 = 2,560 weights and their BNs'
  // 2*(32+64) = 192 affine parameters.
  ModelSpec cifar{3, 10, 32, 0};
  CHECK(build_model("resnet20", cifar)->num_parameters() == 269722 + 2560 + 192);
}

TEST_CASE("parameter and buffer names follow torchvision's state_dict") {
  ModelSpec spec;
  auto r18 = names_of(*build_model("resnet18", spec));
  for (const char* n : {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "layer1.0.conv1.weight", "layer1.1.bn2.running_var", "layer2.0.downsample.0.weight",
                        "layer2.0.downsample.1.weight", "layer4.1.conv2.weight", "fc.weight", "fc.bias"})
    CHECK_MESSAGE(r18.count(n) == 1, n);
  CHECK(r18.count("layer1.0.downsample.0.weight") == 0);  // identity shortcut in layer1
  auto alex = names_of(*build_model("alexnet", spec));
  for (const char* n : {"features.0.weight", "features.0.bias", "features.3.weight", "features.10.weight",
                        "classifier.1.weight", "classifier.4.bias", "classifier.6.weight"})
    CHECK_MESSAGE(alex.count(n) == 1, n);
}

TEST_CASE("models run on 1-channel 28x28 input and produce (N, classes)") {
  engine::NoGradGuard ng;
  for (const char* name : {"lenet", "lenet-nobn", "lenet-dropout", "resnet20", "resnet18"}) {
    ModelSpec spec{1, 10, 28, 1};
    auto m = build_model(name, spec);
    m->eval();
    Tensor y = m->forward(Tensor::zeros({2, 1, 28, 28}));
    CHECK_MESSAGE((y.shape() == Shape{2, 10}), name);
  }
}

// Training reseeds every stochastic layer per micro-batch from (epoch, the micro-batch's number among all
// ranks'): the draws must follow those two numbers only — another micro-batch (another rank) other units.
TEST_CASE("Dropout: the units dropped follow (layer seed, a, b) alone, and AlexNet's and lenet-dropout's are found") {
  ModelSpec spec{1, 10, 28, 1};
  auto m = build_model("lenet-dropout", spec);
  CHECK(names_of(*m) == names_of(*build_model("lenet-nobn", spec)));  // Dropout adds no parameters
  const auto drops = stochastic_layers(*m);
  REQUIRE(drops.size() == 1);
  CHECK(stochastic_layers(*build_model("alexnet", ModelSpec{})).size() == 2);
  CHECK(stochastic_layers(*build_model("lenet-nobn", spec)).empty());
  engine::NoGradGuard ng;
  m->train();
  engine::Generator g(5);
  Tensor x = Tensor::empty({4, 1, 28, 28});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = g.normal();
  auto out = [&](uint64_t a, uint64_t b) {
    drops[0]->reseed(a, b);
    return m->forward(x).to_vector();
  };
  const auto first = out(3, 0);
  m->forward(x);                // draws move the generator on ...
  CHECK(out(3, 0) == first);    // ... and the reseed puts it back: the same units dropped
  CHECK(out(3, 1) != first);    // the next micro-batch (rank 1's with --accumulate 1)
  CHECK(out(4, 0) != first);    // the next epoch
  m->eval();
  const auto a = m->forward(x).to_vector();
  CHECK(m->forward(x).to_vector() == a);  // no dropout in eval
}

TEST_CASE("lenet-nobn: lenet's layers without BatchNorm, biases on the convs instead, no buffers") {
  ModelSpec spec{1, 10, 28, 0};
  auto m = build_model("lenet-nobn", spec);
  // conv1 32*1*25 + 32 = 832; conv2 64*32*25 + 64 = 51,264; fc1 (64*7*7)*256 + 256 = 803,072; fc2 2,570.
  CHECK(m->num_parameters() == 857738);
  CHECK(m->named_buffers().empty());
  std::set<std::string> want = names_of(*build_model("lenet", spec));
  for (auto it = want.begin(); it != want.end();) it = it->rfind("bn", 0) == 0 ? want.erase(it) : std::next(it);
  want.insert("conv1.bias");
  want.insert("conv2.bias");
  CHECK(names_of(*m) == want);
}

TEST_CASE("forward MACs of resnet18 at 224 are torchvision's 1.82 G") {
  ModelSpec spec;
  auto m = build_model("resnet18", spec);
  const double g = forward_macs(*m, spec) / 1e9;
  CHECK(g == doctest::Approx(1.814).epsilon(0.01));
}

TEST_CASE("unknown model and bad specs are named") {
  CHECK_THROWS_WITH_AS(build_model("resnet19", ModelSpec{}), doctest::Contains("unknown model 'resnet19'"),
                       engine::Error);
  CHECK_THROWS_WITH_AS(build_model("lenet", ModelSpec{1, 0, 28, 0}), doctest::Contains("class count"),
                       engine::Error);
}

TEST_CASE("initializers: Kaiming fan-out conv, BN 1/0, linear uniform bound") {
  ModelSpec spec{3, 10, 32, 5};
  auto m = build_model("resnet20", spec);
  for (const auto& p : m->named_parameters()) {
    const auto v = p.tensor.to_vector();
    if (p.name == "layer3.0.conv2.weight") {  // (64, 64, 3, 3): std sqrt(2 / (64 * 9)) = 0.0589
      double ss = 0;
      for (float x : v) ss += x * x;
      CHECK(std::sqrt(ss / v.size()) == doctest::Approx(0.0589).epsilon(0.05));
    }
    if (p.name == "bn1.weight") CHECK(v == std::vector<float>(16, 1.f));
    if (p.name == "bn1.bias") CHECK(v == std::vector<float>(16, 0.f));
    if (p.name == "fc.weight") {  // U(-1/8, 1/8)
      float mx = 0;
      for (float x : v) mx = std::max(mx, std::fabs(x));
      CHECK(mx <= 0.125f);
      CHECK(mx > 0.11f);
    }
  }
}

TEST_CASE("Sequential runs a BatchNorm2d followed by a ReLU as one fused op with the modules' values and gradients") {
  engine::Generator g(6);
  Sequential seq;
  BatchNorm2d* bn = seq.add(std::make_unique<BatchNorm2d>(4));
  seq.add(std::make_unique<ReLU>());
  BatchNorm2d alone(4);  // the same initial parameters, run module by module
  const Tensor x0 = qiltest::randn({3, 4, 5, 5}, g);
  Tensor x = x0.clone().set_requires_grad(true), xr = x0.clone().set_requires_grad(true);
  Tensor y = seq.forward(x);
  REQUIRE(y.grad_fn());
  CHECK(std::string(y.grad_fn()->name) == "batch_norm2d_relu");
  Tensor yr = engine::ops::relu(alone.forward(xr));
  qiltest::check_close(y, yr, 0.f, 0.f, "forward");
  const Tensor gy = qiltest::randn(y.shape(), g);
  y.backward(gy);
  yr.backward(gy);
  qiltest::check_close(x.grad(), xr.grad(), 1e-6f, 1e-7f, "dx");
  const auto p = bn->named_parameters(), pr = alone.named_parameters();
  for (size_t i = 0; i < p.size(); ++i)
    qiltest::check_close(p[i].tensor.grad(), pr[i].tensor.grad(), 1e-6f, 1e-7f, "d" + p[i].name);
  const auto b = bn->named_buffers(), br = alone.named_buffers();
  for (size_t i = 0; i < b.size(); ++i) qiltest::check_close(b[i].tensor, br[i].tensor, 0.f, 0.f, b[i].name);
}
