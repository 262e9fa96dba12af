// Kill anywhere: a training run SIGKILLed at seeded-random instants — during start-up, in a step, in
// evaluation, inside a checkpoint write — and resumed with `qil train --resume` each time ends bit for bit
// where an uninterrupted run of the same seed and thread count does: every tensor and the run state of every
// checkpoint, metrics.csv (but its timing columns) and intervals.jsonl. After every kill `best` is not behind
// `last`; at the end no temporary file is left. CI runs a small version (10 kills spread over a 24-step,
// two-stage LeNet run); scripts/kill_soak.sh runs the same case with more kills, any model and any flags.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/serialize.h"
#include "run_qil.h"
#include "skip.h"

extern char** environ;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// What to run and how often to kill it; every field can be set from the environment (scripts/kill_soak.sh).
struct SoakOptions {
  // 384 training images in batches of 64: 6 steps per epoch, 2 stages of 2 epochs, a checkpoint every 2 steps.
  std::string train_args =
      "--model lenet --train-subset 448 --val-size 64 --test-subset 128 --batch 64 --lr 0.05 --stages 32,4 "
      "--stage-epochs 2 --calib-batches 2 --checkpoint-every-steps 2 --seed 3 --threads 1 --progress none";
  int kills = 10;
  uint64_t seed = 14;
  int slow_save_ms = 150;  // QIL_TEST_SLOW_SAVE: time between a complete temporary file and its rename
  std::string keep_dir;    // where the runs go (kept); empty: a scratch folder, removed afterwards

  static SoakOptions from_env() {
    SoakOptions o;
    o.train_args = env_or("QIL_KILL_SOAK_ARGS", o.train_args);
    o.kills = std::stoi(env_or("QIL_KILL_SOAK_KILLS", std::to_string(o.kills)));
    o.seed = std::stoull(env_or("QIL_KILL_SOAK_SEED", std::to_string(o.seed)));
    o.slow_save_ms = std::stoi(env_or("QIL_KILL_SOAK_SLOW_MS", std::to_string(o.slow_save_ms)));
    o.keep_dir = env_or("QIL_KILL_SOAK_DIR", "");
    return o;
  }
};

// Starts `qil <args>` with its output in `log` (and QIL_TEST_SLOW_SAVE when slow_ms > 0); returns its pid.
// The environment is built before fork: the child only calls execve.
pid_t spawn_qil(const std::string& args, const std::string& log, int slow_ms) {
  const std::string cmd = "exec '" + qiltest::qil_binary() + "' " + args + " >'" + log + "' 2>&1";
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "QIL_TEST_", 9) != 0) env.push_back(*e);
  if (slow_ms > 0) env.push_back("QIL_TEST_SLOW_SAVE=" + std::to_string(slow_ms));
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const char* argv[] = {"sh", "-c", cmd.c_str(), nullptr};
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execve("/bin/sh", const_cast<char**>(argv), envp.data());
    ::_exit(127);
  }
  return pid;
}

// The exit code once the process has ended (128 + signal when killed), or -1 while it runs.
int exit_code_if_done(pid_t pid) {
  int st = 0;
  if (::waitpid(pid, &st, WNOHANG) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void sleep_ms(double ms) { std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(ms * 1000))); }

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// Where a run stands by its last.ckpt: (global epoch, batch) orders positions across stages.
using Position = std::pair<int64_t, int64_t>;

nlohmann::json run_state_of(const std::string& ckpt) {
  return nlohmann::json::parse(engine::read_checkpoint(ckpt).text("run_state")).at("position");
}

// Re-reads last.ckpt only when a write has replaced it (each write renames a new file over it).
class LastWatcher {
 public:
  explicit LastWatcher(std::string dir) : path_(std::move(dir) + "/last.ckpt") {}
  Position poll() {
    struct stat st{};
    if (::stat(path_.c_str(), &st) != 0 || (st.st_ino == ino_ && st.st_mtim.tv_nsec == mtime_ns_)) return pos_;
    ino_ = st.st_ino;
    mtime_ns_ = st.st_mtim.tv_nsec;
    const nlohmann::json p = run_state_of(path_);
    pos_ = {p.at("global_epoch").get<int64_t>(), p.at("batch").get<int64_t>()};
    return pos_;
  }

 private:
  std::string path_;
  ino_t ino_ = 0;
  long mtime_ns_ = -1;
  Position pos_{-1, -1};
};

// Temporary files in `dir` ("<name>.tmp.<pid>.<n>"); of process `pid` only when given.
std::vector<std::string> temp_files(const std::string& dir, pid_t pid = 0) {
  const std::string of = pid ? ".tmp." + std::to_string(pid) + "." : ".tmp";
  std::vector<std::string> out;
  std::error_code ec;  // the folder may not exist yet
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().find(of) != std::string::npos) out.push_back(e.path().filename());
  return out;
}

