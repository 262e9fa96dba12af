// `qil train`: the training loop over stages (full precision, then progressively lower widths), with
// calibration of each new quantized stage, evaluation, metrics, interval history, checkpoints and resume.
// `qil eval`: accuracy of a checkpoint on a dataset.
#pragma once
#include <memory>
#include <string>

#include "apps/config.h"
#include "data/dataset.h"
#include "layers/module.h"

namespace apps {

struct EvalResult {
  double loss = 0, top1 = 0, top5 = 0;  // top1/top5 in percent
  int64_t count = 0;
};

// Accuracy and mean loss of `model` (in eval mode, no gradients) over `ds`.
EvalResult evaluate(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                    int64_t workers, const std::string& progress, const std::string& label);

// Calibrates the model's new quantizers (and unfitted output scales) on up to `batches` batches of `ds`,
// in order; does nothing when every quantizer already has its interval.
void calibrate_on(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                  int64_t batches, int64_t workers);

// Runs a whole training job; returns the process exit code. Throws engine::Error on bad input.
int run_train(TrainConfig cfg);

}  // namespace apps
