// Model definitions. Layer names follow torchvision so that checkpoints and safetensors keys match it.
#include "layers/models.h"

#include "engine/autograd.h"
#include "engine/check.h"

namespace layers {

namespace {

std::unique_ptr<Conv2d> conv(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, bool bias,
                             engine::Generator& g) {
  Conv2dOptions o;
  o.in_channels = in;
  o.out_channels = out;
  o.kernel = k;
  o.stride = s;
  o.padding = p;
  o.bias = bias;
  return std::make_unique<Conv2d>(o, g);
}

// A stage of `blocks` BasicBlocks, the first one changing width/stride.
std::unique_ptr<Sequential> make_stage(int64_t in, int64_t out, int64_t blocks, int64_t stride,
                                       engine::Generator& g) {
  auto s = std::make_unique<Sequential>();
  s->add(std::make_unique<BasicBlock>(in, out, stride, g));
  for (int64_t i = 1; i < blocks; ++i) s->add(std::make_unique<BasicBlock>(out, out, 1, g));
  return s;
}

// torchvision.models.resnet18/34 (BasicBlock).
std::unique_ptr<Module> imagenet_resnet(const std::vector<int64_t>& blocks, const ModelSpec& spec) {
  engine::Generator g(spec.seed);
  auto m = std::make_unique<Sequential>();
  m->add("conv1", conv(spec.in_channels, 64, 7, 2, 3, false, g));
  m->add("bn1", std::make_unique<BatchNorm2d>(64));
  m->add("relu", std::make_unique<ReLU>());
  m->add("maxpool", std::make_unique<MaxPool2d>(3, 2, 1));
  const int64_t widths[4] = {64, 128, 256, 512};
  int64_t in = 64;
  for (int i = 0; i < 4; ++i) {
    m->add("layer" + std::to_string(i + 1), make_stage(in, widths[i], blocks[i], i == 0 ? 1 : 2, g));
    in = widths[i];
  }
  m->add("avgpool", std::make_unique<GlobalAvgPool>());
  m->add("fc", std::make_unique<Linear>(512, spec.num_classes, true, g));
  return m;
}

// He et al.'s CIFAR ResNet-(6n+2): 3x3 conv 16, three stages of n blocks (16, 32, 64), global pool, fc.
// Shortcuts that change shape are 1x1 conv + BN projections (option B).
std::unique_ptr<Module> cifar_resnet(int64_t n, const ModelSpec& spec) {
  engine::Generator g(spec.seed);
  auto m = std::make_unique<Sequential>();
  m->add("conv1", conv(spec.in_channels, 16, 3, 1, 1, false, g));
  m->add("bn1", std::make_unique<BatchNorm2d>(16));
  m->add("relu", std::make_unique<ReLU>());
  m->add("layer1", make_stage(16, 16, n, 1, g));
  m->add("layer2", make_stage(16, 32, n, 2, g));
  m->add("layer3", make_stage(32, 64, n, 2, g));
  m->add("avgpool", std::make_unique<GlobalAvgPool>());
  m->add("fc", std::make_unique<Linear>(64, spec.num_classes, true, g));
  return m;
}

// Two 5x5 conv-BN-ReLU-maxpool blocks (32, 64 channels) and two linear layers (256 hidden units). Without
// BatchNorm ("lenet-nobn") the convolutions have biases instead: nothing then depends on how a batch is split,
// so N ranks x batch B, one process x batch N·B and --accumulate N give the same steps up to rounding.
// "lenet-dropout" is lenet-nobn with Dropout(0.5) before the last linear layer, AlexNet's classifier in small:
// a network whose steps draw random numbers, for testing them across ranks and resumes in seconds.
std::unique_ptr<Module> lenet(const ModelSpec& spec, bool batch_norm, const char* name, bool dropout = false) {
  QIL_CHECK(spec.image_size >= 4, name, ": image size ", spec.image_size, " is too small (needs >= 4)");
  engine::Generator g(spec.seed);
  auto m = std::make_unique<Sequential>();
  m->add("conv1", conv(spec.in_channels, 32, 5, 1, 2, !batch_norm, g));
  if (batch_norm) m->add("bn1", std::make_unique<BatchNorm2d>(32));
  m->add("relu1", std::make_unique<ReLU>());
  m->add("pool1", std::make_unique<MaxPool2d>(2, 2));
  m->add("conv2", conv(32, 64, 5, 1, 2, !batch_norm, g));
  if (batch_norm) m->add("bn2", std::make_unique<BatchNorm2d>(64));
  m->add("relu2", std::make_unique<ReLU>());
  m->add("pool2", std::make_unique<MaxPool2d>(2, 2));
  m->add("flatten", std::make_unique<Flatten>());
  const int64_t side = spec.image_size / 4;
  m->add("fc1", std::make_unique<Linear>(64 * side * side, 256, true, g));
  m->add("relu3", std::make_unique<ReLU>());
  if (dropout) m->add("drop", std::make_unique<Dropout>(0.5f, spec.seed * 7919 + 1));
  m->add("fc2", std::make_unique<Linear>(256, spec.num_classes, true, g));
  return m;
}

// torchvision.models.alexnet: features, avgpool (adaptive 6x6), flatten, classifier.
class AlexNet : public Module {
 public:
  explicit AlexNet(const ModelSpec& spec) {
    engine::Generator g(spec.seed);
    auto f = std::make_unique<Sequential>();
    auto c = [&](int64_t in, int64_t out, int64_t k, int64_t s, int64_t p) {
      auto l = conv(in, out, k, s, p, true, g);
      l->reset_pytorch_default(g);  // torchvision's AlexNet keeps PyTorch's default conv init
      return l;
    };
    f->add(c(spec.in_channels, 64, 11, 4, 2));
    f->add(std::make_unique<ReLU>());
    f->add(std::make_unique<MaxPool2d>(3, 2));
    f->add(c(64, 192, 5, 1, 2));
    f->add(std::make_unique<ReLU>());
    f->add(std::make_unique<MaxPool2d>(3, 2));
    f->add(c(192, 384, 3, 1, 1));
    f->add(std::make_unique<ReLU>());
    f->add(c(384, 256, 3, 1, 1));
    f->add(std::make_unique<ReLU>());
    f->add(c(256, 256, 3, 1, 1));
    f->add(std::make_unique<ReLU>());
    f->add(std::make_unique<MaxPool2d>(3, 2));
    features_ = register_module("features", std::move(f));
    avgpool_ = register_module("avgpool", std::make_unique<AdaptiveAvgPool2d>(6, 6));
    auto cl = std::make_unique<Sequential>();
    cl->add(std::make_unique<Dropout>(0.5f, spec.seed * 7919 + 1));
    cl->add(std::make_unique<Linear>(256 * 6 * 6, 4096, true, g));
    cl->add(std::make_unique<ReLU>());
    cl->add(std::make_unique<Dropout>(0.5f, spec.seed * 7919 + 2));
    cl->add(std::make_unique<Linear>(4096, 4096, true, g));
    cl->add(std::make_unique<ReLU>());
    cl->add(std::make_unique<Linear>(4096, spec.num_classes, true, g));
    classifier_ = register_module("classifier", std::move(cl));
  }
  Tensor forward(const Tensor& x) override {
    return classifier_->forward(engine::ops::flatten(avgpool_->forward(features_->forward(x))));
  }
  std::string describe() const override { return "AlexNet"; }

