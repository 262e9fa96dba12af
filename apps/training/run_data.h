// The datasets a training run reads, and what they are: training images (augmented), the same images made as
// for evaluation (calibration), the validation hold-out and the test set, with their names, geometry and the
// normalization they were made with. A plain struct: whoever builds a run fills it (`qil train` from its data
// flags, apps/data_setup.h; a test from images in memory). Not dataset reading (data/) and not the loaders.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace apps::training {

struct RunData {
  std::shared_ptr<const data::Dataset> train;  // augmented
  std::shared_ptr<const data::Dataset> calib;  // training images, eval transform (calibration)
  std::shared_ptr<const data::Dataset> val;    // may be null (--val-size 0)
  std::shared_ptr<const data::Dataset> test;   // may be null (a dataset without a test split)
  std::string train_name, test_name;
  int64_t in_channels = 0, num_classes = 0, image_size = 0;
  int64_t eval_resize = 0;  // ImageNet-style folders: the evaluation transform's resize side; 0 = none
  std::vector<float> mean, std;
};

}  // namespace apps::training
