// `qil train` / `qil eval` from the command line: bad input answers with a clear error and a non-zero exit,
// a short run writes its run directory, same seed gives the same losses, and an interrupted run resumed from
// its checkpoint ends exactly where an uninterrupted one does.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/training/stages.h"
#include "engine/check.h"
#include "engine/serialize.h"
#include "run_qil.h"
#include "skip.h"

using qiltest::run_qil;
using qiltest::ScratchDir;
namespace fs = std::filesystem;

namespace {

const char* kFashion = "/usr/share/datasets/fashion-mnist";
// A small, fast run on Fashion-MNIST: 10 steps of 64 images per epoch.
const std::string kSmall =
    " --model lenet --train-subset 768 --val-size 128 --test-subset 256 --batch 64 --progress none --lr 0.05";

bool have_fashion() {
  if (fs::exists(std::string(kFashion) + "/train-images-idx3-ubyte.gz")) return true;
  qiltest::skip("dataset", "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
  return false;
}

std::vector<std::string> csv_column(const std::string& path, const std::string& col) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  std::vector<std::string> head;
  std::stringstream hs(line);
  for (std::string h; std::getline(hs, h, ',');) head.push_back(h);
  const size_t k = std::find(head.begin(), head.end(), col) - head.begin();
  REQUIRE_MESSAGE(k < head.size(), "no column " << col << " in " << path);
  std::vector<std::string> out;
  while (std::getline(f, line)) {
    std::stringstream ls(line);
    std::string v;
    for (size_t i = 0; i <= k; ++i) std::getline(ls, v, ',');
    out.push_back(v);
  }
  return out;
}

void expect_error(const std::string& args, const std::string& message) {
  auto r = run_qil(args);
  CHECK_MESSAGE(r.code != 0, args << "\n" << r.out);
  CHECK_MESSAGE(r.out.find(message) != std::string::npos, "expected '" << message << "' in:\n" << r.out);
  CHECK_MESSAGE(r.out.find("internal error") == std::string::npos, r.out);
}

}  // namespace

TEST_CASE("stage lists: widths, epochs and what is rejected") {
  auto s = apps::training::parse_stages({"32", "w8a8", "5", "w4a5", "4", "2"}, {10, 3, 3, 3, 3, 6});
  REQUIRE(s.size() == 6);
  CHECK(s[0].name() == "fp32");
  CHECK(!s[0].quantized());
  CHECK((s[1].wbits == 8 && s[1].abits == 8 && s[1].epochs == 3));
  CHECK((s[3].wbits == 4 && s[3].abits == 5));
  CHECK(s[3].name() == "w4a5");
  CHECK((s[5].wbits == 2 && s[5].epochs == 6));
  CHECK(apps::training::parse_stages({"4", "3"}, {7})[1].epochs == 7);  // one number serves every stage
  using Entries = std::vector<std::string>;
  using Epochs = std::vector<int64_t>;
  auto bad = [](const Entries& st, const Epochs& ep, const char* msg) {
    CHECK_THROWS_WITH_AS(apps::training::parse_stages(st, ep), doctest::Contains(msg), engine::Error);
  };
  bad({"32", "9"}, {1}, "bit width 9");
  bad({"1"}, {1}, "bit width 1");
  bad({"4", "5"}, {1}, "not decreasing at stage 2 (w4a4 -> w5a5)");
  bad({"4", "4"}, {1}, "not decreasing");
  bad({"w4a4", "w3a8"}, {1}, "not decreasing");
  bad({"32", "4"}, {1, 2, 3}, "'1,2,3' gives 3 numbers for 2 stages");
  bad({"32", "4"}, {1, 0}, "'0' is not a positive epoch count");
  bad({"32", "x"}, {1}, "cannot read 'x'");
  bad({"w4"}, {1}, "no 'a' activation width");
  auto l = apps::training::parse_stages({"32", "4", "2"}, {1}, {0.1, 0.01, 0.005});
  CHECK((l[0].lr == 0.1 && l[1].lr == 0.01 && l[2].lr == 0.005));
  CHECK(apps::training::parse_stages({"32", "4"}, {1}, {0.02})[1].lr == 0.02);
  CHECK(apps::training::parse_stages({"32", "4"}, {1})[1].lr == 0);  // --lr applies
  CHECK_THROWS_WITH_AS(apps::training::parse_stages({"32", "4"}, {1}, {0.1, 0.1, 0.1}), doctest::Contains("--stage-lr"),
                       engine::Error);
  CHECK_THROWS_WITH_AS(apps::training::parse_stages({"32", "4"}, {1}, {0.1, -1}), doctest::Contains("'-1' is not a positive"),
                       engine::Error);
}

