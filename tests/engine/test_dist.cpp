// MPI helpers: the single-rank fast path (before init, and as an MPI singleton), argument checks, a two-rank
// run of this same binary under mpirun that checks the mean, the sums, the maxima, the broadcast and the
// divergence check, the bucketed gradient average against the one-buffer mean, and two-rank runs in which one
// rank does not arrive and the watchdog ends the job.
#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <regex>
#include <string>
#include <thread>

#include "engine/dist.h"
#include "skip.h"

using namespace engine;

namespace {
void check_single_rank_collectives() {
  CHECK(dist::rank() == 0);
  CHECK(dist::world_size() == 1);
  Tensor a = Tensor::from_vector({1.f, -2.f, 3.5f}, {3});
  Tensor b = Tensor::from_vector({0.25f}, {1});
  std::vector<Tensor> grads{a, b};
  dist::allreduce_mean(grads);  // the mean over one rank is the value itself
  CHECK(a.to_vector() == std::vector<float>{1.f, -2.f, 3.5f});
  CHECK(b.item() == 0.25f);
  dist::broadcast(grads, 0);
  CHECK(a.to_vector() == std::vector<float>{1.f, -2.f, 3.5f});
  CHECK(dist::allreduce_sum_i64(int64_t(41)) == 41);
  std::vector<int64_t> counts{3, 5};
  dist::allreduce_sum_i64(counts);
  CHECK(counts == std::vector<int64_t>{3, 5});
  dist::allreduce_max_i64(counts);
  CHECK(counts == std::vector<int64_t>{3, 5});
  std::vector<double> sums{0.1, -2.5};
  dist::allreduce_sum_f64(sums);
  CHECK(sums == std::vector<double>{0.1, -2.5});
  CHECK_FALSE(dist::find_divergence(grads).found());
  dist::barrier();
}
}  // namespace

TEST_CASE("dist before init: one rank, every collective a no-op") {
  CHECK_FALSE(dist::active());
  check_single_rank_collectives();
}

TEST_CASE("dist rejects undefined or non-f32 tensors and a root outside the world") {
  std::vector<Tensor> bad{Tensor::zeros({2}), Tensor()};
  CHECK_THROWS_WITH_AS(dist::allreduce_mean(bad), doctest::Contains("allreduce_mean: tensor 1 is Tensor[undefined]"),
                       Error);
  std::vector<Tensor> ints{Tensor::zeros({2}, DType::s32)};
  CHECK_THROWS_WITH_AS(dist::allreduce_mean(ints), doctest::Contains("expected a defined f32 tensor"), Error);
  CHECK_THROWS_WITH_AS(dist::broadcast(bad, 0), doctest::Contains("broadcast: tensor 1 is undefined"), Error);
  std::vector<Tensor> ok{Tensor::zeros({2})};
  CHECK_THROWS_WITH_AS(dist::broadcast(ok, 1), doctest::Contains("root 1 outside [0, 1)"), Error);
}

TEST_CASE("dist as an MPI singleton (no mpirun): one rank") {
  int argc = 0;
  char** argv = nullptr;
  dist::init(&argc, &argv);
  dist::init(&argc, &argv);  // idempotent
  CHECK(dist::active());
  check_single_rank_collectives();
  dist::finalize();
  CHECK_FALSE(dist::active());
  CHECK(dist::world_size() == 1);  // back on the no-MPI path
  CHECK_THROWS_WITH_AS(dist::init(&argc, &argv), doctest::Contains("already finalized"), Error);
}

