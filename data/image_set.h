// ImageSet: a labelled set of uint8 images held in memory, as the IDX and CIFAR readers return it, plus the
// small file helper those readers share. Not a dataset with transforms (dataset.h) and not a loader (loader.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace data {

struct ImageSet {
  engine::Tensor images;        // u8 (N, C, H, W), pixels 0..255
  std::vector<int32_t> labels;  // (N), each in [0, num_classes)
  int64_t num_classes = 0;
  std::string source;           // the file(s) it came from, for messages

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }
};

// The whole content of a file, gzipped or not (zlib's gzread passes plain files through unchanged).
// Throws engine::Error naming the file if it is missing, unreadable, a corrupt gzip stream, or longer than
// max_bytes (a guard against decompression bombs, checked as the bytes arrive).
std::vector<uint8_t> read_file_maybe_gzipped(const std::string& path, size_t max_bytes = size_t(1) << 32);

}  // namespace data
