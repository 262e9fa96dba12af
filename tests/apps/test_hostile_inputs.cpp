// What a hostile user can hand the `qil` command, tried through the real binary: IDX gzip bombs (peak memory of
// the child process measured), thread and worker counts far out of range, checkpoints edited and re-checksummed
// (widths, non-finite tensors, a zero std, a wrapped run position), FIFOs given as inputs, outputs that are
// devices, FIFOs or the input itself, and NaN inputs to predict. Not the readers' own byte-level damage
// (test_corrupt_files.cpp) nor training's failure handling (test_train_failures.cpp).
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "apps/npy.h"
#include "apps/training/run_state.h"
#include "export_fixtures.h"
#include "run_qil.h"

using exporttest::read_bytes;
using exporttest::write_tiny_checkpoint;
using qiltest::CmdResult;
using qiltest::run_qil;
using qiltest::ScratchDir;
using nlohmann::json;

namespace {

// Runs qil as run_qil does and also returns the peak resident memory of that process, in MB (ru_maxrss of its
// own rusage from wait4: other children of the test process do not count).
CmdResult run_qil_rss(const std::string& args, const std::string& log, double* peak_mb) {
  const std::string cmd = "exec '" + qiltest::qil_binary() + "' " + args + " >'" + log + "' 2>&1";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  rusage ru{};
  REQUIRE(wait4(pid, &st, 0, &ru) == pid);
  CmdResult r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_bytes(log);
  *peak_mb = ru.ru_maxrss / 1024.0;
  return r;
}

// A gzip file of `members` concatenated gzip members (zlib's reader reads them as one stream): the first holds
// `head` then `zeros` zero bytes, each other one `zeros` zero bytes. Hundreds of MB inflated from a few
// hundred KB, written in well under a second.
void write_gz_zeros(const std::string& path, const std::vector<uint8_t>& head, size_t zeros, int members) {
  auto member = [&](bool with_head) {
    std::vector<uint8_t> raw(with_head ? head : std::vector<uint8_t>{});
    raw.resize(raw.size() + zeros, 0);
    z_stream z{};
    REQUIRE(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) == Z_OK);  // +16: a gzip wrapper
    std::string out(deflateBound(&z, raw.size()), '\0');
    z.next_in = raw.data();
    z.avail_in = static_cast<uInt>(raw.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
    out.resize(z.total_out);
    deflateEnd(&z);
    return out;
  };
  const std::string first = member(true), rest = member(false);
  std::ofstream f(path, std::ios::binary);
  f << first;
  for (int i = 1; i < members; ++i) f << rest;
  REQUIRE(f.good());
}

std::vector<uint8_t> idx_header(uint32_t n, uint32_t h, uint32_t w) {
  std::vector<uint8_t> b = {0, 0, 8, 3};
  for (uint32_t v : {n, h, w})
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
  return b;
}

void expect_refused(const CmdResult& r, const std::vector<std::string>& parts, const std::string& what) {
  CHECK_MESSAGE(r.code != 0, what << "\n" << r.out);
  for (const std::string& p : parts)
    CHECK_MESSAGE(r.out.find(p) != std::string::npos, what << ": expected '" << p << "' in:\n" << r.out);
  CHECK_MESSAGE(r.out.find("internal error") == std::string::npos, what << "\n" << r.out);
}

// A copy of checkpoint `src` at `dst` with `edit` applied to it, written (and so checksummed) anew: the edit
// is a valid file whose values are wrong, as a user editing one by hand and fixing the CRCs would make it.
void edit_checkpoint(const std::string& src, const std::string& dst,
                     const std::function<void(const std::string& name, engine::Tensor& t, std::string& text)>& edit) {
  const engine::Checkpoint in = engine::read_checkpoint(src);
  engine::Checkpoint out;
  for (const auto& sec : in.sections()) {
    engine::Tensor t = sec.type == engine::SectionType::tensor ? sec.tensor.clone() : engine::Tensor();
    std::string text = sec.text;
    edit(sec.name, t, text);
    if (sec.type == engine::SectionType::tensor) out.add_tensor(sec.name, t);
    else if (sec.type == engine::SectionType::json) out.add_json(sec.name, text);
    else out.add_text(sec.name, text);
  }
  engine::write_checkpoint(dst, out);
}

// Two 1x8x8 images; with first_image set, every pixel of the first is that value.
void write_input_npy(const std::string& path, std::optional<float> first_image = std::nullopt) {
  engine::Tensor x = exporttest::random_tensor({2, 1, 8, 8}, 5);
  if (first_image)
    for (int i = 0; i < 64; ++i) x.data()[i] = *first_image;
  apps::write_npy(path, x);
}

}  // namespace

