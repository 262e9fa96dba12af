// The threaded loader: coverage, determinism across thread counts, epochs, rank shards, resume, errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>

#include "data/loader.h"

using engine::Error;

namespace {

// Sample i is (1, 1, 2): [i, one uniform draw of its augmentation generator]; label i % 7.
// Throws at `bad` if set.
class CountingDataset : public data::Dataset {
 public:
  explicit CountingDataset(int64_t n, int64_t bad = -1) : n_(n), bad_(bad) {}
  int64_t size() const override { return n_; }
  engine::Shape sample_shape() const override { return {1, 1, 2}; }
  int64_t num_classes() const override { return 7; }
  int32_t get(int64_t i, float* out, engine::Generator& rng) const override {
    QIL_CHECK(i != bad_, "CountingDataset: sample ", i, " is broken");
    out[0] = static_cast<float>(i);
    out[1] = rng.uniform();
    return static_cast<int32_t>(i % 7);
  }

 private:
  int64_t n_, bad_;
};

struct Seen {
  std::vector<int64_t> index;       // sample ids in delivery order
  std::vector<float> aug;           // their augmentation draws
  std::vector<int64_t> batch_sizes;
  std::vector<int64_t> batch_index;
};

Seen drain(data::Loader& l) {
  Seen s;
  data::Batch b;
  while (l.next(b)) {
    REQUIRE(b.images.dtype() == engine::DType::f32);
    REQUIRE(b.labels.dtype() == engine::DType::s32);
    const int64_t n = b.images.size(0);
    REQUIRE(b.images.shape() == engine::Shape{n, 1, 1, 2});
    REQUIRE(b.labels.shape() == engine::Shape{n});
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = static_cast<int64_t>(b.images.data<float>()[2 * k]);
      REQUIRE(b.labels.data<int32_t>()[k] == i % 7);
      s.index.push_back(i);
      s.aug.push_back(b.images.data<float>()[2 * k + 1]);
    }
    s.batch_sizes.push_back(n);
    s.batch_index.push_back(b.index);
  }
  return s;
}

Seen epoch(std::shared_ptr<const data::Dataset> ds, data::LoaderOptions o, int64_t e, int64_t skip = 0) {
  data::Loader l(std::move(ds), o);
  l.start_epoch(e, skip);
  return drain(l);
}

data::LoaderOptions opts(int64_t batch, bool drop_last, int64_t workers) {
  data::LoaderOptions o;
  o.batch_size = batch;
  o.drop_last = drop_last;
  o.workers = workers;
  o.seed = 1234;
  o.prefetch = 3;
  return o;
}

}  // namespace

TEST_CASE("loader: every sample exactly once per epoch") {
  auto ds = std::make_shared<CountingDataset>(103);
  Seen s = epoch(ds, opts(10, false, 2), 0);
  CHECK(s.batch_sizes == std::vector<int64_t>{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 3});
  CHECK(s.batch_index == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  std::vector<int64_t> sorted = s.index;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 103; ++i) REQUIRE(sorted[i] == i);
  CHECK(s.index != sorted);  // shuffled

  Seen d = epoch(ds, opts(10, true, 2), 0);
  CHECK(d.batch_sizes == std::vector<int64_t>(10, 10));
  CHECK(std::set<int64_t>(d.index.begin(), d.index.end()).size() == 100);
  // drop_last drops the tail of the same order.
  CHECK(std::equal(d.index.begin(), d.index.end(), s.index.begin()));

  data::Loader l(ds, opts(10, true, 1));
  CHECK(l.batches_per_epoch() == 10);
  data::Loader l2(ds, opts(10, false, 1));
  CHECK(l2.batches_per_epoch() == 11);

  data::LoaderOptions in_order = opts(50, false, 2);
  in_order.shuffle = false;
  Seen u = epoch(ds, in_order, 3);
  CHECK(u.index == sorted);
}

TEST_CASE("loader: identical batches with 1 and 4 workers, epochs differ") {
  auto ds = std::make_shared<CountingDataset>(257);
  Seen one = epoch(ds, opts(16, false, 1), 5);
  data::LoaderOptions four = opts(16, false, 4);
  four.prefetch = 1;
  Seen many = epoch(ds, four, 5);
  CHECK(one.index == many.index);
  CHECK(one.aug == many.aug);
  CHECK(one.batch_sizes == many.batch_sizes);

  Seen next = epoch(ds, opts(16, false, 4), 6);
  CHECK(next.index != one.index);
  // The augmentation of a sample is derived from (seed, epoch, sample), not its position or thread.
  std::vector<float> aug5(257), aug6(257);
  for (size_t k = 0; k < 257; ++k) { aug5[one.index[k]] = one.aug[k]; aug6[next.index[k]] = next.aug[k]; }
  CHECK(aug5 != aug6);
  for (int64_t i : {0, 100, 256}) {
    engine::Generator g = engine::Generator::derive(data::Loader::aug_seed(1234), 5, static_cast<uint64_t>(i));
    CHECK(aug5[i] == g.uniform());
  }

  data::LoaderOptions other_seed = opts(16, false, 1);
  other_seed.seed = 99;
  CHECK(epoch(ds, other_seed, 5).index != one.index);
}

