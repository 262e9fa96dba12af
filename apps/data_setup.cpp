// Dataset construction for train and eval.
#include "apps/data_setup.h"

#include <sstream>

#include "data/cifar.h"
#include "data/idx.h"
#include "engine/check.h"

namespace apps {

using engine::str_cat;

namespace {

struct Splits {
  std::shared_ptr<const data::ImageSet> train, test;
};

Splits load_kind(const std::string& kind, const std::string& dir_in) {
  const std::string dir = dir_in.empty() ? default_data_dir(kind) : dir_in;
  QIL_CHECK(!dir.empty(), "--data ", kind, " needs --data-dir");
  Splits s;
  if (kind == "fashion-mnist" || kind == "idx" || kind == "mnist") {
    data::IdxFolder f = data::load_idx_folder(dir);
    s.train = std::make_shared<data::ImageSet>(std::move(f.train));
    if (f.test) s.test = std::make_shared<data::ImageSet>(std::move(*f.test));
  } else if (kind == "cifar10" || kind == "cifar100") {
    data::CifarSplits c = kind == "cifar10" ? data::load_cifar10(dir) : data::load_cifar100(dir);
    s.train = std::make_shared<data::ImageSet>(std::move(c.train));
    s.test = std::make_shared<data::ImageSet>(std::move(c.test));
  } else {
    throw engine::Error(str_cat("--data: unknown data kind '", kind,
                                "' (fashion-mnist, idx, cifar10, cifar100)"));
  }
  return s;
}

std::vector<int64_t> first_n(int64_t total, int64_t n) {
  std::vector<int64_t> idx(n > 0 && n < total ? n : total);
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  return idx;
}

}  // namespace

std::string default_data_dir(const std::string& kind) {
  if (kind == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  return "";
}

RunData load_run_data(const TrainConfig& cfg, const std::vector<float>& mean, const std::vector<float>& std) {
  Splits s = load_kind(cfg.data, cfg.data_dir);
  RunData r;
  r.train_name = cfg.data + (cfg.data_dir.empty() ? "" : " (" + cfg.data_dir + ")");
  std::vector<int64_t> pool = first_n(s.train->size(), cfg.train_subset);
  QIL_CHECK(cfg.val_size < static_cast<int64_t>(pool.size()), "--val-size ", cfg.val_size,
            " leaves no training images out of ", pool.size());
  data::Split split = data::split_holdout(static_cast<int64_t>(pool.size()), cfg.val_size, cfg.seed);
  std::vector<int64_t> train_idx, val_idx;
  for (int64_t i : split.train) train_idx.push_back(pool[i]);
  for (int64_t i : split.val) val_idx.push_back(pool[i]);
  if (mean.empty()) {
    data::ChannelStats st = data::channel_stats(*s.train, train_idx);
    r.mean = st.mean;
    r.std = st.std;
  } else {
    QIL_CHECK(static_cast<int64_t>(mean.size()) == s.train->channels(), "the network expects ", mean.size(),
              "-channel images, but ", cfg.data, " has ", s.train->channels());
    r.mean = mean;
    r.std = std;
  }
  bool crop = false, flip = false;
  std::stringstream ss(cfg.augment);
  for (std::string a; std::getline(ss, a, ',');) {
    crop = crop || a == "crop";
    flip = flip || a == "flip";
  }
  r.train = std::make_shared<data::InMemoryDataset>(
      s.train, train_idx, data::SmallImageTransform::train(r.mean, r.std, crop ? cfg.crop_padding : 0, flip));
  r.calib = std::make_shared<data::InMemoryDataset>(s.train, train_idx, data::SmallImageTransform::eval(r.mean, r.std));
  if (!val_idx.empty())
    r.val = std::make_shared<data::InMemoryDataset>(s.train, val_idx, data::SmallImageTransform::eval(r.mean, r.std));
  if (!cfg.eval_data.empty()) {
    r.test = load_eval_data(cfg.eval_data, cfg.eval_data_dir, cfg.test_subset, r.mean, r.std, &r.test_name);
  } else if (s.test) {
    r.test = std::make_shared<data::InMemoryDataset>(s.test, first_n(s.test->size(), cfg.test_subset),
                                                     data::SmallImageTransform::eval(r.mean, r.std));
    r.test_name = cfg.data + " test";
  }
  r.in_channels = s.train->channels();
  r.num_classes = s.train->num_classes;
  if (r.test) r.num_classes = std::max(r.num_classes, r.test->num_classes());
  r.image_size = s.train->height();
  QIL_CHECK(cfg.image_size == 0 || cfg.image_size == r.image_size, "--image-size ", cfg.image_size, ": ",
            cfg.data, " images are ", r.image_size, " pixels (resizing applies to imagenet data only)");
  return r;
}

std::shared_ptr<const data::Dataset> load_eval_data(const std::string& kind, const std::string& dir,
                                                    int64_t subset, const std::vector<float>& mean,
                                                    const std::vector<float>& std, std::string* name) {
  Splits s = load_kind(kind, dir);
  // A folder without a test split (e.g. a single IDX pair) is evaluated whole.
  auto set = s.test ? s.test : s.train;
  if (name) *name = kind + (s.test ? " test" : " (all)");
  QIL_CHECK(static_cast<int64_t>(mean.size()) == set->channels(), "the network expects ", mean.size(),
            "-channel images, but ", kind, " has ", set->channels());
  return std::make_shared<data::InMemoryDataset>(set, first_n(set->size(), subset),
                                                 data::SmallImageTransform::eval(mean, std));
}

}  // namespace apps