TEST_CASE("an IDX gzip bomb is refused from its header within a bounded memory, and --max-idx-mb raises the limit") {
  ScratchDir tmp;
  const std::string ck = tmp / "lenet.ckpt";
  write_tiny_checkpoint(ck, false);
  // A header claiming [5000000, 28, 28] (3.92 GB, under the old 4 GiB cap) over 320 MB of gzipped zeros
  // (about 300 KB on disk): main before this check read the 320 MB into a buffer grown by doubling and used
  // over 512 MB before "truncated".
  std::filesystem::create_directories(tmp / "bomb");
  write_gz_zeros(tmp / "bomb/train-images-idx3-ubyte.gz", idx_header(5000000, 28, 28), size_t(16) << 20, 20);
  std::ofstream(tmp / "bomb/train-labels-idx1-ubyte", std::ios::binary) << std::string("\0\0\x08\x01\0\0\0\0", 8);
  const std::string eval = "eval " + ck + " --data idx --data-dir " + tmp / "bomb" + " --progress none";
  double peak = 0;
  CmdResult r = run_qil_rss(eval, tmp / "log", &peak);
  MESSAGE("IDX bomb under the default limit: exit ", r.code, ", peak RSS ", peak, " MB");
  expect_refused(r,
                 {tmp / "bomb/train-images-idx3-ubyte.gz",
                  "header says [5000000, 28, 28] (3920000016 bytes), more than the IDX size limit of 268435456 "
                  "bytes (256 MiB; --max-idx-mb raises it)"},
                 "bomb");
  CHECK(peak < 200);
  // With the limit raised past the claim, the memory for the declared size is reserved but only the 320 MB
  // that arrive become resident before "truncated".
  r = run_qil_rss(eval + " --max-idx-mb 4096", tmp / "log", &peak);
  MESSAGE("IDX bomb with --max-idx-mb 4096: exit ", r.code, ", peak RSS ", peak, " MB");
  expect_refused(r, {tmp / "bomb/train-images-idx3-ubyte.gz", "truncated: header says [5000000, 28, 28]"}, "raised");
  CHECK(peak < 512);
  expect_refused(run_qil(eval + " --max-idx-mb 0"), {"--max-idx-mb must be in 1..1048576, got 0"}, "zero limit");
}

TEST_CASE("thread and worker counts out of range are refused by every command before anything runs") {
  ScratchDir tmp;
  const std::string ck = tmp / "lenet.ckpt";
  write_tiny_checkpoint(ck, false);
  write_input_npy(tmp / "x.npy");
  const std::string predict = "predict " + ck + " --input " + tmp / "x.npy" + " --output " + tmp / "y.npy";
  for (const char* n : {"100000", "2147483648", "-1"}) {
    const std::string want = std::string("--threads must be in 0..1024, got ") + n;
    for (const std::string& cmd : {"eval " + ck + " --progress none", predict, std::string("bench --model lenet"),
                                   std::string("train --model lenet --out ") + tmp / "run"}) {
      const CmdResult r = run_qil(cmd + " --threads " + n);
      expect_refused(r, {want}, cmd);
      CHECK_MESSAGE(r.code == 2, cmd << " exit " << r.code);  // a bad flag, like every other one
    }
  }
  for (const std::string& cmd : {"eval " + ck + " --progress none", std::string("bench-data --data-dir ") + tmp.path.string(),
                                 std::string("train --model lenet --out ") + tmp / "run"})
    expect_refused(run_qil(cmd + " --workers 1000000"), {"--workers must be in 1..256, got 1000000"}, cmd);
  CHECK_FALSE(std::filesystem::exists(tmp / "y.npy"));
}

