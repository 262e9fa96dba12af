// `qil bench-data` on a tiny ImageNet-style tree written here: it reads the whole tree, reports a positive
// img/s on its last line, counts undecodable files, and a missing folder is an error naming it; `--json` of
// bench-data and bench is one valid JSON object with the documented keys. Never checks a speed: the machine's load is not the test's business.
// bench names the CPU and the load beside its figures, and warns when another task runs as it starts.
#include <stb_image_write.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "apps/machine.h"
#include "quant/registry.h"
#include "run_qil.h"

using qiltest::run_qil;
using qiltest::ScratchDir;
namespace fs = std::filesystem;

namespace {

// root/train/{c0, c1}/img<k>.JPEG, 40x30 JPEGs whose colour depends on the class and the index.
void make_tree_at(const fs::path& root, int per_class) {
  for (int c = 0; c < 2; ++c) {
    const std::string cdir = (root / ("train/c" + std::to_string(c))).string();
    fs::create_directories(cdir);
    for (int k = 0; k < per_class; ++k) {
      std::vector<uint8_t> px(40 * 30 * 3);
      for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(c * 100 + k * 10 + (i % 97));
      const std::string path = cdir + "/img" + std::to_string(k) + ".JPEG";
      REQUIRE(stbi_write_jpg(path.c_str(), 40, 30, 3, px.data(), 90));
    }
  }
}

void make_tree(const ScratchDir& d, int per_class) { make_tree_at(d.path, per_class); }

std::string last_line(const std::string& out) {
  std::string s = out;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  const size_t p = s.rfind('\n');
  return p == std::string::npos ? s : s.substr(p + 1);
}

const std::string kQuick = " --image-size 32 --batch 2 --batches 3 --repeat 2";

}  // namespace

TEST_CASE("bench-data: reads the tree and ends with img/s=<positive value>") {
  ScratchDir d;
  make_tree(d, 3);
  for (const std::string mode : {"--train", "--eval"}) {
    CAPTURE(mode);
    auto r = run_qil("bench-data '" + d.path.string() + "'" + kQuick + " --workers 2 " + mode);
    REQUIRE_MESSAGE(r.code == 0, r.out);
    CHECK_MESSAGE(r.out.find("6 images, 2 classes") != std::string::npos, r.out);
    CHECK_MESSAGE(r.out.find(std::string(mode == "--train" ? "train" : "eval") + " transform @32") != std::string::npos, r.out);
    const std::string last = last_line(r.out);
    REQUIRE_MESSAGE(last.rfind("img/s=", 0) == 0, r.out);
    std::istringstream v(last.substr(6));
    double rate = -1;
    v >> rate;
    CHECK_MESSAGE((!v.fail() && rate > 0), last);
  }
}

TEST_CASE("bench-data: an undecodable file is replaced and counted") {
  ScratchDir d;
  make_tree(d, 2);
  {
    std::ofstream(d / "train/c1/broken.JPEG") << "not a jpeg";
  }
  auto r = run_qil("bench-data '" + d.path.string() + "'" + kQuick);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK_MESSAGE(r.out.find("broken.JPEG") != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find("1 undecodable files were replaced") != std::string::npos, r.out);
  CHECK_MESSAGE(last_line(r.out).rfind("img/s=", 0) == 0, r.out);
}

TEST_CASE("bench-data: a missing folder, or one without train/, is an error naming it") {
  ScratchDir d;
  const std::string missing = d / "no-such-tree";
  auto r = run_qil("bench-data '" + missing + "'");
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.out.find(missing + ": no such folder") != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find("img/s=") == std::string::npos, r.out);

  r = run_qil("bench-data '" + d.path.string() + "'");
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.out.find((d.path / "train").string() + ": no such folder") != std::string::npos, r.out);

  r = run_qil("bench-data '" + d.path.string() + "' --workers 0");
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.out.find("workers") != std::string::npos, r.out);
}

TEST_CASE("bench-data --json: one object with the documented keys, the folder name escaped") {
  ScratchDir d;
  const fs::path root = d.path / "a \"quoted\" tree";  // printf-built JSON broke on this name
  make_tree_at(root, 2);
  auto r = run_qil("bench-data '" + root.string() + "'" + kQuick + " --workers 1 --eval --json");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  const nlohmann::json j = nlohmann::json::parse(last_line(r.out));
  CHECK(j.at("dir") == (root / "train").string());
  CHECK(j.at("images") == 4);
  CHECK(j.at("classes") == 2);
  CHECK(j.at("transform") == "eval");
  CHECK(j.at("image_size") == 32);
  CHECK(j.at("workers") == 1);
  CHECK(j.at("batch") == 2);
  CHECK(j.at("img_per_s").get<double>() > 0);
  CHECK(j.at("img_per_s_per_thread").get<double>() == doctest::Approx(j.at("img_per_s").get<double>()).epsilon(1e-3));
  CHECK(j.size() == 9);
}

