// `qil train` when something goes wrong, from the command line: a full disk or a failing device while
// saving (injected: QIL_TEST_FAIL_WRITE), a NaN in a step (QIL_TEST_NAN_STEPS) with --on-nan stop and skip,
// --checkpoint-every-steps, a --resume into a directory whose checkpoint is of another network, and a run
// killed before its first checkpoint. Each ends with a clear error or goes on as docs/reliability.md says,
// and leaves checkpoints that load and resume. (The kill test is test_kill_resume.cpp.)
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "engine/serialize.h"
#include "run_qil.h"
#include "skip.h"

using qiltest::run_qil;
using qiltest::ScratchDir;
namespace fs = std::filesystem;

namespace {

// 640 training images in batches of 64: 10 steps per epoch.
const std::string kSmall =
    " --model lenet --train-subset 768 --val-size 128 --test-subset 256 --batch 64 --progress none --lr 0.05"
    " --threads 1 --epochs 1";

bool have_fashion() {
  if (fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) return true;
  qiltest::skip("dataset", "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
  return false;
}

// Sets an environment variable for the commands run during its lifetime (test-only hooks).
struct EnvGuard {
  std::string name;
  EnvGuard(std::string n, const std::string& value) : name(std::move(n)) { ::setenv(name.c_str(), value.c_str(), 1); }
  ~EnvGuard() { ::unsetenv(name.c_str()); }
};

bool contains(const qiltest::CmdResult& r, const std::string& s) { return r.out.find(s) != std::string::npos; }

nlohmann::json position(const std::string& ckpt) {
  return nlohmann::json::parse(engine::read_checkpoint(ckpt).text("run_state")).at("position");
}

int data_rows(const std::string& metrics) {
  std::ifstream f(metrics);
  int n = -1;  // the header
  for (std::string l; std::getline(f, l);) n += !l.empty();
  return n;
}

bool has_temp_file(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) return true;
  return false;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// Rewrites a checkpoint with `edit` applied to one JSON section (the file stays valid: checksums recomputed).
void edit_json_section(const std::string& path, const std::string& section,
                       const std::function<void(nlohmann::json&)>& edit) {
  const engine::Checkpoint src = engine::read_checkpoint(path);
  engine::Checkpoint out;
  for (const auto& s : src.sections()) {
    if (s.type == engine::SectionType::tensor) {
      out.add_tensor(s.name, s.tensor);
    } else if (s.name == section) {
      nlohmann::json j = nlohmann::json::parse(s.text);
      edit(j);
      out.add_json(s.name, j.dump());
    } else if (s.type == engine::SectionType::json) {
      out.add_json(s.name, s.text);
    } else {
      out.add_text(s.name, s.text);
    }
  }
  engine::write_checkpoint(path, out);
}

}  // namespace

TEST_CASE("a full disk or a failing device while saving stops the run naming the file and the cause, it resumes") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  const std::string d = tmp / "d";
  {  // writes: config.toml, last.ckpt at step 4, last.ckpt at step 8 (fails after 100000 of its bytes)
    EnvGuard fault("QIL_TEST_FAIL_WRITE", "3:100000:ENOSPC");
    const auto r = run_qil("train" + kSmall + " --checkpoint-every-steps 4 --out " + d);
    CHECK(r.code == 1);
    CHECK_MESSAGE(contains(r, "checkpoint " + d + "/last.ckpt: write failed: No space left on device (" + d +
                                  "/last.ckpt was not changed)"),
                  r.out);
  }
  CHECK(position(d + "/last.ckpt").at("batch") == 4);  // the previous checkpoint, loadable
  CHECK(!has_temp_file(d));
  const auto r = run_qil("train --resume " + d);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(contains(r, "resuming at epoch 1 batch 4"));

  const std::string e = tmp / "e";
  {  // the 4th write is best-fp32.ckpt, after the epoch's metrics row: its fsync fails
    EnvGuard fault("QIL_TEST_FAIL_WRITE", "4:999999999:EIO");
    const auto f = run_qil("train" + kSmall + " --checkpoint-every-steps 4 --out " + e);
    CHECK(f.code == 1);
    CHECK_MESSAGE(contains(f, "checkpoint " + e + "/best-fp32.ckpt: fsync failed: Input/output error"), f.out);
  }
  CHECK(position(e + "/last.ckpt").at("batch") == 8);
  CHECK(!fs::exists(e + "/best-fp32.ckpt"));
  CHECK(data_rows(e + "/metrics.csv") == 1);  // written before the failed save, not covered by last.ckpt
  const auto g = run_qil("train --resume " + e);
  REQUIRE_MESSAGE(g.code == 0, g.out);
  CHECK(data_rows(e + "/metrics.csv") == 1);  // dropped and written again, once
  CHECK(fs::exists(e + "/best-fp32.ckpt"));
}