TEST_CASE("checkpoints edited and re-checksummed are refused on load, naming the file and the field") {
  ScratchDir tmp;
  const std::string ck = tmp / "q.ckpt";
  write_tiny_checkpoint(ck, true);  // conv2 at W4A4 and fc1 at W3A4, QIL
  write_input_npy(tmp / "x.npy");
  REQUIRE(run_qil("predict " + ck + " --input " + tmp / "x.npy" + " --output " + tmp / "ok.npy").code == 0);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Edit {
    const char* what;
    std::function<void(const std::string&, engine::Tensor&, std::string&)> edit;
    std::string message;
  };
  auto tensor_edit = [](std::string section, float v) {
    return [section, v](const std::string& name, engine::Tensor& t, std::string&) {
      if (name == section) t.data()[0] = v;
    };
  };
  auto json_edit = [](std::string section, std::function<void(json&)> f) {
    return [section, f](const std::string& name, engine::Tensor&, std::string& text) {
      if (name != section) return;
      json j = json::parse(text);
      f(j);
      text = j.dump();
    };
  };
  const std::vector<Edit> edits = {
      {"wbits 99", json_edit("quant_layout", [](json& j) { j["conv2"]["wbits"] = 99; }),
       "quant_layout of layer 'conv2': field 'wbits' is 99, outside 2..32"},
      {"wbits 16", json_edit("quant_layout", [](json& j) { j["conv2"]["wbits"] = 16; }),
       "quant_layout of layer 'conv2': wbits is 16 (a width is 2..8 bits, or 32)"},
      {"abits 2^32+4", json_edit("quant_layout", [](json& j) { j["fc1"]["abits"] = (uint64_t(1) << 32) + 4; }),
       "field 'abits' is 4294967300, outside 2..32"},
      {"a string width", json_edit("quant_layout", [](json& j) { j["fc1"]["abits"] = "4"; }),
       "field 'abits' is \"4\", not an integer"},
      {"NaN running_var", tensor_edit("model.bn1.running_var", nan),
       "tensor 'bn1.running_var' holds nan at element 0 (every value must be finite)"},
      {"negative running_var", tensor_edit("model.bn1.running_var", -1.f),
       "tensor 'bn1.running_var' holds -1 at element 0 (a variance is never negative)"},
      {"inf bias", tensor_edit("model.fc2.bias", inf), "tensor 'fc2.bias' holds inf at element 0"},
      {"NaN c", tensor_edit("model.conv2.weight_quant.c", nan), "tensor 'conv2.weight_quant.c' holds nan"},
      {"gamma 0", tensor_edit("model.conv2.weight_quant.gamma", 0.f),
       "tensor 'conv2.weight_quant.gamma' holds 0 at element 0 (a quantizer's gamma must be positive)"},
      {"d < 0", tensor_edit("model.fc1.act_quant.d", -0.5f), "tensor 'fc1.act_quant.d' holds -0.5"},
      {"std [0]", json_edit("model_meta", [](json& j) { j["std"] = {0.0}; }),
       "model description's std[0] is 0 (must be positive and finite)"},
      {"two means", json_edit("model_meta", [](json& j) { j["mean"] = {0.1, 0.2}; }),
       "model description's mean has 2 values for 1 input channels"},
      {"channels 2^32+1", json_edit("model_meta", [](json& j) { j["in_channels"] = (uint64_t(1) << 32) + 1; }),
       "model description field 'in_channels' is 4294967297, outside 1..1024"},
      {"classes 0", json_edit("model_meta", [](json& j) { j["num_classes"] = 0; }),
       "model description field 'num_classes' is 0, outside 1..1000000"},
  };
  for (const Edit& e : edits) {
    CAPTURE(e.what);
    const std::string bad = tmp / "bad.ckpt";
    edit_checkpoint(ck, bad, e.edit);
    const std::string out = tmp / "y.npy";
    expect_refused(run_qil("predict " + bad + " --input " + tmp / "x.npy" + " --output " + out), {bad, e.message},
                   std::string("predict, ") + e.what);
    expect_refused(run_qil("export " + bad + " --out " + tmp / "e.safetensors"), {bad, e.message},
                   std::string("export, ") + e.what);
    expect_refused(run_qil("inspect " + bad), {bad, e.message}, std::string("inspect, ") + e.what);
    expect_refused(run_qil("eval " + bad + " --data idx --data-dir " + tmp.path.string() + " --progress none"),
                   {bad, e.message}, std::string("eval, ") + e.what);
    CHECK_FALSE(std::filesystem::exists(out));
  }
}

