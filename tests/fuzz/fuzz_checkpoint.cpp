// libFuzzer target: engine::read_checkpoint on any bytes (checksums skipped in the fuzzing build, so that
// mutations reach the section parsing behind them).
#include "engine/serialize.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".ckpt");
  fuzz::expect_clean(path, [&] {
    const engine::Checkpoint ck = engine::read_checkpoint(path);
    for (const auto& s : ck.sections()) (void)s.tensor.numel();
  });
  return 0;
}
