// `qil eval CKPT` gives the test figures `qil train` logged for that checkpoint, for every data kind (an IDX
// folder, CIFAR-10 files, an ImageNet-style tree trained at a side other than 224): in float and with --int8,
// in one process and under two MPI ranks, with the data kind and the input geometry taken from the checkpoint.
// Also: --image-size with a checkpoint is an override said on stderr (refused for fixed-size images), a
// checkpoint from before the geometry was recorded falls back with a note, inspect and ONNX export show the
// geometry, and a run without a validation split prints "—" and leaves its metrics.csv cells empty.
// The data is generated here, tiny (a few dozen images), with classes told apart by brightness so that the
// networks' predictions are neither all right nor all the same.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>
#include <onnx/onnx_pb.h>
#include <stb_image_write.h>

#include "engine/serialize.h"
#include "run_qil.h"
#include "skip.h"

using qiltest::run_qil;
using qiltest::ScratchDir;
namespace fs = std::filesystem;

namespace {

// Pixels of image i of class c: noise around a class-dependent level (`step` apart), the same on every run.
struct Pixels {
  uint32_t state;
  int step;
  explicit Pixels(uint32_t seed, int step_ = 40) : state(seed * 2654435761u + 12345u), step(step_) {}
  uint8_t next(int cls) {
    state = state * 1664525u + 1013904223u;
    const int noise = static_cast<int>((state >> 24) % 96);
    return static_cast<uint8_t>(std::min(255, 30 + step * cls + noise));
  }
};

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(f.good());
}

void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

// An IDX folder of 12x12 images, 4 classes: `train` and `test` images.
void write_idx_folder(const std::string& dir, uint32_t train, uint32_t test) {
  fs::create_directories(dir);
  for (const auto& [prefix, n] : {std::pair<std::string, uint32_t>{"train", train}, {"t10k", test}}) {
    std::vector<uint8_t> im, lb;
    put_be32(im, 0x803);
    put_be32(im, n);
    put_be32(im, 12);
    put_be32(im, 12);
    put_be32(lb, 0x801);
    put_be32(lb, n);
    for (uint32_t i = 0; i < n; ++i) {
      const int c = static_cast<int>(i % 4);
      Pixels px(i + (prefix == "t10k" ? 100000 : 0));
      for (int k = 0; k < 144; ++k) im.push_back(px.next(c));
      lb.push_back(static_cast<uint8_t>(c));
    }
    write_bytes(dir + "/" + prefix + "-images-idx3-ubyte", im);
    write_bytes(dir + "/" + prefix + "-labels-idx1-ubyte", lb);
  }
}

// CIFAR-10's binary files: 5 training batches of `per_batch` records and a test batch of `test`.
void write_cifar_folder(const std::string& dir, int per_batch, int test) {
  fs::create_directories(dir);
  auto batch = [](int n, uint32_t seed) {
    std::vector<uint8_t> b;
    for (int i = 0; i < n; ++i) {
      const int c = i % 4;
      b.push_back(static_cast<uint8_t>(c));
      Pixels px(seed + static_cast<uint32_t>(i));
      for (int k = 0; k < 3072; ++k) b.push_back(px.next(c));
    }
    return b;
  };
  for (int k = 1; k <= 5; ++k)
    write_bytes(dir + "/data_batch_" + std::to_string(k) + ".bin", batch(per_batch, 1000u * static_cast<uint32_t>(k)));
  write_bytes(dir + "/test_batch.bin", batch(test, 999999u));
}

// An ImageNet-style tree: train/ and val/ with 3 class folders of 40x30 JPEGs.
void write_imagenet_tree(const std::string& root, int train_per_class, int val_per_class) {
  for (const char* split : {"train", "val"})
    for (int c = 0; c < 3; ++c) {
      const std::string dir = root + "/" + split + "/n0" + std::to_string(c);
      fs::create_directories(dir);
      const int n = split[0] == 't' ? train_per_class : val_per_class;
      for (int i = 0; i < n; ++i) {
        std::vector<unsigned char> px(40 * 30 * 3);
        Pixels p(static_cast<uint32_t>(i * 7 + c * 1000 + (split[0] == 'v' ? 50000 : 0)), 15);
        // Brightness (a little) tells the classes apart; an inverted corner block makes the side matter.
        for (size_t k = 0; k < px.size(); ++k) {
          const size_t pixel = k / 3, y = pixel / 40, x = pixel % 40;
          int v = p.next(c);
          if (y < 6 && x < 6) v = 255 - v;
          px[k] = static_cast<unsigned char>(std::min(255, v));
        }
        REQUIRE(stbi_write_jpg((dir + "/img" + std::to_string(i) + ".JPEG").c_str(), 40, 30, 3, px.data(), 90));
      }
    }
}

