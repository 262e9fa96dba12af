// Checkpoint and safetensors files: bit-exact round trips, the byte layout against docs/checkpoints.md,
// atomic writes that leave the old file intact, and every kind of damaged file answered by an error that
// names the file and the bad section.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/random.h"
#include "engine/serialize.h"

using namespace engine;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp folder, removed at the end of the test.
struct TempDir {
  TempDir() {
    std::string t = (fs::temp_directory_path() / "qil_test_XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path) / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string path;
};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
void put_u32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

bool bits_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  if (a.dtype() == DType::f32) return std::memcmp(a.data<float>(), b.data<float>(), a.nbytes()) == 0;
  if (a.dtype() == DType::s32) return std::memcmp(a.data<int32_t>(), b.data<int32_t>(), a.nbytes()) == 0;
  if (a.dtype() == DType::u8) return std::memcmp(a.data<uint8_t>(), b.data<uint8_t>(), a.nbytes()) == 0;
  if (a.dtype() == DType::bf16) return std::memcmp(a.data<uint16_t>(), b.data<uint16_t>(), a.nbytes()) == 0;
  return std::memcmp(a.data<int8_t>(), b.data<int8_t>(), a.nbytes()) == 0;
}

Tensor iota(const Shape& s, float start = 0.f) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = start + static_cast<float>(i);
  return t;
}

// The three-section file whose layout the corruption tests rely on (docs/checkpoints.md):
//   header                                                        20 bytes        [0, 20)
//   "alpha": f32 (3, 4): 4+5+1+8+4 = 22 header + 4+2*8+48 = 68     90 bytes        [20, 110)
//            name at 24, crc at 38, payload at 42, dims at 46, data at 62
//   "beta":  text "hello world": 4+4+1+8+4 = 21 + 11               32 bytes        [110, 142)
//            payload at 131
//   "gamma": json {"a":1}: 22 + 7                                  29 bytes        [142, 171)
Checkpoint small_checkpoint() {
  Checkpoint c;
  c.add_tensor("alpha", iota({3, 4}));
  c.add_text("beta", "hello world");
  c.add_json("gamma", "{\"a\":1}");
  return c;
}

}  // namespace

TEST_CASE("checkpoint round trip: tensors bit-exact, text and JSON sections, order kept") {
  TempDir dir;
  Checkpoint c;
  Tensor special = Tensor::from_vector({0.f, -0.f, std::numeric_limits<float>::infinity(),
                                        std::numeric_limits<float>::quiet_NaN(), 1e-40f /* denormal */,
                                        std::numeric_limits<float>::max(), -3.25f, 1.f / 3.f},
                                       {2, 2, 2});
  Generator g(3);
  Tensor big = Tensor::empty({64, 3, 3, 3});
  for (int64_t i = 0; i < big.numel(); ++i) big.data()[i] = g.normal();
  Tensor labels = Tensor::empty({5}, DType::s32);
  for (int i = 0; i < 5; ++i) labels.data<int32_t>()[i] = -7 + 1000000 * i;
  Tensor bytes = Tensor::empty({3}, DType::u8);
  bytes.data<uint8_t>()[0] = 0; bytes.data<uint8_t>()[1] = 128; bytes.data<uint8_t>()[2] = 255;
  Tensor half = Tensor::empty({2}, DType::bf16);
  half.data<uint16_t>()[0] = 0x3f80; half.data<uint16_t>()[1] = 0xc049;
  c.add_tensor("model.special", special);
  c.add_tensor("model.conv1.weight", big);
  c.add_tensor("labels", labels);
  c.add_tensor("bytes", bytes);
  c.add_tensor("bf16", half);
  c.add_tensor("scalar", Tensor::scalar(2.5f));
  c.add_tensor("empty", Tensor::zeros({0, 3}));
  const std::string binary("a\0b\xff\n", 5);
  c.add_text("rng", binary);
  c.add_json("config", R"({"lr": 0.1, "stages": [32, 4, 2]})");
  c.add_text("note", "");

  const std::string path = dir.file("run.ckpt");
  write_checkpoint(path, c);
  Checkpoint r = read_checkpoint(path);
  REQUIRE(r.sections().size() == c.sections().size());
  for (size_t i = 0; i < c.sections().size(); ++i) {
    const Section& a = c.sections()[i];
    const Section& b = r.sections()[i];
    CHECK(a.name == b.name);
    CHECK(a.type == b.type);
    if (a.type == SectionType::tensor) CHECK_MESSAGE(bits_equal(a.tensor, b.tensor), a.name);
    else CHECK(a.text == b.text);
  }
  CHECK(r.text("rng") == binary);
  CHECK(r.tensor("scalar").shape().empty());
  CHECK(r.tensor("scalar").item() == 2.5f);
  NamedTensors model = r.tensors("model.");
  REQUIRE(model.size() == 2);
  CHECK(model[0].first == "special");
  CHECK(model[1].first == "conv1.weight");
  CHECK_THROWS_WITH_AS(r.tensor("missing"), doctest::Contains("no section 'missing'"), Error);
  CHECK_THROWS_WITH_AS(r.tensor("config"), doctest::Contains("'config' is json, not a tensor"), Error);
  CHECK_THROWS_WITH_AS(r.text("labels"), doctest::Contains("'labels' is a tensor"), Error);

  // Writing again replaces the file.
  Checkpoint c2;
  c2.add_text("only", "x");
  write_checkpoint(path, c2);
  CHECK(read_checkpoint(path).sections().size() == 1);
  CHECK(dir.entries() == std::vector<std::string>{"run.ckpt"});  // no temporary file left
}

