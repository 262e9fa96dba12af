// libFuzzer target: data::decode_image (stb_image behind a header probe that bounds the pixel count) on any
// bytes, with a small pixel limit so that a header announcing a huge image is refused before decoding.
#include "data/image.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::input_size() = size;
  fuzz::expect_clean("fuzz-input", [&] { (void)data::decode_image(data, size, "fuzz-input", int64_t(1) << 20); });
  return 0;
}