 private:
  Sequential* features_;
  AdaptiveAvgPool2d* avgpool_;
  Sequential* classifier_;
};

}  // namespace

BasicBlock::BasicBlock(int64_t in, int64_t out, int64_t stride, engine::Generator& g) {
  conv1_ = register_module("conv1", conv(in, out, 3, stride, 1, false, g));
  bn1_ = register_module("bn1", std::make_unique<BatchNorm2d>(out));
  conv2_ = register_module("conv2", conv(out, out, 3, 1, 1, false, g));
  bn2_ = register_module("bn2", std::make_unique<BatchNorm2d>(out));
  if (stride != 1 || in != out) {
    auto d = std::make_unique<Sequential>();
    d->add(conv(in, out, 1, stride, 0, false, g));
    d->add(std::make_unique<BatchNorm2d>(out));
    downsample_ = register_module("downsample", std::move(d));
  }
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor h = bn1_->forward_relu(conv1_->forward(x));  // BN + ReLU fused
  h = bn2_->forward(conv2_->forward(h));
  Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
  return engine::ops::add_relu(h, shortcut);  // add + ReLU fused
}

const std::vector<ModelInfo>& model_infos() {
  static const std::vector<ModelInfo> infos = {
      {"lenet", "LeNet-class CNN: 2 conv-BN-ReLU-pool blocks (32, 64), fc 256, fc", 28, 1, 10},
      {"lenet-nobn", "lenet without BatchNorm (conv biases): batch-split invariant", 28, 1, 10},
      {"lenet-dropout", "lenet-nobn with Dropout(0.5) before fc2 (random numbers in every step)", 28, 1, 10},
      {"resnet20", "CIFAR-style ResNet-20 (3x3 blocks of 16/32/64 channels)", 32, 3, 10},
      {"resnet32", "CIFAR-style ResNet-32", 32, 3, 10},
      {"resnet56", "CIFAR-style ResNet-56", 32, 3, 10},
      {"resnet18", "torchvision ResNet-18", 224, 3, 1000},
      {"resnet34", "torchvision ResNet-34", 224, 3, 1000},
      {"alexnet", "torchvision AlexNet", 224, 3, 1000},
  };
  return infos;
}

std::unique_ptr<Module> build_model(const std::string& name, const ModelSpec& spec) {
  QIL_CHECK(spec.in_channels > 0, "model: input channels must be positive, got ", spec.in_channels);
  QIL_CHECK(spec.num_classes > 0, "model: class count must be positive, got ", spec.num_classes);
  if (name == "lenet") return lenet(spec, true, "lenet");
  if (name == "lenet-nobn") return lenet(spec, false, "lenet-nobn");
  if (name == "lenet-dropout") return lenet(spec, false, "lenet-dropout", true);
  if (name == "resnet20") return cifar_resnet(3, spec);
  if (name == "resnet32") return cifar_resnet(5, spec);
  if (name == "resnet56") return cifar_resnet(9, spec);
  if (name == "resnet18") return imagenet_resnet({2, 2, 2, 2}, spec);
  if (name == "resnet34") return imagenet_resnet({3, 4, 6, 3}, spec);
  if (name == "alexnet") return std::make_unique<AlexNet>(spec);
  std::string known;
  for (const auto& i : model_infos()) known += (known.empty() ? "" : ", ") + i.name;
  throw engine::Error(engine::str_cat("unknown model '", name, "' (known: ", known, ")"));
}

int64_t forward_macs(Module& model, const ModelSpec& spec) {
  engine::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  model.forward(Tensor::zeros({1, spec.in_channels, spec.image_size, spec.image_size}));
  model.train(was_training);
  int64_t macs = 0;
  for (auto& [name, m] : model.named_modules()) {
    if (auto* c = dynamic_cast<Conv2d*>(m)) macs += c->last_macs();
    if (auto* l = dynamic_cast<Linear*>(m)) macs += l->last_macs();
  }
  return macs;
}

}  // namespace layers
