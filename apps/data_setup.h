// Builds the datasets a run uses from its configuration: training set (augmented), validation hold-out and
// test set, and optionally an evaluation set from different data. Normalization constants come from the
// training images, or from the network when it was trained elsewhere (--init).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "apps/config.h"
#include "data/dataset.h"

namespace apps {

struct RunData {
  std::shared_ptr<const data::Dataset> train;  // augmented
  std::shared_ptr<const data::Dataset> calib;  // training images, eval transform (calibration)
  std::shared_ptr<const data::Dataset> val;    // may be null (--val-size 0)
  std::shared_ptr<const data::Dataset> test;   // may be null (a dataset without a test split)
  std::string train_name, test_name;
  int64_t in_channels = 0, num_classes = 0, image_size = 0;
  std::vector<float> mean, std;
};

// mean/std: the network's normalization when it comes from a file; empty = compute from the training set.
RunData load_run_data(const TrainConfig& cfg, const std::vector<float>& mean, const std::vector<float>& std);

// Only the evaluation split of a data kind (for `qil eval`), normalized with the network's constants.
std::shared_ptr<const data::Dataset> load_eval_data(const std::string& kind, const std::string& dir,
                                                    int64_t subset, const std::vector<float>& mean,
                                                    const std::vector<float>& std, std::string* name,
                                                    int64_t max_idx_mb);  // IDX data: --max-idx-mb

std::string default_data_dir(const std::string& kind);

}  // namespace apps
