// IDX readers: header, counts, dimensions and exact length validated before any pixel is copied.
#include "data/idx.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <zlib.h>

#include "engine/check.h"

namespace data {
namespace {

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

// Checks magic and exact length; returns the dimensions (big-endian u32 each, after the magic).
std::vector<int64_t> parse_idx_header(const std::vector<uint8_t>& bytes, const std::string& path,
                                      uint32_t want_magic, const char* what) {
  QIL_CHECK(bytes.size() >= 4, path, ": truncated IDX file (", bytes.size(), " bytes, no header)");
  const uint32_t magic = read_be32(bytes.data());
  QIL_CHECK(magic == want_magic, path, ": wrong magic number ", hex32(magic), " for an IDX ", what,
            " file (expected ", hex32(want_magic), ")");
  const size_t ndim = want_magic & 0xFF;
  const size_t header = 4 + 4 * ndim;
  QIL_CHECK(bytes.size() >= header, path, ": truncated IDX header (", bytes.size(), " bytes, need ", header, ")");
  std::vector<int64_t> dims(ndim);
  uint64_t payload = 1;
  for (size_t i = 0; i < ndim; ++i) {
    dims[i] = read_be32(bytes.data() + 4 + 4 * i);
    payload *= static_cast<uint64_t>(dims[i]);  // at most 3 factors below 2^32 each: checked below
    QIL_CHECK(payload < (uint64_t(1) << 40), path, ": IDX dimensions ", dims, " are implausibly large");
  }
  const uint64_t want = header + payload;
  QIL_CHECK(bytes.size() >= want, path, ": truncated: header says ", dims, " (", want, " bytes), file has ",
            bytes.size(), " bytes");
  QIL_CHECK(bytes.size() == want, path, ": ", bytes.size() - want, " trailing bytes after the ", dims,
            " payload (", want, " bytes expected)");
  return dims;
}

// A gzip or raw file read in pieces (zlib reads raw files as they are).
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    QIL_CHECK(fs::exists(path, ec), path, ": no such file");
    QIL_CHECK(fs::is_regular_file(path, ec), path, ": not a regular file");
    f_ = gzopen(path.c_str(), "rb");
    QIL_CHECK(f_ != nullptr, path, ": cannot open");
    gzbuffer(f_, 1 << 18);
  }
  ~GzReader() { gzclose(f_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to n bytes into p; returns how many arrived (fewer at the end of the stream).
  size_t read(uint8_t* p, size_t n) {
    size_t done = 0;
    while (done < n) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      const int got = gzread(f_, p + done, want);
      if (got < 0) check_stream();
      done += static_cast<size_t>(std::max(got, 0));
      if (static_cast<unsigned>(got) < want) break;
    }
    return done;
  }
  // gzread reports a gzip stream cut short as a clean end of file on some zlib versions; ask explicitly.
  void check_stream() {
    int errnum = 0;
    const char* msg = gzerror(f_, &errnum);
    QIL_CHECK(errnum == Z_OK || errnum == Z_STREAM_END, path_, ": corrupt or truncated gzip stream (",
              msg ? msg : "", ")");
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

// Reads an IDX file without trusting it: the header comes first, and the size it announces is checked
// against max_bytes before a byte of the payload is read, so a small .gz whose header claims millions of
// images is refused at once instead of being inflated into memory. Returns exactly the header + payload.
std::vector<uint8_t> read_idx_file(const std::string& path, uint32_t want_magic, const char* what,
                                   size_t max_bytes) {
  GzReader in(path);
  std::vector<uint8_t> bytes(4);
  bytes.resize(in.read(bytes.data(), 4));
  in.check_stream();
  QIL_CHECK(bytes.size() >= 4, path, ": truncated IDX file (", bytes.size(), " bytes, no header)");
  const uint32_t magic = read_be32(bytes.data());
  QIL_CHECK(magic == want_magic, path, ": wrong magic number ", hex32(magic), " for an IDX ", what,
            " file (expected ", hex32(want_magic), ")");
  const size_t header = 4 + 4 * (want_magic & 0xFF);
  bytes.resize(header);
  bytes.resize(4 + in.read(bytes.data() + 4, header - 4));
  in.check_stream();
  QIL_CHECK(bytes.size() >= header, path, ": truncated IDX header (", bytes.size(), " bytes, need ", header, ")");
  std::vector<int64_t> dims;
  uint64_t want = 1;
  for (size_t at = 4; at < header; at += 4) {
    dims.push_back(read_be32(bytes.data() + at));
    want *= static_cast<uint64_t>(dims.back());  // at most 3 factors below 2^32 each: checked below
    QIL_CHECK(want < (uint64_t(1) << 40), path, ": IDX dimensions ", dims, " are implausibly large");
  }
  want += header;
  QIL_CHECK(want <= max_bytes, path, ": header says ", dims, " (", want, " bytes), larger than the limit of ",
            max_bytes, " bytes");
  // The buffer grows with the data that actually arrives (geometrically, at most to the declared size), so a
  // few bytes whose header declares gigabytes never allocate them.
  size_t got = header;
  while (got < want) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(want - got, std::max<size_t>(got, 1 << 20)));
    bytes.resize(got + chunk);
    const size_t n = in.read(bytes.data() + got, chunk);
    in.check_stream();
    got += n;
    if (n < chunk) break;
  }
  bytes.resize(got);
  QIL_CHECK(got == want, path, ": truncated: header says ", dims, " (", want, " bytes), file has ", got, " bytes");
  // Count what follows, in bounded pieces, only to say how much.
  uint8_t tail[1 << 16];
  uint64_t trailing = 0;
  for (size_t n; trailing < (uint64_t(1) << 24) && (n = in.read(tail, sizeof tail)) > 0;) trailing += n;
  in.check_stream();
  QIL_CHECK(trailing == 0, path, ": ", trailing, trailing >= (uint64_t(1) << 24) ? " or more" : "",
            " trailing bytes after the ", dims, " payload (", want, " bytes expected)");
  return bytes;
}

}  // namespace

ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path) {
  const std::vector<uint8_t> ib = read_idx_file(images_path, kIdxImagesMagic, "images", kIdxMaxBytes);
  const std::vector<int64_t> idims = parse_idx_header(ib, images_path, kIdxImagesMagic, "images");
  const int64_t n = idims[0], h = idims[1], w = idims[2];
  QIL_CHECK(n > 0, images_path, ": holds no images");
  QIL_CHECK(h > 0 && w > 0, images_path, ": image dimensions ", h, "x", w, " are empty");
  const std::vector<uint8_t> lb = read_idx_file(labels_path, kIdxLabelsMagic, "labels", kIdxMaxBytes);
  const std::vector<int64_t> ldims = parse_idx_header(lb, labels_path, kIdxLabelsMagic, "labels");
  QIL_CHECK(ldims[0] == n, "IDX count mismatch: ", images_path, " has ", n, " images but ", labels_path, " has ",
            ldims[0], " labels");

  ImageSet set;
  set.images = engine::Tensor::empty({n, 1, h, w}, engine::DType::u8);  // (N, 1, H, W)
  std::memcpy(set.images.data<uint8_t>(), ib.data() + 16, static_cast<size_t>(n * h * w));
  set.labels.assign(lb.begin() + 8, lb.end());
  set.num_classes = *std::max_element(set.labels.begin(), set.labels.end()) + 1;
  set.source = images_path;
  return set;
}

