// Readers for the CIFAR-10 and CIFAR-100 binary distributions ("binary version" tarballs, extracted).
// Record layout: CIFAR-10 = 1 label byte + 3072 pixel bytes; CIFAR-100 = coarse + fine label bytes + 3072;
// pixels are 1024 red, 1024 green, 1024 blue, each row-major 32x32 — already (C, H, W). Files may be gzipped.
// Not a reader for the Python pickle versions.
#pragma once
#include <string>

#include "data/image_set.h"

namespace data {

struct CifarSplits {
  ImageSet train;  // u8 (N, 3, 32, 32)
  ImageSet test;
};

// One CIFAR-10 batch file (records of 3073 bytes; labels < 10).
ImageSet load_cifar10_file(const std::string& path);
// data_batch_1.bin .. data_batch_5.bin (concatenated in that order) and test_batch.bin.
CifarSplits load_cifar10(const std::string& dir);

enum class Cifar100Labels { fine, coarse };  // 100 fine classes or 20 coarse superclasses
// One CIFAR-100 file (records of 3074 bytes; coarse < 20, fine < 100).
ImageSet load_cifar100_file(const std::string& path, Cifar100Labels which = Cifar100Labels::fine);
// train.bin and test.bin.
CifarSplits load_cifar100(const std::string& dir, Cifar100Labels which = Cifar100Labels::fine);

}  // namespace data
