// libFuzzer target: apps::read_npy on any bytes.
#include "apps/npy.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".npy");
  fuzz::expect_clean(path, [&] { (void)apps::read_npy(path); });
  return 0;
}