TEST_CASE("checkpoint sections are validated when added") {
  Checkpoint c;
  c.add_text("a", "x");
  CHECK_THROWS_WITH_AS(c.add_tensor("a", Tensor::zeros({1})), doctest::Contains("section 'a' added twice"), Error);
  CHECK_THROWS_WITH_AS(c.add_json("j", "{oops"), doctest::Contains("section 'j' is not valid JSON"), Error);
  CHECK_THROWS_WITH_AS(c.add_tensor("u", Tensor()), doctest::Contains("'u' is undefined"), Error);
  CHECK_THROWS_AS(c.add_text("", "x"), Error);
}

TEST_CASE("checkpoint byte layout matches the documented format") {
  TempDir dir;
  const std::string path = dir.file("a.ckpt");
  write_checkpoint(path, small_checkpoint());
  const std::vector<uint8_t> b = read_bytes(path);
  REQUIRE(b.size() == 171);
  CHECK(std::memcmp(b.data(), "QILCKPT\0", 8) == 0);
  CHECK(b[8] == 1);  // version 1, little-endian
  CHECK(b[12] == 3);  // three sections
  CHECK(crc32(0, b.data(), 16) == (b[16] | b[17] << 8 | b[18] << 16 | static_cast<uLong>(b[19]) << 24));
  CHECK(b[20] == 5);
  CHECK(std::memcmp(&b[24], "alpha", 5) == 0);
  CHECK(b[29] == 1);   // tensor
  CHECK(b[30] == 68);  // payload length
  CHECK(b[42] == 0);   // f32
  CHECK(b[44] == 2);   // ndim
  CHECK(b[46] == 3);
  CHECK(b[54] == 4);
  float f;
  std::memcpy(&f, &b[62 + 4 * 5], 4);
  CHECK(f == 5.f);
  CHECK(std::memcmp(&b[131], "hello world", 11) == 0);
  CHECK(std::memcmp(&b[164], "{\"a\":1}", 7) == 0);
}

