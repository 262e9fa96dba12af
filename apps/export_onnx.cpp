// export --format onnx: the zoo's networks as ONNX graphs, quantized layers in QDQ form.
#include "apps/export_onnx.h"

#include <onnx/onnx_pb.h>

#include <cstring>
#include <vector>

#include "apps/export.h"
#include "engine/autograd.h"
#include "engine/check.h"
#include "layers/basic.h"
#include "layers/models.h"

namespace apps {

using engine::str_cat;
using engine::Tensor;

namespace {

constexpr int kOpset = 13;

// A value flowing through the graph: its name and shape without the batch (C, H, W) or (F).
struct Value {
  std::string name;
  std::vector<int64_t> shape;
};

class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}

  // A node with one output named after it; returns the output's name.
  std::string node(const std::string& op, const std::string& name, const std::vector<std::string>& inputs) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& i : inputs) n->add_input(i);
    n->add_output(name);
    last_ = n;
    return name;
  }
  void ints(const char* attr, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = last_->add_attribute();
    a->set_name(attr);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  void integer(const char* attr, int64_t v) {
    onnx::AttributeProto* a = last_->add_attribute();
    a->set_name(attr);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  void real(const char* attr, float v) {
    onnx::AttributeProto* a = last_->add_attribute();
    a->set_name(attr);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  // An initializer from a tensor (f32 or s8), or a scalar of the given type.
  std::string tensor(const std::string& name, const Tensor& t) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    const bool s8 = t.dtype() == engine::DType::s8;
    QIL_CHECK(s8 || t.dtype() == engine::DType::f32, "export onnx: tensor '", name, "' is ", t);
    p->set_data_type(s8 ? onnx::TensorProto::INT8 : onnx::TensorProto::FLOAT);
    for (int64_t d : t.shape()) p->add_dims(d);
    p->set_raw_data(t.bytes(), static_cast<size_t>(t.numel()) * (s8 ? 1 : 4));
    return name;
  }
  std::string f32(const std::string& name, float v) { return tensor(name, Tensor::scalar(v)); }
  std::string f64(const std::string& name, double v) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::DOUBLE);
    p->add_double_data(v);
    return name;
  }
  std::string zero_point(const std::string& name, bool is_signed) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    p->set_data_type(is_signed ? onnx::TensorProto::INT8 : onnx::TensorProto::UINT8);
    p->set_raw_data(std::string(1, '\0'));
    return name;
  }

 private:
  onnx::GraphProto* g_;
  onnx::NodeProto* last_ = nullptr;
};

std::string pre(const std::string& path) { return path.empty() ? "" : path + "."; }

// round_nonneg(v) = trunc(double(v) + 0.5), as quant/fast_math.h rounds (the sum in double: in float it would
// round v = 0.5 − 2^−25 up).
std::string round_nonneg(GraphBuilder& b, const std::string& p, const std::string& v) {
  std::string d = b.node("Cast", p + "as_double", {v});
  b.integer("to", onnx::TensorProto::DOUBLE);
  d = b.node("Floor", p + "rounded", {b.node("Add", p + "plus_half", {d, b.f64(p + "half_d", 0.5)})});
  const std::string f = b.node("Cast", p + "rounded_f", {d});
  b.integer("to", onnx::TensorProto::FLOAT);
  return f;
}

// 1 − 2·(x < 0): qil's sign, +1 at zero (ONNX's Sign gives 0 there).
std::string sign_of(GraphBuilder& b, const std::string& p, const std::string& x) {
  std::string n = b.node("Cast", p + "negative", {b.node("Less", p + "is_negative", {x, b.f32(p + "zero", 0.f)})});
  b.integer("to", onnx::TensorProto::FLOAT);
  n = b.node("Mul", p + "minus_two_negative", {n, b.f32(p + "minus_two", -2.f)});
  return b.node("Add", p + "sign", {n, b.f32(p + "one", 1.f)});
}

struct QuantizedInput {
  std::string levels;  // the integer levels k, through a QuantizeLinear/DequantizeLinear pair of scale 1
  float scale;         // the value the layer computes with is k·scale
};

const char* onnx_op(quant::LevelRule::Op op) {
  switch (op) {
    case quant::LevelRule::Op::subtract: return "Sub";
    case quant::LevelRule::Op::multiply: return "Mul";
    case quant::LevelRule::Op::add: return "Add";
    default: return "Clip";
  }
}