TEST_CASE("bad input: a clear error naming the value, exit code != 0") {
  ScratchDir tmp;
  expect_error("train --bogus-flag 3", "--bogus-flag");
  expect_error("train --batch 0", "--batch must be at least 1, got 0");
  expect_error("train --lr -0.1", "--lr must be positive, got -0.1");
  expect_error("train --model resnet19", "unknown model 'resnet19'");
  expect_error("train --data idx --data-dir " + tmp / "nowhere", "nowhere");
  expect_error("train --stages 32,9", "bit width 9");
  expect_error("train --stages 4,8", "not decreasing");
  expect_error("train --stages 4 --freeze-weights", "--freeze-weights needs --init");
  expect_error("train --schedule linear", "unknown schedule 'linear'");
  expect_error("train --threads 100000", "--threads must be in 0..1024, got 100000");
  expect_error("train --workers 1000000", "--workers must be in 1..256, got 1000000");
  expect_error("train --seed -1", "--seed must be >= 0, got -1");
  expect_error("train --quant-recipe lsq", "--quant-recipe must be qil or paper, got 'lsq'");
  expect_error("train --quant-grad-scale cube", "--quant-grad-scale must be sqrt, relative or none, got 'cube'");
  {
    std::ofstream(tmp / "bad.toml") << "model = \"lenet\"\nlearning_rate = 0.1\n";
    expect_error("train --config " + tmp / "bad.toml", "unknown key 'learning_rate'");
    std::ofstream(tmp / "broken.toml") << "model = \n";
    expect_error("train --config " + tmp / "broken.toml", "broken.toml");
    std::ofstream(tmp / "layers.toml") << "[layers.\"conv9\"]\nwbits = 12\n";
    expect_error("train --config " + tmp / "layers.toml", "layers.conv9.wbits must be an integer in 2..8");
    std::ofstream(tmp / "kind.toml") << "[layers.\"conv2\"]\nquantizer = \"lq-nets\"\n";
    expect_error("train --config " + tmp / "kind.toml", "layers.conv2.quantizer must be qil, lsq, pact or dorefa");
    expect_error("train --config " + tmp / "missing.toml", "no such file");
  }
  {  // an IDX folder whose images file is cut short
    fs::create_directories(tmp / "idx");
    std::ofstream f(tmp / "idx/train-images-idx3-ubyte", std::ios::binary);
    const unsigned char head[] = {0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3};
    f.write(reinterpret_cast<const char*>(head), sizeof head);
    f.close();
    std::ofstream l(tmp / "idx/train-labels-idx1-ubyte", std::ios::binary);
    const unsigned char lh[] = {0, 0, 8, 1, 0, 0, 0, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    l.write(reinterpret_cast<const char*>(lh), sizeof lh);
    l.close();
    expect_error("train --data idx --data-dir " + tmp / "idx", "train-images-idx3-ubyte");
  }
  expect_error("eval " + tmp / "nothing.ckpt", "nothing.ckpt");
  std::ofstream(tmp / "text.ckpt") << "not a checkpoint";
  expect_error("inspect " + tmp / "text.ckpt", "text.ckpt");
  if (!have_fashion()) return;
  std::ofstream(tmp / "file") << "x";
  expect_error("train" + kSmall + " --epochs 1 --out " + tmp / "file/run", "--out: cannot create run directory");
}

TEST_CASE("a short run writes its run directory, eval and inspect read it, a different model is refused") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  auto r = run_qil("train" + kSmall + " --stages 32,4 --stage-epochs 1 --calib-batches 2 --out " + tmp / "run");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  for (const char* f : {"config.toml", "metrics.csv", "intervals.jsonl", "last.ckpt", "best.ckpt", "best-w4a4.ckpt"})
    CHECK_MESSAGE(fs::exists(tmp / ("run/" + std::string(f))), f);
  CHECK(csv_column(tmp / "run/metrics.csv", "stage_name") == std::vector<std::string>{"fp32", "w4a4"});
  CHECK(r.out.find("learned intervals") != std::string::npos);
  CHECK(r.out.find("conv2") != std::string::npos);  // the one quantized conv of lenet (first conv stays fp)
  // Each quantized layer's calibration values stand beside the learned ones, and intervals.jsonl holds a
  // row at epoch 0 (the calibration) and one after the stage's epoch.
  CHECK(r.out.find("moved from calibration") != std::string::npos);
  CHECK(r.out.find(" -> ") != std::string::npos);
  {
    std::ifstream jf(tmp / "run/intervals.jsonl");
    int epoch0 = 0, epoch1 = 0;
    for (std::string line; std::getline(jf, line);) {
      epoch0 += line.find("\"epoch\":0") != std::string::npos;
      epoch1 += line.find("\"epoch\":1") != std::string::npos;
    }
    CHECK(epoch0 == 2);  // lenet's conv2 and fc1
    CHECK(epoch1 == 2);
  }

  auto e = run_qil("eval " + tmp / "run/best.ckpt" + " --subset 256 --progress none --json");
  REQUIRE_MESSAGE(e.code == 0, e.out);
  CHECK(e.out.find("\"images\":256") != std::string::npos);
  // Calibration-only quantization of the full-precision network: the baseline intervals are trained against.
  auto fp = run_qil("eval " + tmp / "run/best-fp32.ckpt" + " --subset 256 --progress none --json");
  auto cq = run_qil("eval " + tmp / "run/best-fp32.ckpt" + " --subset 256 --progress none --json --quant 2 --calib-batches 2");
  REQUIRE_MESSAGE(cq.code == 0, cq.out);
  CHECK(cq.out.find("\"quant\":\"2\"") != std::string::npos);
  CHECK(cq.out != fp.out);  // 2-bit weights and activations change the logits
  CHECK(cq.out.find("\"quantizer\":\"qil\"") != std::string::npos);
  // Another quantizer's calibration: another result.
  auto cd = run_qil("eval " + tmp / "run/best-fp32.ckpt" +
                    " --subset 256 --progress none --json --quant 2 --calib-batches 2 --quantizer dorefa");
  REQUIRE_MESSAGE(cd.code == 0, cd.out);
  CHECK(cd.out.find("\"quantizer\":\"dorefa\"") != std::string::npos);
  const auto last_json = [](const std::string& out) {
    return nlohmann::json::parse(out.substr(out.rfind('{')));
  };
  CHECK(last_json(cd.out).at("loss") != last_json(cq.out).at("loss"));
  // The calibration rules reach the quantizers: each gives another 2-bit network, and says which it used.
  CHECK(last_json(cq.out).at("weight_calib") == "mse");  // the defaults
  CHECK(last_json(cq.out).at("act_calib") == "mse");
  for (const char* rule : {"--weight-calib max", "--act-calib percentile"}) {
    CAPTURE(rule);
    auto cm = run_qil("eval " + tmp / "run/best-fp32.ckpt" +
                      " --subset 256 --progress none --json --quant 2 --calib-batches 2 " + rule);
    REQUIRE_MESSAGE(cm.code == 0, cm.out);
    CHECK(last_json(cm.out).at("loss") != last_json(cq.out).at("loss"));
  }
  // The first conv and the last linear at the --quant width too (a signed 2-bit input quantizer), as train's
  // --first-last same: another network than the default's full-precision edges, and the JSON says which.
  CHECK(last_json(cq.out).at("first_last") == "fp");
  auto cs = run_qil("eval " + tmp / "run/best-fp32.ckpt" +
                    " --subset 256 --progress none --json --quant 2 --calib-batches 2 --first-last same");
  REQUIRE_MESSAGE(cs.code == 0, cs.out);
  CHECK(last_json(cs.out).at("first_last") == "same");
  CHECK(last_json(cs.out).at("loss") != last_json(cq.out).at("loss"));
  expect_error("eval " + tmp / "run/best-fp32.ckpt" + " --quant 2 --first-last 4", "first-last");
  expect_error("eval " + tmp / "run/best-fp32.ckpt" + " --quant 2 --weight-calib median", "median");
  expect_error("eval " + tmp / "run/best.ckpt" + " --quant 4", "already quantized");
  expect_error("eval " + tmp / "run/best-fp32.ckpt" + " --quant 9", "bit width 9");
  auto i = run_qil("inspect " + tmp / "run");
  REQUIRE_MESSAGE(i.code == 0, i.out);
  CHECK(i.out.find("fc1") != std::string::npos);
  {  // The run's records without its checkpoint (what docs/results/runs/ keeps): each layer's last record is
     // its final state, the checkpoint's.
    fs::create_directories(tmp / "rec");
    for (const char* f : {"config.toml", "metrics.csv", "intervals.jsonl"}) fs::copy_file(tmp / (std::string("run/") + f), tmp / (std::string("rec/") + f));
    auto full = run_qil("inspect " + tmp / "run" + " --json"), rec = run_qil("inspect " + tmp / "rec" + " --json");
    REQUIRE_MESSAGE(full.code == 0, full.out);
    REQUIRE_MESSAGE(rec.code == 0, rec.out);
    const auto a = nlohmann::json::parse(full.out.substr(full.out.find('['))),
               b = nlohmann::json::parse(rec.out.substr(rec.out.find('[')));
    REQUIRE(a.size() == 2);  // lenet's conv2 and fc1
    REQUIRE(b.size() == a.size());
    for (size_t k = 0; k < a.size(); ++k) {
      CHECK(a[k].at("layer") == b[k].at("layer"));
      for (const char* side : {"weight", "activation"})
        for (const char* p : {"c", "d"})
          CHECK(b[k].at(side).at(p).get<double>() == doctest::Approx(a[k].at(side).at(p).get<double>()).epsilon(1e-7));
      CHECK(b[k].at("out_scale").get<double>() == doctest::Approx(a[k].at("out_scale").get<double>()).epsilon(1e-7));
    }
    auto t = run_qil("inspect " + tmp / "rec");
    REQUIRE_MESSAGE(t.code == 0, t.out);
    CHECK_MESSAGE(t.out.find("lenet, 2 quantized layers, each at its last record") != std::string::npos, t.out);
    CHECK(run_qil("inspect " + tmp / "rec" + " --html " + tmp / "rec.html").code == 0);
    expect_error("inspect " + tmp / "rec" + " --data fashion-mnist", "--data needs the network's weights");
    fs::create_directories(tmp / "nothing");
    expect_error("inspect " + tmp / "nothing", "has neither last.ckpt nor intervals.jsonl");
  }

  // The saved config reproduces the run's settings.
  std::ifstream cf(tmp / "run/config.toml");
  std::string cfg((std::istreambuf_iterator<char>(cf)), {});
  CHECK(cfg.find("stages = '32,4'") != std::string::npos);
  CHECK(cfg.find("lr = 0.05\n") != std::string::npos);
  CHECK(cfg.find("batch = 64") != std::string::npos);

  // Quantizer-only training towards the network's own predictions (for data labelled for another task).
  auto q = run_qil("train" + kSmall + " --init " + tmp / "run/best-fp32.ckpt" +
                   " --stages 4 --epochs 1 --freeze-weights --targets teacher --calib-batches 2 --out " + tmp / "q");
  REQUIRE_MESSAGE(q.code == 0, q.out);
  CHECK(q.out.find("quantizer-only") != std::string::npos);
  expect_error("train" + kSmall + " --stages 4 --targets teacher --out " + tmp / "t", "--targets teacher needs --init");
  expect_error("train" + kSmall + " --model resnet20 --init " + tmp / "run/last.ckpt" + " --out " + tmp / "x",
               "holds a 'lenet' network, but --model is 'resnet20'");
  expect_error("train" + kSmall + " --resume " + tmp / "run", "finished all its stages");
  expect_error("train" + kSmall + " --out " + tmp / "run", "already holds a run (metrics.csv); continue it with --resume");
  // A run_state edited by hand and re-checksummed (so the file is valid): refused, not used to index memory.
  for (const char* edit : {"\"stage\":-1", "\"epoch\":-3", "\"stage\":7"}) {
    engine::Checkpoint src = engine::read_checkpoint(tmp / "run/last.ckpt");
    engine::Checkpoint out;
    for (const auto& sec : src.sections()) {
      if (sec.name != "run_state") {
        if (sec.type == engine::SectionType::tensor) out.add_tensor(sec.name, sec.tensor);
        else if (sec.type == engine::SectionType::json) out.add_json(sec.name, sec.text);
        else out.add_text(sec.name, sec.text);
        continue;
      }
      nlohmann::json j = nlohmann::json::parse(sec.text);
      const std::string e = edit;
      const std::string key = e.substr(1, e.find('"', 1) - 1);
      j["position"][key] = std::stoi(e.substr(e.find(':') + 1));
      out.add_json("run_state", j.dump());
    }
    fs::create_directories(tmp / "edited");
    fs::copy_file(tmp / "run/config.toml", tmp / "edited/config.toml", fs::copy_options::overwrite_existing);
    engine::write_checkpoint(tmp / "edited/last.ckpt", out);
    expect_error("train --resume " + tmp / "edited", "run_state");
  }
}