TEST_CASE("loader: rank shards are disjoint, equal, covering and rank-independent") {
  auto ds = std::make_shared<CountingDataset>(99);
  Seen single = epoch(ds, opts(8, false, 1), 2);
  std::vector<float> aug1(99);
  for (size_t k = 0; k < 99; ++k) aug1[single.index[k]] = single.aug[k];

  std::multiset<int64_t> all;
  for (int64_t r = 0; r < 3; ++r) {
    data::LoaderOptions o = opts(8, false, 2);
    o.rank = r;
    o.world_size = 3;
    Seen s = epoch(ds, o, 2);
    CHECK(s.index.size() == 33);
    for (size_t k = 0; k < s.index.size(); ++k) {
      all.insert(s.index[k]);
      CHECK(s.aug[k] == aug1[s.index[k]]);  // same augmentation as on one rank
      // The rank's 8 consecutive samples of every step of 24, then its one sample of the 3 left after them.
      const size_t at = k < 32 ? 24 * (k / 8) + 8 * static_cast<size_t>(r) + k % 8 : 96 + static_cast<size_t>(r);
      CHECK(s.index[k] == single.index[at]);
    }
  }
  CHECK(all.size() == 99);
  CHECK(std::set<int64_t>(all.begin(), all.end()).size() == 99);

  // 100 samples on 3 ranks: 33 each, disjoint; one sample sits out this epoch.
  auto ds100 = std::make_shared<CountingDataset>(100);
  std::set<int64_t> u;
  for (int64_t r = 0; r < 3; ++r) {
    data::LoaderOptions o = opts(8, true, 1);
    o.rank = r;
    o.world_size = 3;
    data::Loader l(ds100, o);
    CHECK(l.samples_per_rank() == 33);
    CHECK(l.batches_per_epoch() == 4);
    for (int64_t i : l.shard(0)) CHECK(u.insert(i).second);
  }
  CHECK(u.size() == 99);
}

// What makes a resume on another number of ranks exact: a step's samples, and its micro-batches' samples and
// numbers, depend on the batch size and the step's size G only, not on how G splits into ranks x accumulate.
TEST_CASE("loader: a step's micro-batches are the same on 3 ranks and on 1 rank x accumulate 3, its samples as batch 24's") {
  auto ds = std::make_shared<CountingDataset>(203);  // steps of G = 24: 8 whole steps, 11 samples after them
  struct Layout {
    int64_t world, accumulate;
  };
  std::map<int64_t, std::vector<int64_t>> want;  // micro-batch number -> samples, from 1 rank x --accumulate 3
  for (const Layout& lay : {Layout{1, 3}, Layout{3, 1}}) {
    std::map<int64_t, std::vector<int64_t>> got;
    for (int64_t r = 0; r < lay.world; ++r) {
      data::LoaderOptions o = opts(8, true, 2);
      o.rank = r;
      o.world_size = lay.world;
      o.accumulate = lay.accumulate;
      data::Loader l(ds, o);
      l.start_epoch(5);
      data::Batch b;
      for (int64_t k = 0; k < 8 * lay.accumulate && l.next(b); ++k) {  // the 8 whole steps
        auto& v = got[b.micro];
        for (int64_t j = 0; j < b.images.size(0); ++j) v.push_back(static_cast<int64_t>(b.images.data<float>()[2 * j]));
        CHECK(b.index == k);
        CHECK(b.micro / 3 == k / lay.accumulate);  // micro-batch number / micro-batches per step = the step
      }
    }
    CHECK(got.size() == 24);
    if (want.empty())
      want = got;
    else
      CHECK(got == want);
  }
  // And one process with batch 24: its step k holds micro-batches 3k, 3k+1, 3k+2, in that order.
  const Seen big = epoch(ds, opts(24, true, 1), 5);
  for (int64_t k = 0; k < 8; ++k) {
    std::vector<int64_t> step;
    for (int64_t m = 3 * k; m < 3 * k + 3; ++m) step.insert(step.end(), want[m].begin(), want[m].end());
    CHECK(step == std::vector<int64_t>(big.index.begin() + 24 * k, big.index.begin() + 24 * k + 24));
  }
}

