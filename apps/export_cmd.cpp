// qil export.
#include "apps/export_cmd.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "apps/export.h"
#include "apps/export_onnx.h"
#include "engine/check.h"
#include "engine/serialize.h"
#include "layers/model_io.h"
#include "layers/quantize.h"

namespace apps {

void add_export_flags(CLI::App& app, ExportOptions& o) {
  app.add_option("checkpoint", o.checkpoint, "checkpoint file (e.g. runs/NAME/best.ckpt)")->required();
  app.add_option("--out", o.out, "output file (.safetensors; .onnx for --format onnx)")->required();
  app.add_option("--format", o.format,
                 "safetensors (float, torchvision names) | int (integer weight codes) | onnx (opset 13 graph, "
                 "quantized layers as QuantizeLinear/DequantizeLinear)")
      ->capture_default_str();
  app.add_flag("--with-quant-params", o.with_quant_params,
               "safetensors: also write the quantizer parameters (<layer>.weight_quant.c, ...) and output scales");
}

int run_export(const ExportOptions& o) {
  QIL_CHECK(o.format == "safetensors" || o.format == "int" || o.format == "onnx",
            "export: --format must be safetensors, int or onnx, got '", o.format, "'");
  QIL_CHECK(!(o.with_quant_params && o.format == "int"),
            "export: --with-quant-params applies to --format safetensors (the int format always has them)");
  // Before the network is read: an output that is a device, a FIFO or the checkpoint itself is refused.
  engine::check_output_file(o.out, {{"checkpoint", o.checkpoint}}, "--out");
  layers::LoadedModel lm = layers::load_model_checkpoint(o.checkpoint);
  if (o.format == "onnx") {
    engine::write_file_atomic(o.out, export_onnx(*lm.model, lm.meta), "export");
    bool quantized = false;
    for (auto& [n, l] : layers::quantizable_layers(*lm.model))
      quantized |= l->active_weight_quantizer() || l->active_act_quantizer();
    std::printf("%s: ONNX graph (opset 13%s) written to %s\n", o.checkpoint.c_str(),
                quantized ? ", quantized layers as QuantizeLinear/DequantizeLinear" : "", o.out.c_str());
    return 0;
  }
  ExportedModel e = o.format == "int" ? export_int(*lm.model, lm.meta)
                                      : export_float(*lm.model, lm.meta, o.with_quant_params);
  engine::write_safetensors(o.out, e.tensors, e.metadata);
  std::printf("%s: %zu tensors (%s) written to %s\n", o.checkpoint.c_str(), e.tensors.size(), o.format.c_str(),
              o.out.c_str());
  return 0;
}

}  // namespace apps