TEST_CASE("a run state edited and re-checksummed is read with every field checked, never wrapped") {
  using apps::training::RunState;
  const std::string file = "runs/a/last.ckpt";
  const RunState ok = RunState::parse(R"({"position":{"stage":1,"epoch":2,"batch":4,"step":9,"best_val":[80.5,-1]},
                                          "rng":{"drop":[1,2,3,4]}})",
                                      file);
  CHECK(ok.position.stage == 1);
  CHECK(ok.position.epoch == 2);
  CHECK(ok.position.best_val == std::vector<double>{80.5, -1});
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"position":{"stage":4294967297,"epoch":0}})", "stage is 4294967297 (an integer in 0..2147483647)"},
      {R"({"position":{"stage":1,"epoch":8589934592}})", "epoch is 8589934592 (an integer in 0..2147483647)"},
      {R"({"position":{"stage":-1}})", "stage is -1"},
      {R"({"position":{"stage":1.5}})", "stage is 1.5"},
      {R"({"position":{"stage":"1"}})", "stage is \"1\""},
      {R"({"position":{"step":18446744073709551615}})", "step is 18446744073709551615"},
      {R"({"position":{"loss_sum":-3}})", "loss_sum is -3"},
      {R"({"position":{"best_val":[101]}})", "best_val holds 101"},
      {R"({"rng":{"drop":[1,2,3]}})", "rng of 'drop' is not four words"},
      {R"([1,2])", "is not a JSON object"},
  };
  for (const auto& [text, message] : bad) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(RunState::parse(text, file), doctest::Contains((file + ": run_state").c_str()),
                         engine::Error);
    CHECK_THROWS_WITH_AS(RunState::parse(text, file), doctest::Contains(message.c_str()), engine::Error);
  }
}

