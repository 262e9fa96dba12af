// `qil train` and `qil eval` under mpirun with two ranks, one thread each: data-parallel training equals one
// process (and --accumulate) on a network without BatchNorm; gradients all-reduced in buckets during backward
// (--allreduce overlap) give the parameters of one all-reduce after it, bit for bit, with and without
// BatchNorm; `qil bench` times a data-parallel step and an all-reduce under mpirun; with BatchNorm every rank
// ends with the same model and a resumed run equals an uninterrupted one; sharded evaluation gives one
// process's figures exactly;
// a rank that throws, is killed or hangs ends the job within seconds, named, with the last checkpoint intact;
// the divergence guard names the parameter that differs; a run resumes on another number of ranks with its
// global batch (2 ranks -> 1 process -> 2 ranks ends bit for bit as the uninterrupted run) or is refused naming
// the flag; each rank draws its own dropout units; and on two hosts (network namespaces joined by veth, TCP,
// launched from a hostfile through a remote agent, tests/apps/netns_hosts.h; skipped, tests/skip.h, where they cannot be made)
// the run equals one process and a killed rank ends the job. Faults come from the test-only QIL_TEST_FAULT
// variables (apps/training/fault_injection.h).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/serialize.h"
#include "netns_hosts.h"
#include "run_qil.h"
#include "skip.h"

using qiltest::run_qil;
using qiltest::ScratchDir;
namespace fs = std::filesystem;

namespace {

const char* kFashion = "/usr/share/datasets/fashion-mnist";
// 256 training images (8 steps of 2 x 16), 64 validation, 64 test; a network without BatchNorm.
const std::string kTiny =
    " --model lenet-nobn --train-subset 320 --val-size 64 --test-subset 64 --progress none --lr 0.05 --threads 1";

bool can_run() {
  if (!fs::exists(std::string(kFashion) + "/train-images-idx3-ubyte.gz")) {
    qiltest::skip("dataset", "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
    return false;
  }
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    qiltest::skip("tool", "mpirun not installed (Debian package openmpi-bin)");
    return false;
  }
  return true;
}

struct MpiResult {
  int code = -1;
  std::string out;
  double after_marker = -1;  // seconds from the marker's first appearance in the output to the job's end
};

// Runs a shell command, reading its output as it comes, so the time from `marker`'s first appearance to the end
// of the command is measured.
MpiResult run_timed(const std::string& cmd, const std::string& marker) {
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  MpiResult r;
  std::chrono::steady_clock::time_point seen;
  char buf[4096];
  for (ssize_t n; (n = read(fileno(p), buf, sizeof buf)) > 0;) {
    r.out.append(buf, static_cast<size_t>(n));
    if (r.after_marker < 0 && !marker.empty() && r.out.find(marker) != std::string::npos) {
      seen = std::chrono::steady_clock::now();
      r.after_marker = 0;
    }
  }
  const int st = pclose(p);
  if (r.after_marker >= 0) r.after_marker = std::chrono::duration<double>(std::chrono::steady_clock::now() - seen).count();
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// mpirun's -x options: OMP_NUM_THREADS=1 and env ("NAME=value NAME=value") for every rank.
std::string exported(const std::string& env) {
  std::string xs = " -x OMP_NUM_THREADS=1";
  std::istringstream es(env);
  for (std::string kv; es >> kv;) xs += " -x " + kv;
  return xs;
}

// `qil args` under mpirun, 2 ranks of one thread on this host (shared memory).
MpiResult mpi_qil(const std::string& args, const std::string& env = "", const std::string& marker = "") {
  return run_timed("timeout 300 mpirun --allow-run-as-root --oversubscribe -np 2" + exported(env) + " '" +
                       qiltest::qil_binary() + "' " + args + " 2>&1",
                   marker);
}

// `qil args` on two hosts, one rank of one thread each, over TCP (tests/apps/netns_hosts.h).
MpiResult hosts_qil(const qiltest::NetnsHosts& hosts, const std::string& args, const std::string& env = "",
                    const std::string& marker = "") {
  return run_timed(hosts.mpirun(exported(env) + " '" + qiltest::qil_binary() + "' " + args) + " 2>&1", marker);
}

engine::NamedTensors model_of(const std::string& ckpt) { return engine::read_checkpoint(ckpt).tensors("model."); }

// The largest relative difference ||a - b|| / ||b|| over the tensors (each tensor's own norms); `which` picks
// names.
double max_rel_diff(const engine::NamedTensors& a, const engine::NamedTensors& b,
                    const std::function<bool(const std::string&)>& which = {}) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].first == b[i].first);
    if (which && !which(a[i].first)) continue;
    const auto va = a[i].second.to_vector(), vb = b[i].second.to_vector();
    double diff = 0, norm = 1e-300;
    for (size_t k = 0; k < va.size(); ++k) {
      diff += (static_cast<double>(va[k]) - vb[k]) * (static_cast<double>(va[k]) - vb[k]);
      norm += static_cast<double>(vb[k]) * vb[k];
    }
    worst = std::max(worst, std::sqrt(diff / norm));
  }
  return worst;
}

