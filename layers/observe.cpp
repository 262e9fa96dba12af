// Registering and removing model-wide input observers on the quantizable layers.
#include "layers/observe.h"

#include <memory>

#include "layers/quantizable.h"
#include "layers/quantize.h"

namespace layers {

ObserverHandle& ObserverHandle::operator=(ObserverHandle&& o) noexcept {
  if (this != &o) {
    release();
    slots_ = std::exchange(o.slots_, {});
  }
  return *this;
}

void ObserverHandle::release() {
  for (auto& [layer, id] : slots_) layer->remove_input_observer(id);
  slots_.clear();
}

ObserverHandle observe_inputs(Module& model, InputObserver fn) {
  auto shared = std::make_shared<InputObserver>(std::move(fn));  // one callback behind every layer's slot
  ObserverHandle h;
  for (auto& [name, layer] : quantizable_layers(model)) {
    const int id = layer->add_input_observer([shared, name = name](const Tensor& x) { (*shared)(name, x); });
    h.slots_.emplace_back(layer, id);
  }
  return h;
}

}  // namespace layers
