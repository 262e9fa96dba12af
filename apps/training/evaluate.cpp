// The evaluation pass and loader settings.
#include "apps/training/evaluate.h"

#include <algorithm>
#include <vector>

#include "apps/training/progress.h"
#include "engine/autograd.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "layers/quantize.h"

namespace apps::training {

using engine::Tensor;

data::LoaderOptions loader_options(LoaderUse use, int64_t batch, int64_t workers, uint64_t seed, int64_t rank,
                                   int64_t world, int64_t accumulate) {
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.workers = workers;
  lo.shuffle = use == LoaderUse::train;
  if (use == LoaderUse::train) {
    // Every rank steps the same number of times per epoch, so the gradient all-reduce never waits forever.
    lo.drop_last = true;
    lo.seed = seed;
    lo.accumulate = accumulate;
  }
  if (use != LoaderUse::calibration) {
    lo.rank = rank;
    lo.world_size = world;
    lo.shard_batches = use == LoaderUse::eval;  // each batch as one process forms it: the same arithmetic
  }
  return lo;
}

void for_each_eval_batch(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds,
                         const data::LoaderOptions& options, int64_t max_batches,
                         const std::function<void(const data::Batch&, const Tensor& logits)>& fn) {
  engine::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  struct ModeGuard {  // an exception from the loader or the model must not leave the model in eval mode
    layers::Module& m;
    bool training;
    ~ModeGuard() { m.train(training); }
  } guard{model, was_training};
  data::Loader loader(ds, options);
  loader.start_epoch(0);
  data::Batch b;
  for (int64_t i = 0; (max_batches <= 0 || i < max_batches) && loader.next(b); ++i) fn(b, model.forward(b.images));
}

EvalResult evaluate(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                    int64_t workers, ProgressMode progress, const std::string& label) {
  const int rank = engine::dist::rank(), world = engine::dist::world_size();
  Progress bar(label, ds->size(), progress);
  // Loss sums per batch of the one-process order (zero for other ranks' batches), top-1 and top-5 hits, images.
  std::vector<double> batch_loss(static_cast<size_t>((ds->size() + batch - 1) / batch), 0.0);
  std::vector<int64_t> counts{0, 0, 0};
  for_each_eval_batch(model, ds, loader_options(LoaderUse::eval, batch, workers, 0, rank, world), 0,
                      [&](const data::Batch& b, const Tensor& logits) {
                        const int64_t n = b.labels.size(0);
                        batch_loss[static_cast<size_t>(b.index)] =
                            engine::ops::softmax_cross_entropy(logits, b.labels).item() * n;
                        counts[0] += engine::ops::topk_correct(logits, b.labels, 1);
                        counts[1] += engine::ops::topk_correct(logits, b.labels, std::min<int64_t>(5, logits.size(1)));
                        counts[2] += n;
                        bar.update(std::min(ds->size(), counts[2] * world), "");  // this rank's share, scaled
                      });
  bar.finish();
  engine::dist::allreduce_sum_i64(counts);
  engine::dist::allreduce_sum_f64(batch_loss);  // one non-zero term per batch: exact
  double loss_sum = 0;
  for (double l : batch_loss) loss_sum += l;  // in batch order, as one process adds them
  EvalResult r;
  r.count = counts[2];
  if (r.count) {
    r.loss = loss_sum / r.count;
    r.top1 = 100.0 * counts[0] / r.count;
    r.top5 = 100.0 * counts[1] / r.count;
  }
  return r;
}

void calibrate_on(layers::Module& model, const std::shared_ptr<const data::Dataset>& ds, int64_t batch,
                  int64_t batches, int64_t workers) {
  data::Loader loader(ds, loader_options(LoaderUse::calibration, batch, workers));
  loader.start_epoch(0);
  layers::calibrate(model, batches, [&loader](Tensor& x) {
    data::Batch b;
    if (!loader.next(b)) return false;
    x = b.images;
    return true;
  });
}

}  // namespace apps::training