// The first tensor whose bytes differ, or "" when all are identical.
std::string first_difference(const engine::NamedTensors& a, const engine::NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].first != b[i].first || a[i].second.nbytes() != b[i].second.nbytes() ||
        std::memcmp(a[i].second.bytes(), b[i].second.bytes(), a[i].second.nbytes()) != 0)
      return a[i].first;
  return "";
}

bool is_buffer(const std::string& name) { return name.find("running_") != std::string::npos; }

std::string csv_cell(const std::string& path, const std::string& col, size_t row) {
  std::ifstream f(path);
  std::string line, cell;
  std::getline(f, line);
  std::stringstream hs(line);
  size_t k = 0;
  for (std::string h; std::getline(hs, h, ',') && h != col;) ++k;
  for (size_t r = 0; r <= row; ++r) REQUIRE_MESSAGE(std::getline(f, line), "no row " << row << " in " << path);
  std::stringstream ls(line);
  for (size_t i = 0; i <= k; ++i) std::getline(ls, cell, ',');
  return cell;
}

nlohmann::json run_state_of(const std::string& ckpt) {
  return nlohmann::json::parse(engine::read_checkpoint(ckpt).text("run_state"));
}

}  // namespace

TEST_CASE("2 ranks x batch 16 step as 1 process x batch 32 and as --accumulate 2 (no BatchNorm)") {
  if (!can_run()) return;
  ScratchDir tmp;
  // 10 steps: epoch 1 (8 steps, evaluated and logged) and two steps into epoch 2. Rank r takes samples r, r+2,
  // ... of each epoch's order, so step k of the two ranks covers the 32 samples of one process's step k.
  const std::string run = "train" + kTiny + " --epochs 2 --stop-after-steps 10 --out ";
  auto a = mpi_qil(run + tmp / "ranks" + " --batch 16");
  REQUIRE_MESSAGE(a.code == 0, a.out);
  CHECK(a.out.find("batch 32 (16 x 1 micro-batches x 2 ranks)") != std::string::npos);
  auto b = run_qil(run + tmp / "one" + " --batch 32");
  REQUIRE_MESSAGE(b.code == 0, b.out);
  auto c = run_qil(run + tmp / "accumulate" + " --batch 16 --accumulate 2");
  REQUIRE_MESSAGE(c.code == 0, c.out);
  CHECK(c.out.find("batch 32 (16 x 2 micro-batches x 1 ranks)") != std::string::npos);
  auto d = run_qil(run + tmp / "half" + " --batch 16");  // control: 16 images per step
  REQUIRE_MESSAGE(d.code == 0, d.out);

  // The same 32 images per step, their gradient summed in other orders: equal up to rounding (about 2e-6 here).
  const auto one = model_of(tmp / "one/last.ckpt"), ranks = model_of(tmp / "ranks/last.ckpt"),
             accumulated = model_of(tmp / "accumulate/last.ckpt");
  const double by_ranks = max_rel_diff(ranks, one), by_accumulation = max_rel_diff(accumulated, one);
  MESSAGE("largest relative difference (per tensor, L2) to 1 x 32: 2 ranks x 16 " << by_ranks
                                                                                  << ", --accumulate 2 " << by_accumulation);
  CHECK(by_ranks < 1e-5);
  CHECK(by_accumulation < 1e-5);
  CHECK(max_rel_diff(ranks, accumulated) < 1e-5);
  CHECK(max_rel_diff(model_of(tmp / "half/last.ckpt"), one) > 1e-3);  // what other data per step does
  // The LR schedule counts optimizer steps: epoch 1's last LR is the same for all three (counted in
  // micro-batches, --accumulate 2's epoch would have had 16 steps and its last LR another value).
  const std::string lr = csv_cell(tmp / "one/metrics.csv", "lr", 0);
  CHECK(csv_cell(tmp / "ranks/metrics.csv", "lr", 0) == lr);
  CHECK(csv_cell(tmp / "accumulate/metrics.csv", "lr", 0) == lr);
}