// `best` is not behind `last`: for every stage that last.ckpt records a best validation accuracy for, a
// best-<stage>.ckpt of that stage records at least that accuracy, and best.ckpt is of the latest such stage
// (or a later one) with at least its accuracy.
void check_best_not_behind(const std::string& dir, const std::string& when) {
  if (!fs::exists(dir + "/last.ckpt")) return;
  const auto last_best = run_state_of(dir + "/last.ckpt").at("best_val").get<std::vector<double>>();
  std::map<int, double> best_of_stage;  // from best-<stage>.ckpt
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename();
    if (name.rfind("best-", 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    const auto p = run_state_of(e.path());
    const int s = p.at("stage").get<int>();
    best_of_stage[s] = p.at("best_val").at(static_cast<size_t>(s)).get<double>();
  }
  int latest = -1;
  for (size_t s = 0; s < last_best.size(); ++s) {
    if (last_best[s] < 0) continue;
    latest = static_cast<int>(s);
    CHECK_MESSAGE((best_of_stage.count(latest) && best_of_stage[latest] >= last_best[s]),
                  when << ": best of stage " << s + 1 << " is behind last.ckpt (" << last_best[s] << ")");
  }
  if (latest < 0) return;
  REQUIRE_MESSAGE(fs::exists(dir + "/best.ckpt"), when << ": no best.ckpt");
  const auto b = run_state_of(dir + "/best.ckpt");
  const int bs = b.at("stage").get<int>();
  CHECK_MESSAGE((bs > latest || (bs == latest && b.at("best_val").at(static_cast<size_t>(bs)).get<double>() >=
                                                     last_best[static_cast<size_t>(latest)])),
                when << ": best.ckpt is behind last.ckpt");
}

// Every section but "config" (which names the run's own folder) equal, tensors byte for byte.
void check_same_checkpoint(const std::string& want_path, const std::string& got_path) {
  INFO(got_path);
  const engine::Checkpoint want = engine::read_checkpoint(want_path), got = engine::read_checkpoint(got_path);
  REQUIRE(want.sections().size() == got.sections().size());
  for (size_t i = 0; i < want.sections().size(); ++i) {
    const auto &a = want.sections()[i], &b = got.sections()[i];
    REQUIRE(a.name == b.name);
    if (a.name == "config") continue;
    if (a.type != engine::SectionType::tensor) {
      CHECK_MESSAGE(a.text == b.text, a.name);
      continue;
    }
    REQUIRE_MESSAGE((a.tensor.dtype() == b.tensor.dtype() && a.tensor.shape() == b.tensor.shape()), a.name);
    CHECK_MESSAGE(std::memcmp(a.tensor.bytes(), b.tensor.bytes(), a.tensor.nbytes()) == 0, a.name << " differs");
  }
}

// metrics.csv without its timing columns (img_per_s, wall_s: the last two).
std::vector<std::string> metrics_rows(const std::string& path) {
  std::vector<std::string> rows;
  std::istringstream f(read_text(path));
  for (std::string line; std::getline(f, line);) {
    size_t cut = line.size();
    for (int i = 0; i < 2 && cut != std::string::npos; ++i) cut = line.rfind(',', cut - 1);
    rows.push_back(line.substr(0, cut));
  }
  return rows;
}

struct Reference {
  std::vector<Position> positions;  // those its last.ckpt went through (the kill targets), in order
  double ms_per_position = 0;       // its duration over their number: the pace of the kill instants
};

// The uninterrupted run.
Reference reference_run(const SoakOptions& o, const std::string& dir, const std::string& log) {
  const auto t0 = Clock::now();
  const pid_t pid = spawn_qil("train " + o.train_args + " --out '" + dir + "'", log, 0);
  LastWatcher watch(dir);
  std::set<Position> seen;
  int code = -1;
  while ((code = exit_code_if_done(pid)) < 0) {
    seen.insert(watch.poll());
    sleep_ms(2);
  }
  REQUIRE_MESSAGE(code == 0, read_text(log));
  seen.erase(Position{-1, -1});
  REQUIRE(!seen.empty());
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return {{seen.begin(), seen.end()}, ms / static_cast<double>(seen.size())};
}

struct KillRecord {
  std::string how;
  Position at{-1, -1};
  std::string mid_write;  // the temporary file the kill left, if it landed inside a write
};

// One process of the killed run: started (a fresh start while the run has no config.toml yet, else --resume),
// then killed at an instant chosen by `target` and `mode`; returns false if it ended by itself first.
bool run_and_kill(const SoakOptions& o, const std::string& dir, const std::string& log, int k, Position target,
                  double pace_ms, std::mt19937_64& rng, KillRecord& rec) {
  const bool fresh = !fs::exists(dir + "/config.toml");
  const std::string args = fresh ? "train " + o.train_args + " --out '" + dir + "'" : "train --resume '" + dir + "'";
  const pid_t pid = spawn_qil(args, log, o.slow_save_ms);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  LastWatcher watch(dir);
  const auto t0 = Clock::now();
  auto alive = [&] { return exit_code_if_done(pid) < 0; };
  if (k == 0) {  // anywhere in the time of the first two checkpoints: start-up, data loading, the first steps
    rec.how = "at a random instant of the start";
    const auto end = t0 + std::chrono::microseconds(static_cast<int64_t>(2e3 * pace_ms * u(rng)));
    while (alive() && Clock::now() < end) sleep_ms(1);
  } else {
    while (alive() && watch.poll() < target) sleep_ms(2);
    if (k % 2 == 1) {  // a random instant before the next checkpoint or so: a step, an evaluation, a write
      rec.how = "at a random instant";
      sleep_ms(pace_ms * u(rng));
    } else {  // inside the next checkpoint write, at a random point of it
      rec.how = "inside a write";
      while (alive() && temp_files(dir, pid).empty()) sleep_ms(1);
      sleep_ms(0.8 * o.slow_save_ms * u(rng));
    }
  }
  if (::kill(pid, SIGKILL) != 0 || !alive()) {
    ::waitpid(pid, nullptr, 0);
    return false;
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (!WIFSIGNALED(st)) return false;  // it had just finished
  const std::vector<std::string> temps = temp_files(dir, pid);
  if (!temps.empty()) rec.mid_write = temps.front();
  rec.at = fs::exists(dir + "/last.ckpt") ? watch.poll() : Position{-1, -1};
  return true;
}

}  // namespace

TEST_CASE("kill anywhere: SIGKILLed at seeded-random instants and resumed, a run ends bit-exactly as an "
          "uninterrupted one") {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    qiltest::skip("dataset", "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
    return;
  }
  const SoakOptions o = SoakOptions::from_env();
  qiltest::ScratchDir scratch;
  const fs::path root = o.keep_dir.empty() ? scratch.path : fs::path(o.keep_dir);
  fs::create_directories(root);
  const std::string ref = root / "reference", cut = root / "killed";
  const auto t0 = Clock::now();
  const Reference reference = reference_run(o, ref, root / "reference.log");
  const std::vector<Position>& positions = reference.positions;

  std::mt19937_64 rng(o.seed);
  std::vector<KillRecord> kills;
  for (int k = 0; k < o.kills; ++k) {
    // Targets spread over the reference's checkpoint positions: kill k (from 1) falls in the k-th slice,
    // the last two positions left out (a kill must come before the run ends by itself).
    Position target = positions.front();
    if (k > 0) {
      const double slice = (k - 1 + std::uniform_real_distribution<double>(0, 1)(rng)) / (o.kills - 1);
      const size_t n = std::max<size_t>(1, positions.size() - 2);
      target = positions[std::min(n - 1, static_cast<size_t>(slice * n))];
    }
    KillRecord rec;
    const std::string log = root / ("killed-" + std::to_string(k) + ".log");
    if (!run_and_kill(o, cut, log, k, target, reference.ms_per_position, rng, rec)) break;
    check_best_not_behind(cut, "after kill " + std::to_string(k + 1));
    kills.push_back(rec);
  }
  const std::string final_log = root / "killed-final.log";
  const pid_t pid = spawn_qil("train --resume '" + cut + "'", final_log, 0);
  int code = -1;
  while ((code = exit_code_if_done(pid)) < 0) sleep_ms(5);
  const std::string out = read_text(final_log);
  // A kill after the run's final save leaves nothing to do.
  REQUIRE_MESSAGE((code == 0 || out.find("finished all its stages") != std::string::npos), out);

  std::ostringstream report;
  int mid_write = 0;
  for (size_t k = 0; k < kills.size(); ++k) {
    mid_write += !kills[k].mid_write.empty();
    report << "kill " << k + 1 << " " << kills[k].how << ": last.ckpt at epoch " << kills[k].at.first << " batch "
           << kills[k].at.second << (kills[k].mid_write.empty() ? "" : ", inside the write of ")
           << kills[k].mid_write << "\n";
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  MESSAGE(kills.size() << " kills (" << mid_write << " mid-write) in " << seconds << " s\n" << report.str());
  CHECK(static_cast<int>(kills.size()) == o.kills);
  CHECK(mid_write >= o.kills / 3);

  for (const auto& e : fs::directory_iterator(ref)) {
    const std::string name = e.path().filename();
    if (e.path().extension() == ".ckpt") check_same_checkpoint(e.path(), cut + "/" + name);
  }
  for (const auto& e : fs::directory_iterator(cut))
    CHECK_MESSAGE(fs::exists(ref + "/" + e.path().filename().string()), "left behind: " << e.path());
  CHECK(metrics_rows(cut + "/metrics.csv") == metrics_rows(ref + "/metrics.csv"));
  CHECK(read_text(cut + "/intervals.jsonl") == read_text(ref + "/intervals.jsonl"));
  CHECK(temp_files(cut).empty());
}