TEST_CASE("same seed and thread count: identical losses") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  const std::string a = "train" + kSmall + " --epochs 1 --threads 2 --seed 5 --out ";
  REQUIRE(run_qil(a + tmp / "a").code == 0);
  REQUIRE(run_qil(a + tmp / "b").code == 0);
  auto la = csv_column(tmp / "a/metrics.csv", "train_loss");
  CHECK(la == csv_column(tmp / "b/metrics.csv", "train_loss"));
  CHECK(csv_column(tmp / "a/metrics.csv", "val_loss") == csv_column(tmp / "b/metrics.csv", "val_loss"));
  REQUIRE(run_qil("train" + kSmall + " --epochs 1 --threads 2 --seed 6 --out " + tmp / "c").code == 0);
  CHECK(la != csv_column(tmp / "c/metrics.csv", "train_loss"));  // the seed matters
}

TEST_CASE("--precision bf16: train, eval and bench run it and say how, the run records it, fp16 is refused") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  const std::string a = "train" + kSmall + " --stages 32,4 --stage-epochs 1 --calib-batches 2 --threads 2 --seed 5 --out ";
  auto f = run_qil(a + tmp / "f");
  auto b = run_qil(a + tmp / "b" + " --precision bf16");
  REQUIRE_MESSAGE(f.code == 0, f.out);
  REQUIRE_MESSAGE(b.code == 0, b.out);
  // It says whether the CPU runs bf16 natively or the emulation runs, never silently.
  CHECK_MESSAGE(qiltest::says_how_bf16_runs(b.out), b.out);
  CHECK(f.out.find("bf16") == std::string::npos);
  {  // the run's config keeps it, so a resumed run goes on in bf16
    std::ifstream cf(tmp / "b/config.toml");
    const std::string text((std::istreambuf_iterator<char>(cf)), std::istreambuf_iterator<char>());
    CHECK_MESSAGE(text.find("precision = 'bf16'") != std::string::npos, text);
  }
  // bf16 rounds the convolutions' operands: the losses move, but stay close.
  const auto lf = csv_column(tmp / "f/metrics.csv", "train_loss"), lb = csv_column(tmp / "b/metrics.csv", "train_loss");
  REQUIRE(lf.size() == lb.size());
  CHECK(lf != lb);
  for (size_t i = 0; i < lf.size(); ++i) CHECK(std::fabs(std::stod(lf[i]) - std::stod(lb[i])) < 0.1);
  const auto loss_of = [](const std::string& out) {
    return nlohmann::json::parse(out.substr(out.rfind('{'))).at("loss").get<double>();
  };
  auto e32 = run_qil("eval " + tmp / "b/best.ckpt" + " --subset 256 --progress none --json");
  auto e16 = run_qil("eval " + tmp / "b/best.ckpt" + " --subset 256 --progress none --json --precision bf16");
  REQUIRE_MESSAGE(e16.code == 0, e16.out);
  CHECK(loss_of(e16.out) != loss_of(e32.out));
  CHECK(std::fabs(loss_of(e16.out) - loss_of(e32.out)) < 0.02);
  auto bj = run_qil("bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                    "--warmup 0 --repeat 1 --threads 1 --quant 4 --json --precision bf16");
  REQUIRE_MESSAGE(bj.code == 0, bj.out);
  CHECK(nlohmann::json::parse(bj.out.substr(bj.out.rfind('{'))).at("precision") == "bf16");
  // A resumed run reads its precision back from config.toml and says so again.
  REQUIRE(run_qil(a + tmp / "r" + " --precision bf16 --stop-after-steps 5").code == 0);
  auto r = run_qil("train --resume " + tmp / "r");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK_MESSAGE(qiltest::says_how_bf16_runs(r.out), r.out);
  expect_error(a + tmp / "x" + " --precision fp16", "fp16");
  expect_error("bench --model lenet --precision f16", "f16");
}