// With two ranks every element of the averaged gradient is one addition, a + b, whichever buffer, bucket or
// algorithm MPI sums it in, and both modes scale by 1/micro-batches before the sum and by 1/2 after it: the
// parameters must be identical, not merely close.
TEST_CASE("--allreduce overlap gives --allreduce end's parameters bit for bit, --accumulate included") {
  if (!can_run()) return;
  ScratchDir tmp;
  // 10 steps as above; buckets of 0.01 MiB (2621 floats) cut lenet-nobn's gradients into several buckets.
  const std::string run = "train" + kTiny + " --epochs 2 --stop-after-steps 10 --bucket-mb 0.01 --out ";
  for (const char* mode : {"end", "overlap"})
    for (const char* batch : {"16", "8 --accumulate 2"}) {
      auto r = mpi_qil(run + tmp / (std::string(mode) + batch[0]) + " --allreduce " + mode + " --batch " + batch);
      REQUIRE_MESSAGE(r.code == 0, r.out);
      const std::string says = std::string(mode) == "end" ? "gradients all-reduced after backward"
                                                           : "all-reduced during backward in buckets of up to 0.01 MiB";
      CHECK_MESSAGE(r.out.find(says) != std::string::npos, r.out);
    }
  CHECK(first_difference(model_of(tmp / "overlap1/last.ckpt"), model_of(tmp / "end1/last.ckpt")) == "");
  CHECK(first_difference(model_of(tmp / "overlap8/last.ckpt"), model_of(tmp / "end8/last.ckpt")) == "");
  // And so overlap keeps the equivalence with one process stepping on all 32 images.
  auto one = run_qil(run + tmp / "one" + " --batch 32");
  REQUIRE_MESSAGE(one.code == 0, one.out);
  const double rel = max_rel_diff(model_of(tmp / "overlap1/last.ckpt"), model_of(tmp / "one/last.ckpt"));
  MESSAGE("2 ranks x 16 with --allreduce overlap against 1 x 32: largest relative difference " << rel);
  CHECK(rel < 1e-5);
  CHECK(max_rel_diff(model_of(tmp / "overlap8/last.ckpt"), model_of(tmp / "one/last.ckpt")) < 1e-5);
  auto error_of = [&](const std::string& args) {
    auto r = run_qil("train" + kTiny + " --epochs 1 --out " + tmp / "bad" + args);
    CHECK(r.code != 0);
    return r.out;
  };
  CHECK(error_of(" --allreduce later").find("--allreduce must be end or overlap, got 'later'") != std::string::npos);
  CHECK(error_of(" --bucket-mb 0").find("--bucket-mb must be positive, got 0") != std::string::npos);
}

TEST_CASE("with BatchNorm, --allreduce overlap keeps the ranks identical and equals --allreduce end") {
  if (!can_run()) return;
  ScratchDir tmp;
  // ResNet-20 (BatchNorm buffers beside the parameters), 4 steps of 2 x 16; 0.05 MiB buckets: several.
  const std::string run =
      "train --model resnet20 --train-subset 160 --val-size 32 --test-subset 32 --batch 16 --epochs 1 "
      "--progress none --lr 0.05 --threads 1 --bucket-mb 0.05 --out ";
  const std::string env = "QIL_TEST_RANK_CHECKPOINTS=1";
  for (const char* mode : {"end", "overlap"}) {
    auto r = mpi_qil(run + tmp / mode + " --allreduce " + mode, env);
    REQUIRE_MESSAGE(r.code == 0, r.out);
  }
  const auto overlap = model_of(tmp / "overlap/last.ckpt");
  CHECK(first_difference(model_of(tmp / "overlap/last.ckpt.rank1"), overlap) == "");
  CHECK(first_difference(overlap, model_of(tmp / "end/last.ckpt")) == "");
}

