// Observers of what a model's quantized layers see: a callback receives (layer name, the layer's input before
// quantization) on every quantized forward of every Conv2d and Linear in the model, and an RAII handle
// removes it. For inspection and debugging (`qil inspect --data` measures activation statistics with it).
// An observer reads; it must not change the tensor or the model, and training installs none. Observers are
// not calibration (quantize.h drives that through the layers' own phases), and they see nothing of
// full-precision layers.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"

namespace layers {

class QuantizableModule;

// layer: the dotted name (`layer1.0.conv1`); x: the layer's input, (N, C, H, W) or (N, F).
using InputObserver = std::function<void(const std::string& layer, const Tensor& x)>;

// Owns one observer's registrations; destroying or releasing it removes them. Move-only; it must not outlive
// the model it observes.
class ObserverHandle {
 public:
  ObserverHandle() = default;
  ~ObserverHandle() { release(); }
  ObserverHandle(ObserverHandle&& o) noexcept : slots_(std::exchange(o.slots_, {})) {}
  ObserverHandle& operator=(ObserverHandle&& o) noexcept;
  ObserverHandle(const ObserverHandle&) = delete;
  ObserverHandle& operator=(const ObserverHandle&) = delete;

  void release();
  bool active() const { return !slots_.empty(); }

 private:
  friend ObserverHandle observe_inputs(Module& model, InputObserver fn);
  std::vector<std::pair<QuantizableModule*, int>> slots_;  // (layer, its observer id)
};

// Registers fn on every Conv2d and Linear of model (a layer that is full precision at the time of a forward
// does not call it). Several observers may be active at once; each sees every call.
[[nodiscard]] ObserverHandle observe_inputs(Module& model, InputObserver fn);

}  // namespace layers
