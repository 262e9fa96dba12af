// `.npy` reader and writer (float32, C order).
#include "apps/npy.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "engine/check.h"

namespace apps {

using engine::Error;
using engine::Shape;
using engine::str_cat;
using engine::Tensor;

namespace {

const char kMagic[] = "\x93NUMPY";  // 6 bytes
constexpr size_t kMagicLen = 6;
constexpr size_t kAlign = 64;  // NumPy aligns the data on 64 bytes

// The data bytes are copied as they are: correct on a little-endian host only.
void require_little_endian_host() {
  const uint32_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  QIL_CHECK(b == 1, "npy: this build reads and writes '<f4' data on little-endian hosts only");
}

std::string shape_text(const Shape& s) {  // Python's repr of a tuple: (), (5,), (2, 3)
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  if (s.size() == 1) out += ",";
  return out + ")";
}

// A recursive-descent parser for the one Python literal NumPy writes: a dict of string keys whose values are
// strings, booleans or tuples of integers.
class HeaderParser {
 public:
  HeaderParser(const std::string& s, const std::string& where) : s_(s), where_(where) {}

  NpyHeader parse() {
    NpyHeader h;
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{');
    skip_ws();
    while (peek() != '}') {
      const std::string key = string_literal();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        QIL_CHECK(!have_descr, where_, ": header has 'descr' twice");
        h.descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        QIL_CHECK(!have_fortran, where_, ": header has 'fortran_order' twice");
        h.fortran_order = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        QIL_CHECK(!have_shape, where_, ": header has 'shape' twice");
        h.shape = tuple();
        have_shape = true;
      } else {
        fail(str_cat("unexpected key '", key, "'"));
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
        skip_ws();
      } else if (peek() != '}') {
        fail("expected ',' or '}'");
      }
    }
    ++i_;
    for (; i_ < s_.size(); ++i_)
      QIL_CHECK(s_[i_] == ' ' || s_[i_] == '\n', where_, ": header has text after the dict at byte ", i_,
                " of the header");
    QIL_CHECK(have_descr && have_fortran && have_shape, where_,
              ": header lacks one of 'descr', 'fortran_order', 'shape'");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(str_cat(where_, ": malformed header (", what, " at byte ", i_, " of the header dict)"));
  }
  char peek() const {
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(str_cat("expected '", c, "'"));
    ++i_;
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    ++i_;
    std::string out;
    while (peek() != q) {
      if (s_[i_] == '\\') fail("escapes are not supported");
      out += s_[i_++];
    }
    ++i_;
    return out;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    fail("expected True or False");
  }
  int64_t integer() {
    if (!(peek() >= '0' && peek() <= '9')) fail("expected a non-negative integer");
    int64_t v = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) fail("integer too large");
      v = v * 10 + (s_[i_++] - '0');
    }
    return v;
  }
  Shape tuple() {
    expect('(');
    Shape out;
    skip_ws();
    while (peek() != ')') {
      out.push_back(integer());
      skip_ws();
      if (peek() == ',') {
        ++i_;
        skip_ws();
      } else if (peek() != ')') {
        fail("expected ',' or ')' in the shape");
      }
    }
    ++i_;
    return out;
  }

  const std::string& s_;
  const std::string& where_;
  size_t i_ = 0;
};

