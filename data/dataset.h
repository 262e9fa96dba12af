// The Dataset interface the loader draws from, an in-memory dataset over an ImageSet (with an index subset
// and a small-image transform), per-channel statistics and seeded hold-out splits.
// Not a loader: batching, shuffling, sharding and threads live in loader.h.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "data/image_set.h"
#include "engine/random.h"
#include "engine/tensor.h"

namespace data {

// A random-access source of labelled samples. get() must be safe to call from several threads at once and
// must draw every random number it needs from `rng` alone, so a sample depends only on (index, rng seed).
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual engine::Shape sample_shape() const = 0;  // (C, H, W) after the transform
  virtual int64_t num_classes() const = 0;
  // Writes one transformed sample, C*H*W floats laid out (C, H, W), into out; returns its label.
  virtual int32_t get(int64_t index, float* out, engine::Generator& rng) const = 0;
};

// Augmentation for small images (MNIST, CIFAR), as torchvision's RandomCrop(size, padding=pad) +
// RandomHorizontalFlip + ToTensor + Normalize: zero-pad the uint8 image by `pad` on every side, crop a random
// H x W window, flip left-right with probability 1/2, then (x/255 - mean[c]) / std[c]. Padded pixels are 0
// before normalization, as torchvision pads the image, not the normalized tensor.
// Random draws, in order: crop top in [0, 2*pad], crop left in [0, 2*pad], flip if uniform() < 0.5.
struct SmallImageTransform {
  std::vector<float> mean;  // (C), on [0,1]-scaled pixels
  std::vector<float> std;   // (C)
  int64_t pad = 0;          // random crop with this zero padding; 0 = no crop
  bool flip = false;        // random horizontal flip

  static SmallImageTransform train(std::vector<float> mean, std::vector<float> std, int64_t pad, bool flip) {
    return {std::move(mean), std::move(std), pad, flip};
  }
  static SmallImageTransform eval(std::vector<float> mean, std::vector<float> std) {
    return {std::move(mean), std::move(std), 0, false};
  }
  // src u8 (C, H, W) -> out f32 (C, H, W). Draws from rng only when pad > 0 or flip.
  void apply(const uint8_t* src, int64_t c, int64_t h, int64_t w, float* out, engine::Generator& rng) const;
};

// Samples of an ImageSet selected by `indices` (all of them when omitted), transformed.
class InMemoryDataset : public Dataset {
 public:
  InMemoryDataset(std::shared_ptr<const ImageSet> set, SmallImageTransform transform);
  InMemoryDataset(std::shared_ptr<const ImageSet> set, std::vector<int64_t> indices, SmallImageTransform transform);
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  engine::Shape sample_shape() const override;
  int64_t num_classes() const override { return set_->num_classes; }
  int32_t get(int64_t index, float* out, engine::Generator& rng) const override;

 private:
  std::shared_ptr<const ImageSet> set_;
  std::vector<int64_t> indices_;
  SmallImageTransform transform_;
};

struct ChannelStats {
  std::vector<float> mean;  // (C), of pixels scaled to [0,1]
  std::vector<float> std;   // (C), population standard deviation (as the usual published constants)
};
// Per-channel mean and std of the images at `indices` (all images when empty).
ChannelStats channel_stats(const ImageSet& set, const std::vector<int64_t>& indices = {});

// A seeded random permutation of 0..n-1 (Fisher-Yates).
std::vector<int64_t> permutation(int64_t n, engine::Generator& rng);

struct Split {
  std::vector<int64_t> train;  // ascending
  std::vector<int64_t> val;    // ascending, `holdout` indices
};
// Hold out `holdout` of n samples chosen by a permutation seeded with `seed`; deterministic in (n, holdout, seed).
Split split_holdout(int64_t n, int64_t holdout, uint64_t seed);

}  // namespace data
