// ImageNet-style folder datasets: `train/<class>/*`, `val/<class>/*` or a flat `val/` with a label file;
// the random-resized-crop / resize-and-center-crop transforms; a Dataset that decodes files on demand and
// replaces undecodable ones deterministically. Not an in-memory cache and not a reader of ImageNet's
// devkit metadata (its 1-based ids follow the devkit's own order: convert them to folder names first).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"

namespace data {

struct ImageEntry {
  std::string path;
  int32_t label = 0;
};

struct ImageFolderIndex {
  std::vector<std::string> classes;  // class folder names, sorted; label = position
  std::vector<ImageEntry> samples;   // by class, then by file name
  std::string root;
};

// dir/<class>/<file>. With `classes` empty the classes are dir's sorted subfolder names; otherwise they are
// given (e.g. the train classes, for val) and every subfolder must be one of them. Names starting with '.'
// (files or folders) are skipped; an empty class folder is allowed (the class keeps its number).
ImageFolderIndex scan_class_folders(const std::string& dir, const std::vector<std::string>& classes = {});

// A flat folder of images plus a label file. Each non-empty line is either "file label" or a lone "label"
// (the label of the k-th file of the folder in sorted name order); a label is a class name from `classes`
// or a 0-based class number. With "file label" lines only the listed files are used and each must exist;
// with lone labels the number of lines must equal the number of (non-hidden) files.
ImageFolderIndex scan_flat_folder(const std::string& dir, const std::string& label_file,
                                  const std::vector<std::string>& classes);

struct ImageNetSplits {
  ImageFolderIndex train;
  ImageFolderIndex val;
};
// root/train/<class>/*, and root/val either with class folders or flat with `val_label_file`
// (default root/val_labels.txt when empty).
ImageNetSplits scan_imagenet(const std::string& root, const std::string& val_label_file = "");

// Train: random-resized-crop (area fraction in [scale_min, scale_max], aspect ratio log-uniform in
// [ratio_min, ratio_max], 10 tries, then a center crop clamped to the ratio range — torchvision's
// RandomResizedCrop) to size x size, horizontal flip with p = 1/2, normalize.
// Eval: resize the shorter side to `resize` (the longer one to floor(resize * long / short)), center crop
// size x size, normalize. Resampling is antialiased bilinear (image.h), on unrounded values.
// Random draws (train): per try, uniform(scale), uniform(log ratio), then below(H - h + 1), below(W - w + 1)
// when the box fits; then one uniform() for the flip.
struct ImageNetTransform {
  bool train = true;
  int64_t size = 224;
  int64_t resize = 256;
  float scale_min = 0.08f, scale_max = 1.f;
  float ratio_min = 3.f / 4.f, ratio_max = 4.f / 3.f;
  bool flip = true;
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  std::vector<float> std = {0.229f, 0.224f, 0.225f};

  static ImageNetTransform train_default(int64_t size = 224) { ImageNetTransform t; t.size = size; return t; }
  // torchvision's ratio: the shorter side goes to size·256/224 (rounded) before the center crop of `size`.
  static int64_t default_resize(int64_t size) { return (size * 256 + 112) / 224; }
  static ImageNetTransform eval_default(int64_t size = 224, int64_t resize = 256) {
    ImageNetTransform t; t.train = false; t.flip = false; t.size = size; t.resize = resize; return t;
  }
  // The crop box (top, left, height, width) in source pixels; torchvision's get_params for train.
  struct Box { double top, left, height, width; };
  Box crop_box(int64_t h, int64_t w, engine::Generator& rng) const;
  // img -> out f32 (3, size, size).
  void apply(const RgbImage& img, float* out, engine::Generator& rng) const;
};

struct ImageFolderOptions {
  int64_t max_pixels = int64_t(8192) * 8192;  // per image, checked from the header before decoding
  size_t max_file_bytes = size_t(64) << 20;
  int64_t max_bad_files = 100;                // more distinct undecodable files than this: an error
  bool warn = true;                           // one line on stderr per bad file
};

// Decodes on demand. An undecodable file is skipped with a warning naming it and counted once; the sample
// is replaced by the next decodable one in dataset order (index + 1, + 2, ..., wrapping), with the same
// generator, so the batch stays full and the replacement is the same whatever the thread or rank.
class ImageFolderDataset : public Dataset {
 public:
  ImageFolderDataset(ImageFolderIndex index, ImageNetTransform transform, ImageFolderOptions options = {});
  int64_t size() const override { return static_cast<int64_t>(index_.samples.size()); }
  engine::Shape sample_shape() const override { return {3, transform_.size, transform_.size}; }
  int64_t num_classes() const override { return static_cast<int64_t>(index_.classes.size()); }
  int32_t get(int64_t index, float* out, engine::Generator& rng) const override;

  const ImageFolderIndex& index() const { return index_; }
  int64_t bad_files() const;                    // distinct undecodable files met so far
  std::vector<std::string> bad_file_names() const;

 private:
  void record_bad(const std::string& path, const std::string& why) const;
  ImageFolderIndex index_;
  ImageNetTransform transform_;
  ImageFolderOptions options_;
  mutable std::mutex bad_mu_;
  mutable std::set<std::string> bad_;
};

}  // namespace data
