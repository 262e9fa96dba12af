// Loader: batches from a Dataset, decoded by background threads into a bounded queue and delivered in order.
// Deterministic whatever the thread count: the epoch order is one permutation seeded by (seed, epoch), each
// rank takes a disjoint, equal-size share of it (for training, its slice of every step; for evaluation, whole
// batches in turn), and sample i's augmentation draws from Generator::derive(aug_seed(seed), epoch, i) — never
// from the thread or the rank.
// Not a sampler zoo: no weighting, no class balancing.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "engine/tensor.h"

namespace data {

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;     // false: the epoch order is 0..n-1 (the augmentation still follows the seed)
  bool drop_last = false;  // drop this rank's last partial batch
  uint64_t seed = 0;
  int64_t workers = 1;     // decode threads, >= 1
  int64_t prefetch = 2;    // batches decoded ahead of the consumer, >= 1
  int64_t rank = 0;
  int64_t world_size = 1;
  // Training: micro-batches of each rank per optimizer step (--accumulate).
  int64_t accumulate = 1;
  // false (training): the epoch order is cut into steps of G = batch_size x accumulate x world_size samples
  // and each step into G / batch_size micro-batches of batch_size consecutive samples; micro-batch m of step s
  // (m = 0 .. G/batch_size - 1) is number s·(G/batch_size) + m of the epoch (Batch::micro), and rank r takes
  // micro-batches r·accumulate .. r·accumulate + accumulate - 1 of every step. Which samples form a step and
  // each micro-batch therefore depend on batch_size and G only: 2 ranks x 1, 1 rank x --accumulate 2 and one
  // process with batch 2·batch_size and --accumulate 1 see the same images per step, the first two in the same
  // micro-batches (what makes a resume on another number of ranks exact). The samples after the last whole
  // step are shared equally among the ranks, consecutive, n' mod W of them left over (n' = what the whole
  // steps leave); the rank's last partial batch among them is dropped with drop_last.
  // true (evaluation): the epoch order is cut into batches as one process would cut it and rank r takes
  // batches r, r + W, ...; every sample is read exactly once, each batch holds the same images as in a
  // one-process run, and ranks may differ by one batch.
  bool shard_batches = false;
};

struct Batch {
  engine::Tensor images;  // f32 (N, C, H, W)
  engine::Tensor labels;  // s32 (N)
  int64_t index = 0;      // batch number within the epoch (skipped batches count); with shard_batches, the
                          // batch's number in the one-process order
  int64_t micro = 0;      // training: the micro-batch's number among every rank's micro-batches of the epoch,
                          // the same whatever the number of ranks (see shard_batches); otherwise index
};

class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~Loader();  // stops and joins the workers, even mid-epoch
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts (or restarts) an epoch; skip_batches > 0 resumes after that many batches of this rank.
  void start_epoch(int64_t epoch, int64_t skip_batches = 0);
  // The next batch of the epoch, in order; false at the end of the epoch. An exception thrown by the
  // dataset in a worker is re-thrown here (the epoch then ends).
  bool next(Batch& batch);

  int64_t batches_per_epoch() const;  // this rank's
  // The samples of this rank's batches (training: of its share of every step, and of the rest after them)
  int64_t samples_per_rank() const { return shard_size_; }
  // This rank's dataset indices for an epoch, in delivery order (before batching).
  std::vector<int64_t> shard(int64_t epoch) const;
  const LoaderOptions& options() const { return opt_; }
  const Dataset& dataset() const { return *dataset_; }

  // The seed of the augmentation generators, distinct from the order's seed.
  static uint64_t aug_seed(uint64_t seed) { return seed ^ 0x6A09E667F3BCC909ull; }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  void stop_workers();
  void worker_loop();
  Batch make_batch(int64_t b) const;
  // Where this rank's batch b starts in order_, how many samples it holds, and its number in the epoch.
  struct Span {
    int64_t first, count, index, micro;
  };
  Span span(int64_t b) const;

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions opt_;
  int64_t shard_size_ = 0;
  int64_t whole_steps_ = 0;  // training: steps of G samples per epoch

  // Per-epoch state; written by start_epoch while no worker runs.
  int64_t epoch_ = -1;
  std::vector<int64_t> order_;  // this rank's shard
  int64_t end_batch_ = 0;

  std::mutex mu_;
  std::condition_variable produced_, consumed_;
  std::map<int64_t, Slot> ready_;  // finished batches waiting for the consumer
  int64_t next_claim_ = 0;         // next batch a worker may take
  int64_t next_deliver_ = 0;       // next batch next() returns
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace data