TEST_CASE("qil bench under mpirun: a data-parallel step in either mode, and one all-reduce of the gradient") {
  if (!can_run()) return;
  const std::string lenet =
      "bench --model lenet-nobn --image-size 28 --in-channels 1 --num-classes 10 --batch 4 --threads 1 --json ";
  for (const char* mode : {"end", "overlap"}) {
    auto r = mpi_qil(lenet + "--steps 2 --warmup 1 --repeat 1 --bucket-mb 0.01 --allreduce " + mode);
    REQUIRE_MESSAGE(r.code == 0, r.out);
    const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));  // rank 0 alone reports
    CHECK(r.out.find('{') == r.out.rfind('{'));
    CHECK(j.at("ranks") == 2);
    CHECK(j.at("allreduce") == mode);
    CHECK(j.at("step_ms").get<double>() > 0);
    // Overlap: every bucket started during backward (every parameter is reached before the walk ends).
    if (std::string(mode) == "overlap") {
      CHECK(j.at("buckets").get<int>() > 1);
      CHECK(j.at("buckets_in_backward") == j.at("buckets"));
    } else {
      CHECK(j.at("buckets") == 0);
    }
  }
  auto a = mpi_qil(lenet + "--allreduce-only --steps 3 --repeat 1");
  REQUIRE_MESSAGE(a.code == 0, a.out);
  const auto j = nlohmann::json::parse(a.out.substr(a.out.find('{')));
  CHECK(j.at("ranks") == 2);
  CHECK(j.at("bytes").get<int64_t>() == 4 * j.at("parameters").get<int64_t>());
  CHECK(j.at("parameters").get<int64_t>() > 1000);
  CHECK(j.contains("median_ms"));
  CHECK(j.contains("small_ms"));
  auto alone = run_qil(lenet + "--allreduce-only");
  CHECK(alone.code != 0);
  CHECK_MESSAGE(alone.out.find("--allreduce-only: needs 2 or more ranks") != std::string::npos, alone.out);
}

TEST_CASE("--accumulate: a run resumed at a step boundary ends where an uninterrupted one does") {
  if (!can_run()) return;
  ScratchDir tmp;
  auto error_of = [&](const std::string& args) {
    auto r = run_qil("train" + kTiny + " --epochs 1 --out " + tmp / "bad" + args);
    CHECK(r.code != 0);
    return r.out;
  };
  CHECK(error_of(" --accumulate 0").find("--accumulate must be in 1..65536, got 0") != std::string::npos);
  CHECK(error_of(" --batch 64 --accumulate 5").find("--batch 64 x --accumulate 5 is more than the 256 training images") !=
        std::string::npos);
  CHECK(error_of(" --rank-check-every -1").find("--rank-check-every must be >= 0, got -1") != std::string::npos);
  CHECK(error_of(" --collective-timeout -2").find("--collective-timeout must be >= 0, got -2") != std::string::npos);
  const std::string run = "train" + kTiny + " --epochs 1 --batch 16 --accumulate 2 --out ";
  REQUIRE(run_qil(run + tmp / "full").code == 0);
  auto cut = run_qil(run + tmp / "cut" + " --stop-after-steps 3");  // 6 of the epoch's 16 micro-batches
  REQUIRE_MESSAGE(cut.code == 0, cut.out);
  CHECK(run_state_of(tmp / "cut/last.ckpt")["position"]["batch"] == 6);
  // A checkpoint is at a step boundary of the --accumulate it was written with, not of any other.
  // A step keeps its 32 images within a stage: another --accumulate is refused, naming the one that keeps them.
  auto other = run_qil("train --resume " + tmp / "cut" + " --accumulate 4");
  CHECK(other.code != 0);
  CHECK_MESSAGE(other.out.find("was written with a global batch of 32 (16 x 2 micro-batches x 1 ranks); --batch 16 x "
                               "--accumulate 4 x 1 ranks = 64 would change it in the middle of a stage") !=
                    std::string::npos,
                other.out);
  CHECK_MESSAGE(other.out.find("resume with --accumulate 2") != std::string::npos, other.out);
  auto rest = run_qil("train --resume " + tmp / "cut");
  REQUIRE_MESSAGE(rest.code == 0, rest.out);
  CHECK(rest.out.find("resuming at epoch 1 batch 6") != std::string::npos);
  CHECK(first_difference(model_of(tmp / "cut/last.ckpt"), model_of(tmp / "full/last.ckpt")) == "");
}

