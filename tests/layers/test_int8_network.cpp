// Integer inference of a whole network against the fake-quantized float network: a LeNet trained a few steps on
// Fashion-MNIST (Debian's dataset-fashion-mnist; a synthetic batch when it is absent), quantized W4A4 and then
// W2A2 (progressively), its 1,000 first test images run both ways.
// - top-1 identical on at least 99.5 % of the images;
// - on every image where no activation level differs between the two runs, each logit within the bound f32
//   rounding allows. Here the last quantized layer is fc1 (K = 3136 terms) and fc2 is full precision: a level
//   that is the same in both runs erases every earlier difference, so the logits differ by fc2 applied to fc1's
//   rounding difference (test_int8_layers.cpp: ε_j ≤ (K + 8)·u·M_j + 2u·|y_j|, M_j = Σ|x̄|·|s·w̄|, u = 2^-24)
//   plus fc2's own f32 rounding in each run (γ_257 each):
//       |Δlogit_o| ≤ Σ_j |W2_oj|·ε_j + 2·γ_257·(Σ_j |W2_oj·h_j| + |b_o|),   h = relu(fc1's output).
//   An image where a level differs (a pre-quantizer value within f32 rounding of a rounding boundary) moves by
//   one level's worth, which only the top-1 check covers; the test reports how many images that is.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "gradcheck.h"

#include "data/idx.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "layers/models.h"
#include "layers/observe.h"
#include "layers/quantize.h"
#include "train_fixtures.h"

using namespace layers;
using engine::Tensor;

namespace {

struct Images {
  Tensor x;                     // (N, 1, 28, 28), normalized
  std::vector<int32_t> labels;  // (N)
};

// The first n images of a Fashion-MNIST split, normalized with the training set's mean and std (0.2860, 0.3530);
// a synthetic N(0, 1) batch with cyclic labels when the dataset is not installed.
Images fashion(bool train, int64_t n, uint64_t seed) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) {
    const qiltest::Batch b = qiltest::random_batch(n, 10, seed);
    return {b.x, std::vector<int32_t>(b.y.data<int32_t>(), b.y.data<int32_t>() + n)};
  }
  const data::IdxFolder f = data::load_idx_folder(dir);
  const data::ImageSet& s = train ? f.train : *f.test;
  n = std::min(n, s.size());
  Images out{Tensor::empty({n, 1, 28, 28}), std::vector<int32_t>(s.labels.begin(), s.labels.begin() + n)};
  const uint8_t* p = s.images.data<uint8_t>();
  for (int64_t i = 0; i < out.x.numel(); ++i) out.x.data()[i] = (p[i] / 255.f - 0.2860f) / 0.3530f;
  return out;
}

qiltest::Batch batch_of(const Images& im, int64_t start, int64_t n) {
  qiltest::Batch b{Tensor::empty({n, 1, 28, 28}), Tensor::empty({n}, engine::DType::s32)};
  std::copy_n(im.x.data() + start * 784, n * 784, b.x.data());
  std::copy_n(im.labels.begin() + start, n, b.y.data<int32_t>());
  return b;
}

// One batch through the network; its logits and each quantized layer's input (before quantization).
struct Run {
  std::vector<float> logits;
  std::map<std::string, Tensor> inputs;
};
Run run(Module& net, const Tensor& x) {
  Run r;
  ObserverHandle h =
      observe_inputs(net, [&](const std::string& layer, const Tensor& in) { r.inputs[layer] = in.plain().clone(); });
  r.logits = net.forward(x).to_vector();
  return r;
}

struct Agreement {
  int64_t images = 0, same_top1 = 0, clean = 0;  // clean: no level differs between the runs
  double max_dlogit = 0, max_dlogit_clean = 0, worst_of_bound = 0;
};

int64_t argmax(const float* v, int64_t k) { return std::max_element(v, v + k) - v; }

// Per image of the batch: whether every activation level is the same in both runs.
std::vector<bool> clean_images(Module& net, const Run& f, const Run& i, int64_t n) {
  std::vector<bool> clean(static_cast<size_t>(n), true);
  for (const auto& [name, l] : quantizable_layers(net)) {
    if (!l->active_act_quantizer() || !f.inputs.count(name)) continue;
    const Tensor kf = l->active_act_quantizer()->levels(f.inputs.at(name));
    const Tensor ki = l->active_act_quantizer()->levels(i.inputs.at(name));
    const int64_t per = kf.numel() / n;
    const auto* a = static_cast<const uint8_t*>(kf.bytes());
    const auto* b = static_cast<const uint8_t*>(ki.bytes());
    for (int64_t im = 0; im < n; ++im)
      if (!std::equal(a + im * per, a + (im + 1) * per, b + im * per)) clean[static_cast<size_t>(im)] = false;
  }
  return clean;
}

