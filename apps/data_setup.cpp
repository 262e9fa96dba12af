// Dataset construction for train and eval.
#include "apps/data_setup.h"

#include <algorithm>
#include <iostream>

#include "data/cifar.h"
#include "data/idx.h"
#include "data/imagenet.h"
#include "engine/check.h"
#include "engine/dist.h"

namespace apps {

using engine::str_cat;

namespace {

struct Splits {
  std::shared_ptr<const data::ImageSet> train, test;
};

Splits load_kind(const std::string& kind, const std::string& dir_in, int64_t max_idx_mb) {
  const std::string dir = dir_in.empty() ? default_data_dir(kind) : dir_in;
  QIL_CHECK(!dir.empty(), "--data ", kind, " needs --data-dir");
  Splits s;
  if (kind == "fashion-mnist" || kind == "idx" || kind == "mnist") {
    data::IdxFolder f = data::load_idx_folder(dir, static_cast<size_t>(max_idx_mb) << 20);
    s.train = std::make_shared<data::ImageSet>(std::move(f.train));
    if (f.test) s.test = std::make_shared<data::ImageSet>(std::move(*f.test));
  } else if (kind == "cifar10" || kind == "cifar100") {
    data::CifarSplits c = kind == "cifar10" ? data::load_cifar10(dir) : data::load_cifar100(dir);
    s.train = std::make_shared<data::ImageSet>(std::move(c.train));
    s.test = std::make_shared<data::ImageSet>(std::move(c.test));
  } else {
    throw engine::Error(str_cat("--data: unknown data kind '", kind,
                                "' (fashion-mnist, idx, cifar10, cifar100, imagenet)"));
  }
  return s;
}

// The seeded validation hold-out (--val-size) of the training pool.
void hold_out(const std::vector<int64_t>& pool, const DataOptions& o, std::vector<int64_t>& train_idx,
              std::vector<int64_t>& val_idx) {
  QIL_CHECK(o.val_size < static_cast<int64_t>(pool.size()), "--val-size ", o.val_size,
            " leaves no training images out of ", pool.size());
  data::Split split = data::split_holdout(static_cast<int64_t>(pool.size()), o.val_size, o.seed);
  for (int64_t i : split.train) train_idx.push_back(pool[i]);
  for (int64_t i : split.val) val_idx.push_back(pool[i]);
}

// Every k-th of `total` so that about n remain (class folders are stored in order; a prefix would be a few
// classes only).
std::vector<int64_t> strided(int64_t total, int64_t n) {
  std::vector<int64_t> idx;
  if (n <= 0 || n >= total) n = total;
  for (int64_t i = 0; i < n; ++i) idx.push_back(i * total / n);
  return idx;
}

data::ImageFolderIndex select(const data::ImageFolderIndex& in, const std::vector<int64_t>& idx) {
  data::ImageFolderIndex out;
  out.classes = in.classes;
  out.root = in.root;
  for (int64_t i : idx) out.samples.push_back(in.samples[static_cast<size_t>(i)]);
  return out;
}

// Notes on stderr, once per job (every rank builds the same data).
void note(const std::string& text) {
  if (engine::dist::rank() == 0) std::cerr << text << std::endl;
}

// The side a run on ImageNet-style folders trains at and its evaluation resize: --image-size, else the side
// of the network it starts from, else 224.
std::pair<int64_t, int64_t> imagenet_sides(const DataOptions& o, const InputGeometry* net) {
  const bool known = net && net->recorded && net->resize > 0;
  if (o.image_size == 0) {
    if (known) return {net->size, net->resize};
    return {224, data::ImageNetTransform::default_resize(224)};
  }
  if (known && o.image_size != net->size)
    note(str_cat("--image-size ", o.image_size, ": the network was trained at ", net->size,
                 " pixels; this run feeds it ", o.image_size, "-pixel images (and records that)"));
  if (known && o.image_size == net->size) return {net->size, net->resize};
  return {o.image_size, data::ImageNetTransform::default_resize(o.image_size)};
}

RunData load_imagenet(const DataOptions& o, const InputGeometry* net) {
  QIL_CHECK(!o.data_dir.empty(), "--data imagenet needs --data-dir (a folder with train/ and val/)");
  data::ImageNetSplits sp = data::scan_imagenet(o.data_dir);
  QIL_CHECK(!sp.train.samples.empty(), "--data-dir ", o.data_dir, ": no training images under train/");
  const auto [size, resize] = imagenet_sides(o, net);
  data::ImageFolderOptions opt;
  opt.max_bad_files = o.max_bad_files;
  RunData r;
  r.train_name = "imagenet (" + o.data_dir + ")";
  std::vector<int64_t> pool = strided(static_cast<int64_t>(sp.train.samples.size()), o.train_subset);
  std::vector<int64_t> train_idx, val_idx;
  hold_out(pool, o, train_idx, val_idx);
  data::ImageNetTransform tr = data::ImageNetTransform::train_default(size);
  data::ImageNetTransform ev = data::ImageNetTransform::eval_default(size, resize);
  if (net) {
    QIL_CHECK(net->mean.size() == 3, "the network expects ", net->mean.size(),
              "-channel images, but imagenet data is RGB");
    tr.mean = ev.mean = net->mean;
    tr.std = ev.std = net->std;
  }
  tr.flip = o.flip;
  r.mean = tr.mean;
  r.std = tr.std;
  r.train = std::make_shared<data::ImageFolderDataset>(select(sp.train, train_idx), tr, opt);
  r.calib = std::make_shared<data::ImageFolderDataset>(select(sp.train, train_idx), ev, opt);
  if (!val_idx.empty()) r.val = std::make_shared<data::ImageFolderDataset>(select(sp.train, val_idx), ev, opt);
  if (!sp.val.samples.empty()) {
    r.test = std::make_shared<data::ImageFolderDataset>(
        select(sp.val, strided(static_cast<int64_t>(sp.val.samples.size()), o.test_subset)), ev, opt);
    r.test_name = "imagenet val";
  }
  r.in_channels = 3;
  r.num_classes = static_cast<int64_t>(sp.train.classes.size());
  r.image_size = size;
  r.eval_resize = resize;
  return r;
}

// What a checkpoint of a run on `r` records about its inputs.
InputGeometry geometry_of(const RunData& r) {
  InputGeometry g;
  g.channels = r.in_channels;
  g.size = r.image_size;
  g.resize = r.eval_resize;
  g.mean = r.mean;
  g.std = r.std;
  g.recorded = true;
  return g;
}

std::vector<int64_t> first_n(int64_t total, int64_t n) {
  std::vector<int64_t> idx(n > 0 && n < total ? n : total);
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  return idx;
}

}  // namespace

InputGeometry network_input(const layers::ModelMeta& meta) {
  InputGeometry g;
  g.channels = meta.spec.in_channels;
  g.size = meta.spec.image_size;
  g.mean = meta.mean;
  g.std = meta.std;
  g.recorded = meta.input.recorded;
  g.data = meta.input.data;
  g.resize = meta.input.resize;
  return g;
}

std::string default_data_dir(const std::string& kind) {
  if (kind == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  return "";
}

RunData load_run_data(const DataOptions& o, const InputGeometry* net) {
  if (o.data == "imagenet") {
    RunData r = load_imagenet(o, net);
    if (!o.eval_data.empty())
      r.test = load_eval_data(o.eval_data, o.eval_data_dir, o.test_subset, geometry_of(r), &r.test_name,
                              o.max_idx_mb);
    return r;
  }
  Splits s = load_kind(o.data, o.data_dir, o.max_idx_mb);
  RunData r;
  r.train_name = o.data + (o.data_dir.empty() ? "" : " (" + o.data_dir + ")");
  std::vector<int64_t> pool = first_n(s.train->size(), o.train_subset);
  std::vector<int64_t> train_idx, val_idx;
  hold_out(pool, o, train_idx, val_idx);
  if (!net) {
    data::ChannelStats st = data::channel_stats(*s.train, train_idx);
    r.mean = st.mean;
    r.std = st.std;
  } else {
    QIL_CHECK(static_cast<int64_t>(net->mean.size()) == s.train->channels(), "the network expects ",
              net->mean.size(), "-channel images, but ", o.data, " has ", s.train->channels());
    r.mean = net->mean;
    r.std = net->std;
  }
  const bool crop = o.crop, flip = o.flip;
  r.train = std::make_shared<data::InMemoryDataset>(
      s.train, train_idx, data::SmallImageTransform::train(r.mean, r.std, crop ? o.crop_padding : 0, flip));
  r.calib = std::make_shared<data::InMemoryDataset>(s.train, train_idx, data::SmallImageTransform::eval(r.mean, r.std));
  if (!val_idx.empty())
    r.val = std::make_shared<data::InMemoryDataset>(s.train, val_idx, data::SmallImageTransform::eval(r.mean, r.std));
  r.in_channels = s.train->channels();
  r.image_size = s.train->height();
  if (!o.eval_data.empty()) {
    r.test = load_eval_data(o.eval_data, o.eval_data_dir, o.test_subset, geometry_of(r), &r.test_name,
                            o.max_idx_mb);
  } else if (s.test) {
    r.test = std::make_shared<data::InMemoryDataset>(s.test, first_n(s.test->size(), o.test_subset),
                                                     data::SmallImageTransform::eval(r.mean, r.std));
    r.test_name = o.data + " test";
  }
  r.num_classes = s.train->num_classes;
  if (r.test) r.num_classes = std::max(r.num_classes, r.test->num_classes());
  QIL_CHECK(o.image_size == 0 || o.image_size == r.image_size, "--image-size ", o.image_size, ": ",
            o.data, " images are ", r.image_size, " pixels (resizing applies to imagenet data only)");
  return r;
}

InputGeometry imagenet_eval_input(const InputGeometry& in) {
  if (in.recorded && in.size > 0) {
    InputGeometry g = in;
    if (g.resize <= 0) g.resize = data::ImageNetTransform::default_resize(g.size);
    return g;
  }
  InputGeometry g = in;
  g.size = 224;
  g.resize = 256;
  g.recorded = true;
  note(str_cat("the network's checkpoint does not record how its inputs were made (written before checkpoints "
               "did): evaluating imagenet data as before, shorter side 256, center crop 224; its network was built "
               "for ", in.size, "-pixel inputs (--image-size ", in.size, " evaluates at that size)"));
  return g;
}

std::shared_ptr<const data::Dataset> load_eval_data(const std::string& kind, const std::string& dir,
                                                    int64_t subset, const InputGeometry& in, std::string* name,
                                                    int64_t max_idx_mb) {
  if (kind == "imagenet") {
    QIL_CHECK(!dir.empty(), "imagenet evaluation needs a data folder (with val/)");
    data::ImageNetSplits sp = data::scan_imagenet(dir);
    QIL_CHECK(!sp.val.samples.empty(), dir, ": no validation images under val/");
    QIL_CHECK(in.mean.size() == 3, "the network expects ", in.mean.size(), "-channel images, but imagenet data is RGB");
    const InputGeometry g = imagenet_eval_input(in);
    data::ImageNetTransform ev = data::ImageNetTransform::eval_default(g.size, g.resize);
    ev.mean = g.mean;
    ev.std = g.std;
    if (name) *name = "imagenet val";
    return std::make_shared<data::ImageFolderDataset>(
        select(sp.val, strided(static_cast<int64_t>(sp.val.samples.size()), subset)), ev);
  }
  Splits s = load_kind(kind, dir, max_idx_mb);
  // A folder without a test split (e.g. a single IDX pair) is evaluated whole.
  auto set = s.test ? s.test : s.train;
  if (name) *name = kind + (s.test ? " test" : " (all)");
  QIL_CHECK(static_cast<int64_t>(in.mean.size()) == set->channels(), "the network expects ", in.mean.size(),
            "-channel images, but ", kind, " has ", set->channels());
  return std::make_shared<data::InMemoryDataset>(set, first_n(set->size(), subset),
                                                 data::SmallImageTransform::eval(in.mean, in.std));
}

}  // namespace apps