TEST_CASE("--int8-forward: a run trains with integer forwards, says where, records it, and eval agrees with it") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  // LeNet at w4a4, first and last layers quantized too: conv1 (signed input), conv2, fc1, fc2 all integer.
  const std::string a = "train" + kSmall + " --stages 32,4 --stage-epochs 1 --calib-batches 2 --threads 2 --seed 5 "
                        "--first-last same --out ";
  auto f = run_qil(a + tmp / "f");
  auto i = run_qil(a + tmp / "i" + " --int8-forward");
  REQUIRE_MESSAGE(f.code == 0, f.out);
  REQUIRE_MESSAGE(i.code == 0, i.out);
  CHECK_MESSAGE(i.out.find("stage w4a4: integer forward in 4 of 4 quantized layers") != std::string::npos, i.out);
  CHECK(f.out.find("integer forward") == std::string::npos);
  // The default, auto, on 28-pixel images: the float forward, said with the reason, and recorded as chosen.
  CHECK_MESSAGE(f.out.find("--int8-forward auto: off (") != std::string::npos, f.out);
  CHECK(i.out.find("--int8-forward auto") == std::string::npos);  // an explicit choice needs no note
  for (const char* run : {"i", "f"}) {
    std::ifstream cf(tmp / (std::string(run) + "/config.toml"));
    const std::string text((std::istreambuf_iterator<char>(cf)), std::istreambuf_iterator<char>());
    const std::string want = std::string("int8_forward = '") + (run[0] == 'i' ? "true'" : "false'");
    CHECK_MESSAGE(text.find(want) != std::string::npos, text);
  }
  // The full-precision stage is the same run; the quantized stage's forward differs in the last bits of its sums.
  const auto lf = csv_column(tmp / "f/metrics.csv", "train_loss"), li = csv_column(tmp / "i/metrics.csv", "train_loss");
  REQUIRE(lf.size() == 2);
  REQUIRE(li.size() == 2);
  CHECK(lf[0] == li[0]);
  CHECK(std::fabs(std::stod(lf[1]) - std::stod(li[1])) < 0.05);
  // Evaluation in the run is the float path: `qil eval` of the last checkpoint gives the run's last test row.
  auto e = run_qil("eval " + tmp / "i/last.ckpt" + " --subset 256 --progress none --json");
  REQUIRE_MESSAGE(e.code == 0, e.out);
  const double top1 = nlohmann::json::parse(e.out.substr(e.out.rfind('{'))).at("top1").get<double>();
  CHECK(std::fabs(top1 - std::stod(csv_column(tmp / "i/metrics.csv", "test_top1").back())) < 1e-3);
  // A resumed run reads it back.
  REQUIRE(run_qil(a + tmp / "r" + " --int8-forward --stop-after-steps 15").code == 0);
  auto r = run_qil("train --resume " + tmp / "r");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK_MESSAGE(r.out.find("integer forward in 4 of 4") != std::string::npos, r.out);
  CHECK(csv_column(tmp / "r/metrics.csv", "test_loss") == csv_column(tmp / "i/metrics.csv", "test_loss"));
}

