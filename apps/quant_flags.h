// The quantization flags `qil train` and `qil eval --quant` share — --quantizer, --first-last, --weight-calib,
// --act-calib — made into the layers::QuantPlan they describe, in one place. Not their registration (each
// command checks and documents its own flags) and not the widths (a stage's, or --quant's).
#pragma once
#include <string>

#include "layers/quantize.h"

namespace apps {

// `--first-last`: fp -> 32 (full precision), 8 -> 8, same -> 0 (the stage's widths; layers::QuantPlan's
// first_last_bits); anything else is an error naming it.
int first_last_bits(const std::string& first_last);

// The plan every quantized layer follows, at full precision (wbits = abits = 32) until the caller sets the
// widths. Bad names are errors naming the flag.
layers::QuantPlan quant_plan(const std::string& quantizer, const std::string& first_last,
                             const std::string& weight_calib, const std::string& act_calib);

}  // namespace apps