// A quantized layer's input as integer levels: the quantizer's own rule (Quantizer::level_rule), each step the
// arithmetic of its kernel, so that the levels equal qil's exactly; the pair is u8, or s8 for a signed input.
QuantizedInput quantize_input(GraphBuilder& b, const layers::QuantizableModule& l, const std::string& path,
                              const std::string& x) {
  const quant::Quantizer& q = *l.active_act_quantizer();
  const quant::LevelRule rule = q.level_rule();
  const std::string p = path + ".act_quant.";
  const bool sgn = rule.is_signed;
  // |x| of every signed input, also where the rule does not use it (it then stays unconnected): files have always
  // had this node.
  const std::string mag = sgn ? b.node("Abs", p + "abs", {x}) : x;
  std::string v = rule.sign_magnitude ? mag : x;
  for (const quant::LevelRule::Step& step : rule.steps) {
    std::vector<std::string> in = {v};
    for (const quant::LevelRule::Constant& c : step.constants) in.push_back(b.f32(p + c.name, c.value));
    v = b.node(onnx_op(step.op), p + step.name, in);
  }
  std::string k;
  if (rule.rounding == quant::LevelRule::Rounding::half_up) {
    k = round_nonneg(b, p, v);
  } else {  // floor(|v| + 0.5) in float, then v's sign
    const std::string a = b.node("Floor", p + "rounded", {b.node("Add", p + "plus_half", {
        b.node("Abs", p + "magnitude", {v}), b.f32(p + "half", 0.5f)})});
    k = sgn ? b.node("Mul", p + "signed", {a, sign_of(b, p, v)}) : a;
  }
  if (sgn && rule.sign_magnitude) k = b.node("Mul", p + "signed", {k, sign_of(b, p, x)});
  const std::string one = b.f32(p + "unit_scale", 1.f), zp = b.zero_point(p + "zero_point", sgn);
  const std::string level = b.node("QuantizeLinear", p + "level", {k, one, zp});
  // The value of one level in f32: level_step() is LSQ's f32 s, or 1/q or α/q divided in double, which rounds to
  // the f32 quotient itself (a double carries more than twice a float's digits).
  return {b.node("DequantizeLinear", p + "levels", {level, one, zp}), static_cast<float>(q.level_step())};
}

// The weight a layer computes with, times `in_scale` (the value of one input level; 1 when the input is not
// quantized): int8 codes under a DequantizeLinear, or f32.
std::string layer_weight(GraphBuilder& b, const layers::QuantizableModule& l, const std::string& path,
                         float in_scale) {
  engine::NoGradGuard ng;
  if (l.active_weight_quantizer()) {
    WeightCodes wc = weight_codes(l, path);
    const std::string codes = b.tensor(path + ".weight_int", wc.codes);
    return b.node("DequantizeLinear", path + ".weight", {codes, b.f32(path + ".weight_scale", wc.scale * in_scale),
                                                         b.zero_point(path + ".weight_zero_point", true)});
  }
  Tensor w = effective_weight(l);
  if (in_scale != 1.f)
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] *= in_scale;
  return b.tensor(path + ".weight", w);
}

// The layer's input and weight operands.
std::pair<std::string, std::string> operands(GraphBuilder& b, const layers::QuantizableModule& l,
                                             const std::string& path, const std::string& x) {
  if (!l.active_act_quantizer()) return {x, layer_weight(b, l, path, 1.f)};
  const QuantizedInput qi = quantize_input(b, l, path, x);
  return {qi.levels, layer_weight(b, l, path, qi.scale)};
}

int64_t out_side(int64_t in, int64_t k, int64_t s, int64_t p, int64_t dil, bool ceil_mode) {
  const int64_t span = in + 2 * p - dil * (k - 1) - 1;
  return (ceil_mode ? (span + s - 1) / s : span / s) + 1;
}

Value emit(GraphBuilder& b, layers::Module& m, const std::string& path, const Value& x);