TEST_CASE("an interrupted run resumed from last.ckpt ends where an uninterrupted one does") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  // Two stages, 2 epochs each (10 steps per epoch): stop mid-epoch in the first stage, then mid-epoch in
  // the quantized one, resuming each time.
  const std::string base = "train" + kSmall + " --stages 32,4 --stage-epochs 2 --calib-batches 2 --threads 2 --out ";
  auto full = run_qil(base + tmp / "full");
  REQUIRE_MESSAGE(full.code == 0, full.out);
  auto p1 = run_qil(base + tmp / "cut" + " --stop-after-steps 13");
  REQUIRE_MESSAGE(p1.code == 0, p1.out);
  CHECK(p1.out.find("stopped after 13 steps") != std::string::npos);
  // As a kill between a log write and the checkpoint would leave them: rows the checkpoint does not cover.
  std::ofstream(tmp / "cut/metrics.csv", std::ios::app) << "1,fp32,2,2,0.01,9,9,9,9,9,9,9,9,9,9\n";
  std::ofstream(tmp / "cut/intervals.jsonl", std::ios::app) << "{\"layer\":\"conv2\",\"stage\":2,\"epoch\":0}\n";
  auto p2 = run_qil("train --resume " + tmp / "cut" + " --stop-after-steps 12");
  REQUIRE_MESSAGE(p2.code == 0, p2.out);
  CHECK(p2.out.find("resuming at epoch 2 batch 3") != std::string::npos);
  auto p3 = run_qil("train --resume " + tmp / "cut");
  REQUIRE_MESSAGE(p3.code == 0, p3.out);
  const auto want = csv_column(tmp / "full/metrics.csv", "test_loss");
  REQUIRE(want.size() == 4);
  CHECK(csv_column(tmp / "cut/metrics.csv", "test_loss") == want);
  CHECK(csv_column(tmp / "cut/metrics.csv", "train_loss") == csv_column(tmp / "full/metrics.csv", "train_loss"));
  // The records of the resumed run equal the uninterrupted run's, stale ones gone (the bogus epoch-0 record
  // named no interval: had it survived, the counts would differ).
  auto lines = [](const std::string& path) {
    std::ifstream f(path);
    int n = 0;
    for (std::string l; std::getline(f, l);) n += !l.empty();
    return n;
  };
  CHECK(lines(tmp / "cut/intervals.jsonl") == lines(tmp / "full/intervals.jsonl"));
  CHECK(lines(tmp / "cut/metrics.csv") == 5);
}