TEST_CASE("a failing write leaves the old file intact and no temporary file behind") {
  TempDir dir;
  const std::string path = dir.file("model.ckpt");
  write_checkpoint(path, small_checkpoint());
  const std::vector<uint8_t> before = read_bytes(path);

  // A write that fails half-way: a file size limit below the new checkpoint's size makes write() fail with
  // EFBIG (this works even for root, for whom permission bits do not stop a write).
  Checkpoint big;
  big.add_tensor("w", Tensor::zeros({100000}));
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string err;
  try {
    write_checkpoint(path, big);
  } catch (const Error& e) {
    err = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  CHECK(err.find("checkpoint " + path + ": write failed") != std::string::npos);
  CHECK(read_bytes(path) == before);
  CHECK(dir.entries() == std::vector<std::string>{"model.ckpt"});
  CHECK(read_checkpoint(path).text("beta") == "hello world");
}

// Sets a test-only fault for the lifetime of the guard (engine/serialize.cpp: QIL_TEST_FAIL_WRITE).
struct FaultGuard {
  explicit FaultGuard(const char* spec) { ::setenv("QIL_TEST_FAIL_WRITE", spec, 1); }
  ~FaultGuard() { ::unsetenv("QIL_TEST_FAIL_WRITE"); }
};

std::string write_error(const std::string& path, const Checkpoint& c) {
  try {
    write_checkpoint(path, c);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("a full disk or a failing device while saving: a clear error, the old file loadable, nothing left") {
  TempDir dir;
  const std::string path = dir.file("last.ckpt");
  write_checkpoint(path, small_checkpoint());
  const std::vector<uint8_t> before = read_bytes(path);
  Checkpoint big;
  big.add_tensor("w", Tensor::zeros({100000}));
  struct Case {
    const char* spec;
    const char* message;
  };
  // The first write of each value fails: mid-file (short, then ENOSPC), or at fsync (EIO: the file was
  // shorter than the byte count), as the kernel reports a full disk or a failing device.
  for (const Case& c : {Case{"1:1000:ENOSPC", "write failed: No space left on device"},
                        Case{"1:0:EDQUOT", "write failed: Disk quota exceeded"},
                        Case{"1:99999999:EIO", "fsync failed: Input/output error"}}) {
    INFO(c.spec);
    FaultGuard fault(c.spec);
    const std::string err = write_error(path, big);
    CHECK(err.find("checkpoint " + path + ": " + c.message) != std::string::npos);
    CHECK(err.find("(" + path + " was not changed)") != std::string::npos);
    CHECK(read_bytes(path) == before);
    CHECK(dir.entries() == std::vector<std::string>{"last.ckpt"});
    CHECK(read_checkpoint(path).text("beta") == "hello world");
    CHECK(write_error(path, small_checkpoint()).empty());  // only the first write of the value fails
  }
  {
    FaultGuard fault("2:10:EIO");  // the second write fails, the first goes through
    CHECK(write_error(dir.file("a.ckpt"), small_checkpoint()).empty());
    CHECK(write_error(dir.file("b.ckpt"), small_checkpoint()).find("Input/output error") != std::string::npos);
    CHECK(dir.entries() == std::vector<std::string>{"a.ckpt", "last.ckpt"});
  }
  FaultGuard bad("sometimes");
  CHECK(write_error(path, small_checkpoint()).find("QIL_TEST_FAIL_WRITE must be N:BYTES:ERR") != std::string::npos);
}

TEST_CASE("small files written atomically, temporary files of killed writers are removed, live ones kept") {
  TempDir dir;
  write_file_atomic(dir.file("config.toml"), "a = 1\n", "config");
  write_file_atomic(dir.file("config.toml"), "a = 2\n", "config");
  CHECK(read_bytes(dir.file("config.toml")) == std::vector<uint8_t>{'a', ' ', '=', ' ', '2', '\n'});
  CHECK_THROWS_WITH_AS(write_file_atomic(dir.file("nowhere/config.toml"), "", "config"),
                       doctest::Contains(("config " + dir.file("nowhere/config.toml") + ": cannot create").c_str()), Error);
  // A pid above the kernel's limit (at most 2^22) is never running; this process and its parent are.
  const std::string dead = "last.ckpt.tmp.999999999.3", mine = "best.ckpt.tmp." + std::to_string(::getpid()) + ".0",
                    parent = "x.safetensors.tmp." + std::to_string(::getppid()) + ".1";
  for (const std::string& f : {dead, mine, parent, std::string("notes.tmp"), std::string("a.tmp.b.c")})
    write_bytes(dir.file(f), {1, 2, 3});
  CHECK(remove_stale_temp_files(dir.path) == std::vector<std::string>{dead});
  CHECK(dir.entries() == std::vector<std::string>{"a.tmp.b.c", mine, "config.toml", "notes.tmp", parent});
  CHECK(remove_stale_temp_files(dir.file("missing")).empty());
}

TEST_CASE("writes into a missing or read-only folder fail naming it") {
  CHECK_THROWS_WITH_AS(write_checkpoint("/nonexistent_qil_dir/x.ckpt", small_checkpoint()),
                       doctest::Contains("cannot create a temporary file in folder /nonexistent_qil_dir"), Error);
  // /proc refuses new files even to root.
  CHECK_THROWS_WITH_AS(write_checkpoint("/proc/x.ckpt", small_checkpoint()),
                       doctest::Contains("checkpoint /proc/x.ckpt: cannot create a temporary file in folder /proc"),
                       Error);
  if (::geteuid() != 0) {  // permission bits only bind other users
    TempDir dir;
    fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
    CHECK_THROWS_WITH_AS(write_checkpoint(dir.file("x.ckpt"), small_checkpoint()),
                         doctest::Contains(("in folder " + dir.path).c_str()), Error);
  }
  // A target that is a folder or a FIFO: refused before a temporary file is made (the rename would fail on
  // the folder and replace the FIFO, or a device node, by a regular file).
  TempDir dir;
  fs::create_directory(dir.file("sub"));
  CHECK_THROWS_WITH_AS(write_checkpoint(dir.file("sub"), small_checkpoint()),
                       doctest::Contains("sub: not a regular file (a directory)"), Error);
  REQUIRE(mkfifo(dir.file("fifo").c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(write_checkpoint(dir.file("fifo"), small_checkpoint()),
                       doctest::Contains("fifo: not a regular file (a FIFO)"), Error);
  CHECK(fs::is_fifo(dir.file("fifo")));
  // Read, a FIFO is refused at once instead of blocking until a writer comes.
  CHECK_THROWS_WITH_AS(engine::read_checkpoint(dir.file("fifo")),
                       doctest::Contains(("checkpoint " + dir.file("fifo") + ": not a regular file (a FIFO)").c_str()),
                       Error);
  CHECK(dir.entries() == std::vector<std::string>{"fifo", "sub"});
}

TEST_CASE("truncated checkpoints: the error names the file and the section") {
  TempDir dir;
  const std::string good = dir.file("good.ckpt");
  write_checkpoint(good, small_checkpoint());
  const std::vector<uint8_t> b = read_bytes(good);
  const std::string path = dir.file("cut.ckpt");
  struct Case {
    size_t size;
    const char* expect;
  };
  const Case cases[] = {
      {0, "empty file"},
      {5, "not a qil checkpoint (bad magic)"},                                           // not even the magic
      {15, "truncated: the file header"},
      {20, "section 0: truncated: the section header"},           // header only
      {30, "section 0: truncated: the section header"},           // inside alpha's header
      {60, "section 0 'alpha': truncated: the section data"},     // inside alpha's data
      {110, "section 1: truncated: the section header"},          // exactly after alpha
      {135, "section 1 'beta': truncated: the section data"},
      {170, "section 2 'gamma': truncated: the section data"},    // one byte short
  };
  for (const Case& c : cases) {
    write_bytes(path, std::vector<uint8_t>(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(c.size)));
    CHECK_THROWS_WITH_AS(read_checkpoint(path), doctest::Contains(("checkpoint " + path + ": " + c.expect).c_str()), Error);
  }
  std::vector<uint8_t> longer = b;
  longer.push_back(0);
  write_bytes(path, longer);
  CHECK_THROWS_WITH_AS(read_checkpoint(path), doctest::Contains("1 unexpected bytes after the last of 3 sections"),
                       Error);
}

TEST_CASE("corrupt checkpoints: flipped bytes, wrong magic, newer version, garbage") {
  TempDir dir;
  const std::string good = dir.file("good.ckpt");
  write_checkpoint(good, small_checkpoint());
  const std::vector<uint8_t> b = read_bytes(good);
  const std::string path = dir.file("bad.ckpt");
  auto expect_error = [&](std::vector<uint8_t> bytes, const std::string& what) {
    write_bytes(path, bytes);
    CHECK_THROWS_WITH_AS(read_checkpoint(path), doctest::Contains(("checkpoint " + path + ": " + what).c_str()), Error);
  };
  auto flipped = [&](size_t at) {
    std::vector<uint8_t> c = b;
    c[at] ^= 0x10;
    return c;
  };
  expect_error(flipped(100), "section 0 'alpha': checksum mismatch");  // a float in alpha's data
  expect_error(flipped(46), "section 0 'alpha': checksum mismatch");   // alpha's first dimension
  expect_error(flipped(135), "section 1 'beta': checksum mismatch");
  expect_error(flipped(165), "section 2 'gamma': checksum mismatch");
  expect_error(flipped(12), "header checksum mismatch");               // the section count
  expect_error(flipped(0), "not a qil checkpoint (bad magic)");

  std::vector<uint8_t> newer = b;
  put_u32(newer, 8, 2);
  expect_error(newer, "format version 2 is newer than this build reads (1)");

  Generator g(11);
  std::vector<uint8_t> garbage(1000);
  for (auto& x : garbage) x = static_cast<uint8_t>(g.next_u64());
  expect_error(garbage, "not a qil checkpoint (bad magic)");
  // A valid header followed by garbage: caught by a length check or a checksum, never a crash.
  std::vector<uint8_t> tail(b.begin(), b.begin() + 20);
  tail.insert(tail.end(), garbage.begin(), garbage.end());
  expect_error(tail, "section 0");

  // A crafted section with a correct CRC but a shape that does not match its data: alpha claims (4, 4).
  std::vector<uint8_t> forged = b;
  forged[46] = 4;
  uLong crc = crc32(0, &forged[20], 18);
  crc = crc32(crc, &forged[42], 68);
  put_u32(forged, 38, static_cast<uint32_t>(crc));
  expect_error(forged, "section 0 'alpha': shape [4, 4] of f32 needs 64 data bytes, the section holds 48");

  CHECK_THROWS_WITH_AS(read_checkpoint(dir.file("absent.ckpt")), doctest::Contains("absent.ckpt: cannot open"),
                       Error);
  CHECK_THROWS_WITH_AS(read_checkpoint(dir.path), doctest::Contains("not a regular file"), Error);
}

// ---- safetensors ----

namespace {
// A safetensors file assembled by hand from a header string and a data buffer, as the format describes.
void write_st(const std::string& path, const std::string& header, const std::vector<uint8_t>& data,
              uint64_t claimed_len = UINT64_MAX) {
  std::vector<uint8_t> b(8);
  const uint64_t n = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(n >> (8 * i));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  write_bytes(path, b);
}
std::vector<uint8_t> floats(std::vector<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
}  // namespace

TEST_CASE("safetensors round trip with metadata, and the file follows the format") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  Tensor w = iota({2, 3}, -1.5f), b = Tensor::from_vector({0.25f}, {1});
  write_safetensors(path, {{"fc.weight", w}, {"fc.bias", b}}, {{"format", "pt"}, {"qil.stage", "w4a4"}});
  SafeTensors r = read_safetensors(path);
  REQUIRE(r.tensors.size() == 2);
  CHECK(r.tensors[0].first == "fc.weight");
  CHECK(bits_equal(r.tensors[0].second, w));
  CHECK(r.tensors[1].first == "fc.bias");
  CHECK(bits_equal(r.tensors[1].second, b));
  CHECK(r.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"qil.stage", "w4a4"}});

  // Independent look at the bytes: u64 header length, JSON header, data 8-byte aligned.
  const std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  CHECK(n % 8 == 0);
  REQUIRE(bytes.size() == 8 + n + 7 * 4);
  nlohmann::json h = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  CHECK(h["fc.weight"]["dtype"] == "F32");
  CHECK(h["fc.weight"]["shape"] == nlohmann::json::array({2, 3}));
  CHECK(h["fc.weight"]["data_offsets"] == nlohmann::json::array({0, 24}));
  CHECK(h["fc.bias"]["data_offsets"] == nlohmann::json::array({24, 28}));
  CHECK(h["__metadata__"]["format"] == "pt");
  float last;
  std::memcpy(&last, &bytes[8 + n + 24], 4);
  CHECK(last == 0.25f);
}

TEST_CASE("safetensors written by another tool: offsets out of order, I64 counters, no metadata") {
  TempDir dir;
  const std::string path = dir.file("ext.safetensors");
  // "b" is listed first but stored second; "n" is PyTorch's num_batches_tracked (I64, shape []).
  std::vector<uint8_t> data = floats({1.f, 2.f, 3.f, 4.f, 5.f});
  const int64_t steps = 1234;
  data.insert(data.end(), reinterpret_cast<const uint8_t*>(&steps), reinterpret_cast<const uint8_t*>(&steps) + 8);
  write_st(path,
           R"({"b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]},)"
           R"("a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},)"
           R"("n":{"dtype":"I64","shape":[],"data_offsets":[20,28]}})",
           data);
  SafeTensors r = read_safetensors(path);
  REQUIRE(r.tensors.size() == 3);
  CHECK(r.tensors[0].first == "a");
  CHECK(r.tensors[0].second.shape() == Shape{2, 1});
  CHECK(r.tensors[0].second.to_vector() == std::vector<float>{1.f, 2.f});
  CHECK(r.tensors[1].second.to_vector() == std::vector<float>{3.f, 4.f, 5.f});
  CHECK(r.tensors[2].second.dtype() == DType::s32);
  CHECK(r.tensors[2].second.data<int32_t>()[0] == 1234);
  CHECK(r.metadata.empty());
}