// Run by the next test under mpirun with two ranks; skipped in a normal run.
TEST_CASE("dist worker: two ranks" * doctest::skip()) {
  int argc = 0;
  char** argv = nullptr;
  dist::init(&argc, &argv);
  const int r = dist::rank();
  REQUIRE(dist::world_size() == 2);
  // Rank 0 holds a = [1, 10], b = [[2]]; rank 1 holds a = [2, 20], b = [[6]]: means [1.5, 15] and 4.
  Tensor a = Tensor::from_vector({1.f + r, 10.f * (1 + r)}, {2});
  Tensor b = Tensor::from_vector({2.f + 4.f * r}, {1, 1});
  std::vector<Tensor> grads{a, b};
  dist::allreduce_mean(grads);
  CHECK(a.to_vector() == std::vector<float>{1.5f, 15.f});
  CHECK(b.item() == 4.f);
  // Sums: 1 + 2 = 3; vector [r, 100] -> [1, 200].
  CHECK(dist::allreduce_sum_i64(int64_t(r + 1)) == 3);
  std::vector<int64_t> v{r, 100};
  dist::allreduce_sum_i64(v);
  CHECK(v == std::vector<int64_t>{1, 200});
  // Broadcast from rank 1, mixed dtypes: every rank ends with rank 1's values.
  Tensor w = Tensor::from_vector({r ? 7.f : 0.f, r ? -8.f : 0.f}, {2});
  Tensor n = Tensor::zeros({1}, DType::s32);
  n.data<int32_t>()[0] = r ? 12345 : -1;
  std::vector<Tensor> params{w, n};
  dist::broadcast(params, 1);
  CHECK(w.to_vector() == std::vector<float>{7.f, -8.f});
  CHECK(n.data<int32_t>()[0] == 12345);
  // Maxima: [r, -r] -> [1, 0]. Double sums with one non-zero term per element come back exact.
  std::vector<int64_t> m{r, -r};
  dist::allreduce_max_i64(m);
  CHECK(m == std::vector<int64_t>{1, 0});
  std::vector<double> d{r == 0 ? 0.1 : 0.0, r == 1 ? 1.0 / 3.0 : 0.0};
  dist::allreduce_sum_f64(d);
  CHECK(d == std::vector<double>{0.1, 1.0 / 3.0});
  // Divergence: equal tensors agree; one ulp on rank 1 in tensor 1 (of any dtype) is found, and the first
  // differing tensor is named even when a later one differs too.
  Tensor t0 = Tensor::from_vector({1.f, 2.f, 3.f}, {3});
  Tensor t1 = Tensor::full({40000}, 0.5f);  // large enough for the threaded fingerprint
  Tensor t2 = Tensor::zeros({5}, DType::s32);
  std::vector<Tensor> model{t0, t1, t2};
  CHECK_FALSE(dist::find_divergence(model).found());
  if (r == 1) t2.data<int32_t>()[4] = 1;
  dist::Divergence dv = dist::find_divergence(model);
  CHECK((dv.index == 2 && dv.rank == 1));
  if (r == 1) t1.data<float>()[39999] = std::nextafter(0.5f, 1.f);
  dv = dist::find_divergence(model);
  CHECK((dv.index == 1 && dv.rank == 1));
  dist::barrier();
  dist::finalize();
}

// Run under mpirun by the test below: rank 1 arrives at the barrier 20 s late; rank 0's watchdog, at 1 s,
// ends the job first.
TEST_CASE("dist worker: a rank that does not arrive" * doctest::skip()) {
  int argc = 0;
  char** argv = nullptr;
  dist::init(&argc, &argv);
  dist::set_collective_timeout(1);
  if (dist::rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(20));
  dist::barrier();
  dist::finalize();
}

namespace {
// Gradients that differ by rank and element, so that a value summed into the wrong place shows.
void fill_grad(Tensor& p, int rank, int round) {
  p.grad() = Tensor::empty(p.shape());
  for (int64_t k = 0; k < p.numel(); ++k)
    p.grad().data()[k] = 0.1f * static_cast<float>(k + 1) + 0.37f * static_cast<float>(rank) + 1.3f * round;
}
bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}
}  // namespace

// Run under mpirun by "bucketed gradient average ..." below.
TEST_CASE("dist worker: bucketed average" * doctest::skip()) {
  int argc = 0;
  char** argv = nullptr;
  dist::init(&argc, &argv);
  const int r = dist::rank();
  REQUIRE(dist::world_size() == 2);
  // Buckets of 16 bytes (4 floats), filled from the back: {t4}, {t3}, {t2}, {t1, t0}. t4 gets no gradient.
  std::vector<Tensor> params;
  for (int64_t n : {3, 1, 40000, 2, 5}) params.push_back(Tensor::zeros({n}).set_requires_grad(true));
  dist::GradAverager avg(params, 16);
  REQUIRE(avg.plan().buckets().size() == 4);
  for (int round = 0; round < 2; ++round) {
    const float scale = round == 0 ? 0.5f : 1.f;
    std::vector<Tensor> want;  // what allreduce_mean makes of the same gradients, scaled first
    for (size_t i = 0; i + 1 < params.size(); ++i) {
      fill_grad(params[i], r, round);
      want.push_back(params[i].grad().clone());
      for (int64_t k = 0; k < want.back().numel(); ++k) want.back().data()[k] *= scale;
    }
    dist::allreduce_mean(want);
    avg.begin(scale);
    // The ranks report their parameters in opposite orders; round 0 never reports t4 (a parameter backward
    // did not reach), so no bucket can start before finish(); round 1 reports all.
    const size_t reported = round == 0 ? 4 : 5;
    for (size_t j = 0; j < reported; ++j) {
      avg.ready(params[r == 0 ? reported - 1 - j : j]);
      avg.poll();
    }
    avg.finish();
    CHECK(avg.started_early() == (round == 0 ? 0u : 4u));
    for (size_t i = 0; i + 1 < params.size(); ++i) CHECK_MESSAGE(same_bytes(params[i].grad(), want[i]), i);
    CHECK_FALSE(params[4].grad().defined());
  }
  dist::finalize();
}

