// Loader: batches from a Dataset, decoded by background threads into a bounded queue and delivered in order.
// Deterministic whatever the thread count: the epoch order is one permutation seeded by (seed, epoch), each
// rank takes a disjoint, equal-size, strided shard of it (or, for evaluation, whole batches of it in turn),
// and sample i's augmentation draws from Generator::derive(aug_seed(seed), epoch, i) — never from the thread
// or the rank.
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
  // false (training): rank r takes samples r, r + W, r + 2W, ... of the epoch order, floor(n / W) of them, so
  // every rank has the same number of batches and step k of W ranks with batch B covers the same samples as
  // step k of one process with batch W·B. true (evaluation): the epoch order is cut into batches as one
  // process would cut it and rank r takes batches r, r + W, ...; every sample is read exactly once, each batch
  // holds the same images as in a one-process run, and ranks may differ by one batch.
  bool shard_batches = false;
};

struct Batch {
  engine::Tensor images;  // f32 (N, C, H, W)
  engine::Tensor labels;  // s32 (N)
  int64_t index = 0;      // batch number within the epoch (skipped batches count); with shard_batches, the
                          // batch's number in the one-process order
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
  // floor(n / world_size); with shard_batches, the samples of this rank's batches
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
    int64_t first, count, index;
  };
  Span span(int64_t b) const;

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions opt_;
  int64_t shard_size_ = 0;

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
