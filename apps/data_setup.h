// Builds the datasets a run uses from its configuration: training set (augmented), validation hold-out and
// test set, and optionally an evaluation set from different data. Normalization constants come from the
// training images, or from the network when it was trained elsewhere (--init); the evaluation geometry of
// `qil eval` and `qil inspect` comes from the network's checkpoint (InputGeometry).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "apps/config.h"
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

struct RunData {
  std::shared_ptr<const data::Dataset> train;  // augmented
  std::shared_ptr<const data::Dataset> calib;  // training images, eval transform (calibration)
  std::shared_ptr<const data::Dataset> val;    // may be null (--val-size 0)
  std::shared_ptr<const data::Dataset> test;   // may be null (a dataset without a test split)
  std::string train_name, test_name;
  int64_t in_channels = 0, num_classes = 0, image_size = 0;
  int64_t eval_resize = 0;  // ImageNet-style folders: the evaluation transform's resize side; 0 = none
  std::vector<float> mean, std;
  InputGeometry geometry() const;  // what a checkpoint of this run records
};

// net: the network's inputs when it comes from a file (its normalization is used, and for ImageNet-style
// folders its side unless --image-size says otherwise, which is said on stderr); null = a fresh network,
// normalized with the training images' statistics.
RunData load_run_data(const TrainConfig& cfg, const InputGeometry* net);

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