// Run under mpirun: rank 1 reaches the bucketed average 20 s late; rank 0's watchdog, at 1 s, ends the job.
TEST_CASE("dist worker: a rank that does not arrive at the bucketed average" * doctest::skip()) {
  int argc = 0;
  char** argv = nullptr;
  dist::init(&argc, &argv);
  dist::set_collective_timeout(1);
  Tensor p = Tensor::zeros({4}).set_requires_grad(true);
  p.grad() = Tensor::zeros({4});
  dist::GradAverager avg({p}, 1 << 20);
  if (dist::rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(20));
  avg.begin();
  avg.ready(p);
  avg.finish();
  dist::finalize();
}

namespace {
struct MpiRun {
  int status = -1;
  std::string out;
  double seconds = 0;
};

MpiRun mpirun_test_case(const std::string& name) {
  const std::string cmd = "timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 " +
                          std::filesystem::read_symlink("/proc/self/exe").string() +
                          " --no-skip --no-colors --test-case='" + name + "' 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  MpiRun r;
  std::array<char, 4096> chunk;
  size_t got;
  while ((got = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0) r.out.append(chunk.data(), got);
  r.status = ::pclose(pipe);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

bool have_mpirun() {
  if (std::system("command -v mpirun >/dev/null 2>&1") == 0) return true;
  qiltest::skip("tool", "mpirun not found (Debian package openmpi-bin): the two-rank run is not exercised");
  return false;
}
}  // namespace

TEST_CASE("dist with two ranks under mpirun") {
  if (!have_mpirun()) return;
  const MpiRun r = mpirun_test_case("dist worker: two ranks");
  INFO(r.out);
  CHECK(r.status == 0);
  // Each rank runs the worker once and reports its own summary (doctest pads the counts to a common width).
  const std::regex one_passed(R"(test cases:\s+1\s+\|\s+1 passed\s+\|\s+0 failed)");
  CHECK(std::distance(std::sregex_iterator(r.out.begin(), r.out.end(), one_passed), std::sregex_iterator()) == 2);
}

TEST_CASE("a collective that waits past the timeout ends the job, naming the waiting rank") {
  if (!have_mpirun()) return;
  const MpiRun r = mpirun_test_case("dist worker: a rank that does not arrive");
  INFO(r.out);
  CHECK(r.status != 0);
  CHECK(r.out.find("qil: error (rank 0 of 2): barrier has waited more than 1 s") != std::string::npos);
  CHECK(r.seconds < 15);  // well before the late rank's 20 s
}

TEST_CASE("bucketed gradient average with two ranks: allreduce_mean's values bit for bit, in any report order") {
  if (!have_mpirun()) return;
  const MpiRun r = mpirun_test_case("dist worker: bucketed average");
  INFO(r.out);
  CHECK(r.status == 0);
  const std::regex one_passed(R"(test cases:\s+1\s+\|\s+1 passed\s+\|\s+0 failed)");
  CHECK(std::distance(std::sregex_iterator(r.out.begin(), r.out.end(), one_passed), std::sregex_iterator()) == 2);
}

TEST_CASE("a bucketed average that waits past the timeout ends the job, naming the waiting rank") {
  if (!have_mpirun()) return;
  const MpiRun r = mpirun_test_case("dist worker: a rank that does not arrive at the bucketed average");
  INFO(r.out);
  CHECK(r.status != 0);
  CHECK(r.out.find("qil: error (rank 0 of 2): allreduce_mean (bucketed) has waited more than 1 s") !=
        std::string::npos);
  CHECK(r.seconds < 15);
}

TEST_CASE("MPI is asked for only by a launcher's environment or QIL_MPI") {
  const char* vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS", "QIL_MPI"};
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* v : vars)
    if (const char* val = std::getenv(v)) saved.emplace_back(v, val);
  for (const char* v : vars) unsetenv(v);
  CHECK_FALSE(dist::launched_by_mpi());
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);  // what Open MPI's mpirun sets in each rank
  CHECK(dist::launched_by_mpi());
  setenv("QIL_MPI", "0", 1);  // forced off
  CHECK_FALSE(dist::launched_by_mpi());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  setenv("QIL_MPI", "1", 1);  // forced on
  CHECK(dist::launched_by_mpi());
  setenv("PMI_RANK", "0", 1);
  unsetenv("QIL_MPI");
  CHECK(dist::launched_by_mpi());
  for (const char* v : vars) unsetenv(v);
  for (auto& [k, v] : saved) setenv(k.c_str(), v.c_str(), 1);
}
