// Readers for IDX files (the MNIST / Fashion-MNIST format), raw or gzipped, and for an IDX folder holding a
// train pair and optionally a t10k pair. Every header field and the exact file length are validated; errors
// name the file and the problem. Not a general IDX reader: only u8 images (idx3) and u8 labels (idx1).
#pragma once
#include <optional>
#include <string>

#include "data/image_set.h"

namespace data {

// Magic numbers: 0x00000803 = unsigned byte, 3 dimensions (N, H, W); 0x00000801 = unsigned byte, 1 dimension.
constexpr uint32_t kIdxImagesMagic = 0x00000803;
constexpr uint32_t kIdxLabelsMagic = 0x00000801;
// The largest IDX file read by default (header + payload, after decompression): 256 MiB, 5.6 times
// Fashion-MNIST's training images. A header announcing more is refused before anything is allocated or its
// payload read, so what a file claims never costs more memory than this (`--max-idx-mb` raises it for real
// data that is bigger, up to kIdxHardMaxBytes).
constexpr size_t kIdxDefaultMaxBytes = size_t(256) << 20;
constexpr size_t kIdxHardMaxBytes = size_t(1) << 40;

// An images file and a labels file with the same count -> ImageSet with images (N, 1, H, W);
// num_classes = largest label + 1. Each file may hold at most max_bytes (header + payload, decompressed); the
// pixels are read straight into the image tensor, so the peak memory is the images' size plus the labels'.
ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path,
                       size_t max_bytes = kIdxDefaultMaxBytes);

struct IdxFolder {
  ImageSet train;
  std::optional<ImageSet> test;  // the t10k- pair, when the folder has one
};

// A folder with train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] and optionally the t10k- pair.
// When both a raw and a .gz copy exist, the raw one is read. num_classes is the same for both splits (the
// larger of the two). A lone t10k file without its partner is an error.
IdxFolder load_idx_folder(const std::string& dir, size_t max_bytes = kIdxDefaultMaxBytes);

// The path of `stem` or `stem.gz` inside dir, or "" when neither exists.
std::string find_maybe_gzipped(const std::string& dir, const std::string& stem);

}  // namespace data
