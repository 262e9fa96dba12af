// Bucket assignment and readiness.
#include "engine/buckets.h"

#include "engine/check.h"

namespace engine {

BucketPlan::BucketPlan(const std::vector<int64_t>& numels, int64_t cap_bytes, int64_t elem_bytes) {
  QIL_CHECK(cap_bytes > 0, "BucketPlan: the bucket size must be positive, got ", cap_bytes, " bytes");
  QIL_CHECK(elem_bytes > 0, "BucketPlan: the element size must be positive, got ", elem_bytes);
  bucket_of_.resize(numels.size());
  for (size_t k = numels.size(); k-- > 0;) {
    const int64_t n = numels[k];
    QIL_CHECK(n >= 0, "BucketPlan: tensor ", k, " has ", n, " elements");
    const bool fits = !buckets_.empty() && (buckets_.back().numel + n) * elem_bytes <= cap_bytes;
    if (!fits) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.slots.push_back({k, b.numel, n});
    b.numel += n;
    bucket_of_[k] = buckets_.size() - 1;
  }
  reset();
}

void BucketPlan::reset() {
  ready_.assign(bucket_of_.size(), false);
  missing_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) missing_[b] = static_cast<int64_t>(buckets_[b].slots.size());
  started_ = 0;
}

std::vector<size_t> BucketPlan::mark_ready(size_t tensor) {
  QIL_CHECK(tensor < ready_.size(), "BucketPlan::mark_ready: tensor ", tensor, " of ", ready_.size());
  QIL_CHECK(!ready_[tensor], "BucketPlan::mark_ready: tensor ", tensor, " was marked final twice in one round");
  ready_[tensor] = true;
  --missing_[bucket_of_[tensor]];
  return release();
}

std::vector<size_t> BucketPlan::mark_all_ready() {
  for (size_t t = 0; t < ready_.size(); ++t)
    if (!ready_[t]) {
      ready_[t] = true;
      --missing_[bucket_of_[t]];
    }
  return release();
}

std::vector<size_t> BucketPlan::release() {
  std::vector<size_t> out;
  while (started_ < buckets_.size() && missing_[started_] == 0) out.push_back(started_++);
  return out;
}

}  // namespace engine