// The last row of metrics.csv as column -> cell.
std::map<std::string, std::string> last_metrics_row(const std::string& path) {
  std::ifstream f(path);
  std::string header, line, last;
  REQUIRE(std::getline(f, header));
  while (std::getline(f, line))
    if (!line.empty()) last = line;
  auto split = [](const std::string& s) {
    std::vector<std::string> out;
    std::string cell;
    std::stringstream ss(s);
    while (std::getline(ss, cell, ',')) out.push_back(cell);
    if (!s.empty() && s.back() == ',') out.push_back("");
    return out;
  };
  const auto h = split(header), v = split(last);
  REQUIRE_MESSAGE(h.size() == v.size(), path << ": " << last);
  std::map<std::string, std::string> row;
  for (size_t i = 0; i < h.size(); ++i) row[h[i]] = v[i];
  return row;
}

bool have_mpirun() {
  if (std::system("command -v mpirun >/dev/null 2>&1") == 0) return true;
  qiltest::skip("tool", "mpirun not installed (Debian package openmpi-bin): the two-rank part is not exercised");
  return false;
}

// `qil args` under mpirun with two ranks of one thread each (as tests/apps/test_cluster.cpp runs them).
qiltest::CmdResult mpi_qil(const std::string& args) {
  const std::string cmd = "timeout 300 mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 '" +
                          qiltest::qil_binary() + "' " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  qiltest::CmdResult r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

nlohmann::json eval_json(const qiltest::CmdResult& r) {
  const size_t brace = r.out.rfind("\n{");
  const std::string text = r.out.substr(brace == std::string::npos ? r.out.find('{') : brace + 1);
  return nlohmann::json::parse(text);
}

// The figures of `eval` equal the run's last logged test figures: top-1 to the 4 decimals metrics.csv keeps,
// the loss to its 6 (up to the summation order of another batch size). With --int8 the loss moves by the
// integer path's rounding (docs/int8.md); the top-1 does not.
void expect_same_as_training(const qiltest::CmdResult& r, const std::map<std::string, std::string>& row,
                             const std::string& what, bool int8 = false) {
  INFO(what << "\n" << r.out);
  REQUIRE(r.code == 0);
  const nlohmann::json j = eval_json(r);
  CHECK(std::fabs(j.at("top1").get<double>() - std::stod(row.at("test_top1"))) < 6e-5);
  const double loss = std::stod(row.at("test_loss"));
  CHECK(std::fabs(j.at("loss").get<double>() - loss) < (int8 ? 1e-2 : 2e-5) * std::max(1.0, loss));
}

// Trains `train_args` (a one-stage quantized run, so that --int8 has layers to run) and checks every way of
// evaluating its last.ckpt against the run's own figures. `data` names the data for eval (no --data: the
// checkpoint says which kind).
void check_kind(const ScratchDir& tmp, const std::string& name, const std::string& train_args, const std::string& data,
                bool mpi) {
  const std::string run = tmp / name;
  const auto t = run_qil("train " + train_args + " --stages 4 --epochs 1 --progress none --out " + run);
  REQUIRE_MESSAGE(t.code == 0, t.out);
  const auto row = last_metrics_row(run + "/metrics.csv");
  const double top1 = std::stod(row.at("test_top1"));
  MESSAGE(name << ": training's test top-1 " << top1 << "%, loss " << row.at("test_loss"));
  // A network that got everything right or nothing would hide a wrong input: its predictions must vary.
  CHECK(top1 > 0);
  CHECK(top1 < 100);
  const std::string ev = "eval " + run + "/last.ckpt " + data + " --progress none --json";
  expect_same_as_training(run_qil(ev), row, name + ": eval");
  expect_same_as_training(run_qil(ev + " --int8"), row, name + ": eval --int8", true);
  if (mpi) {
    expect_same_as_training(mpi_qil(ev), row, name + ": eval under 2 ranks");
    expect_same_as_training(mpi_qil(ev + " --int8"), row, name + ": eval --int8 under 2 ranks", true);
  }
}

}  // namespace

TEST_CASE("eval gives training's test figures: IDX folder, float and int8, one process and 2 ranks") {
  ScratchDir tmp;
  write_idx_folder(tmp / "idx", 320, 96);
  check_kind(tmp, "idx",
             "--model lenet --data idx --data-dir " + tmp / "idx" + " --batch 32 --val-size 64 --lr 0.05",
             "--data-dir " + tmp / "idx", have_mpirun());
  // The size of IDX images is theirs: another --image-size is refused with the reason.
  const auto r = run_qil("eval " + tmp / "idx/last.ckpt" + " --data-dir " + tmp / "idx" + " --image-size 16");
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.out.find("--image-size 16: idx images are evaluated at their own size") != std::string::npos, r.out);
}