TEST_CASE("with BatchNorm, 2 ranks end with one model, and resumed under mpirun equal an uninterrupted run") {
  if (!can_run()) return;
  ScratchDir tmp;
  // ResNet-20, 128 training images: 4 steps of 2 x 16 per epoch, 2 epochs. Every rank saves (test-only), so
  // what rank 1 holds can be compared with rank 0.
  const std::string run =
      "train --model resnet20 --train-subset 160 --val-size 32 --test-subset 32 --batch 16 --epochs 2 "
      "--progress none --lr 0.05 --threads 1 --out ";
  const std::string env = "QIL_TEST_RANK_CHECKPOINTS=1";
  auto full = mpi_qil(run + tmp / "full", env);
  REQUIRE_MESSAGE(full.code == 0, full.out);
  auto cut = mpi_qil(run + tmp / "cut" + " --stop-after-steps 6", env);  // epoch 2, batch 2
  REQUIRE_MESSAGE(cut.code == 0, cut.out);
  // Rank 0's mid-epoch checkpoint holds the ranks' mean running statistics, rank 1's the same.
  CHECK(first_difference(model_of(tmp / "cut/last.ckpt"), model_of(tmp / "cut/last.ckpt.rank1")) == "");
  auto rest = mpi_qil("train --resume " + tmp / "cut", env);
  REQUIRE_MESSAGE(rest.code == 0, rest.out);
  CHECK(rest.out.find("resuming at epoch 2 batch 2") != std::string::npos);

  const auto want = model_of(tmp / "full/last.ckpt");
  // Every rank holds the same parameters and running statistics at the end.
  CHECK(first_difference(model_of(tmp / "full/last.ckpt.rank1"), want) == "");
  CHECK(first_difference(model_of(tmp / "cut/last.ckpt.rank1"), model_of(tmp / "cut/last.ckpt")) == "");
  // The resumed run's parameters equal the uninterrupted run's exactly (batch statistics, not running ones,
  // shape training); its running statistics were averaged at the stop, which changes only their rounding.
  const auto got = model_of(tmp / "cut/last.ckpt");
  CHECK(max_rel_diff(got, want, [](const std::string& n) { return !is_buffer(n); }) == 0);
  const double buffers = max_rel_diff(got, want, is_buffer);
  MESSAGE("running statistics, resumed vs uninterrupted: largest relative difference " << buffers);
  CHECK(buffers < 1e-5);
  double moved = 0;  // the running variances left their initial 1: the comparison above compares something
  for (const auto& [name, t] : got)
    if (name.find("running_var") != std::string::npos)
      for (float v : t.to_vector()) moved = std::max(moved, std::fabs(v - 1.0));
  CHECK(moved > 1e-2);
}

TEST_CASE("sharded evaluation: 2 ranks report one process's figures exactly, odd sizes included") {
  if (!can_run()) return;
  ScratchDir tmp;
  auto t = run_qil("train --model lenet --train-subset 320 --val-size 64 --test-subset 64 --batch 32 --epochs 1 "
                   "--stop-after-steps 3 --progress none --threads 1 --out " + tmp / "run");
  REQUIRE_MESSAGE(t.code == 0, t.out);
  // 137 images in batches of 64: 64 + 64 + 9, rank 0 takes two batches and rank 1 one. 50 images: one batch,
  // rank 1 has none.
  for (const char* shape : {"--subset 137 --batch 64", "--subset 50 --batch 64"}) {
    const std::string args = "eval " + tmp / "run/last.ckpt" + " --json --threads 1 --progress none " + shape;
    auto one = run_qil(args);
    REQUIRE_MESSAGE(one.code == 0, one.out);
    auto two = mpi_qil(args);
    REQUIRE_MESSAGE(two.code == 0, two.out);
    const auto j = nlohmann::json::parse(one.out);
    CHECK(j["images"] == (std::string(shape).find("137") != std::string::npos ? 137 : 50));
    CHECK_MESSAGE(two.out == one.out, shape);  // one JSON line, from rank 0, the same to the last digit
  }
}

TEST_CASE("a rank that throws ends the job within seconds, named, and the last checkpoint stays intact") {
  if (!can_run()) return;
  ScratchDir tmp;
  // Step 10 is in epoch 2: epoch 1's checkpoint was written.
  auto r = mpi_qil("train" + kTiny + " --batch 16 --epochs 2 --out " + tmp / "run",
                   "QIL_TEST_FAULT=throw QIL_TEST_FAULT_RANK=1 QIL_TEST_FAULT_STEP=10", "QIL_TEST_FAULT=throw");
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("qil: error (rank 1 of 2): test fault (QIL_TEST_FAULT=throw) after step 10") != std::string::npos);
  CHECK(r.after_marker >= 0);
  CHECK(r.after_marker < 30);
  MESSAGE("job ended " << r.after_marker << " s after the error");
  const auto pos = run_state_of(tmp / "run/last.ckpt")["position"];  // readable: checksums hold
  CHECK(pos["epoch"] == 1);
  CHECK(pos["batch"] == 0);
}

