// Buckets of the overlapped gradient all-reduce, without MPI: which tensors share a bucket and where they sit
// (BucketPlan), which buckets may start as tensors become final (always in bucket order), and the backward
// hooks that report each parameter once its gradient is final.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/buckets.h"
#include "engine/dist.h"
#include "engine/ops.h"

using namespace engine;

namespace {
std::vector<size_t> tensors_of(const BucketPlan::Bucket& b) {
  std::vector<size_t> t;
  for (const auto& s : b.slots) t.push_back(s.tensor);
  return t;
}
using Starts = std::vector<size_t>;
}  // namespace

TEST_CASE("bucket plan: filled from the last tensor backwards, closed at the cap") {
  // 4-byte elements, cap 200 bytes = 50 elements. From the back: t3 (40) opens bucket 0; t2 (30) does not fit
  // (70 > 50) and opens bucket 1; t1 (20) fits beside it (50); t0 (10) would make 60 and opens bucket 2.
  BucketPlan plan({10, 20, 30, 40}, 200);
  REQUIRE(plan.buckets().size() == 3);
  CHECK(tensors_of(plan.buckets()[0]) == std::vector<size_t>{3});
  CHECK(tensors_of(plan.buckets()[1]) == std::vector<size_t>{2, 1});
  CHECK(tensors_of(plan.buckets()[2]) == std::vector<size_t>{0});
  CHECK(plan.buckets()[1].numel == 50);
  CHECK(plan.buckets()[1].slots[0].offset == 0);   // t2 at the start of bucket 1's buffer
  CHECK(plan.buckets()[1].slots[1].offset == 30);  // t1 after t2's 30 elements
  CHECK(plan.bucket_of(0) == 2);
  CHECK(plan.bucket_of(1) == 1);
  CHECK(plan.bucket_of(3) == 0);
  // A tensor above the cap gets a bucket of its own; a cap that holds everything makes one bucket.
  BucketPlan big({100, 5}, 40);
  REQUIRE(big.buckets().size() == 2);
  CHECK(tensors_of(big.buckets()[1]) == std::vector<size_t>{0});
  CHECK(big.buckets()[1].numel == 100);
  CHECK(BucketPlan({10, 20, 30, 40}, 400).buckets().size() == 1);
  CHECK(BucketPlan({}, 400).buckets().empty());
  CHECK_THROWS_WITH_AS(BucketPlan({1}, 0), doctest::Contains("bucket size must be positive, got 0 bytes"), Error);
}

TEST_CASE("bucket plan: buckets start in order, once complete and every earlier one has started") {
  BucketPlan plan({10, 20, 30, 40}, 200);  // buckets {t3}, {t2, t1}, {t0}
  // Backward's order (last tensor first): each bucket starts as its last tensor becomes final.
  CHECK(plan.mark_ready(3) == Starts{0});
  CHECK(plan.mark_ready(2) == Starts{});
  CHECK(plan.mark_ready(1) == Starts{1});
  CHECK(plan.mark_ready(0) == Starts{2});
  CHECK(plan.started() == 3);
  // Another order: complete buckets wait for the earlier ones, then all start together, in order.
  plan.reset();
  CHECK(plan.started() == 0);
  CHECK(plan.mark_ready(0) == Starts{});  // bucket 2 is complete, but 0 and 1 have not started
  CHECK(plan.mark_ready(1) == Starts{});
  CHECK(plan.mark_ready(2) == Starts{});  // bucket 1 complete too
  CHECK(plan.mark_ready(3) == Starts{0, 1, 2});
  // The end of backward starts what is left (tensors it did not reach), in order.
  plan.reset();
  CHECK(plan.mark_ready(3) == Starts{0});
  CHECK(plan.mark_ready(0) == Starts{});
  CHECK(plan.mark_all_ready() == Starts{1, 2});
  CHECK(plan.mark_all_ready() == Starts{});
  CHECK_THROWS_WITH_AS(plan.mark_ready(2), doctest::Contains("tensor 2 was marked final twice in one round"), Error);
  CHECK_THROWS_WITH_AS(plan.mark_ready(4), doctest::Contains("tensor 4 of 4"), Error);
}

