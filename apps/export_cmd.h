// `qil export`: a checkpoint written as safetensors (float, or integer weight codes: apps/export.h) or as an ONNX
// graph (apps/export_onnx.h). The flags and the run function only.
#pragma once
#include <string>

namespace CLI {
class App;
}

namespace apps {

struct ExportOptions {
  std::string checkpoint;
  std::string out;
  std::string format = "safetensors";  // safetensors | int | onnx
  bool with_quant_params = false;      // safetensors: also <layer>.weight_quant.c ... and <layer>.out_scale
};
void add_export_flags(CLI::App& app, ExportOptions& o);
int run_export(const ExportOptions& o);

}  // namespace apps