// A job whose rank 1 was SIGKILLed at step 10 of epoch 2: it failed naming the rank and the signal, ended
// within 30 s of the kill, and its last checkpoint is the one written at the end of epoch 1.
void check_killed_rank(const MpiResult& r, const std::string& ckpt, const std::string& where) {
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("rank 1") != std::string::npos);
  CHECK(r.out.find("signal 9") != std::string::npos);
  CHECK(r.after_marker >= 0);
  CHECK(r.after_marker < 30);
  MESSAGE(where << "job ended " << r.after_marker << " s after the kill");
  const auto pos = run_state_of(ckpt)["position"];
  CHECK(pos["epoch"] == 1);
  CHECK(pos["batch"] == 0);
}

TEST_CASE("a rank killed with SIGKILL ends the job within seconds, named, and the last checkpoint stays intact") {
  if (!can_run()) return;
  ScratchDir tmp;
  auto r = mpi_qil("train" + kTiny + " --batch 16 --epochs 2 --out " + tmp / "run",
                   "QIL_TEST_FAULT=kill QIL_TEST_FAULT_RANK=1 QIL_TEST_FAULT_STEP=10", "QIL_TEST_FAULT=kill");
  check_killed_rank(r, tmp / "run/last.ckpt", "");
}

TEST_CASE("a rank that hangs: the others' collective times out and ends the job, naming the waiting rank") {
  if (!can_run()) return;
  ScratchDir tmp;
  // 10 s: far above a step of this network, also on a busy machine (at 2 s a slow step was taken for a hang).
  auto r = mpi_qil("train" + kTiny + " --batch 16 --epochs 1 --collective-timeout 10 --out " + tmp / "run",
                   "QIL_TEST_FAULT=hang QIL_TEST_FAULT_RANK=1 QIL_TEST_FAULT_STEP=2", "QIL_TEST_FAULT=hang");
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("qil: error (rank 0 of 2): allreduce_max_i64 has waited more than 10 s for the other ranks") !=
        std::string::npos);
  CHECK(r.after_marker >= 0);
  CHECK(r.after_marker < 30);
}

TEST_CASE("divergence guard: a parameter that differs on one rank stops the run, naming it") {
  if (!can_run()) return;
  ScratchDir tmp;
  const std::string env = "QIL_TEST_FAULT=diverge QIL_TEST_FAULT_RANK=1 QIL_TEST_FAULT_STEP=3 "
                          "QIL_TEST_FAULT_PARAM=fc1.bias";
  // Checked every 2 steps: found after step 4, before any checkpoint.
  auto r = mpi_qil("train" + kTiny + " --batch 16 --epochs 1 --rank-check-every 2 --out " + tmp / "a", env);
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("ranks diverged: fc1.bias on rank 1 differs from rank 0's after step 4 of stage fp32") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(tmp / "a/last.ckpt"));
  // Checked at epoch ends only: found at the end of epoch 1, and nothing of that epoch is saved.
  auto e = mpi_qil("train" + kTiny + " --batch 16 --epochs 1 --rank-check-every 0 --out " + tmp / "e", env);
  INFO(e.out);
  CHECK(e.code != 0);
  CHECK(e.out.find("ranks diverged: fc1.bias on rank 1 differs from rank 0's at the end of stage fp32 epoch 1") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(tmp / "e/last.ckpt"));
}