Value emit_conv(GraphBuilder& b, layers::Conv2d& c, const std::string& path, const Value& x) {
  const layers::Conv2dOptions& o = c.options();
  const auto [input, weight] = operands(b, c, path, x.name);
  std::vector<std::string> in = {input, weight};
  if (c.bias().defined()) in.push_back(b.tensor(path + ".bias", c.bias().detach()));
  const std::string y = b.node("Conv", path, in);
  b.ints("kernel_shape", {o.kernel, o.kernel});
  b.ints("strides", {o.stride, o.stride});
  b.ints("pads", {o.padding, o.padding, o.padding, o.padding});
  b.ints("dilations", {o.dilation, o.dilation});
  b.integer("group", o.groups);
  const int64_t h = out_side(x.shape[1], o.kernel, o.stride, o.padding, o.dilation, false);
  const int64_t w = out_side(x.shape[2], o.kernel, o.stride, o.padding, o.dilation, false);
  return {y, {o.out_channels, h, w}};
}

Value emit_linear(GraphBuilder& b, layers::Linear& l, const std::string& path, Value x) {
  if (x.shape.size() != 1) {  // AlexNet flattens between its pool and its classifier
    x.name = b.node("Flatten", path + ".flatten", {x.name});
    b.integer("axis", 1);
  }
  const auto [input, weight] = operands(b, l, path, x.name);
  std::vector<std::string> in = {input, weight};
  if (l.bias().defined()) in.push_back(b.tensor(path + ".bias", l.bias().detach()));
  const std::string y = b.node("Gemm", path, in);
  b.integer("transB", 1);
  return {y, {l.out_features()}};
}

Value emit_batch_norm(GraphBuilder& b, layers::BatchNorm2d& bn, const std::string& path, const Value& x) {
  std::vector<std::string> in = {x.name};
  for (const auto& p : bn.named_parameters()) in.push_back(b.tensor(pre(path) + p.name, p.tensor.detach()));
  for (const auto& p : bn.named_buffers()) in.push_back(b.tensor(pre(path) + p.name, p.tensor.detach()));
  QIL_CHECK(in.size() == 5, "export onnx: batch norm '", path, "' has ", in.size() - 1, " tensors, expected 4");
  const std::string y = b.node("BatchNormalization", path, in);
  b.real("epsilon", bn.eps());
  return {y, x.shape};
}

Value emit_max_pool(GraphBuilder& b, layers::MaxPool2d& mp, const std::string& path, const Value& x) {
  const engine::ops::Pool2dGeom& g = mp.geom();
  const std::string y = b.node("MaxPool", path, {x.name});
  b.ints("kernel_shape", {g.kh, g.kw});
  b.ints("strides", {g.stride_h, g.stride_w});
  b.ints("pads", {g.pad_h, g.pad_w, g.pad_h, g.pad_w});
  b.integer("ceil_mode", g.ceil_mode ? 1 : 0);
  return {y, {x.shape[0], out_side(x.shape[1], g.kh, g.stride_h, g.pad_h, 1, g.ceil_mode),
              out_side(x.shape[2], g.kw, g.stride_w, g.pad_w, 1, g.ceil_mode)}};
}

// Adaptive pooling to (oh, ow) is a plain average pool when the input's sides are multiples of the output's.
Value emit_adaptive_pool(GraphBuilder& b, layers::AdaptiveAvgPool2d& ap, const std::string& path, const Value& x) {
  const int64_t h = x.shape[1], w = x.shape[2], oh = ap.out_h(), ow = ap.out_w();
  QIL_CHECK(h % oh == 0 && w % ow == 0, "export onnx: layer '", path, "' pools ", h, "x", w, " to ", oh, "x", ow,
            ", which ONNX has no operator for (export at an image size that makes the sides multiples)");
  const std::string y = b.node("AveragePool", path, {x.name});
  b.ints("kernel_shape", {h / oh, w / ow});
  b.ints("strides", {h / oh, w / ow});
  return {y, {x.shape[0], oh, ow}};
}

// A residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
Value emit_block(GraphBuilder& b, layers::BasicBlock& blk, const std::string& path, const Value& x) {
  std::map<std::string, layers::Module*> c;
  for (auto& [n, m] : blk.children()) c[n] = m;
  const std::string p = pre(path);
  Value h = emit(b, *c.at("conv1"), p + "conv1", x);
  h = emit(b, *c.at("bn1"), p + "bn1", h);
  h.name = b.node("Relu", p + "relu1", {h.name});
  h = emit(b, *c.at("bn2"), p + "bn2", emit(b, *c.at("conv2"), p + "conv2", h));
  const Value s = c.count("downsample") ? emit(b, *c.at("downsample"), p + "downsample", x) : x;
  const std::string sum = b.node("Add", p + "add", {h.name, s.name});
  return {b.node("Relu", p + "relu2", {sum}), h.shape};
}