// The bound on |Δlogit| (per image and class) of the header, from fc1's input in the float run.
std::vector<double> logit_bounds(Module& net, const Tensor& fc1_input, int64_t n) {
  QuantizableModule* fc1 = nullptr;
  QuantizableModule* fc2 = nullptr;
  for (const auto& [name, l] : quantizable_layers(net)) {
    if (name == "fc1") fc1 = l;
    if (name == "fc2") fc2 = l;
  }
  REQUIRE(fc1 != nullptr);
  REQUIRE(fc2 != nullptr);
  REQUIRE_FALSE(fc2->quantized());
  const Tensor xbar = (*fc1->active_act_quantizer())(fc1_input);
  Tensor sw = engine::ops::mul_scalar((*fc1->active_weight_quantizer())(fc1->weight()), fc1->out_scale());
  for (int64_t i = 0; i < sw.numel(); ++i) sw.data()[i] = std::fabs(sw.data()[i]);
  Tensor ax = xbar.clone();
  for (int64_t i = 0; i < ax.numel(); ++i) ax.data()[i] = std::fabs(ax.data()[i]);
  const std::vector<float> m = engine::ops::linear(ax, sw, Tensor()).to_vector();  // (N, 256)
  const std::vector<float> y = fc1->forward(fc1_input).to_vector();                 // float run's fc1 output
  const Tensor w2 = fc2->weight(), b2 = static_cast<Linear*>(fc2)->bias();
  const int64_t hid = w2.size(1), k = w2.size(0), terms = fc1->weight().size(1);
  const double u = std::ldexp(1.0, -24), gamma = 257 * u / (1 - 257 * u);
  std::vector<double> bound(static_cast<size_t>(n * k));
  for (int64_t im = 0; im < n; ++im)
    for (int64_t o = 0; o < k; ++o) {
      double s = 0, mag = std::fabs(b2.data()[o]);
      for (int64_t j = 0; j < hid; ++j) {
        const double yj = y[im * hid + j], wj = std::fabs(w2.data()[o * hid + j]);
        s += wj * ((terms + 8) * u * m[im * hid + j] + 2 * u * std::fabs(yj));
        mag += wj * std::max(yj, 0.0);
      }
      bound[static_cast<size_t>(im * k + o)] = s + 2 * gamma * mag;
    }
  return bound;
}

void compare_batch(Module& net, const Tensor& x, Agreement& a) {
  engine::NoGradGuard ng;
  const Run f = run(net, x);
  set_int8_inference(net, true);
  const Run i = run(net, x);
  set_int8_inference(net, false);
  const int64_t n = x.size(0), k = static_cast<int64_t>(f.logits.size()) / n;
  const std::vector<bool> clean = clean_images(net, f, i, n);
  const std::vector<double> bound = logit_bounds(net, f.inputs.at("fc1"), n);
  for (int64_t im = 0; im < n; ++im) {
    const float* lf = f.logits.data() + im * k;
    const float* li = i.logits.data() + im * k;
    a.same_top1 += argmax(lf, k) == argmax(li, k);
    double d = 0, ratio = 0;
    for (int64_t o = 0; o < k; ++o) {
      d = std::max(d, std::fabs(static_cast<double>(lf[o]) - li[o]));
      ratio = std::max(ratio, std::fabs(static_cast<double>(lf[o]) - li[o]) / bound[static_cast<size_t>(im * k + o)]);
    }
    a.max_dlogit = std::max(a.max_dlogit, d);
    if (clean[static_cast<size_t>(im)]) {
      ++a.clean;
      a.max_dlogit_clean = std::max(a.max_dlogit_clean, d);
      a.worst_of_bound = std::max(a.worst_of_bound, ratio);
    }
  }
  a.images += n;
}

}  // namespace

TEST_CASE("int8 network: LeNet W4A4 and W2A2 agree with the fake-quantized float network") {
  const Images train = fashion(true, 640, 1), test = fashion(false, 1000, 2);
  auto net = build_model("lenet", ModelSpec{1, 10, 28, 7});
  for (int s = 0; s < 12; ++s) qiltest::train_steps(*net, batch_of(train, s * 32, 32), 1, 0.05f);
  for (int bits : {4, 2}) {
    CAPTURE(bits);
    QuantPlan plan;
    plan.wbits = plan.abits = bits;
    apply_quant_plan(*net, plan);
    const qiltest::Batch calib = batch_of(train, 0, 256);
    calibrate(*net, 1, [&, n = 0](Tensor& x) mutable {
      x = calib.x;
      return n++ < 1;
    });
    for (int s = 0; s < 4; ++s) qiltest::train_steps(*net, batch_of(train, (12 + s) * 32, 32), 1, 0.02f);
    net->eval();
    Agreement a;
    for (int64_t start = 0; start < test.x.size(0); start += 250)
      compare_batch(*net, batch_of(test, start, std::min<int64_t>(250, test.x.size(0) - start)).x, a);
    net->train();
    MESSAGE("W" << bits << "A" << bits << ": top-1 identical on " << a.same_top1 << " of " << a.images
                << " images, max |dlogit| " << a.max_dlogit << "; " << a.clean
                << " images with no level flipped, max |dlogit| " << a.max_dlogit_clean << " ("
                << a.worst_of_bound << " of the bound)");
    CHECK(a.same_top1 >= 0.995 * a.images);
    CHECK(a.clean >= a.images / 2);  // the bound must be checked on most images, not vacuously
    CHECK(a.worst_of_bound <= 1.0);
  }
}
