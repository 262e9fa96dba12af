// Running a network over a dataset without training it: the one no-grad evaluation pass (top-1, top-5, mean
// loss) behind `qil train`'s per-epoch evaluation and `qil eval`, calibration on a dataset (train and
// `qil eval --quant`), and the one place that says how a loader is set up for training, evaluation and
// calibration.
// Not the training step (trainer.h) and not dataset construction (data/, and apps/data_setup.h for `qil`).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "apps/training/progress.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/module.h"

namespace apps::training {

enum class LoaderUse {
  train,        // shuffled per (seed, epoch), sharded by rank, last partial batch dropped
  eval,         // dataset order, every image once: whole batches of the one-process order shared out by rank
  calibration,  // dataset order, the first few batches of the training images (eval transform)
};

// The loader settings for a use. seed and accumulate apply to training only; rank and world to training and
// evaluation (calibration reads the same images in every process).
data::LoaderOptions loader_options(LoaderUse use, int64_t batch, int64_t workers, uint64_t seed = 0,
                                   int64_t rank = 0, int64_t world = 1, int64_t accumulate = 1);

// Runs `model` in eval mode with gradients off over the first `max_batches` batches of `ds` (0 = all) and
// hands each batch and its logits (N, classes) to `fn`. Restores the model's train/eval mode afterwards.
void for_each_eval_batch(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds,
                         const data::LoaderOptions& options, int64_t max_batches,
                         const std::function<void(const data::Batch&, const engine::Tensor& logits)>& fn);

struct EvalResult {
  double loss = 0, top1 = 0, top5 = 0;  // top1/top5 in percent
  int64_t count = 0;
};

// Accuracy and mean cross-entropy of `model` over all of `ds`, with a progress display in `progress`.
// Under MPI every rank must call it: each evaluates its share of the batches (LoaderUse::eval) and the counts
// and per-batch loss sums are reduced, the loss summed in batch order, so the figures equal a one-process
// evaluation's exactly (with the same batch size and threads per process, which fix the arithmetic).
EvalResult evaluate(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                    int64_t workers, ProgressMode progress, const std::string& label);

// Calibrates the model's new quantizers (and unfitted output scales) on up to `batches` batches of `ds`, in
// order (the calibration loader); does nothing when every quantizer already has its interval.
void calibrate_on(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                  int64_t batches, int64_t workers);

}  // namespace apps::training