Value emit(GraphBuilder& b, layers::Module& m, const std::string& path, const Value& x) {
  if (auto* c = dynamic_cast<layers::Conv2d*>(&m)) return emit_conv(b, *c, path, x);
  if (auto* l = dynamic_cast<layers::Linear*>(&m)) return emit_linear(b, *l, path, x);
  if (auto* bn = dynamic_cast<layers::BatchNorm2d*>(&m)) return emit_batch_norm(b, *bn, path, x);
  if (auto* mp = dynamic_cast<layers::MaxPool2d*>(&m)) return emit_max_pool(b, *mp, path, x);
  if (auto* ap = dynamic_cast<layers::AdaptiveAvgPool2d*>(&m)) return emit_adaptive_pool(b, *ap, path, x);
  if (auto* blk = dynamic_cast<layers::BasicBlock*>(&m)) return emit_block(b, *blk, path, x);
  if (dynamic_cast<layers::ReLU*>(&m)) return {b.node("Relu", path, {x.name}), x.shape};
  if (dynamic_cast<layers::Dropout*>(&m)) return x;  // eval mode
  if (dynamic_cast<layers::GlobalAvgPool*>(&m)) {  // (N, C, H, W) -> (N, C)
    const std::string v = b.node("GlobalAveragePool", path, {x.name});
    const std::string f = b.node("Flatten", path + ".flatten", {v});
    b.integer("axis", 1);
    return {f, {x.shape[0]}};
  }
  if (dynamic_cast<layers::Flatten*>(&m)) {
    const std::string f = b.node("Flatten", path, {x.name});
    b.integer("axis", 1);
    int64_t n = 1;
    for (int64_t d : x.shape) n *= d;
    return {f, {n}};
  }
  // Containers (Sequential, AlexNet): their children in order, which is how every zoo container runs them.
  QIL_CHECK(!m.children().empty(), "export onnx: '", path, "' is a ", m.describe(), ", which has no ONNX form here");
  Value v = x;
  for (auto& [n, child] : m.children()) v = emit(b, *child, pre(path) + n, v);
  return v;
}

void add_io(onnx::ValueInfoProto* io, const std::string& name, const std::vector<int64_t>& shape) {
  io->set_name(name);
  onnx::TypeProto_Tensor* t = io->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  t->mutable_shape()->add_dim()->set_dim_param("batch");
  for (int64_t d : shape) t->mutable_shape()->add_dim()->set_dim_value(d);
}

}  // namespace

std::string export_onnx(layers::Module& model, const layers::ModelMeta& meta) {
  onnx::ModelProto mp;
  mp.set_ir_version(onnx::IR_VERSION_2020_5_8);  // IR 7, the version opset 13 came with (ONNX 1.8)
  mp.set_producer_name("qil");
  mp.set_model_version(1);
  onnx::OperatorSetIdProto* op = mp.add_opset_import();
  op->set_domain("");
  op->set_version(kOpset);
  auto md = [&](const std::string& k, const std::string& v) {
    onnx::StringStringEntryProto* e = mp.add_metadata_props();
    e->set_key(k);
    e->set_value(v);
  };
  md("model", meta.model);
  for (const auto& [k, v] : input_metadata(meta)) md(k, v);  // the side, transform and normalization of the input
  onnx::GraphProto* g = mp.mutable_graph();
  g->set_name(meta.model);
  const std::vector<int64_t> in_shape = {meta.spec.in_channels, meta.spec.image_size, meta.spec.image_size};
  add_io(g->add_input(), "input", in_shape);
  GraphBuilder b(g);
  const Value y = emit(b, model, "", Value{"input", in_shape});
  QIL_CHECK(y.shape.size() == 1 && y.shape[0] == meta.spec.num_classes, "export onnx: the graph ends in shape ",
            engine::Shape(y.shape), ", expected (", meta.spec.num_classes, ")");
  b.node("Identity", "logits", {y.name});
  add_io(g->add_output(), "logits", y.shape);
  std::string bytes;
  QIL_CHECK(mp.SerializeToString(&bytes), "export onnx: the model could not be serialized");
  return bytes;
}

}  // namespace apps