TEST_CASE("--quantizer lsq: a run quantizes with LSQ, resumes mid-stage exactly, and inspect shows s") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  const std::string base =
      "train" + kSmall + " --stages 32,4 --stage-epochs 1 --calib-batches 2 --threads 2 --quantizer lsq --out ";
  auto full = run_qil(base + tmp / "full");
  REQUIRE_MESSAGE(full.code == 0, full.out);
  CHECK(full.out.find("LSQ layers") != std::string::npos);  // the interval table's note
  auto p1 = run_qil(base + tmp / "cut" + " --stop-after-steps 13");  // 3 steps into the LSQ stage
  REQUIRE_MESSAGE(p1.code == 0, p1.out);
  auto p2 = run_qil("train --resume " + tmp / "cut");
  REQUIRE_MESSAGE(p2.code == 0, p2.out);
  CHECK(csv_column(tmp / "cut/metrics.csv", "test_loss") == csv_column(tmp / "full/metrics.csv", "test_loss"));
  {
    std::ifstream cf(tmp / "full/config.toml");
    std::string cfg((std::istreambuf_iterator<char>(cf)), {});
    CHECK(cfg.find("quantizer = 'lsq'") != std::string::npos);
    std::ifstream jf(tmp / "full/intervals.jsonl");
    std::string j((std::istreambuf_iterator<char>(jf)), {});
    CHECK(j.find("\"lsq_weight\"") != std::string::npos);
    CHECK(j.find("\"step\"") != std::string::npos);
  }
  engine::Checkpoint ck = engine::read_checkpoint(tmp / "full/last.ckpt");
  CHECK(ck.text("quant_layout").find("\"lsq\"") != std::string::npos);
  auto i = run_qil("inspect " + tmp / "full");
  REQUIRE_MESSAGE(i.code == 0, i.out);
  CHECK(i.out.find("conv2") != std::string::npos);
  auto x = run_qil("export " + tmp / "full/last.ckpt" + " --format int --out " + tmp / "x.safetensors");
  CHECK_MESSAGE(x.code == 0, x.out);
}