TEST_CASE("safetensors F16 tensors are read as f32, exactly, special values included") {
  TempDir dir;
  const std::string path = dir.file("half.safetensors");
  // binary16 bit patterns and their values: 1, -2, 65504 (largest), 2^-14 (smallest normal), 2^-24 (smallest
  // subnormal), 1023 * 2^-24 (largest subnormal), -0, +inf, -inf; then a NaN.
  const std::vector<uint16_t> bits = {0x3c00, 0xc000, 0x7bff, 0x0400, 0x0001, 0x03ff, 0x8000, 0x7c00, 0xfc00, 0x7e00};
  const std::vector<float> want = {1.f, -2.f, 65504.f, std::ldexp(1.f, -14), std::ldexp(1.f, -24),
                                   1023.f * std::ldexp(1.f, -24), -0.f, INFINITY, -INFINITY};
  std::vector<uint8_t> data(bits.size() * 2);
  for (size_t i = 0; i < bits.size(); ++i) {
    data[2 * i] = static_cast<uint8_t>(bits[i] & 0xff);
    data[2 * i + 1] = static_cast<uint8_t>(bits[i] >> 8);
  }
  write_st(path, R"({"h":{"dtype":"F16","shape":[2,5],"data_offsets":[0,20]}})", data);
  SafeTensors r = read_safetensors(path);
  REQUIRE(r.tensors.size() == 1);
  const Tensor& t = r.tensors[0].second;
  CHECK(t.dtype() == DType::f32);
  CHECK(t.shape() == Shape{2, 5});
  const std::vector<float> got = t.to_vector();
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(got[i] == want[i]);
    CHECK(std::signbit(got[i]) == std::signbit(want[i]));
  }
  CHECK(std::isnan(got[9]));
  // The byte count is checked against F16's 2 bytes per element, not the f32 it becomes.
  write_st(path, R"({"h":{"dtype":"F16","shape":[2,5],"data_offsets":[0,40]}})", std::vector<uint8_t>(40));
  CHECK_THROWS_WITH_AS(read_safetensors(path), doctest::Contains("hold 40 bytes but F16 shape [2, 5] needs 20"), Error);
}