TEST_CASE("eval gives training's test figures: CIFAR-10 files, float and int8, one process and 2 ranks") {
  ScratchDir tmp;
  write_cifar_folder(tmp / "cifar", 48, 64);
  check_kind(tmp, "cifar",
             "--model lenet --data cifar10 --data-dir " + tmp / "cifar" + " --batch 32 --val-size 48 --lr 0.05",
             "--data-dir " + tmp / "cifar", have_mpirun());
  // The checkpoint says it is CIFAR-10: evaluating it as another kind is said.
  const auto r = run_qil("eval " + tmp / "cifar/last.ckpt" + " --data idx --data-dir " + tmp / "cifar");
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.out.find("was trained on cifar10 data; evaluating it on idx") != std::string::npos, r.out);
}

TEST_CASE("eval gives training's test figures: an ImageNet-style tree at 24 pixels, one process and 2 ranks") {
  ScratchDir tmp;
  write_imagenet_tree(tmp / "tree", 32, 12);
  const std::string data = "--data imagenet --data-dir " + tmp / "tree";
  check_kind(tmp, "in24", "--model resnet20 " + data + " --image-size 24 --batch 16 --val-size 0 --lr 0.05", data,
             have_mpirun());
  const std::string ck = tmp / "in24/last.ckpt";

  // The checkpoint records the geometry: side 24, torchvision's ratio for the resize (27), the data kind.
  const auto meta = nlohmann::json::parse(engine::read_checkpoint(ck).text("model_meta"));
  CHECK(meta.at("image_size") == 24);
  CHECK(meta.at("input").at("data") == "imagenet");
  CHECK(meta.at("input").at("transform") == "resize-center-crop");
  CHECK(meta.at("input").at("resize") == 27);
  CHECK(meta.at("input").at("crop") == 24);

  // No validation split: no figure for it, anywhere.
  const auto row = last_metrics_row(tmp / "in24/metrics.csv");
  CHECK(row.at("val_top1").empty());
  CHECK(row.at("val_loss").empty());
  CHECK(!row.at("test_top1").empty());

  // --image-size with a checkpoint: a deliberate override, said, and the figures are those of another input.
  const auto over = run_qil("eval " + ck + " " + data + " --image-size 32 --json --progress none");
  REQUIRE_MESSAGE(over.code == 0, over.out);
  CHECK_MESSAGE(over.out.find("--image-size 32: evaluating at 32 pixels (shorter side 37, center crop 32) instead "
                              "of the 24 pixels") != std::string::npos,
                over.out);
  CHECK(eval_json(over).at("image_size") == 32);
  CHECK(eval_json(over).at("loss").get<double>() != doctest::Approx(std::stod(row.at("test_loss"))).epsilon(1e-4));

  // inspect says how the inputs are made; the ONNX export's input is 3x24x24 and its metadata the geometry.
  const auto ins = run_qil("inspect " + ck);
  REQUIRE_MESSAGE(ins.code == 0, ins.out);
  CHECK_MESSAGE(ins.out.find("input: 3x24x24 (imagenet images: shorter side resized to 27, center crop 24)") !=
                    std::string::npos,
                ins.out);
  const auto ex = run_qil("export " + ck + " --format onnx --out " + tmp / "in24.onnx");
  REQUIRE_MESSAGE(ex.code == 0, ex.out);
  onnx::ModelProto mp;
  std::ifstream f(tmp / "in24.onnx", std::ios::binary);
  REQUIRE(mp.ParseFromIstream(&f));
  const auto& dims = mp.graph().input(0).type().tensor_type().shape();
  REQUIRE(dims.dim_size() == 4);
  CHECK(dims.dim(2).dim_value() == 24);
  CHECK(dims.dim(3).dim_value() == 24);
  std::map<std::string, std::string> props;
  for (const auto& p : mp.metadata_props()) props[p.key()] = p.value();
  CHECK(props["image_size"] == "24");
  CHECK(props["input_resize"] == "27");
  CHECK(props["input_transform"] == "resize-center-crop");
  CHECK(props["input_data"] == "imagenet");

  // A checkpoint from before the geometry was recorded: evaluated as before (224), with a note saying how to
  // evaluate it at its own side; --image-size 24 then gives the run's figures.
  {
    const engine::Checkpoint src = engine::read_checkpoint(ck);
    engine::Checkpoint old;
    for (const auto& s : src.sections()) {
      if (s.type == engine::SectionType::tensor) {
        old.add_tensor(s.name, s.tensor);
      } else if (s.name == "model_meta") {
        nlohmann::json j = nlohmann::json::parse(s.text);
        j.erase("input");
        old.add_json(s.name, j.dump());
      } else if (s.type == engine::SectionType::json) {
        old.add_json(s.name, s.text);
      } else {
        old.add_text(s.name, s.text);
      }
    }
    engine::write_checkpoint(tmp / "old.ckpt", old);
  }
  const auto o = run_qil("eval " + tmp / "old.ckpt" + " " + data + " --json --progress none --subset 3");
  REQUIRE_MESSAGE(o.code == 0, o.out);
  CHECK_MESSAGE(o.out.find("does not record how its inputs were made") != std::string::npos, o.out);
  CHECK_MESSAGE(o.out.find("--image-size 24 evaluates at that size") != std::string::npos, o.out);
  CHECK(eval_json(o).at("image_size") == 224);
  expect_same_as_training(run_qil("eval " + tmp / "old.ckpt" + " " + data + " --image-size 24 --json --progress none"),
                          row, "an old checkpoint with --image-size 24");

  // Fine-tuning from the checkpoint without --image-size trains at its side, and records it again.
  const auto ft = run_qil("train --model resnet20 " + data + " --init " + ck +
                          " --stages 3 --epochs 1 --batch 16 --val-size 0 --lr 0.01 --progress none --out " +
                          tmp / "ft");
  REQUIRE_MESSAGE(ft.code == 0, ft.out);
  CHECK(nlohmann::json::parse(engine::read_checkpoint(tmp / "ft/last.ckpt").text("model_meta")).at("image_size") == 24);
  expect_same_as_training(run_qil("eval " + tmp / "ft/last.ckpt" + " " + data + " --json --progress none"),
                          last_metrics_row(tmp / "ft/metrics.csv"), "the fine-tuned checkpoint");
}