TEST_CASE("bench prints the step's GFLOP per image and its share of a given peak") {
  // lenet at 28x28, forward multiply-accumulates: conv1 28·28·32·(1·5·5) = 627,200; conv2 14·14·64·(32·5·5) =
  // 10,035,200; fc1 3136·256 = 802,816; fc2 256·10 = 2,560; sum 11,467,776. A training step counts 3 passes of
  // 2 FLOPs each: 6 · 11,467,776 = 68.8 MFLOP per image.
  auto r = run_qil("bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                   "--warmup 0 --repeat 1 --threads 1 --peak-gflops 1000");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK_MESSAGE(r.out.find("0.07 GFLOP per image") != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find("% of a 1000.0 GFLOP/s peak") != std::string::npos, r.out);
  auto bad = run_qil("bench --model lenet --peak-gflops -5");
  CHECK(bad.code != 0);
  CHECK_MESSAGE(bad.out.find("peak-gflops") != std::string::npos, bad.out);
}

TEST_CASE("bench names the instruction set of the quantizer kernels it ran (every kind)") {
  for (const std::string& kind : quant::quantizer_names()) {
    CAPTURE(kind);
    auto r = run_qil(std::string("bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 "
                                 "--steps 1 --warmup 0 --repeat 1 --threads 1 --quant 4 --quantizer ") +
                     kind);
    REQUIRE_MESSAGE(r.code == 0, r.out);
    CHECK_MESSAGE((r.out.find("quantizer kernels: avx2") != std::string::npos ||
                   r.out.find("quantizer kernels: baseline (sse2)") != std::string::npos),
                  r.out);
  }
  auto fp = run_qil("bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                    "--warmup 0 --repeat 1 --threads 1");
  CHECK(fp.out.find("quantizer kernels") == std::string::npos);  // nothing quantized, nothing to say
}

TEST_CASE("bench --json: one object with the documented keys") {
  auto r = run_qil("bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                   "--warmup 0 --repeat 1 --threads 1 --quant 4 --json");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  const nlohmann::json j = nlohmann::json::parse(last_line(r.out));
  CHECK(j.at("model") == "lenet");
  CHECK(j.at("batch") == 2);
  CHECK(j.at("image_size") == 28);
  CHECK(j.at("quant").is_string());
  CHECK(j.at("quantizer") == "qil");
  CHECK(j.at("threads") == 1);
  CHECK(j.at("img_per_s").get<double>() > 0);
  CHECK(j.at("mode") == "train");  // "infer" / "infer-int8" under --infer [--int8]
    CHECK(j.at("ranks") == 1);
  CHECK(j.at("allreduce") == "none");  // one process averages nothing
  CHECK(j.at("step_ms").get<double>() > 0);
  for (const char* part : {"forward_ms", "backward_ms", "reduce_ms", "update_ms"}) CHECK(j.contains(part));
  CHECK(j.at("buckets") == 0);
  CHECK(j.at("gflops").get<double>() > 0);  // lenet's convolutions and linear layers at 28x28
  CHECK(j.at("peak_pct") == 0);              // no --peak-gflops given
  CHECK(j.at("peak_rss_mib").get<double>() > 0);  // the process's high-water mark
  // The tensors' own high-water mark: below the process's, which also holds the binary and the allocator's caches.
  CHECK(j.at("peak_tensor_mib").get<double>() > 0);
  CHECK(j.at("peak_tensor_mib").get<double>() < j.at("peak_rss_mib").get<double>());
  CHECK(j.at("precision") == "fp32");
  CHECK(j.at("cpu").is_string());                // /proc/cpuinfo's model name, "unknown" where unreadable
  CHECK(j.at("simd").is_string());               // avx2 fma avx512* amx*
  CHECK(j.at("load_before").get<double>() >= 0);  // /proc/loadavg's 1-minute figure
  CHECK(j.at("load_after").get<double>() >= 0);
  CHECK(j.at("others_running").get<int>() >= 0);
  CHECK(j.size() == 27);
  // A network whose step holds hundreds of MiB of activations has a higher mark than a LeNet on two images.
  auto big = run_qil("bench --model resnet20 --batch 64 --image-size 32 --num-classes 10 --steps 1 --warmup 0 "
                     "--repeat 1 --threads 1 --json");
  REQUIRE_MESSAGE(big.code == 0, big.out);
  const nlohmann::json jb = nlohmann::json::parse(last_line(big.out));
  CHECK(jb.at("peak_rss_mib").get<double>() > j.at("peak_rss_mib").get<double>() + 50);
  CHECK(jb.at("peak_tensor_mib").get<double>() > j.at("peak_tensor_mib").get<double>() + 50);
  // Each quantizer runs the benchmark; a full-precision run names none.
  for (const char* kind : {"lsq", "pact", "dorefa"}) {
    auto k = run_qil("bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                     "--warmup 0 --repeat 1 --threads 1 --quant 3 --json --quantizer " + std::string(kind));
    REQUIRE_MESSAGE(k.code == 0, k.out);
    CHECK(nlohmann::json::parse(last_line(k.out)).at("quantizer") == kind);
  }
  auto fp = run_qil("bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                    "--warmup 0 --repeat 1 --threads 1 --json");
  REQUIRE_MESSAGE(fp.code == 0, fp.out);
  CHECK(nlohmann::json::parse(last_line(fp.out)).at("quantizer") == "none");
  auto bad = run_qil("bench --model lenet --image-size 28 --in-channels 1 --steps 1 --quant 4 --quantizer lq");
  CHECK(bad.code != 0);
  CHECK_MESSAGE(bad.out.find("unknown weight quantizer 'lq'") != std::string::npos, bad.out);
}

TEST_CASE("bench --int8-forward: training steps with the integer forward, refused without a quantized train step") {
  const std::string lenet = "bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                            "--warmup 0 --repeat 1 --threads 1 --json";
  auto r = run_qil(lenet + " --quant 4 --int8-forward");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(nlohmann::json::parse(last_line(r.out)).at("mode") == "train-int8-forward");
  for (const std::string& bad : {lenet + " --int8-forward", lenet + " --quant 4 --infer --int8-forward"}) {
    auto b = run_qil(bad);
    CHECK(b.code != 0);
    CHECK_MESSAGE(b.out.find("--int8-forward times training steps of a quantized --quant") != std::string::npos, b.out);
  }
  // Weights quantized, inputs not: no layer can run integers.
  auto w = run_qil(lenet + " --quant w4a32 --int8-forward");
  CHECK(w.code != 0);
  CHECK_MESSAGE(w.out.find("no layer of lenet at --quant w4a32") != std::string::npos, w.out);
}

TEST_CASE("parse_loadavg: the 1-minute load and the runnable tasks other than the reader") {
  apps::HostLoad h = apps::parse_loadavg("0.45 1.44 1.49 3/245 12345\n");
  CHECK(h.load1 == doctest::Approx(0.45));
  CHECK(h.others_running == 2);
  h = apps::parse_loadavg("0.00 0.01 0.05 1/98 77");
  CHECK(h.load1 == 0.0);
  CHECK(h.others_running == 0);
  h = apps::parse_loadavg("2.5 2 2 x/98 77");  // a task count that is not one: the load still reads
  CHECK(h.load1 == doctest::Approx(2.5));
  CHECK(h.others_running == -1);
  h = apps::parse_loadavg("");
  CHECK(h.load1 == -1);
  CHECK(h.others_running == -1);
  CHECK(apps::parse_loadavg("1 1 1 99999999999/5 1").others_running == -1);  // too many digits: not read
}

TEST_CASE("bench prints the CPU and the load, and warns when another task runs as it starts") {
  const std::string args = "bench --model lenet --batch 2 --image-size 28 --in-channels 1 --num-classes 10 --steps 1 "
                           "--warmup 0 --repeat 1 --threads 1";
  qiltest::CmdResult r;
  {
    qiltest::BusyThread busy;  // a runnable task for as long as the benchmark starts
    r = run_qil(args);
  }
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK_MESSAGE(r.out.find("other task(s) running as the benchmark starts") != std::string::npos, r.out);
  CHECK_MESSAGE(r.out.find("cpu: " + apps::cpu_model_name() + " [" + apps::cpu_simd_flags() + "]; load average ") !=
                    std::string::npos,
                r.out);
}

TEST_CASE("wait_policy_hint: advises OMP_WAIT_POLICY=passive only when others run and the policy is unset") {
  qiltest::EnvScope policy("OMP_WAIT_POLICY", nullptr);
  CHECK(apps::wait_policy_hint({0.3, 0}) == "");   // nothing else runs
  CHECK(apps::wait_policy_hint({-1, -1}) == "");   // /proc/loadavg unreadable: say nothing
  const std::string hint = apps::wait_policy_hint({1.5, 2});
  CHECK_MESSAGE(hint.find("2 other task(s)") != std::string::npos, hint);
  CHECK_MESSAGE(hint.find("OMP_WAIT_POLICY=passive") != std::string::npos, hint);
  policy.set("active");  // the user chose a policy: no advice
  CHECK(apps::wait_policy_hint({1.5, 2}) == "");
}
