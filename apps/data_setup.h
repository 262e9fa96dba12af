// Builds the datasets a run uses from its data flags (DataOptions): training set (augmented), validation
// hold-out and test set, and optionally an evaluation set from different data. Normalization constants come
// from the training images, or from the network when it was trained elsewhere (--init); the evaluation geometry
// of `qil eval` and `qil inspect` comes from the network's checkpoint (InputGeometry). Not the training library's
// use of them (apps/training/run_data.h holds what this makes) and not the readers (data/).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "apps/limits.h"
#include "apps/training/run_data.h"
#include "data/dataset.h"
#include "layers/model_io.h"

namespace apps {

// How images become a network's inputs: channels, the side the network sees, for ImageNet-style folders the
// shorter side the evaluation transform resizes to before its center crop of `size`, the normalization, and
// the data kind the network was trained on.
struct InputGeometry {
  int64_t channels = 0, size = 0, resize = 0;
  std::vector<float> mean, std;
  std::string data;       // "" = not recorded (older checkpoints, safetensors files)
  bool recorded = false;  // false: a checkpoint from before the geometry was recorded (size and resize unknown)
};

// The one place a network's inputs are read from its meta (what a checkpoint records).
InputGeometry network_input(const layers::ModelMeta& meta);

using training::RunData;

// The data flags of `qil train` (the same names, the same defaults): which data, where, what is held out and
// how training images are augmented. `qil eval --quant` uses the defaults for its calibration images.
struct DataOptions {
  std::string data = "fashion-mnist";  // fashion-mnist | idx | mnist | cifar10 | cifar100 | imagenet
  std::string data_dir;                // default for fashion-mnist: Debian's folder
  std::string eval_data;               // default: the training data's own test split
  std::string eval_data_dir;
  int64_t val_size = 5000;      // hold-out from the training set (seeded by `seed`)
  uint64_t seed = 0;
  int64_t train_subset = 0;     // the first N training samples only (0 = all)
  int64_t test_subset = 0;      // the first N test samples only (0 = all)
  int64_t image_size = 0;       // 0 = the data's own size (IDX/CIFAR) or 224 (ImageNet)
  bool crop = true, flip = true;  // training augmentation
  int64_t crop_padding = 2;
  int64_t max_bad_files = 100;  // imagenet: undecodable files tolerated before the run stops
  int64_t max_idx_mb = kDefaultMaxIdxMb;  // the largest IDX file read, MiB (apps/limits.h)
};

// net: the network's inputs when it comes from a file (its normalization is used, and for ImageNet-style
// folders its side unless --image-size says otherwise, which is said on stderr); null = a fresh network,
// normalized with the training images' statistics.
RunData load_run_data(const DataOptions& o, const InputGeometry* net);

// The evaluation geometry of ImageNet-style folders for a network: its own, or for a checkpoint that does not
// record it, torchvision's 224 and 256 as before (said on stderr, with the --image-size that matches the
// network's recorded image_size).
InputGeometry imagenet_eval_input(const InputGeometry& in);

// Only the evaluation split of a data kind (for `qil eval`, `qil inspect --data`), made as `in` says:
// normalized with its constants, ImageNet-style folders resized and center-cropped to its sides (a network
// whose geometry was not recorded: torchvision's 256 and 224, said on stderr).
std::shared_ptr<const data::Dataset> load_eval_data(const std::string& kind, const std::string& dir,
                                                    int64_t subset, const InputGeometry& in, std::string* name,
                                                    int64_t max_idx_mb);  // IDX data: --max-idx-mb

std::string default_data_dir(const std::string& kind);

}  // namespace apps