std::string find_maybe_gzipped(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const std::string& name : {stem, stem + ".gz"}) {
    const fs::path p = fs::path(dir) / name;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

IdxFolder load_idx_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  QIL_CHECK(fs::is_directory(dir, ec), dir, ": no such IDX folder");
  auto pair = [&](const std::string& prefix, bool required) -> std::optional<ImageSet> {
    const std::string im = find_maybe_gzipped(dir, prefix + "-images-idx3-ubyte");
    const std::string lb = find_maybe_gzipped(dir, prefix + "-labels-idx1-ubyte");
    if (im.empty() && lb.empty() && !required) return std::nullopt;
    QIL_CHECK(!im.empty(), (fs::path(dir) / (prefix + "-images-idx3-ubyte[.gz]")).string(), ": no such file");
    QIL_CHECK(!lb.empty(), (fs::path(dir) / (prefix + "-labels-idx1-ubyte[.gz]")).string(), ": no such file");
    return load_idx_pair(im, lb);
  };
  IdxFolder out;
  out.train = *pair("train", true);
  out.test = pair("t10k", false);
  if (out.test) {
    QIL_CHECK(out.test->height() == out.train.height() && out.test->width() == out.train.width(), dir,
              ": t10k images are ", out.test->height(), "x", out.test->width(), " but train images are ",
              out.train.height(), "x", out.train.width());
    const int64_t k = std::max(out.train.num_classes, out.test->num_classes);
    out.train.num_classes = out.test->num_classes = k;
  }
  return out;
}

}  // namespace data
