// `--int8` of predict and eval: integer inference gives predict's logits back within f32 rounding for a LeNet of each
// quantizer kind, eval --int8 reports the same accuracy and says so in its JSON, a network with nothing to run in
// integers is refused by name, and bench --int8 without --infer is refused. The arithmetic itself is tested in
// tests/engine/test_int8.cpp and tests/layers/test_int8_*.cpp.
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "apps/export.h"
#include "apps/predict.h"
#include "apps/npy.h"
#include "data/fixtures.h"
#include "export_fixtures.h"
#include "run_qil.h"

using namespace exporttest;
using engine::Tensor;

namespace {

Tensor predict_with(const TempDir& dir, bool int8) {
  apps::PredictOptions o;
  o.checkpoint = dir.file("m.ckpt");
  o.input = dir.file("x.npy");
  o.output = dir.file(int8 ? "yi.npy" : "yf.npy");
  o.batch = 7;
  o.int8 = int8;
  REQUIRE(apps::run_predict(o) == 0);
  return apps::read_npy(o.output);
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

}  // namespace

TEST_CASE("predict --int8: the logits of each quantizer kind's LeNet equal predict's within f32 rounding") {
  for (const std::string& kind : quant::quantizer_names()) {
    CAPTURE(kind);
    TempDir dir;
    write_tiny_checkpoint(dir.file("m.ckpt"), true, kind);
    apps::write_npy(dir.file("x.npy"), random_tensor({16, 1, 8, 8}, 5));  // (N, C, H, W)
    const Tensor yf = predict_with(dir, false), yi = predict_with(dir, true);
    REQUIRE(yf.shape() == yi.shape());
    double max_abs = 0, max_diff = 0;
    for (int64_t i = 0; i < yf.numel(); ++i) {
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(yf.data()[i])));
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(yf.data()[i]) - yi.data()[i]));
    }
    REQUIRE(max_abs > 0);
    // The layers' own bound (test_int8_layers.cpp) is ~K·2^-24 of the summed magnitudes, K ≤ 800 here: 1e-4 of
    // the largest logit is far above it and far below one activation level's effect.
    CHECK(max_diff <= 1e-4 * max_abs);
  }
}

TEST_CASE("predict --precision bf16: quantized and full-precision logits close to fp32's, and it says how it ran") {
  for (bool quantized : {true, false}) {
    CAPTURE(quantized);
    TempDir dir;
    write_tiny_checkpoint(dir.file("m.ckpt"), quantized);
    apps::write_npy(dir.file("x.npy"), random_tensor({8, 1, 8, 8}, 7));
    const std::string base = "predict '" + dir.file("m.ckpt") + "' --input '" + dir.file("x.npy") + "' --output '";
    auto f = qiltest::run_qil(base + dir.file("yf.npy") + "'");
    auto b = qiltest::run_qil(base + dir.file("yb.npy") + "' --precision bf16");
    REQUIRE_MESSAGE(f.code == 0, f.out);
    REQUIRE_MESSAGE(b.code == 0, b.out);
    CHECK_MESSAGE(qiltest::says_how_bf16_runs(b.out), b.out);
    const Tensor yf = apps::read_npy(dir.file("yf.npy")), yb = apps::read_npy(dir.file("yb.npy"));
    REQUIRE(yf.shape() == yb.shape());
    double max_abs = 0, max_diff = 0;
    for (int64_t i = 0; i < yf.numel(); ++i) {
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(yf.data()[i])));
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(yf.data()[i]) - yb.data()[i]));
    }
    // bf16 keeps 8 significant bits of every full-precision operand (the first conv's input at least): the logits
    // move, by about 2^-8 of their size and not by whole units.
    CHECK(max_diff > 0);
    CHECK(max_diff <= 2e-2 * max_abs);
  }
}

TEST_CASE("eval and predict --int8 from the command line") {
  TempDir dir;
  write_tiny_checkpoint(dir.file("q.ckpt"), true);
  write_tiny_checkpoint(dir.file("fp.ckpt"), false);
  apps::write_npy(dir.file("x.npy"), random_tensor({4, 1, 8, 8}, 6));
  auto p = qiltest::run_qil("predict '" + dir.file("q.ckpt") + "' --int8 --input '" + dir.file("x.npy") +
                            "' --output '" + dir.file("y.npy") + "'");
  REQUIRE_MESSAGE(p.code == 0, p.out);
  CHECK(p.out.find("int8: 2 layers in integers, 2 in f32: conv1, fc2") != std::string::npos);
  auto bad = qiltest::run_qil("predict '" + dir.file("fp.ckpt") + "' --int8 --input '" + dir.file("x.npy") +
                              "' --output '" + dir.file("z.npy") + "'");
  CHECK(bad.code != 0);
  CHECK(bad.out.find("fp.ckpt has no layer whose weights and input are both quantized") != std::string::npos);

  // An IDX folder of 8x8 images (the tiny LeNet's input) for eval.
  fs::create_directories(dir.file("idx"));
  write_file(dir.file("idx/train-images-idx3-ubyte"), qiltest::idx_images(64, 8, 8));
  write_file(dir.file("idx/train-labels-idx1-ubyte"), qiltest::idx_labels(64, 3));
  write_file(dir.file("idx/t10k-images-idx3-ubyte"), qiltest::idx_images(64, 8, 8));
  write_file(dir.file("idx/t10k-labels-idx1-ubyte"), qiltest::idx_labels(64, 3));
  const std::string eval = "eval '" + dir.file("q.ckpt") + "' --data idx --data-dir '" + dir.file("idx") +
                           "' --progress none --json --batch 16";
  auto ef = qiltest::run_qil(eval), ei = qiltest::run_qil(eval + " --int8");
  REQUIRE_MESSAGE(ef.code == 0, ef.out);
  REQUIRE_MESSAGE(ei.code == 0, ei.out);
  const auto jf = nlohmann::json::parse(ef.out.substr(ef.out.rfind('{')));
  const auto ji = nlohmann::json::parse(ei.out.substr(ei.out.rfind('{')));
  CHECK(ji.at("int8") == true);
  CHECK_FALSE(jf.contains("int8"));
  CHECK(ji.at("top1") == jf.at("top1"));
  CHECK(ji.at("loss").get<double>() == doctest::Approx(jf.at("loss").get<double>()).epsilon(1e-4));

  auto b = qiltest::run_qil("bench --model lenet --image-size 8 --in-channels 1 --num-classes 3 --batch 2 --quant 4 "
                            "--int8 --steps 1 --warmup 0 --repeat 1");
  CHECK(b.code != 0);
  CHECK(b.out.find("--int8 needs --infer") != std::string::npos);
  auto bi = qiltest::run_qil("bench --model lenet --image-size 8 --in-channels 1 --num-classes 3 --batch 2 --quant 4 "
                             "--infer --int8 --steps 1 --warmup 0 --repeat 1 --json");
  REQUIRE_MESSAGE(bi.code == 0, bi.out);
  CHECK(bi.out.find("\"mode\":\"infer-int8\"") != std::string::npos);
}
