// libFuzzer target: engine::read_safetensors on any bytes.
#include "engine/serialize.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".safetensors");
  fuzz::expect_clean(path, [&] { (void)engine::read_safetensors(path); });
  return 0;
}