TEST_CASE("a FIFO given as an input is refused at once, and outputs are regular files that are not an input") {
  ScratchDir tmp;
  const std::string ck = tmp / "lenet.ckpt";
  write_tiny_checkpoint(ck, false);
  write_input_npy(tmp / "x.npy");
  REQUIRE(mkfifo((tmp / "fifo").c_str(), 0600) == 0);
  const std::string fifo = tmp / "fifo";
  // `timeout`: on a build that blocks on the FIFO the case fails (exit 124) instead of hanging the suite.
  const std::string t = "timeout 60 '" + qiltest::qil_binary() + "' ";
  auto run = [&](const std::string& args) {
    CmdResult r;
    FILE* p = popen((t + args + " 2>&1").c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
    const int st = pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
  };
  const std::string not_regular = "not a regular file (a FIFO)";
  expect_refused(run("eval " + fifo + " --progress none"), {fifo, not_regular}, "eval");
  expect_refused(run("export " + fifo + " --out " + tmp / "e.safetensors"), {fifo, not_regular}, "export");
  expect_refused(run("predict " + fifo + " --input " + tmp / "x.npy" + " --output " + tmp / "y.npy"),
                 {fifo, not_regular}, "predict checkpoint");
  expect_refused(run("predict " + ck + " --input " + fifo + " --output " + tmp / "y.npy"), {fifo, "not a regular file"},
                 "predict input");
  expect_refused(run("train --model lenet --config " + fifo + " --out " + tmp / "r"), {fifo, "not a regular file"},
                 "train config");
  std::filesystem::create_directories(tmp / "run");
  std::ofstream(tmp / "run/config.toml") << "model = 'lenet'\nstages = '32'\n";
  REQUIRE(mkfifo((tmp / "run/last.ckpt").c_str(), 0600) == 0);
  expect_refused(run("train --resume " + tmp / "run"), {tmp / "run/last.ckpt", not_regular}, "train --resume");

  // Outputs: a FIFO (or, as root, a device such as /dev/full) would be replaced by a regular file, a folder
  // cannot be written, and the input itself would be destroyed.
  const std::string before = read_bytes(ck);
  expect_refused(run("export " + ck + " --out " + fifo), {"--out " + fifo, not_regular}, "export to a FIFO");
  struct stat st{};
  CHECK((stat(fifo.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)));
  expect_refused(run("export " + ck + " --out " + tmp.path.string()), {"not a regular file (a directory)"},
                 "export to a folder");
  expect_refused(run("export " + ck + " --out " + ck), {"--out " + ck + ": is the input checkpoint " + ck},
                 "export over its input");
  std::filesystem::create_symlink(ck, tmp / "link.ckpt");
  expect_refused(run("export " + ck + " --out " + tmp / "link.ckpt"), {"is the input checkpoint"}, "through a link");
  CHECK(read_bytes(ck) == before);
  const std::string x_before = read_bytes(tmp / "x.npy");
  expect_refused(run("predict " + ck + " --input " + tmp / "x.npy" + " --output " + tmp / "x.npy"),
                 {"--output " + tmp / "x.npy" + ": is the input file " + tmp / "x.npy"}, "predict over its input");
  expect_refused(run("predict " + ck + " --input " + tmp / "x.npy" + " --output " + ck),
                 {"is the input checkpoint"}, "predict over its checkpoint");
  expect_refused(run("predict " + ck + " --input " + tmp / "x.npy" + " --output " + fifo), {not_regular},
                 "predict to a FIFO");
  expect_refused(run("inspect " + ck + " --html " + ck), {"--html " + ck + ": is the input target"}, "inspect");
  CHECK(read_bytes(tmp / "x.npy") == x_before);
  CHECK(read_bytes(ck) == before);
  // A new path and an existing regular file are written as before.
  CHECK(run("export " + ck + " --out " + tmp / "e.safetensors").code == 0);
  CHECK(run("export " + ck + " --out " + tmp / "e.safetensors").code == 0);
}

TEST_CASE("predict says on stderr when logits are not finite, naming the images") {
  // An image of NaNs gives logits that mean nothing (NaN, or finite where ReLU and pooling dropped the NaNs);
  // the exit code stays 0 (the logits are written), and a warning says so.
  ScratchDir tmp;
  const std::string ck = tmp / "lenet.ckpt";
  write_tiny_checkpoint(ck, false);
  write_input_npy(tmp / "ok.npy");
  CmdResult r = run_qil("predict " + ck + " --input " + tmp / "ok.npy" + " --output " + tmp / "y.npy");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(r.out.find("not finite") == std::string::npos);
  write_input_npy(tmp / "nan.npy", std::numeric_limits<float>::quiet_NaN());
  r = run_qil("predict " + ck + " --input " + tmp / "nan.npy" + " --output " + tmp / "y.npy");
  CHECK_MESSAGE(r.code == 0, r.out);  // the logits are still written
  CHECK_MESSAGE(r.out.find("predict: warning: " + tmp / "nan.npy" +
                           " holds 64 non-finite values, in 1 images (0); their logits mean nothing") !=
                    std::string::npos,
                r.out);
}

TEST_CASE("config values of the wrong type and an absurd crop padding are refused") {
  ScratchDir tmp;
  auto with_config = [&](const std::string& text) {
    std::ofstream(tmp / "c.toml") << text;
    return run_qil("train --model lenet --config " + tmp / "c.toml" + " --out " + tmp / "run");
  };
  expect_refused(with_config("epochs = \"3\"\n"),
                 {"config " + tmp / "c.toml" + ": key 'epochs' must be an integer, got '3'"}, "epochs string");
  expect_refused(with_config("lr = \"0.1\"\n"), {"key 'lr' must be a number, got '0.1'"}, "lr string");
  expect_refused(with_config("nesterov = 1\n"), {"key 'nesterov' must be true or false, got 1"}, "bool as int");
  expect_refused(with_config("stage_epochs = [\"3\", 1]\n"), {"key 'stage_epochs' must be an integer or a list"},
                 "list of strings");
  expect_refused(with_config("crop_padding = 1000000\n"), {"--crop-padding must be in 0..64, got 1000000"},
                 "crop padding in a file");
  expect_refused(run_qil("train --model lenet --crop-padding 1000000 --out " + tmp / "run"),
                 {"--crop-padding must be in 0..64, got 1000000"}, "crop padding");
  CHECK_FALSE(std::filesystem::exists(tmp / "run"));
}

TEST_CASE("--resume drops garbage rows of metrics.csv, not only rows the checkpoint does not cover") {
  const std::string fashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
  if (!std::filesystem::exists(fashion)) {
    MESSAGE("skipped: Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
    return;
  }
  ScratchDir tmp;
  const std::string base = "train --model lenet --train-subset 384 --val-size 128 --test-subset 128 --batch 64 "
                           "--progress none --lr 0.05 --stages 32 --epochs 2 --threads 1 --out " + tmp / "run";
  CmdResult r = run_qil(base + " --stop-after-steps 6");  // after epoch 1 (4 steps) and 2 steps of epoch 2
  REQUIRE_MESSAGE(r.code == 0, r.out);
  // Lines a torn append or an edit could leave: main read each as stage 0, epoch 0 and kept it.
  std::ofstream(tmp / "run/metrics.csv", std::ios::app) << "garbage\n0,fp32,x,1\n,,,\n";
  r = run_qil("train --resume " + tmp / "run");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  std::ifstream f(tmp / "run/metrics.csv");
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  REQUIRE(lines.size() == 3);  // the header and the two epochs
  for (const std::string& l : lines) {
    CHECK(std::count(l.begin(), l.end(), ',') == std::count(lines[0].begin(), lines[0].end(), ','));
    CHECK(l.find("garbage") == std::string::npos);
  }
}

TEST_CASE("errors name the file: a safetensors shape that implies a huge network, a missing section") {
  ScratchDir tmp;
  write_input_npy(tmp / "x.npy");
  // LeNet's last linear as [2^40, 0]: no bytes, but the network sized from it would have 2^40 classes (main
  // answered "tensor: out of memory allocating 1125899906842624 bytes", naming nothing).
  const std::string st = tmp / "huge.safetensors";
  engine::write_safetensors(st, {{"fc2.weight", engine::Tensor::empty({int64_t(1) << 40, 0})}}, {});
  expect_refused(run_qil("predict " + st + " --model lenet --input " + tmp / "x.npy" + " --output " + tmp / "y.npy"),
                 {st + ": the network would have 1099511627776 classes (1..1000000)"}, "safetensors classes");
  // A section looked up but absent names the checkpoint it was read from.
  const std::string ck = tmp / "lenet.ckpt";
  write_tiny_checkpoint(ck, false);
  const engine::Checkpoint c = engine::read_checkpoint(ck);
  CHECK_THROWS_WITH_AS(c.text("run_state"), doctest::Contains(("checkpoint " + ck + ": no section 'run_state'").c_str()),
                       engine::Error);
}