// Data-parallel runs resume on another number of ranks: the checkpoint records its step layout (16 x 1
// micro-batches x 2 ranks), one process resumes it with --accumulate 2 (chosen for it: the same 32 images per
// step, cut into the same micro-batches, each with the same dropout draws, layers::Stochastic), and 2 ranks
// take it back. With 2 micro-batches the mean gradient is one addition a + b scaled by 1/2, whether MPI or the
// accumulation adds it: the end is the uninterrupted 2-rank run's, bit for bit.
TEST_CASE("elastic resume: 2 ranks -> 1 process -> 2 ranks ends bit for bit as the uninterrupted 2-rank run") {
  if (!can_run()) return;
  ScratchDir tmp;
  // lenet-dropout, 8 steps of 2 x 16 per epoch, 2 epochs.
  const std::string run = "train --model lenet-dropout --train-subset 320 --val-size 64 --test-subset 64 --progress none "
                          "--lr 0.05 --threads 1 --batch 16 --epochs 2 --out ";
  auto full = mpi_qil(run + tmp / "full");
  REQUIRE_MESSAGE(full.code == 0, full.out);
  auto cut = mpi_qil(run + tmp / "cut" + " --stop-after-steps 3");  // epoch 1, after step 3
  REQUIRE_MESSAGE(cut.code == 0, cut.out);
  auto pos = run_state_of(tmp / "cut/last.ckpt")["position"];
  CHECK(pos["ranks"] == 2);
  CHECK(pos["accumulate"] == 1);
  CHECK(pos["seen"] == 96);  // the epoch's images so far, over both ranks

  // Another global batch is refused, naming what keeps it; nothing is written.
  for (const char* bad : {" --accumulate 4", " --batch 10"}) {
    auto r = run_qil("train --resume " + tmp / "cut" + bad);
    CHECK(r.code != 0);
    CHECK_MESSAGE(r.out.find("was written with a global batch of 32 (16 x 1 micro-batches x 2 ranks)") != std::string::npos,
                  r.out);
    CHECK_MESSAGE(r.out.find(std::string(bad) == " --batch 10" ? "whose product is 32" : "resume with --accumulate 2") !=
                      std::string::npos,
                  r.out);
  }
  CHECK(run_state_of(tmp / "cut/last.ckpt")["position"] == pos);

  // One process: steps 4-11, across the epoch's end (evaluated, logged) into epoch 2.
  auto one = run_qil("train --resume " + tmp / "cut" + " --stop-after-steps 8");
  REQUIRE_MESSAGE(one.code == 0, one.out);
  CHECK_MESSAGE(one.out.find("resuming a global batch of 32 (16 x 1 micro-batches x 2 ranks) on 1 rank(s) as 16 x 2 "
                             "micro-batches") != std::string::npos,
                one.out);
  CHECK(one.out.find("batch 32 (16 x 2 micro-batches x 1 ranks)") != std::string::npos);
  pos = run_state_of(tmp / "cut/last.ckpt")["position"];
  CHECK(pos["epoch"] == 1);
  CHECK(pos["batch"] == 6);  // 3 steps of 2 micro-batches
  CHECK(pos["ranks"] == 1);
  auto rest = mpi_qil("train --resume " + tmp / "cut");
  REQUIRE_MESSAGE(rest.code == 0, rest.out);
  CHECK(rest.out.find("on 2 rank(s) as 16 x 1 micro-batches") != std::string::npos);
  CHECK(rest.out.find("resuming at epoch 2 batch 3") != std::string::npos);

  CHECK(first_difference(model_of(tmp / "cut/last.ckpt"), model_of(tmp / "full/last.ckpt")) == "");
  // The logged epochs too: evaluation is one process's either way, and the training accuracy counts every
  // rank's images (epoch 1 was run by 2 ranks, then 1 process).
  for (const char* col : {"train_top1", "val_top1", "test_top1", "lr"})
    for (size_t row : {0, 1}) CHECK_MESSAGE(csv_cell(tmp / "cut/metrics.csv", col, row) == csv_cell(tmp / "full/metrics.csv", col, row), col << " row " << row);
}

// Dropout draws from (epoch, the micro-batch's number among all ranks'), not from a generator every rank seeds
// alike: 2 ranks x 16 equal one process x 16 x --accumulate 2 only if rank 1 drops the units of the process's
// second micro-batch (with the same seed on every rank, as before, it dropped rank 0's and the runs differed).
TEST_CASE("Dropout under mpirun: every rank draws its own units, as one process's micro-batches do") {
  if (!can_run()) return;
  ScratchDir tmp;
  const std::string run = "train --model lenet-dropout --train-subset 320 --val-size 64 --test-subset 64 --progress none "
                          "--lr 0.05 --threads 1 --batch 16 --epochs 2 --stop-after-steps 10 --out ";
  auto ranks = mpi_qil(run + tmp / "ranks", "QIL_TEST_RANK_CHECKPOINTS=1");
  REQUIRE_MESSAGE(ranks.code == 0, ranks.out);
  auto one = run_qil(run + tmp / "one" + " --accumulate 2");
  REQUIRE_MESSAGE(one.code == 0, one.out);
  CHECK(first_difference(model_of(tmp / "ranks/last.ckpt"), model_of(tmp / "one/last.ckpt")) == "");
  CHECK(first_difference(model_of(tmp / "ranks/last.ckpt.rank1"), model_of(tmp / "ranks/last.ckpt")) == "");
  auto nodrop = run_qil("train --model lenet-nobn --train-subset 320 --val-size 64 --test-subset 64 --progress none "
                        "--lr 0.05 --threads 1 --batch 16 --epochs 2 --stop-after-steps 10 --accumulate 2 --out " +
                        tmp / "nodrop");
  REQUIRE_MESSAGE(nodrop.code == 0, nodrop.out);
  CHECK(max_rel_diff(model_of(tmp / "nodrop/last.ckpt"), model_of(tmp / "one/last.ckpt")) > 1e-3);  // dropout acts
}

