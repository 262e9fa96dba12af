// Link stubs for the fuzz targets: the engine functions the readers' translation units name but never call,
// whose real definitions need oneDNN (which the targets leave out so that clang's runtime never meets
// Debian's libgomp-based oneDNN). A stub that is called is a finding: a reader took a path it should not.
#include <cstdio>
#include <cstdlib>

#include "engine/tensor.h"

namespace engine {

// engine/ops/layout.cpp asks oneDNN for the CPU's ISA. The readers only make plain tensors.
int64_t block_channels() {
  std::fprintf(stderr, "fuzz: engine::block_channels() called: a reader made a blocked tensor\n");
  std::abort();
}

}  // namespace engine
