// Buckets of gradients for an all-reduce that overlaps backward: which tensors share a bucket, where each sits
// in its bucket's buffer, and which buckets may start as the tensors' gradients become final. Pure bookkeeping:
// no communication (dist::GradAverager does that) and no tensor data, so it is tested without MPI.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace engine {

class BucketPlan {
 public:
  struct Slot {
    size_t tensor = 0;   // index in the list the plan was built from
    int64_t offset = 0;  // first element in the bucket's buffer
    int64_t numel = 0;
  };
  struct Bucket {
    std::vector<Slot> slots;  // in the order they were filled (last-registered tensor first)
    int64_t numel = 0;        // elements of the bucket's buffer
  };

  // numels: the tensors' element counts in registration (forward) order. Backward finishes the last-registered
  // layers first, so buckets are filled from the last tensor towards the first: bucket 0 holds the last
  // tensors. A bucket closes when the next tensor would take it past cap_bytes (elem_bytes per element); a
  // tensor larger than the cap gets a bucket of its own. cap_bytes must be positive.
  BucketPlan(const std::vector<int64_t>& numels, int64_t cap_bytes, int64_t elem_bytes = 4);

  const std::vector<Bucket>& buckets() const { return buckets_; }
  size_t bucket_of(size_t tensor) const { return bucket_of_.at(tensor); }
  size_t tensors() const { return bucket_of_.size(); }

  // A new round (one backward pass): no tensor is final, no bucket has started.
  void reset();
  // Tensor `tensor` is final for this round. Returns the buckets that may start now, in increasing order:
  // bucket b starts once all of its tensors are final and buckets 0..b-1 have started. Every rank therefore
  // starts the same buckets in the same order (MPI matches collectives by order), whatever order its tensors
  // become final in. Marking a tensor twice in one round is an error.
  std::vector<size_t> mark_ready(size_t tensor);
  // Everything is final (the end of backward; tensors that backward did not reach): the buckets that have not
  // started yet, in order.
  std::vector<size_t> mark_all_ready();
  size_t started() const { return started_; }  // buckets started this round: 0..started()-1

 private:
  std::vector<size_t> release();  // starts the buckets at the front that are complete

  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;   // per tensor
  std::vector<bool> ready_;         // per tensor, this round
  std::vector<int64_t> missing_;    // per bucket: tensors not yet final this round
  size_t started_ = 0;
};

}  // namespace engine
