// Quantization plans, calibration passes, constraints, freezing and reports over a whole network.
#include "layers/quantize.h"

#include <set>

#include "engine/autograd.h"
#include "engine/check.h"
#include "layers/basic.h"

namespace layers {

std::vector<std::pair<std::string, QuantizableModule*>> quantizable_layers(Module& m) {
  std::vector<std::pair<std::string, QuantizableModule*>> out;
  for (auto& [name, mod] : m.named_modules())
    if (auto* q = dynamic_cast<QuantizableModule*>(mod)) out.emplace_back(name, q);
  return out;
}

std::vector<std::string> apply_quant_plan(Module& m, const QuantPlan& plan) {
  auto layers = quantizable_layers(m);
  std::set<std::string> names;
  for (auto& [n, l] : layers) names.insert(n);
  for (auto& [n, o] : plan.overrides)
    QIL_CHECK(names.count(n), "quantization: the config names layer '", n,
              "', which this model does not have (its quantizable layers are Conv2d and Linear, e.g. '",
              layers.empty() ? std::string() : layers.front().first, "')");
  // The first conv and the last linear, by definition order.
  std::string first_conv, last_linear;
  for (auto& [n, l] : layers) {
    if (first_conv.empty() && dynamic_cast<Conv2d*>(l)) first_conv = n;
    if (dynamic_cast<Linear*>(l)) last_linear = n;
  }
  std::vector<std::string> quantized;
  for (auto& [n, l] : layers) {
    LayerQuantSpec s;
    s.options.fix_gamma = plan.fix_gamma;
    s.options.no_pruning = plan.no_pruning;
    s.options.symmetric = plan.lsq_symmetric;
    s.options.pact_calib = plan.pact_calib;
    s.options.weight_calib = plan.weight_calib;
    s.options.act_calib = plan.act_calib;
    s.quantizer = plan.quantizer;
    const bool edge = n == first_conv || n == last_linear;
    if (!edge) {
      s.wbits = plan.wbits;
      s.abits = plan.abits;
    } else if (plan.first_last_bits != 32 && (plan.wbits < 32 || plan.abits < 32)) {
      s.wbits = plan.first_last_bits ? plan.first_last_bits : plan.wbits;
      s.abits = plan.first_last_bits ? plan.first_last_bits : plan.abits;
      s.signed_input = n == first_conv;  // normalized images are negative too
    }
    if (auto it = plan.overrides.find(n); it != plan.overrides.end()) {
      if (it->second.exclude) s.wbits = s.abits = 32;
      if (it->second.wbits) s.wbits = it->second.wbits;
      if (it->second.abits) s.abits = it->second.abits;
      if (!it->second.quantizer.empty()) s.quantizer = it->second.quantizer;
    }
    QIL_CHECK(!(l->weight_quantizer() || l->act_quantizer()) || l->quant_spec().quantizer == s.quantizer,
              "quantization: layer '", n, "' holds ", l->quant_spec().quantizer,
              " quantizers (from its checkpoint or an earlier stage) and cannot switch to ", s.quantizer,
              " (start from a full-precision network to change the quantizer)");
    // A layer that has run quantized keeps its quantizers; a full-precision stage after a quantized one is
    // not a thing the stage list allows.
    const int old_wbits = l->quant_spec().wbits, old_abits = l->quant_spec().abits;
    l->set_quant(s);
    if (plan.recalibrate_weights && l->weight_quantizer() && old_wbits < 32 && s.wbits < 32 && old_wbits != s.wbits)
      l->recalibrate_weights();
    if (plan.recalibrate_activations && l->act_quantizer() && old_abits < 32 && s.abits < 32 && old_abits != s.abits)
      l->recalibrate_activations();
    if (s.quantized()) quantized.push_back(n);
  }
  return quantized;
}

void calibrate(Module& m, int64_t batches, const std::function<bool(Tensor& x)>& next_batch) {
  auto layers = quantizable_layers(m);
  bool needed = false;
  for (auto& [n, l] : layers) {
    if (!l->quantized()) continue;
    const bool w_new = l->weight_quantizer() && l->quant_spec().wbits < 32 && !l->weight_quantizer()->calibrated();
    const bool a_new = l->act_quantizer() && l->quant_spec().abits < 32 && !l->act_quantizer()->calibrated();
    needed = needed || w_new || a_new || !l->scale_fitted();
  }
  if (!needed) return;
  engine::NoGradGuard ng;
  const bool was_training = m.is_training();
  m.eval();
  std::vector<Tensor> cache;  // the same batches serve both passes
  Tensor x;
  for (int64_t i = 0; i < batches && next_batch(x); ++i) cache.push_back(x);
  QIL_CHECK(!cache.empty(), "calibration: no data to calibrate the quantizers on");
  for (CalibPhase phase : {CalibPhase::observe, CalibPhase::fit_scale}) {
    for (auto& [n, l] : layers) l->set_calib_phase(phase);
    for (const Tensor& b : cache) m.forward(b);
    for (auto& [n, l] : layers) {
      if (phase == CalibPhase::observe) l->finish_observe();
      else l->finish_fit_scale();
      l->set_calib_phase(CalibPhase::none);
    }
  }
  m.train(was_training);
}

void project_quantizers(Module& m) {
  for (auto& [n, l] : quantizable_layers(m)) l->project();
}

void scale_quantizer_gradients(Module& m, GradBalance mode) {
  for (auto& [n, l] : quantizable_layers(m)) l->scale_quant_grads(mode);
}

void freeze_weights(Module& m, bool frozen) {
  for (auto& p : m.named_parameters())
    if (p.kind != ParamKind::quant) p.tensor.set_requires_grad(!frozen);
  for (auto& [n, mod] : m.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm2d*>(mod)) bn->set_frozen(frozen);
  // A pinned parameter (QIL's γ under --fix-gamma) stays out of training either way.
  for (auto& [n, l] : quantizable_layers(m))
    for (quant::Quantizer* q : {l->weight_quantizer(), l->act_quantizer()})
      if (q)
        for (auto& [pn, t] : q->named_parameters())
          if (q->pinned(pn)) t.set_requires_grad(false);
}

void freeze_intervals(Module& m, bool frozen) { freeze_intervals(m, frozen, frozen); }

void freeze_intervals(Module& m, bool weights, bool activations) {
  for (auto& [n, l] : quantizable_layers(m)) {
    if (quant::Quantizer* q = l->weight_quantizer()) q->set_frozen(weights);
    if (quant::Quantizer* q = l->act_quantizer()) q->set_frozen(activations);
  }
}

void freeze_output_scales(Module& m, bool frozen) {
  for (auto& [n, l] : quantizable_layers(m)) {
    Tensor s = l->out_scale();
    if (s.defined()) s.set_requires_grad(!frozen);
  }
}

Int8Layers set_int8_inference(Module& m, bool on) {
  Int8Layers out;
  const auto layers = quantizable_layers(m);
  for (const auto& [name, l] : layers) {
    try {
      (l->set_int8(on) ? out.integer : out.floating).push_back(name);
    } catch (const engine::Error& e) {
      for (const auto& [other, ol] : layers) ol->set_int8(false);
      throw engine::Error(engine::str_cat("integer inference: layer '", name, "': ", e.what()));
    }
  }
  return out;
}

Int8Layers set_int8_forward(Module& m, bool on) {
  Int8Layers out;
  for (const auto& [name, l] : quantizable_layers(m)) {
    l->set_int8_forward(on);
    if (l->quantized()) (l->runs_int8_forward(true) ? out.integer : out.floating).push_back(name);
  }
  return out;
}

std::vector<LayerReport> quant_report(Module& m) {
  std::vector<LayerReport> out;
  for (auto& [n, l] : quantizable_layers(m)) {
    if (!l->quantized()) continue;
    LayerReport r;
    r.name = n;
    r.type = dynamic_cast<Conv2d*>(l) ? "Conv2d" : "Linear";
    r.spec = l->quant_spec();
    r.out_scale = l->out_scale().item();
    if (r.spec.wbits < 32 && l->weight_quantizer()->calibrated()) r.weight = l->weight_quantizer()->stats(l->weight());
    if (r.spec.abits < 32 && l->act_quantizer()->calibrated()) r.activation = l->act_quantizer()->stats();
    out.push_back(r);
  }
  return out;
}

}  // namespace layers
