// libFuzzer target: data::load_cifar10_file and load_cifar100_file on any bytes (raw or gzipped, as the reader
// decides by content). The first byte picks the format, so both record sizes are reached.
#include "data/cifar.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string path = fuzz::write_input(data + 1, size - 1, ".bin");
  fuzz::input_size() = size;
  fuzz::expect_clean(path, [&] {
    if (data[0] & 1)
      (void)data::load_cifar100_file(path);
    else
      (void)data::load_cifar10_file(path);
  });
  return 0;
}
