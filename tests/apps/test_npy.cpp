// .npy files: bit-exact round trips, the header bytes against the NumPy format description (written out by
// hand here), both readable format versions, and malformed files answered by errors naming the file and the
// problem.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "apps/npy.h"
#include "export_fixtures.h"

using namespace exporttest;
using engine::Tensor;

namespace {

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// The NumPy format: "\x93NUMPY", major, minor, header length (u16 LE in 1.0, u32 LE in 2.0), the header dict
// as ASCII padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes.
std::string npy_file(const std::string& dict, const std::string& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  header.append((64 - (prefix + dict.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  const size_t n = header.size();
  out += static_cast<char>(n & 0xff);
  out += static_cast<char>((n >> 8) & 0xff);
  if (major == 2) {
    out += static_cast<char>((n >> 16) & 0xff);
    out += static_cast<char>((n >> 24) & 0xff);
  }
  return out + header + data;
}

const std::string kDict23 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

}  // namespace

TEST_CASE("npy: round trip is bit-exact for several shapes") {
  TempDir dir;
  for (const engine::Shape& shape : {engine::Shape{2, 3, 4, 5}, engine::Shape{7}, engine::Shape{}, engine::Shape{3, 1}}) {
    Tensor t = random_tensor(shape, 5);
    if (t.numel() > 1) {
      t.data()[0] = -0.f;
      t.data()[1] = std::numeric_limits<float>::infinity();
    }
    const std::string path = dir.file("a.npy");
    apps::write_npy(path, t);
    Tensor r = apps::read_npy(path);
    CHECK(r.shape() == shape);
    REQUIRE(r.numel() == t.numel());
    CHECK(std::memcmp(r.data(), t.data(), t.nbytes()) == 0);
    // The data starts on a 64-byte boundary.
    CHECK((read_bytes(path).size() - t.nbytes()) % 64 == 0);
  }
}

TEST_CASE("npy: header bytes follow the format description") {
  // kDict23 is 59 characters; 10 (preamble) + 59 + 1 (newline) = 70, so 58 spaces pad the header to 128
  // bytes and the header length field is 128 - 10 = 118 = 0x76.
  REQUIRE(kDict23.size() == 59);
  std::string expected = std::string("\x93NUMPY\x01\x00\x76\x00", 10) + kDict23 + std::string(58, ' ') + "\n";
  REQUIRE(expected.size() == 128);
  CHECK(apps::npy_header_v1({2, 3}) == expected);

  // Python's tuple repr: one element keeps its comma, zero elements are ().
  CHECK(apps::npy_header_v1({5}).find("'shape': (5,), }") != std::string::npos);
  CHECK(apps::npy_header_v1({}).find("'shape': (), }") != std::string::npos);

  TempDir dir;
  const std::vector<float> v{1.f, -2.f, 0.5f, 3.25f, -0.125f, 1e-3f};
  Tensor t = Tensor::from_vector(v, {2, 3});
  apps::write_npy(dir.file("w.npy"), t);
  CHECK(read_bytes(dir.file("w.npy")) == expected + f32_bytes(v));

  // A hand-made file reads back to the same values.
  write_bytes(dir.file("h.npy"), expected + f32_bytes(v));
  Tensor r = apps::read_npy(dir.file("h.npy"));
  CHECK(r.shape() == engine::Shape{2, 3});
  CHECK(r.to_vector() == v);
}

TEST_CASE("npy: version 2.0 and other valid spellings of the header are read") {
  TempDir dir;
  const std::vector<float> v{1.f, 2.f, 3.f};
  write_bytes(dir.file("v2.npy"), npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                                           f32_bytes(v), 2));
  CHECK(apps::read_npy(dir.file("v2.npy")).to_vector() == v);
  // Any key order, double quotes, no trailing comma, extra spaces.
  write_bytes(dir.file("order.npy"),
              npy_file("{ \"shape\" : ( 1 , 3 ) , 'fortran_order':False,'descr':'<f4'}", f32_bytes(v)));
  Tensor r = apps::read_npy(dir.file("order.npy"));
  CHECK(r.shape() == engine::Shape{1, 3});
  CHECK(r.to_vector() == v);
}

TEST_CASE("npy: malformed files are errors naming the file and the problem") {
  TempDir dir;
  const std::string p = dir.file("bad.npy");
  const std::string data6 = f32_bytes({1, 2, 3, 4, 5, 6});
  auto fails_with = [&](const std::string& bytes, const std::string& what) {
    write_bytes(p, bytes);
    check_error([&] { apps::read_npy(p); }, {p, what});
  };
  fails_with("", "too short");
  fails_with(std::string("\x93NUMPZ\x01\x00\x76\x00", 10) + kDict23 + std::string(58, ' ') + "\n" + data6,
             "bad magic");
  fails_with("PK\x03\x04 this is a zip archive", "bad magic");
  std::string v3 = npy_file(kDict23, data6);
  v3[6] = 3;
  fails_with(v3, "version 3.0");
  fails_with(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", data6 + data6),
             "dtype '<f8'");
  fails_with(npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", data6), "dtype '>f4'");
  fails_with(npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", data6), "dtype '<i4'");
  fails_with(npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data6), "Fortran");
  fails_with(npy_file(kDict23, data6.substr(0, 20)), "truncated data");
  fails_with(npy_file(kDict23, data6 + data6), "does not match shape");
  fails_with(npy_file(kDict23, data6).substr(0, 50), "truncated header");
  fails_with(npy_file("{'descr': '<f4', 'shape': (2, 3), }", data6), "lacks");
  fails_with(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", data6),
             "unexpected key 'x'");
  fails_with(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", data6), "malformed header");
  fails_with(npy_file("{'descr': '<f4', 'fortran_order': maybe, 'shape': (2, 3), }", data6), "True or False");
  fails_with(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", data6), "malformed header");
  fails_with(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk", data6), "after the dict");
  fails_with(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999)}",
                      data6),
             "too large");
  check_error([&] { apps::read_npy(dir.file("missing.npy")); }, {"missing.npy", "cannot open"});
}

TEST_CASE("npy: the writer refuses other dtypes and leaves no temporary file") {
  TempDir dir;
  Tensor s8 = Tensor::zeros({2}, engine::DType::s8);
  check_error([&] { apps::write_npy(dir.file("x.npy"), s8); }, {"x.npy", "float32"});
  CHECK_THROWS_AS(apps::write_npy(dir.file("no/such/folder/x.npy"), Tensor::zeros({2})), engine::Error);
  CHECK_FALSE(fs::exists(dir.file("no/such/folder/x.npy.tmp")));
}
