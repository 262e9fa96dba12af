// `qil export --format onnx`: the network as an ONNX graph (opset 13) for deployment toolchains, written with
// the ONNX project's own protobuf classes (Debian's libonnx-dev). Full-precision layers are plain ONNX ops.
// A quantized layer's input becomes its integer levels k, computed step by step with the arithmetic of the
// quantizer's own kernel (so the levels equal qil's), through a QuantizeLinear/DequantizeLinear pair of scale 1
// (u8, or s8 for a signed input); its weight is the int8 codes of `qil export --format int` under a
// DequantizeLinear whose scale is the weight's scale times the value of one input level. The convolution then
// sees integers on both sides: the QDQ form that runtimes can map to integer kernels. Layers below 8 bits use
// the same containers; their levels simply stop at q. docs/export.md gives the node sequence per kind.
#pragma once
#include <string>

#include "layers/model_io.h"

namespace apps {

// Serialized ModelProto of the network in eval mode (BatchNorm on running statistics, Dropout removed), input
// "input" (batch, C, H, W) float, output "logits" (batch, classes). Errors name the layer that cannot be written
// (an adaptive pool whose input side is not a multiple of its output, 8-bit DoReFa weight codes).
std::string export_onnx(layers::Module& model, const layers::ModelMeta& meta);

}  // namespace apps
