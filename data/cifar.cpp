// CIFAR binary readers: the file must be a whole, non-zero number of records and every label in range.
#include "data/cifar.h"

#include <cstring>
#include <filesystem>

#include "data/idx.h"
#include "engine/check.h"

namespace data {
namespace {

constexpr int64_t kPixels = 3 * 32 * 32;

// label_bytes: 1 (CIFAR-10) or 2 (CIFAR-100); label_at: which of them is the label; classes: its range.
ImageSet load_records(const std::string& path, int64_t label_bytes, int64_t label_at, int64_t classes,
                      const char* format) {
  const std::vector<uint8_t> b = read_file_maybe_gzipped(path);
  const int64_t rec = label_bytes + kPixels;
  const int64_t size = static_cast<int64_t>(b.size());
  QIL_CHECK(size > 0, path, ": empty ", format, " file");
  QIL_CHECK(size % rec == 0, path, ": ", size, " bytes is not a whole number of ", rec, "-byte ", format,
            " records (", size / rec, " records and ", size % rec, " bytes left over: truncated or trailing bytes)");
  const int64_t n = size / rec;
  ImageSet set;
  set.images = engine::Tensor::empty({n, 3, 32, 32}, engine::DType::u8);  // (N, 3, 32, 32)
  set.labels.resize(n);
  uint8_t* px = set.images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* r = b.data() + i * rec;
    for (int64_t j = 0; j < label_bytes; ++j) {
      const int64_t limit = (label_bytes == 2 && j == 0) ? 20 : (label_bytes == 2 ? 100 : 10);
      QIL_CHECK(r[j] < limit, path, ": record ", i, " has label byte ", int(r[j]), " (", format,
                " labels must be below ", limit, ")");
    }
    set.labels[i] = r[label_at];
    std::memcpy(px + i * kPixels, r + label_bytes, kPixels);
  }
  set.num_classes = classes;
  set.source = path;
  return set;
}

std::string require_file(const std::string& dir, const std::string& name) {
  const std::string p = find_maybe_gzipped(dir, name);
  QIL_CHECK(!p.empty(), (std::filesystem::path(dir) / name).string(), ": no such file");
  return p;
}

ImageSet concat(const std::vector<ImageSet>& parts, const std::string& source) {
  int64_t n = 0;
  for (const ImageSet& p : parts) n += p.size();
  ImageSet out;
  out.images = engine::Tensor::empty({n, 3, 32, 32}, engine::DType::u8);
  uint8_t* dst = out.images.data<uint8_t>();
  for (const ImageSet& p : parts) {
    std::memcpy(dst, p.images.data<uint8_t>(), p.images.nbytes());
    dst += p.images.nbytes();
    out.labels.insert(out.labels.end(), p.labels.begin(), p.labels.end());
  }
  out.num_classes = parts.front().num_classes;
  out.source = source;
  return out;
}

void check_dir(const std::string& dir, const char* what) {
  std::error_code ec;
  QIL_CHECK(std::filesystem::is_directory(dir, ec), dir, ": no such ", what, " folder");
}

}  // namespace

ImageSet load_cifar10_file(const std::string& path) { return load_records(path, 1, 0, 10, "CIFAR-10"); }

CifarSplits load_cifar10(const std::string& dir) {
  check_dir(dir, "CIFAR-10");
  std::vector<ImageSet> parts;
  for (int i = 1; i <= 5; ++i)
    parts.push_back(load_cifar10_file(require_file(dir, "data_batch_" + std::to_string(i) + ".bin")));
  return {concat(parts, dir), load_cifar10_file(require_file(dir, "test_batch.bin"))};
}

ImageSet load_cifar100_file(const std::string& path, Cifar100Labels which) {
  const bool fine = which == Cifar100Labels::fine;
  return load_records(path, 2, fine ? 1 : 0, fine ? 100 : 20, "CIFAR-100");
}

CifarSplits load_cifar100(const std::string& dir, Cifar100Labels which) {
  check_dir(dir, "CIFAR-100");
  return {load_cifar100_file(require_file(dir, "train.bin"), which),
          load_cifar100_file(require_file(dir, "test.bin"), which)};
}

}  // namespace data
