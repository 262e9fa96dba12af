// The threaded loader. Workers claim whole batches in increasing order (at most `prefetch` ahead of the
// consumer), build them, and park them in a map; next() hands them out by batch number, so the output
// never depends on which thread finished first.
#include "data/loader.h"

#include <cstring>

#include "engine/check.h"

namespace data {

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), opt_(options) {
  QIL_CHECK(dataset_, "Loader: no dataset");
  QIL_CHECK(opt_.batch_size > 0, "Loader: batch_size must be positive, got ", opt_.batch_size);
  QIL_CHECK(opt_.workers >= 1, "Loader: workers must be at least 1, got ", opt_.workers);
  QIL_CHECK(opt_.prefetch >= 1, "Loader: prefetch must be at least 1, got ", opt_.prefetch);
  QIL_CHECK(opt_.world_size >= 1 && opt_.rank >= 0 && opt_.rank < opt_.world_size, "Loader: rank ", opt_.rank,
            " is not within world_size ", opt_.world_size);
  const int64_t n = dataset_->size();
  if (opt_.shard_batches) {
    QIL_CHECK(!opt_.drop_last, "Loader: shard_batches reads every sample once; drop_last does not apply");
    shard_size_ = 0;
    for (int64_t b = 0; b < batches_per_epoch(); ++b) shard_size_ += span(b).count;
    return;
  }
  // Equal shares keep every rank's step count the same (collectives must match); the samples after the last
  // whole step that cannot be shared equally are different ones each shuffled epoch.
  QIL_CHECK(opt_.accumulate >= 1, "Loader: accumulate must be at least 1, got ", opt_.accumulate);
  QIL_CHECK(n / opt_.world_size > 0, "Loader: ", n, " samples cannot be shared among ", opt_.world_size, " ranks");
  const int64_t per_rank_step = opt_.batch_size * opt_.accumulate;
  whole_steps_ = n / per_rank_step / opt_.world_size;
  shard_size_ = whole_steps_ * per_rank_step + (n - whole_steps_ * per_rank_step * opt_.world_size) / opt_.world_size;
  QIL_CHECK(!opt_.drop_last || opt_.batch_size <= shard_size_, "Loader: batch_size ", opt_.batch_size,
            " is larger than the ", shard_size_, " samples of this rank and drop_last would leave no batch");
}

Loader::~Loader() { stop_workers(); }

int64_t Loader::batches_per_epoch() const {
  if (opt_.shard_batches) {  // this rank's share of the one-process batches
    const int64_t all = (dataset_->size() + opt_.batch_size - 1) / opt_.batch_size;
    return all > opt_.rank ? (all - opt_.rank + opt_.world_size - 1) / opt_.world_size : 0;
  }
  return opt_.drop_last ? shard_size_ / opt_.batch_size : (shard_size_ + opt_.batch_size - 1) / opt_.batch_size;
}

// Only the one-process order's last batch can be short, and it is its rank's last: this rank's batch b starts
// at b * batch_size of its shard either way. Training: a rank's shard is its accumulate micro-batches of every
// whole step, then its share of the rest.
Loader::Span Loader::span(int64_t b) const {
  const int64_t first = b * opt_.batch_size;
  if (opt_.shard_batches) {
    const int64_t index = opt_.rank + b * opt_.world_size;
    return {first, std::min(opt_.batch_size, dataset_->size() - index * opt_.batch_size), index, index};
  }
  const int64_t k = opt_.accumulate, w = opt_.world_size, in_steps = whole_steps_ * k;
  const int64_t tail_batches = (shard_size_ - in_steps * opt_.batch_size + opt_.batch_size - 1) / opt_.batch_size;
  const int64_t micro = b < in_steps ? (b / k) * k * w + opt_.rank * k + b % k
                                     : in_steps * w + opt_.rank * tail_batches + (b - in_steps);
  return {first, std::min(opt_.batch_size, shard_size_ - first), b, micro};
}

