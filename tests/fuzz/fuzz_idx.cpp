// libFuzzer target: data::load_idx_pair on an images file and a labels file cut from one input (the first
// two bytes say where), each written gzipped when it starts with gzip's magic, as the reader decides by content.
#include "data/idx.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t cut = std::min(size - 2, static_cast<size_t>(data[0] | (data[1] << 8)));
  const uint8_t* images = data + 2;
  const std::string ip = fuzz::write_input(images, cut, "-images");
  const std::string lp = fuzz::write_input(images + cut, size - 2 - cut, "-labels");
  try {
    (void)data::load_idx_pair(ip, lp);
  } catch (const engine::Error& e) {
    const std::string msg = e.what();
    fuzz::refused(msg, msg.find(ip) != std::string::npos ? ip : lp);
  }
  return 0;
}