// Two hosts stood in for by network namespaces (tests/apps/netns_hosts.h): mpirun reads a hostfile and starts the
// second host's daemon through a remote agent, and the ranks exchange gradients over TCP on a veth link. The
// result must be the one of 2 ranks on one host over shared memory, and of one process with 2 micro-batches.
TEST_CASE("two hosts over TCP (network namespaces, hostfile, remote agent): 2 x 1 rank equal 1 process x 2 micro-batches") {
  if (!can_run()) return;
  ScratchDir tmp;
  qiltest::NetnsHosts hosts(tmp.path.string());
  if (!hosts.ok()) {
    qiltest::skip("tool", "two-host test: " + hosts.why_not());
    return;
  }
  const auto where = run_timed(hosts.mpirun("hostname", 60) + " 2>&1", "");
  REQUIRE_MESSAGE(where.code == 0, where.out);
  CHECK_MESSAGE(where.out.find("qilhost-a") != std::string::npos, where.out);  // one rank on each host
  CHECK_MESSAGE(where.out.find("qilhost-b") != std::string::npos, where.out);
  const std::string run = "train" + kTiny + " --epochs 2 --stop-after-steps 10 --batch 16 --out ";
  auto two = hosts_qil(hosts, run + tmp / "twohosts");
  REQUIRE_MESSAGE(two.code == 0, two.out);
  CHECK(two.out.find("batch 32 (16 x 1 micro-batches x 2 ranks)") != std::string::npos);
  auto one = run_qil(run + tmp / "one" + " --accumulate 2");
  REQUIRE_MESSAGE(one.code == 0, one.out);
  auto shm = mpi_qil(run + tmp / "shm");
  REQUIRE_MESSAGE(shm.code == 0, shm.out);
  CHECK(first_difference(model_of(tmp / "twohosts/last.ckpt"), model_of(tmp / "one/last.ckpt")) == "");
  CHECK(first_difference(model_of(tmp / "twohosts/last.ckpt"), model_of(tmp / "shm/last.ckpt")) == "");
}

TEST_CASE("two hosts over TCP: a rank killed on the second host ends the job within seconds, the checkpoint intact") {
  if (!can_run()) return;
  ScratchDir tmp;
  qiltest::NetnsHosts hosts(tmp.path.string());
  if (!hosts.ok()) {
    qiltest::skip("tool", "two-host test: " + hosts.why_not());
    return;
  }
  auto r = hosts_qil(hosts, "train" + kTiny + " --batch 16 --epochs 2 --out " + tmp / "run",
                     "QIL_TEST_FAULT=kill QIL_TEST_FAULT_RANK=1 QIL_TEST_FAULT_STEP=10", "QIL_TEST_FAULT=kill");
  check_killed_rank(r, tmp / "run/last.ckpt", "two hosts: ");
}

// A measurement, printed: the median all-reduce of ResNet-20's gradient (1.1 MB) between the two hosts over the
// veth link (TCP through the kernel) and between 2 ranks on one host (shared memory). docs/cluster.md gives
// ResNet-18's and AlexNet's.
TEST_CASE("two hosts over TCP: qil bench --allreduce-only across the veth link and in shared memory") {
  if (!can_run()) return;
  ScratchDir tmp;
  qiltest::NetnsHosts hosts(tmp.path.string());
  if (!hosts.ok()) {
    qiltest::skip("tool", "two-host test: " + hosts.why_not());
    return;
  }
  const std::string bench = "bench --model resnet20 --allreduce-only --steps 5 --repeat 1 --threads 1 --json";
  auto tcp = hosts_qil(hosts, bench);
  REQUIRE_MESSAGE(tcp.code == 0, tcp.out);
  auto shm = mpi_qil(bench);
  REQUIRE_MESSAGE(shm.code == 0, shm.out);
  const auto jt = nlohmann::json::parse(tcp.out.substr(tcp.out.find('{')));
  const auto js = nlohmann::json::parse(shm.out.substr(shm.out.find('{')));
  CHECK(jt.at("ranks") == 2);
  CHECK(jt.at("bytes") == js.at("bytes"));
  CHECK(jt.at("median_ms").get<double>() > 0);
  MESSAGE("all-reduce of " << jt.at("bytes") << " bytes, 2 ranks: veth/TCP " << jt.at("median_ms") << " ms (8 bytes: "
                           << jt.at("small_ms") << " ms), shared memory " << js.at("median_ms") << " ms (8 bytes: "
                           << js.at("small_ms") << " ms)");
}