std::vector<int64_t> Loader::shard(int64_t epoch) const {
  const int64_t n = dataset_->size();
  std::vector<int64_t> order;
  if (opt_.shuffle) {
    engine::Generator g = engine::Generator::derive(opt_.seed, static_cast<uint64_t>(epoch));
    order = permutation(n, g);
  } else {
    order.resize(n);
    for (int64_t i = 0; i < n; ++i) order[i] = i;
  }
  std::vector<int64_t> mine;
  if (opt_.shard_batches) {
    for (int64_t b = 0; b < batches_per_epoch(); ++b) {
      const int64_t from = (opt_.rank + b * opt_.world_size) * opt_.batch_size;
      mine.insert(mine.end(), order.begin() + from, order.begin() + from + span(b).count);
    }
    return mine;
  }
  const int64_t per_rank_step = opt_.batch_size * opt_.accumulate, step = per_rank_step * opt_.world_size;
  mine.reserve(static_cast<size_t>(shard_size_));
  for (int64_t s = 0; s < whole_steps_; ++s) {
    const auto from = order.begin() + s * step + opt_.rank * per_rank_step;
    mine.insert(mine.end(), from, from + per_rank_step);
  }
  const int64_t tail = shard_size_ - whole_steps_ * per_rank_step;
  const auto from = order.begin() + whole_steps_ * step + opt_.rank * tail;
  mine.insert(mine.end(), from, from + tail);
  return mine;
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  produced_.notify_all();
  consumed_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  ready_.clear();
}

void Loader::start_epoch(int64_t epoch, int64_t skip_batches) {
  QIL_CHECK(epoch >= 0, "Loader: negative epoch ", epoch);
  QIL_CHECK(skip_batches >= 0 && skip_batches <= batches_per_epoch(), "Loader: cannot skip ", skip_batches,
            " batches of an epoch of ", batches_per_epoch());
  stop_workers();
  epoch_ = epoch;
  order_ = shard(epoch);
  end_batch_ = batches_per_epoch();
  next_claim_ = next_deliver_ = skip_batches;
  stop_ = false;
  for (int64_t i = 0; i < opt_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
}

Batch Loader::make_batch(int64_t b) const {
  const engine::Shape s = dataset_->sample_shape();  // (C, H, W)
  const auto [first, count, index, micro] = span(b);
  const int64_t per = engine::shape_numel(s);
  Batch batch;
  batch.index = index;
  batch.micro = micro;
  batch.images = engine::Tensor::empty({count, s[0], s[1], s[2]});      // (N, C, H, W)
  batch.labels = engine::Tensor::empty({count}, engine::DType::s32);    // (N)
  float* img = batch.images.data<float>();
  int32_t* lab = batch.labels.data<int32_t>();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t i = order_[first + k];
    engine::Generator rng = engine::Generator::derive(aug_seed(opt_.seed), static_cast<uint64_t>(epoch_),
                                                      static_cast<uint64_t>(i));
    lab[k] = dataset_->get(i, img + k * per, rng);
  }
  return batch;
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    consumed_.wait(lk, [&] { return stop_ || next_claim_ >= end_batch_ || next_claim_ < next_deliver_ + opt_.prefetch; });
    if (stop_ || next_claim_ >= end_batch_) return;
    const int64_t b = next_claim_++;
    lk.unlock();
    Slot slot;
    try {
      slot.batch = make_batch(b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    lk.lock();
    ready_[b] = std::move(slot);
    produced_.notify_all();
  }
}

bool Loader::next(Batch& batch) {
  QIL_CHECK(epoch_ >= 0, "Loader: next() before start_epoch()");
  std::unique_lock<std::mutex> lk(mu_);
  if (next_deliver_ >= end_batch_) return false;
  const int64_t b = next_deliver_;
  produced_.wait(lk, [&] { return ready_.count(b) > 0; });
  Slot slot = std::move(ready_[b]);
  ready_.erase(b);
  ++next_deliver_;
  if (slot.error) {
    next_deliver_ = end_batch_;  // the epoch ends here; stop the workers outside the lock
    lk.unlock();
    stop_workers();
    std::rethrow_exception(slot.error);
  }
  lk.unlock();
  consumed_.notify_all();
  batch = std::move(slot.batch);
  return true;
}

}  // namespace data
