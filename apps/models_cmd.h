// `qil models`: the model zoo (layers/models.h) as a table of parameters, input, classes and multiply-accumulates
// per image. Not the zoo itself.
#pragma once
#include <cstdint>

namespace CLI {
class App;
}

namespace apps {

struct ModelsOptions {
  int64_t image_size = 0;  // 0 = each model's usual size
  int64_t in_channels = 0;  // 0 = each model's usual
  int64_t num_classes = 0;
};
void add_models_flags(CLI::App& app, ModelsOptions& o);
int run_models(const ModelsOptions& o);

}  // namespace apps