uint32_t read_le(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

NpyHeader parse_npy_header(const std::string& text, const std::string& where) {
  return HeaderParser(text, where).parse();
}

std::string npy_header_v1(const Shape& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  const size_t prefix = kMagicLen + 2 + 2;
  const size_t unpadded = prefix + dict.size() + 1;  // + the final '\n'
  dict.append((kAlign - unpadded % kAlign) % kAlign, ' ');
  dict += '\n';
  QIL_CHECK(dict.size() <= 65535, "npy: shape ", shape, " makes a header too long for format version 1.0");
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  return out + dict;
}

Tensor read_npy(const std::string& path) {
  require_little_endian_host();
  {  // a FIFO would block the open below until a writer came; a directory or a device is no .npy either
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    QIL_CHECK(!ec, path, ": cannot open (", ec.message(), ")");
    QIL_CHECK(std::filesystem::is_regular_file(st), path, ": not a regular file");
  }
  std::ifstream f(path, std::ios::binary);
  QIL_CHECK(f.good(), path, ": cannot open");
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  QIL_CHECK(!ec, path, ": cannot read its size (", ec.message(), ")");

  unsigned char pre[12];
  QIL_CHECK(file_size >= 10 && f.read(reinterpret_cast<char*>(pre), 10), path, ": too short for a .npy file (",
            file_size, " bytes)");
  QIL_CHECK(std::memcmp(pre, kMagic, kMagicLen) == 0, path, ": not a .npy file (bad magic; expected \\x93NUMPY)");
  const int major = pre[6], minor = pre[7];
  QIL_CHECK((major == 1 || major == 2) && minor == 0, path, ": unsupported .npy format version ", major, ".", minor,
            " (1.0 and 2.0 are read)");
  size_t prefix = 10;
  uint64_t header_len = read_le(pre + 8, 2);
  if (major == 2) {
    QIL_CHECK(file_size >= 12 && f.read(reinterpret_cast<char*>(pre + 10), 2), path,
              ": truncated in the header length");
    header_len = read_le(pre + 8, 4);
    prefix = 12;
  }
  QIL_CHECK(prefix + header_len <= file_size, path, ": truncated header (declares ", header_len, " bytes, file has ",
            file_size - prefix, " after the preamble)");
  std::string text(header_len, '\0');
  QIL_CHECK(f.read(text.data(), static_cast<std::streamsize>(header_len)), path, ": cannot read the header");
  for (unsigned char c : text)
    QIL_CHECK(c < 0x80, path, ": header is not ASCII");
  const NpyHeader h = parse_npy_header(text, path);

  QIL_CHECK(h.descr == "<f4", path, ": unsupported dtype '", h.descr,
            "' (only little-endian float32 '<f4' is read; convert with arr.astype('<f4'))");
  QIL_CHECK(!h.fortran_order, path, ": Fortran-order arrays are not supported (save np.ascontiguousarray(arr))");
  int64_t numel = 1;
  for (int64_t d : h.shape) {
    QIL_CHECK(d == 0 || numel <= std::numeric_limits<int64_t>::max() / 4 / d, path, ": shape ", h.shape,
              " is too large");
    numel *= d;
  }
  const uint64_t need = static_cast<uint64_t>(numel) * 4, have = file_size - prefix - header_len;
  QIL_CHECK(have >= need, path, ": truncated data: shape ", h.shape, " needs ", need, " bytes, the file has ", have);
  QIL_CHECK(have == need, path, ": data length ", have, " bytes does not match shape ", h.shape, " (", need,
            " bytes of float32)");
  Tensor t = Tensor::empty(h.shape);
  QIL_CHECK(f.read(reinterpret_cast<char*>(t.data()), static_cast<std::streamsize>(need)), path,
            ": cannot read the data");
  return t;
}

void write_npy(const std::string& path, const Tensor& t) {
  require_little_endian_host();
  QIL_CHECK(t.dtype() == engine::DType::f32 && t.layout() == engine::Layout::plain, "npy: writing '", path,
            "': only plain float32 tensors are written, got ", t);
  const std::string header = npy_header_v1(t.shape());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    QIL_CHECK(f.good(), path, ": cannot create '", tmp, "'");
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(reinterpret_cast<const char*>(t.data()), static_cast<std::streamsize>(t.nbytes()));
    f.flush();
    if (!f.good()) {
      std::remove(tmp.c_str());
      throw Error(str_cat(path, ": write failed"));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(str_cat(path, ": cannot rename '", tmp, "' over it (", ec.message(), ")"));
  }
}

}  // namespace apps