TEST_CASE("--quantizer pact and dorefa: runs resume mid-stage exactly, inspect shows alpha, export int writes them") {
  expect_error("train --quantizer lq-nets", "--quantizer must be qil, lsq, pact or dorefa, got 'lq-nets'");
  expect_error("train --pact-alpha-decay 0.001", "--pact-alpha-decay applies to PACT's alpha");
  expect_error("train --quantizer pact --pact-alpha-decay -1", "--pact-alpha-decay must be >= 0, got -1");
  if (!have_fashion()) return;
  for (const std::string kind : {"pact", "dorefa"}) {
    CAPTURE(kind);
    const bool pact = kind == "pact";
    ScratchDir tmp;
    const std::string base = "train" + kSmall + " --stages 32,4 --stage-epochs 1 --calib-batches 2 --threads 1 " +
                             "--quantizer " + kind + (pact ? " --pact-alpha-decay 0.0005" : "") + " --out ";
    auto full = run_qil(base + tmp / "full");
    REQUIRE_MESSAGE(full.code == 0, full.out);
    CHECK(full.out.find(pact ? "PACT layers" : "DoReFa inputs") != std::string::npos);  // the table's notes
    CHECK(full.out.find("DoReFa weights") != std::string::npos);
    auto p1 = run_qil(base + tmp / "cut" + " --stop-after-steps 13");  // 3 steps into the quantized stage
    REQUIRE_MESSAGE(p1.code == 0, p1.out);
    {  // The penalty's optimizer group ran: its momentum buffers are in the interrupted run's checkpoint.
      bool l2_group = false;
      for (const auto& [n, t] : engine::read_checkpoint(tmp / "cut/last.ckpt").tensors("optim."))
        l2_group = l2_group || n.rfind("quant_l2.", 0) == 0;
      CHECK(l2_group == pact);
    }
    auto p2 = run_qil("train --resume " + tmp / "cut");
    REQUIRE_MESSAGE(p2.code == 0, p2.out);
    CHECK(csv_column(tmp / "cut/metrics.csv", "test_loss") == csv_column(tmp / "full/metrics.csv", "test_loss"));
    std::ifstream cf(tmp / "full/config.toml");
    const std::string cfg((std::istreambuf_iterator<char>(cf)), {});
    CHECK(cfg.find("quantizer = '" + kind + "'") != std::string::npos);
    std::ifstream jf(tmp / "full/intervals.jsonl");
    const std::string j((std::istreambuf_iterator<char>(jf)), {});
    CHECK(j.find("\"dorefa_weight\"") != std::string::npos);
    CHECK(j.find("\"tanh_max\"") != std::string::npos);
    CHECK(j.find(pact ? "\"pact_activation\"" : "\"dorefa_activation\"") != std::string::npos);
    engine::Checkpoint ck = engine::read_checkpoint(tmp / "full/last.ckpt");
    CHECK(ck.text("quant_layout").find("\"" + kind + "\"") != std::string::npos);
    auto i = run_qil("inspect " + tmp / "full" + " --json");
    REQUIRE_MESSAGE(i.code == 0, i.out);
    CHECK(i.out.find("\"alpha\"") != std::string::npos);  // PACT's α, DoReFa's fixed 1
    auto x = run_qil("export " + tmp / "full/last.ckpt" + " --format int --out " + tmp / "x.safetensors");
    CHECK_MESSAGE(x.code == 0, x.out);
  }
}

#include <stb_image_write.h>

TEST_CASE("imagenet-style folders: a network trains on generated JPEGs and skips a broken file") {
  ScratchDir tmp;
  // Two classes told apart by colour; 40x30 pixels, so the 32-pixel crops resample.
  for (const char* split : {"train", "val"})
    for (int c = 0; c < 2; ++c) {
      const std::string dir = tmp / (std::string(split) + "/n0" + std::to_string(c));
      fs::create_directories(dir);
      for (int i = 0; i < (split[0] == 't' ? 24 : 6); ++i) {
        std::vector<unsigned char> px(40 * 30 * 3);
        for (size_t k = 0; k < px.size(); ++k) px[k] = static_cast<unsigned char>((k % 3 == static_cast<size_t>(c) ? 200 : 40) + (k * 7 + i) % 30);
        REQUIRE(stbi_write_jpg((dir + "/img" + std::to_string(i) + ".JPEG").c_str(), 40, 30, 3, px.data(), 90));
      }
    }
  std::ofstream(tmp / "train/n01/broken.JPEG") << "this is not an image";
  auto r = run_qil("train --model resnet18 --data imagenet --data-dir " + tmp.path.string() +
                   " --image-size 32 --batch 8 --epochs 1 --val-size 8 --progress none --lr 0.01 --out " + tmp / "run");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(r.out.find("broken.JPEG") != std::string::npos);
  CHECK(r.out.find("1 undecodable training file(s) skipped") != std::string::npos);
  CHECK(r.out.find("12 test") != std::string::npos);
  expect_error("train --model resnet18 --data imagenet --data-dir " + tmp.path.string() +
                   " --image-size 32 --batch 8 --epochs 1 --val-size 8 --progress none --max-bad-files 0 --out " +
                   tmp / "run2",
               "broken.JPEG");
}

TEST_CASE("data-parallel: two MPI ranks train together and rank 0 writes the run") {
  if (!have_fashion()) return;
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    qiltest::skip("tool", "mpirun not installed (Debian package openmpi-bin)");
    return;
  }
  ScratchDir tmp;
  const std::string cmd = "timeout 300 mpirun --allow-run-as-root --oversubscribe -np 2 '" + qiltest::qil_binary() +
                          "' train" + kSmall + " --epochs 1 --threads 1 --out " + tmp / "run" + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int st = pclose(p);
  REQUIRE_MESSAGE((WIFEXITED(st) && WEXITSTATUS(st) == 0), out);
  CHECK(fs::exists(tmp / "run/last.ckpt"));
  // One summary: only rank 0 logs.
  size_t count = 0;
  for (size_t at = out.find("== summary"); at != std::string::npos; at = out.find("== summary", at + 1)) ++count;
  CHECK(count == 1);
  CHECK(csv_column(tmp / "run/metrics.csv", "train_loss").size() == 1);
}

