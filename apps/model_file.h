// The network `qil eval` and `qil predict` run: a qil checkpoint (which describes its network itself), or a
// safetensors file of weights under torchvision's names — a torchvision state_dict saved with safetensors, or
// `qil export`'s float format. A safetensors file says less about its network, so the flags here fill in
// what its metadata and its tensors do not say. Also `--int8`, which both commands run the network with.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "layers/model_io.h"

namespace CLI {
class App;
}

namespace apps {

// The value of "format" in the metadata of each kind of file `qil export` writes (apps/export.h): a float file
// loads here, an integer one is refused with a message saying so.
constexpr const char* kExportFormatFloat = "qil-export-v1";
constexpr const char* kExportFormatInt = "qil-export-int-v1";

// For safetensors files only (a checkpoint names all of this itself; given with one, each must agree with it).
struct ModelFileOptions {
  std::string model;         // zoo name; default: the file's qil metadata
  int64_t num_classes = 0;   // 0: the metadata, else the rows of the network's last linear weight in the file
  int64_t in_channels = 0;   // 0: the metadata, else the input channels of its first convolution's weight
  int64_t image_size = 0;    // 0: the metadata, else the model's usual input size
  std::vector<float> mean;   // input normalization; default: the metadata, else ImageNet's for RGB
  std::vector<float> std;
};
void add_model_file_flags(CLI::App& app, ModelFileOptions& o);

// Builds and loads the network in `path` (a checkpoint, or a file ending in .safetensors). BF16 and F16
// tensors are widened to f32 exactly; PyTorch's num_batches_tracked counters are ignored; every missing,
// unexpected or misshapen tensor is named in one error. need_normalization: the caller feeds raw images
// (eval), so a file without normalization metadata needs --mean/--std unless it is RGB (ImageNet's are used
// and said on stderr).
layers::LoadedModel load_model_file(const std::string& path, const ModelFileOptions& o, bool need_normalization);

// `--int8` of eval and predict: its help text, and switching integer inference on for every layer whose weights
// and input are both quantized (layers::set_int8_inference), with a line on stderr saying which layers run it.
// A network with no such layer is an error naming the checkpoint.
// The help of the checkpoint positional of the commands that load one through load_model_file (eval, predict).
extern const char* const kCheckpointArgHelp;
extern const char* const kInt8FlagHelp;
void enable_int8_inference(layers::Module& model, const std::string& checkpoint);

}  // namespace apps
