// --quantizer, --first-last, --weight-calib and --act-calib as a QuantPlan.
#include "apps/quant_flags.h"

#include "engine/check.h"

namespace apps {

int first_last_bits(const std::string& first_last) {
  if (first_last == "fp") return 32;
  if (first_last == "8") return 8;
  if (first_last == "same") return 0;
  throw engine::Error(engine::str_cat("--first-last must be fp, 8 or same, got '", first_last, "'"));
}

layers::QuantPlan quant_plan(const std::string& quantizer, const std::string& first_last,
                             const std::string& weight_calib, const std::string& act_calib) {
  layers::QuantPlan plan;
  plan.first_last_bits = first_last_bits(first_last);
  plan.quantizer = quantizer;
  plan.weight_calib = quant::parse_weight_calib(weight_calib);
  plan.act_calib = quant::parse_act_calib(act_calib);
  return plan;
}

}  // namespace apps