TEST_CASE("malformed safetensors files are rejected, naming the file and the problem") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const std::vector<uint8_t> d8 = floats({1.f, 2.f});
  auto expect_error = [&](const std::string& header, const std::vector<uint8_t>& data, const std::string& what,
                          uint64_t claimed = UINT64_MAX) {
    write_st(path, header, data, claimed);
    CHECK_THROWS_WITH_AS(read_safetensors(path), doctest::Contains(("safetensors " + path + ": " + what).c_str()), Error);
  };
  const std::string ok = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_error(ok, d8, "header length 1000 is larger than the file", 1000);
  expect_error(ok, d8, "header length 18446744073709551614 is larger", UINT64_MAX - 1);
  expect_error(R"({"x":{"dtype":"F32",)", d8, "header is not valid JSON");
  expect_error("[1,2]", {}, "header is not a JSON object");
  expect_error(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", d8,
               "tensor 'x' data_offsets [0, 16) out of range of the 8-byte data buffer");
  expect_error(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8, "tensor 'x' data_offsets [8, 0)");
  expect_error(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8,
               "tensor 'x': data_offsets [0, 8) hold 8 bytes but F32 shape [3] needs 12");
  expect_error(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
               R"("y":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
               d8, "tensor 'y' starts at 0, expected 4 (overlaps the previous tensor)");
  expect_error(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8, "tensor 'x' starts at 4, expected 0 (gap in the data buffer)");
  expect_error(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", d8,
               "the tensors cover 4 bytes of a 8-byte data buffer");
  expect_error(R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", d8, "tensor 'x': unsupported dtype F64");
  expect_error(R"({"x":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", d8,
               "tensor 'x': unsupported dtype F8_E4M3");
  expect_error(ok, d8, "header length 10000000000 is larger than the file", 10'000'000'000ULL);
  expect_error(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8,
               "tensor 'x': shape entry -2 is not a non-negative integer");
  expect_error(R"({"x":{"dtype":"F32","shape":[2]}})", d8, "tensor 'x': \"data_offsets\" must be");
  expect_error(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", d8,
               "tensor 'x': shape [4294967296, 4294967296] overflows");
  expect_error(R"({"__metadata__":{"k":1}})", {}, "metadata 'k' is not a string");
  std::vector<uint8_t> big_i64(8);
  const int64_t huge = int64_t(1) << 40;
  std::memcpy(big_i64.data(), &huge, 8);
  expect_error(R"({"n":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", big_i64,
               "tensor 'n': I64 value 1099511627776 at element 0 does not fit in 32 bits");

  write_bytes(path, {1, 2, 3});
  CHECK_THROWS_WITH_AS(read_safetensors(path), doctest::Contains("file of 3 bytes is too short"), Error);
  write_bytes(path, {});
  CHECK_THROWS_WITH_AS(read_safetensors(path), doctest::Contains("file of 0 bytes"), Error);
  CHECK_THROWS_WITH_AS(write_safetensors(path, {{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}),
                       doctest::Contains("tensor 'a' given twice"), Error);
}