TEST_CASE("a NaN stops the run naming step, stage and tensor, --checkpoint-every-steps kept the step before") {
  const auto bad = run_qil("train --checkpoint-every-steps -1");
  CHECK(bad.code != 0);
  CHECK(contains(bad, "--checkpoint-every-steps must be >= 0, got -1"));
  const auto nan = run_qil("train --on-nan ignore");
  CHECK(contains(nan, "--on-nan must be stop or skip, got 'ignore'"));
  const auto help = run_qil("train --help");
  CHECK(contains(help, "--checkpoint-every-steps"));
  CHECK(contains(help, "--on-nan"));
  if (!have_fashion()) return;
  ScratchDir tmp;
  {
    EnvGuard poison("QIL_TEST_NAN_STEPS", "8");  // a NaN pixel in the batch of step 8
    const auto r = run_qil("train" + kSmall + " --checkpoint-every-steps 3 --out " + tmp / "a");
    CHECK(r.code == 1);
    // The NaN pixel makes BatchNorm's batch statistics NaN; ReLU drops them, so the loss stays finite and the
    // gradients are what is not.
    CHECK_MESSAGE(std::regex_search(r.out, std::regex("training diverged: the (loss is nan|gradient of [a-z0-9_.]+ is "
                                                      "not finite) at step 8 of stage fp32 \\(epoch 1, batch 8\\); "
                                                      "the checkpoints hold the state before it")),
                  r.out);
    CHECK(position(tmp / "a/last.ckpt").at("step") == 6);  // saved after steps 3 and 6
    const auto w = run_qil("train" + kSmall + " --out " + tmp / "b");
    CHECK(w.code == 1);
    CHECK(!fs::exists(tmp / "b/last.ckpt"));  // without the option nothing is saved before the epoch ends
  }
  CHECK(read_text(tmp / "a/config.toml").find("checkpoint_every_steps = 3") != std::string::npos);
  CHECK(read_text(tmp / "a/config.toml").find("on_nan = 'stop'") != std::string::npos);
  const auto r = run_qil("train --resume " + tmp / "a");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(contains(r, "resuming at epoch 1 batch 6"));
}

TEST_CASE("--on-nan skip: the step is skipped, counted and reported, and the run goes on") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  EnvGuard poison("QIL_TEST_NAN_STEPS", "3,5");
  const auto r = run_qil("train" + kSmall + " --on-nan skip --out " + tmp / "s");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(contains(r, "skipped step 3 of stage fp32 (epoch 1, batch 3): the "));
  CHECK(contains(r, "(2 step(s) skipped in this run)"));
  CHECK(contains(r, "2 optimizer step(s) of this run were skipped for a non-finite loss or gradient"));
  CHECK(position(tmp / "s/last.ckpt").at("nan_skips") == 2);
  // Nothing of the skipped steps reached the model: its BatchNorm statistics are finite (else no save).
  const auto e = run_qil("eval " + tmp / "s/last.ckpt" + " --subset 64 --progress none --json");
  CHECK_MESSAGE(e.code == 0, e.out);
  // Every step of an epoch skipped is divergence, not a run.
  EnvGuard all("QIL_TEST_NAN_STEPS", "1,2,3,4,5,6,7,8,9,10");
  const auto a = run_qil("train" + kSmall + " --on-nan skip --out " + tmp / "all");
  CHECK(a.code == 1);
  CHECK(contains(a, "every step of stage fp32 epoch 1 had a non-finite loss or gradient"));
}

TEST_CASE("--resume refuses a checkpoint of another network, before anything is rewritten") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  const std::string f = tmp / "f";
  REQUIRE(run_qil("train" + kSmall + " --stop-after-steps 3 --out " + f).code == 0);
  const auto m = run_qil("train --resume " + f + " --model resnet20");
  CHECK(m.code == 1);
  CHECK_MESSAGE(contains(m, "--resume: " + f + "/last.ckpt holds a 'lenet' network, but --model is 'resnet20'"), m.out);
  CHECK(read_text(f + "/config.toml").find("model = 'lenet'") != std::string::npos);  // not rewritten

  // A checkpoint of another network than the run's config.toml names (here: its meta edited, re-checksummed).
  edit_json_section(f + "/last.ckpt", "model_meta", [](nlohmann::json& j) { j["model"] = "resnet20"; });
  const auto c = run_qil("train --resume " + f);
  CHECK(c.code == 1);
  CHECK_MESSAGE(contains(c, "holds a 'resnet20' network, but --model is 'lenet' (from the command line or " + f +
                                "/config.toml)"),
                c.out);
  // Tensors that do not fit the network the checkpoint itself names.
  std::string cfg = read_text(f + "/config.toml");
  cfg.replace(cfg.find("model = 'lenet'"), 15, "model = 'resnet20'");
  std::ofstream(f + "/config.toml") << cfg;
  const auto t = run_qil("train --resume " + f);
  CHECK(t.code == 1);
  CHECK_MESSAGE(contains(t, f + "/last.ckpt: its tensors do not fit this network"), t.out);
  CHECK_MESSAGE(contains(t, "with another shape: tensor 'conv1.weight' [32, 1, 5, 5] (the model's: [16, 1, 3, 3])"),
                t.out);
  CHECK_MESSAGE(contains(t, "102 missing (the file has no tensor 'layer1.0.conv1.weight'"), t.out);
  CHECK_MESSAGE(contains(t, "9 the network does not have (tensor 'bn2.bias'"), t.out);
  CHECK(contains(t, "(is it a checkpoint of another model?)"));
}

TEST_CASE("a run killed before its first checkpoint starts again with --resume, dead writers' files are removed") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  // What such a kill leaves: config.toml, a metrics.csv (here with a row), a temporary file of the dead writer.
  const std::string k = tmp / "k";
  REQUIRE(run_qil("train" + kSmall + " --stop-after-steps 1 --out " + k).code == 0);
  fs::remove(k + "/last.ckpt");
  std::ofstream(k + "/metrics.csv", std::ios::app) << "1,fp32,1,1,0.01,9,9,9,9,9,9,9,9,9,9\n";
  std::ofstream(k + "/last.ckpt.tmp.999999999.0") << "half a checkpoint";
  const auto again = run_qil("train --resume " + k);
  REQUIRE_MESSAGE(again.code == 0, again.out);
  CHECK(contains(again, "removed " + k + "/last.ckpt.tmp.999999999.0, left by a process killed while writing it"));
  CHECK(contains(again, "no last.ckpt in " + k + ": the run stopped before its first checkpoint; starting it again"));
  CHECK(data_rows(k + "/metrics.csv") == 1);
  CHECK(!has_temp_file(k));
}