#include <CLI/CLI.hpp>

#include "apps/config.h"

TEST_CASE("config file: values become flags that the command line overrides, per-layer tables") {
  ScratchDir tmp;
  std::ofstream(tmp / "run.toml") << "model = \"resnet20\"\nlr = 0.02\nstages = \"32,4\"\nnesterov = true\n"
                                  << "stage_epochs = [3, 1]\nquantizer = \"pact\"\npact_alpha_decay = 0.0005\n"
                                  << "\n[layers.\"layer1.0.conv1\"]\nwbits = 3\n"
                                  << "[layers.fc]\nexclude = true\n[layers.conv1]\nquantizer = \"dorefa\"\n";
  apps::TrainConfig cfg;
  CLI::App app;
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  apps::add_train_flags(app, cfg);
  app.parse(std::vector<std::string>{"--lr=0.5"});  // the command line wins over the file
  apps::read_config_file(tmp / "run.toml", app, cfg);
  CHECK(cfg.model == "resnet20");
  CHECK(cfg.lr == 0.5);
  CHECK(cfg.nesterov);
  CHECK(cfg.stage_epochs == std::vector<int64_t>{3, 1});
  REQUIRE(cfg.layers.count("layer1.0.conv1") == 1);
  CHECK(cfg.layers["layer1.0.conv1"].wbits == 3);
  CHECK(cfg.layers["fc"].exclude);
  CHECK(cfg.quantizer == "pact");
  CHECK(cfg.pact_alpha_decay == 0.0005);
  CHECK(cfg.layers["conv1"].quantizer == "dorefa");
  // The resolved config reads back to the same values.
  std::ofstream(tmp / "resolved.toml") << apps::to_toml(cfg);
  apps::TrainConfig again;
  CLI::App app2;
  app2.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  apps::add_train_flags(app2, again);
  app2.parse(std::vector<std::string>{});
  apps::read_config_file(tmp / "resolved.toml", app2, again);
  CHECK(again.lr == 0.5);
  CHECK(again.model == "resnet20");
  CHECK(again.nesterov);
  CHECK(again.weight_decay == cfg.weight_decay);
  CHECK(again.layers["layer1.0.conv1"].wbits == 3);
  CHECK(again.layers["fc"].exclude);
  CHECK(again.quantizer == "pact");
  CHECK(again.pact_alpha_decay == 0.0005);
  CHECK(again.layers["conv1"].quantizer == "dorefa");
}

TEST_CASE("a per-layer width in a full-precision stage quantizes that layer, calibrated, and inspect shows it") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  // Stage 1 is fp32, but the table quantizes conv2's weights to 4 bits from the start: its interval must be
  // calibrated in that stage (it used to stop with "quantizer used before calibration").
  std::ofstream(tmp / "ovr.toml") << "[layers.conv2]\nwbits = 4\n";
  auto r = run_qil("train" + kSmall + " --stages 32,2 --stage-epochs 1 --calib-batches 2 --threads 2 --config " +
                   tmp / "ovr.toml" + " --out " + tmp / "run");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK_MESSAGE(r.out.find("== stage 1/2: fp32, 1 epochs, 1 quantized layers") != std::string::npos, r.out);
  // The interval records of stage 1 start at calibration (epoch 0) and name conv2 only.
  std::ifstream f(tmp / "run/intervals.jsonl");
  int stage1 = 0;
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("stage").get<int>() != 1) continue;
    ++stage1;
    CHECK(j.at("layer") == "conv2");
  }
  CHECK(stage1 >= 2);  // epoch 0 (calibration) and epoch 1
  auto e = run_qil("eval " + tmp / "run/best-fp32.ckpt" + " --subset 256 --progress none --json");
  REQUIRE_MESSAGE(e.code == 0, e.out);
}

TEST_CASE("train advises OMP_WAIT_POLICY=passive when other tasks run as it starts, unless a policy is set") {
  if (!have_fashion()) return;
  ScratchDir tmp;
  const std::string args = "train" + kSmall + " --train-subset 256 --epochs 1 --threads 1 --out ";
  qiltest::CmdResult advised, quiet;
  {
    qiltest::BusyThread busy;  // a task that runs for as long as training starts
    qiltest::EnvScope policy("OMP_WAIT_POLICY", nullptr);
    advised = run_qil(args + tmp / "a");
    policy.set("passive");
    quiet = run_qil(args + tmp / "b");
  }
  REQUIRE_MESSAGE(advised.code == 0, advised.out);
  REQUIRE_MESSAGE(quiet.code == 0, quiet.out);
  CHECK_MESSAGE(advised.out.find("set OMP_WAIT_POLICY=passive") != std::string::npos, advised.out);
  CHECK_MESSAGE(quiet.out.find("set OMP_WAIT_POLICY=passive") == std::string::npos, quiet.out);
}
