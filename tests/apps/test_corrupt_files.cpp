// Every reader of outside files against damaged input: the fuzzers' committed corpora replayed through the
// product build (tests/fuzz/corpus/, written by scripts/fuzz.sh and tests/fuzz/make_seeds.py), and a generated
// corpus of a few thousand damaged files (every truncation, a flipped byte at every position, appended
// garbage, each format fed to every other reader). Each must be read or refused with an engine::Error naming
// the file; under scripts/sanitize.sh, with no sanitizer report. Not the fuzzing itself (scripts/fuzz.sh).
#include <doctest/doctest.h>

#include "test_paths.h"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>

#include "apps/config.h"
#include "apps/npy.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "data/image.h"
#include "engine/serialize.h"
#include "export_fixtures.h"

namespace {

namespace fs = std::filesystem;
using exporttest::read_bytes;
using exporttest::TempDir;
using exporttest::write_bytes;

// One reader per fuzz target; `path` holds the input (for idx, as the fuzz target cuts it: two little-endian
// bytes giving the images file's length, the images file, the labels file).
using Reader = std::function<void(const std::string& path)>;

void read_idx_input(const std::string& path) {
  const std::string in = read_bytes(path);
  if (in.size() < 2) throw engine::Error(path + ": shorter than the two length bytes");
  const size_t cut = std::min(in.size() - 2, size_t(uint8_t(in[0]) | (uint8_t(in[1]) << 8)));
  write_bytes(path + "-images", in.substr(2, cut));
  write_bytes(path + "-labels", in.substr(2 + cut));
  (void)data::load_idx_pair(path + "-images", path + "-labels");
}

void read_cifar_input(const std::string& path) {  // as the fuzz target: the first byte picks the format
  const std::string in = read_bytes(path);
  if (in.empty()) throw engine::Error(path + ": no format byte");
  write_bytes(path + "-data", in.substr(1));
  if (in[0] & 1)
    (void)data::load_cifar100_file(path + "-data");
  else
    (void)data::load_cifar10_file(path + "-data");
}

void read_config_input(const std::string& path) {
  CLI::App app;
  apps::TrainConfig cfg;
  apps::add_train_flags(app, cfg);
  app.parse(std::vector<std::string>{});
  apps::read_config_file(path, app, cfg);
}

const std::map<std::string, Reader>& readers() {
  static const std::map<std::string, Reader> r = {
      {"checkpoint", [](const std::string& p) { (void)engine::read_checkpoint(p); }},
      {"safetensors", [](const std::string& p) { (void)engine::read_safetensors(p); }},
      {"npy", [](const std::string& p) { (void)apps::read_npy(p); }},
      {"idx", read_idx_input},
      {"cifar", read_cifar_input},
      {"image",
       [](const std::string& p) {
         const std::vector<uint8_t> b = data::read_file(p, 1 << 20);
         (void)data::decode_image(b.data(), b.size(), p, int64_t(1) << 20);
       }},
      {"config", read_config_input},
  };
  return r;
}

// Reads `path` with `reader`: true if read, false if refused with an error naming the file. Anything else
// (another exception type, an error that does not say which file) fails the test.
bool read_or_refuse(const Reader& reader, const std::string& path, const std::string& what) {
  try {
    reader(path);
    return true;
  } catch (const engine::Error& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find(path) != std::string::npos, what, ": the error does not name the file: ", msg);
    return false;
  } catch (const std::exception& e) {
    FAIL(what, ": not a clean refusal: ", typeid(e).name(), ": ", e.what());
    return false;
  }
}

fs::path corpus_root() {
  return fs::path(testpaths::source_dir()) / "tests" / "fuzz" / "corpus";
}

std::string seed(const std::string& target) {
  for (const auto& e : fs::directory_iterator(corpus_root() / target)) {
    if (e.path().filename().string().rfind("seed-", 0) == 0) return read_bytes(e.path().string());
  }
  FAIL("no seed-* file in tests/fuzz/corpus/", target);
  return "";
}

}  // namespace

TEST_CASE("the fuzzers' corpora replay cleanly through the product's readers, and the seeds read without error") {
  TempDir dir;
  int files = 0;
  for (const auto& [target, reader] : readers()) {
    for (const auto& e : fs::directory_iterator(corpus_root() / target)) {
      const std::string name = e.path().filename().string();
      const std::string path = dir.file(target + "-" + name);
      write_bytes(path, read_bytes(e.path().string()));
      const bool ok = read_or_refuse(reader, path, target + "/" + name);
      if (name.rfind("seed-", 0) == 0) CHECK_MESSAGE(ok, target, "/", name, " is a seed and must read");
      ++files;
    }
  }
  CHECK(files >= 7);
}

TEST_CASE("damaged files: every truncation, a flipped byte anywhere, garbage appended, foreign formats") {
  TempDir dir;
  int cases = 0, refused = 0;
  std::map<std::string, std::string> seeds;
  for (const auto& [target, reader] : readers()) seeds[target] = seed(target);
  for (const auto& [target, reader] : readers()) {
    const std::string good = seeds[target];
    const std::string path = dir.file("input-" + target);
    // Checkpoints checksum every byte and forbid trailing bytes: every damage must be refused. The other
    // formats carry no checksum (a flipped pixel or a shorter TOML file can be valid): read or refused.
    const bool strict = target == "checkpoint";
    auto attempt = [&](const std::string& bytes, const std::string& what) {
      write_bytes(path, bytes);
      const bool ok = read_or_refuse(reader, path, target + " " + what);
      if (strict) CHECK_MESSAGE(!ok, target, " ", what, " was read");
      ++cases;
      refused += !ok;
    };
    // Every byte position of the small seeds; about 600 evenly spread positions of the larger ones (CIFAR's).
    const size_t stride = std::max<size_t>(1, good.size() / 600);
    for (size_t n = 0; n < good.size(); n += stride) attempt(good.substr(0, n), "truncated to " + std::to_string(n));
    for (size_t i = 0; i < good.size(); i += stride) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ 0x5A);
      attempt(bad, "byte " + std::to_string(i) + " flipped");
    }
    attempt(good + std::string(1, '\xff'), "one byte appended");
    attempt(good + std::string(4096, '\x7f'), "4 KB appended");
    for (const auto& [other, bytes] : seeds) {
      if (other != target) attempt(bytes, "given a " + other + " file");
    }
  }
  CHECK(cases >= 100);
  CHECK(refused >= 100);
  MESSAGE(cases, " damaged inputs, ", refused, " refused, the rest read");
}
