// qil models.
#include "apps/models_cmd.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "layers/models.h"

namespace apps {

void add_models_flags(CLI::App& app, ModelsOptions& o) {
  app.add_option("--image-size", o.image_size, "input side for the FLOP count (0 = each model's usual size)");
  app.add_option("--in-channels", o.in_channels, "input channels (0 = each model's usual: 1 for lenet, else 3)");
  app.add_option("--num-classes", o.num_classes, "classes (0 = each model's usual: 10 or 1000)");
}

int run_models(const ModelsOptions& o) {
  std::printf("%-10s %14s %10s %8s %12s  %s\n", "model", "parameters", "input", "classes", "GMAC/image",
              "description");
  for (const auto& info : layers::model_infos()) {
    layers::ModelSpec spec{o.in_channels ? o.in_channels : info.default_channels,
                           o.num_classes ? o.num_classes : info.default_classes,
                           o.image_size ? o.image_size : info.default_image_size, 0};
    auto m = layers::build_model(info.name, spec);
    const double gmac = layers::forward_macs(*m, spec) / 1e9;
    const std::string input = std::to_string(spec.in_channels) + "x" + std::to_string(spec.image_size) + "^2";
    std::printf("%-10s %14lld %10s %8lld %12.4f  %s\n", info.name.c_str(), static_cast<long long>(m->num_parameters()),
                input.c_str(), static_cast<long long>(spec.num_classes), gmac, info.description.c_str());
  }
  std::printf("(GMAC: multiply-accumulates of one forward pass; a training step costs about 3x, 2 FLOP each)\n");
  return 0;
}

}  // namespace apps