TEST_CASE("a run trained under 2 ranks: eval in one process gives its figures") {
  if (!have_mpirun()) return;
  ScratchDir tmp;
  write_imagenet_tree(tmp / "tree", 32, 12);
  const std::string data = "--data imagenet --data-dir " + tmp / "tree";
  const auto t = mpi_qil("train --model lenet " + data +
                         " --image-size 20 --stages 4 --epochs 1 --batch 8 --val-size 0 --lr 0.05 --progress none "
                         "--out " + tmp / "mpi");
  REQUIRE_MESSAGE(t.code == 0, t.out);
  const auto row = last_metrics_row(tmp / "mpi/metrics.csv");
  const std::string ev = "eval " + tmp / "mpi/last.ckpt" + " " + data + " --json --progress none";
  expect_same_as_training(run_qil(ev), row, "eval of the 2-rank run");
  expect_same_as_training(run_qil(ev + " --int8"), row, "eval --int8 of the 2-rank run", true);
}

TEST_CASE("no validation split: the epoch line and the summary print no number for it") {
  ScratchDir tmp;
  write_idx_folder(tmp / "idx", 128, 0);
  fs::remove(tmp / "idx/t10k-images-idx3-ubyte");
  fs::remove(tmp / "idx/t10k-labels-idx1-ubyte");
  // Neither a validation hold-out nor a test split.
  const auto r = run_qil("train --model lenet --data idx --data-dir " + tmp / "idx" +
                         " --batch 32 --val-size 0 --epochs 1 --progress none --lr 0.05 --out " + tmp / "run");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK_MESSAGE(r.out.find("val \u2014  test \u2014  lr") != std::string::npos, r.out);
  CHECK(r.out.find("val 0.00%") == std::string::npos);
  CHECK(r.out.find("-1.00") == std::string::npos);
  // The summary row: stage, epochs, then best val, test@best and final test, each "—" in its 10 columns.
  const std::string none = std::string(8, ' ') + "\u2014 ";
  CHECK_MESSAGE(r.out.find("fp32       " + std::string(6, ' ') + "1 " + none + " " + none + " " + none + "\n") !=
                    std::string::npos,
                r.out);
  const auto row = last_metrics_row(tmp / "run/metrics.csv");
  for (const char* col : {"val_loss", "val_top1", "val_top5", "test_loss", "test_top1", "test_top5"}) {
    CAPTURE(col);
    CHECK(row.at(col).empty());
  }
  CHECK(!row.at("train_top1").empty());
  // inspect's page reads those cells as "no figure", not as 0.
  const auto h = run_qil("inspect " + tmp / "run" + " --html " + tmp / "r.html");
  REQUIRE_MESSAGE(h.code == 0, h.out);
  std::ifstream f(tmp / "r.html");
  const std::string page((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(page.find("val top-1 \u2014, test top-1 \u2014, test top-5 \u2014") != std::string::npos);
  CHECK(page.find("val top-1 0.00%") == std::string::npos);
}
