// IDX readers: header, counts, dimensions and the size limit validated before anything is allocated, the
// exact length while the payload streams into its tensor.
#include "data/idx.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>

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
// against max_bytes before anything is allocated or a byte of the payload read, so a small .gz whose header
// claims millions of images is refused at once instead of being inflated into memory. `dest(dims)` then
// returns where the payload goes (exactly the declared size, allocated and not yet touched: memory becomes
// resident only as bytes arrive, so a header that lies about a size under the limit costs what the file
// really holds). The payload must be exactly the declared size. Returns the dimensions.
template <class Dest>
std::vector<int64_t> read_idx_file(const std::string& path, uint32_t want_magic, const char* what, size_t max_bytes,
                                   Dest&& dest) {
  GzReader in(path);
  uint8_t head[16] = {};
  size_t have = in.read(head, 4);
  in.check_stream();
  QIL_CHECK(have >= 4, path, ": truncated IDX file (", have, " bytes, no header)");
  const uint32_t magic = read_be32(head);
  QIL_CHECK(magic == want_magic, path, ": wrong magic number ", hex32(magic), " for an IDX ", what,
            " file (expected ", hex32(want_magic), ")");
  const size_t header = 4 + 4 * (want_magic & 0xFF);  // 8 or 16: the two magics this reader accepts
  have = 4 + in.read(head + 4, header - 4);
  in.check_stream();
  QIL_CHECK(have >= header, path, ": truncated IDX header (", have, " bytes, need ", header, ")");
  std::vector<int64_t> dims;
  uint64_t payload = 1;
  for (size_t at = 4; at < header; at += 4) {
    dims.push_back(read_be32(head + at));
    payload *= static_cast<uint64_t>(dims.back());  // at most 3 factors below 2^32 each: checked below
    QIL_CHECK(payload < (uint64_t(1) << 40), path, ": IDX dimensions ", dims, " are implausibly large");
  }
  const uint64_t want = header + payload;
  QIL_CHECK(want <= max_bytes, path, ": header says ", dims, " (", want, " bytes), more than the IDX size limit of ",
            max_bytes, " bytes (", max_bytes >> 20, " MiB; --max-idx-mb raises it)");
  uint8_t* out = dest(dims);
  uint64_t got = 0;
  while (got < payload) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(payload - got, 16u << 20));
    const size_t n = in.read(out + got, chunk);
    in.check_stream();
    got += n;
    if (n < chunk) break;
  }
  QIL_CHECK(got == payload, path, ": truncated: header says ", dims, " (", want, " bytes), file has ", header + got,
            " bytes");
  // Count what follows, in bounded pieces, only to say how much.
  uint8_t tail[1 << 16];
  uint64_t trailing = 0;
  for (size_t n; trailing < (uint64_t(1) << 24) && (n = in.read(tail, sizeof tail)) > 0;) trailing += n;
  in.check_stream();
  QIL_CHECK(trailing == 0, path, ": ", trailing, trailing >= (uint64_t(1) << 24) ? " or more" : "",
            " trailing bytes after the ", dims, " payload (", want, " bytes expected)");
  return dims;
}

}  // namespace

ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path, size_t max_bytes) {
  QIL_CHECK(max_bytes <= kIdxHardMaxBytes, "IDX size limit of ", max_bytes, " bytes is above the largest, ",
            kIdxHardMaxBytes);
  ImageSet set;
  int64_t n = 0;
  read_idx_file(images_path, kIdxImagesMagic, "images", max_bytes, [&](const std::vector<int64_t>& d) {
    n = d[0];
    QIL_CHECK(n > 0, images_path, ": holds no images");
    QIL_CHECK(d[1] > 0 && d[2] > 0, images_path, ": image dimensions ", d[1], "x", d[2], " are empty");
    try {
      set.images = engine::Tensor::empty({n, 1, d[1], d[2]}, engine::DType::u8);  // (N, 1, H, W)
    } catch (const engine::Error& e) {
      throw engine::Error(engine::str_cat(images_path, ": ", e.what()));
    }
    return set.images.data<uint8_t>();
  });
  // Not zero-filled, like the images: pages are touched only by the bytes that arrive.
  std::unique_ptr<uint8_t[]> labels;
  read_idx_file(labels_path, kIdxLabelsMagic, "labels", max_bytes, [&](const std::vector<int64_t>& d) {
    QIL_CHECK(d[0] == n, "IDX count mismatch: ", images_path, " has ", n, " images but ", labels_path, " has ",
              d[0], " labels");
    labels.reset(new uint8_t[static_cast<size_t>(n)]);
    return labels.get();
  });
  set.labels.assign(labels.get(), labels.get() + n);
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

IdxFolder load_idx_folder(const std::string& dir, size_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  QIL_CHECK(fs::is_directory(dir, ec), dir, ": no such IDX folder");
  auto pair = [&](const std::string& prefix, bool required) -> std::optional<ImageSet> {
    const std::string im = find_maybe_gzipped(dir, prefix + "-images-idx3-ubyte");
    const std::string lb = find_maybe_gzipped(dir, prefix + "-labels-idx1-ubyte");
    if (im.empty() && lb.empty() && !required) return std::nullopt;
    QIL_CHECK(!im.empty(), (fs::path(dir) / (prefix + "-images-idx3-ubyte[.gz]")).string(), ": no such file");
    QIL_CHECK(!lb.empty(), (fs::path(dir) / (prefix + "-labels-idx1-ubyte[.gz]")).string(), ": no such file");
    return load_idx_pair(im, lb, max_bytes);
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
