// The model zoo: LeNet-class CNN, CIFAR-style ResNet-20/32/56, torchvision's ResNet-18/34 and AlexNet, with
// torchvision's parameter names. Input channels, class count and input size are options.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "layers/basic.h"
#include "layers/module.h"

namespace layers {

struct ModelSpec {
  int64_t in_channels = 3;
  int64_t num_classes = 1000;
  int64_t image_size = 224;  // square input side; needed where a layer's size depends on it (LeNet's fc1)
  uint64_t seed = 0;         // initializer seed
};

struct ModelInfo {
  std::string name;
  std::string description;
  int64_t default_image_size;
  int64_t default_channels;  // of the data the model is usually trained on
  int64_t default_classes;
};

const std::vector<ModelInfo>& model_infos();
// Throws engine::Error naming the model and listing the known ones.
std::unique_ptr<Module> build_model(const std::string& name, const ModelSpec& spec);
// Multiply-accumulates of one forward pass of one image (runs a batch-1 forward without gradients).
int64_t forward_macs(Module& model, const ModelSpec& spec);

// torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is the
// identity or `downsample` (1x1 conv + BN) when the shape changes.
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, engine::Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "BasicBlock"; }

 private:
  Conv2d* conv1_;
  BatchNorm2d* bn1_;
  Conv2d* conv2_;
  BatchNorm2d* bn2_;
  Sequential* downsample_ = nullptr;
};

}  // namespace layers