TEST_CASE("loader: shard_batches gives each rank whole one-process batches in turn, every sample once") {
  // 103 samples in batches of 10: one process cuts 11 batches (ten of 10, one of 3). Ranks of 2 take batches
  // 0,2,4,6,8,10 and 1,3,5,7,9; ranks of 3 take 4, 4 and 3 batches. Each batch equals the one-process batch.
  auto ds = std::make_shared<CountingDataset>(103);
  const Seen single = epoch(ds, opts(10, false, 1), 2);
  for (int64_t world : {1, 2, 3, 4, 12}) {
    std::vector<int64_t> covered;
    for (int64_t r = 0; r < world; ++r) {
      data::LoaderOptions o = opts(10, false, 2);
      o.rank = r;
      o.world_size = world;
      o.shard_batches = true;
      data::Loader l(ds, o);
      const Seen s = epoch(ds, o, 2);
      CHECK(l.batches_per_epoch() == static_cast<int64_t>(s.batch_index.size()));
      CHECK(l.samples_per_rank() == static_cast<int64_t>(s.index.size()));
      CHECK(l.shard(2) == s.index);
      int64_t at = 0;
      for (size_t k = 0; k < s.batch_index.size(); ++k) {
        const int64_t g = s.batch_index[k];
        CHECK(g == r + static_cast<int64_t>(k) * world);
        CHECK(s.batch_sizes[k] == single.batch_sizes[g]);
        for (int64_t j = 0; j < s.batch_sizes[k]; ++j, ++at) {
          CHECK(s.index[at] == single.index[g * 10 + j]);
          CHECK(s.aug[at] == single.aug[g * 10 + j]);
        }
      }
      covered.insert(covered.end(), s.index.begin(), s.index.end());
    }
    std::sort(covered.begin(), covered.end());
    CHECK_MESSAGE(covered.size() == 103, world);
    for (int64_t i = 0; i < static_cast<int64_t>(covered.size()); ++i) REQUIRE(covered[i] == i);
  }
  data::LoaderOptions o = opts(10, true, 1);
  o.shard_batches = true;
  CHECK_THROWS_WITH_AS(data::Loader(ds, o), doctest::Contains("drop_last does not apply"), Error);
}

TEST_CASE("loader: resuming with skip_batches yields the same remaining batches") {
  auto ds = std::make_shared<CountingDataset>(90);
  Seen full = epoch(ds, opts(8, false, 3), 4);
  Seen rest = epoch(ds, opts(8, false, 2), 4, 5);
  CHECK(rest.batch_index.front() == 5);
  CHECK(rest.index == std::vector<int64_t>(full.index.begin() + 40, full.index.end()));
  CHECK(rest.aug == std::vector<float>(full.aug.begin() + 40, full.aug.end()));
  CHECK(epoch(ds, opts(8, false, 2), 4, 12).index.empty());  // skip the whole epoch
  data::Loader l(ds, opts(8, false, 1));
  CHECK_THROWS_WITH_AS(l.start_epoch(4, 13), doctest::Contains("cannot skip 13 batches of an epoch of 12"), Error);
}

TEST_CASE("loader: a dataset's exception reaches next() in the caller's thread") {
  auto ds = std::make_shared<CountingDataset>(64, 37);
  data::LoaderOptions o = opts(4, false, 3);
  o.shuffle = false;  // sample 37 is in batch 9
  data::Loader l(ds, o);
  l.start_epoch(0);
  data::Batch b;
  int64_t delivered = 0;
  CHECK_THROWS_WITH_AS(
      [&] { while (l.next(b)) ++delivered; }(), doctest::Contains("CountingDataset: sample 37 is broken"), Error);
  CHECK(delivered == 9);  // batches 0..8 came out first, in order
  CHECK_FALSE(l.next(b));  // the epoch ended
  l.start_epoch(1);        // and the loader can start another
  CHECK(l.next(b));
}

TEST_CASE("loader: clean shutdown mid-epoch and restart mid-epoch") {
  auto ds = std::make_shared<CountingDataset>(1000);
  for (int workers : {1, 4}) {
    data::Loader l(ds, opts(10, false, workers));
    l.start_epoch(0);
    data::Batch b;
    REQUIRE(l.next(b));
    l.start_epoch(1);  // abandons epoch 0 with batches in flight
    REQUIRE(l.next(b));
    CHECK(b.index == 0);
  }  // destructor joins workers blocked on a full queue
  data::Loader never_started(ds, opts(10, false, 2));
  data::Batch b;
  CHECK_THROWS_WITH_AS(never_started.next(b), doctest::Contains("before start_epoch"), Error);
}

TEST_CASE("loader: bad options are clear errors") {
  auto ds = std::make_shared<CountingDataset>(10);
  CHECK_THROWS_WITH_AS(data::Loader(ds, opts(0, false, 1)), doctest::Contains("batch_size must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(data::Loader(ds, opts(11, true, 1)),
                       doctest::Contains("batch_size 11 is larger than the 10 samples"), Error);
  CHECK(data::Loader(ds, opts(11, false, 1)).batches_per_epoch() == 1);
  CHECK_THROWS_WITH_AS(data::Loader(ds, opts(4, false, 0)), doctest::Contains("workers must be at least 1"), Error);
  data::LoaderOptions o = opts(4, false, 1);
  o.rank = 2;
  o.world_size = 2;
  CHECK_THROWS_WITH_AS(data::Loader(ds, o), doctest::Contains("rank 2 is not within world_size 2"), Error);
  o.rank = 0;
  o.world_size = 11;
  CHECK_THROWS_WITH_AS(data::Loader(ds, o), doctest::Contains("10 samples cannot be shared among 11 ranks"), Error);
}