TEST_CASE("backward hooks: each leaf once, after the last node that adds to it, with its final gradient") {
  // loss = sum(relu(x + w1) + w2) + sum(w1 * s): w1 feeds two nodes; w2 one, near the root; `unused` none.
  Tensor x = Tensor::from_vector({1.f, -3.f}, {2});
  Tensor w1 = Tensor::from_vector({0.5f, 1.f}, {2}).set_requires_grad(true);
  Tensor w2 = Tensor::from_vector({2.f, 2.f}, {2}).set_requires_grad(true);
  Tensor s = Tensor::scalar(3.f).set_requires_grad(true);
  Tensor unused = Tensor::zeros({2}).set_requires_grad(true);
  Tensor loss = ops::add(ops::sum(ops::add(ops::relu(ops::add(x, w1)), w2)), ops::sum(ops::mul_scalar(w1, s)));
  std::vector<std::string> events;
  std::vector<std::vector<float>> at_report;
  BackwardHooks hooks;
  hooks.on_leaf_ready = [&](const Tensor& leaf) {
    events.push_back(leaf.same(w1) ? "w1" : leaf.same(w2) ? "w2" : leaf.same(s) ? "s" : "other");
    at_report.push_back(leaf.grad().to_vector());
  };
  hooks.after_node = [&] { events.push_back("node"); };
  backward(loss, hooks);
  // Every leaf the walk reaches is reported exactly once, and not `unused`; after_node follows every node.
  int w1_reports = 0, nodes = 0;
  for (const auto& e : events) {
    w1_reports += e == "w1";
    nodes += e == "node";
    CHECK(e != "other");
  }
  CHECK(w1_reports == 1);
  CHECK(nodes == 7);  // add, sum, add, relu, add, sum, mul_scalar
  CHECK(events.back() == "node");
  CHECK_FALSE(unused.grad().defined());
  // The gradient seen at the report is the final one: d/dw1 = relu'(x + w1) + s = (1 + 3, 0 + 3).
  for (size_t i = 0, k = 0; i < events.size(); ++i) {
    if (events[i] == "node") continue;
    const Tensor& leaf = events[i] == "w1" ? w1 : events[i] == "w2" ? w2 : s;
    CHECK_MESSAGE(at_report[k++] == leaf.grad().to_vector(), events[i]);
  }
  CHECK(w1.grad().to_vector() == std::vector<float>{4.f, 3.f});
}

TEST_CASE("backward hooks: a leaf root is reported after its seed") {
  Tensor w = Tensor::from_vector({1.f}, {1}).set_requires_grad(true);
  int reports = 0;
  BackwardHooks hooks;
  hooks.on_leaf_ready = [&](const Tensor& leaf) {
    CHECK(leaf.same(w));
    CHECK(leaf.grad().item() == 1.f);
    ++reports;
  };
  backward(w, hooks);
  CHECK(reports == 1);
}

TEST_CASE("gradient averager on one rank: only the scale, undefined gradients stay undefined") {
  Tensor a = Tensor::from_vector({1.f, 2.f}, {2}).set_requires_grad(true);
  Tensor b = Tensor::zeros({3}).set_requires_grad(true);  // no gradient this round
  a.grad() = Tensor::from_vector({4.f, -6.f}, {2});
  dist::GradAverager avg({b, a}, 4);  // one tensor per bucket; a (the last) in bucket 0
  CHECK(avg.plan().buckets().size() == 2);
  CHECK_THROWS_WITH_AS(avg.finish(), doctest::Contains("no round in progress"), Error);
  CHECK_THROWS_WITH_AS(avg.ready(a), doctest::Contains("no round in progress"), Error);
  avg.begin(0.5f);
  CHECK_THROWS_WITH_AS(avg.begin(), doctest::Contains("the previous round was not finished"), Error);
  avg.ready(a);
  avg.ready(Tensor::zeros({2}));  // not one of its parameters: ignored
  avg.poll();
  avg.finish();
  CHECK(a.grad().to_vector() == std::vector<float>{2.f, -3.f});
  CHECK_FALSE(b.grad().defined());
  CHECK(avg.started_early() == 1);  // a's bucket was complete before finish(); b's was not
  CHECK_FALSE(avg.in_round());
  std::vector<Tensor> bad{a, Tensor()};
  CHECK_THROWS_WITH_AS(dist::GradAverager(bad, 4), doctest::Contains("parameter 1 is Tensor[undefined]"), Error);
}
