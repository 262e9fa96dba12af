// Small-image transform, the in-memory dataset, channel statistics and splits.
#include "data/dataset.h"

#include <algorithm>
#include <cmath>

#include "engine/check.h"

namespace data {

void SmallImageTransform::apply(const uint8_t* src, int64_t c, int64_t h, int64_t w, float* out,
                                engine::Generator& rng) const {
  QIL_CHECK(static_cast<int64_t>(mean.size()) == c && static_cast<int64_t>(std.size()) == c,
            "SmallImageTransform: ", c, " channels but ", mean.size(), " means and ", std.size(), " stds");
  QIL_CHECK(pad >= 0, "SmallImageTransform: negative padding ", pad);
  // Offset of the crop window in the padded image; the window's (0,0) is source pixel (top-pad, left-pad).
  int64_t top = pad, left = pad;
  if (pad > 0) {
    top = static_cast<int64_t>(rng.below(static_cast<uint64_t>(2 * pad + 1)));
    left = static_cast<int64_t>(rng.below(static_cast<uint64_t>(2 * pad + 1)));
  }
  const bool mirror = flip && rng.uniform() < 0.5f;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float scale = 1.f / (255.f * std[ch]);
    const float shift = -mean[ch] / std[ch];  // (x/255 - m)/s = x * scale + shift
    const uint8_t* plane = src + ch * h * w;
    float* o = out + ch * h * w;
    for (int64_t y = 0; y < h; ++y) {
      const int64_t sy = y + top - pad;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sx = (mirror ? w - 1 - x : x) + left - pad;
        const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
        const float v = inside ? static_cast<float>(plane[sy * w + sx]) : 0.f;
        o[y * w + x] = v * scale + shift;
      }
    }
  }
}

namespace {
std::vector<int64_t> all_indices(const std::shared_ptr<const ImageSet>& set) {
  QIL_CHECK(set, "InMemoryDataset: no image set");
  std::vector<int64_t> idx(static_cast<size_t>(set->size()));
  for (int64_t i = 0; i < set->size(); ++i) idx[i] = i;
  return idx;
}
}  // namespace

InMemoryDataset::InMemoryDataset(std::shared_ptr<const ImageSet> set, SmallImageTransform transform)
    : InMemoryDataset(set, all_indices(set), std::move(transform)) {}

InMemoryDataset::InMemoryDataset(std::shared_ptr<const ImageSet> set, std::vector<int64_t> indices,
                                 SmallImageTransform transform)
    : set_(std::move(set)), indices_(std::move(indices)), transform_(std::move(transform)) {
  QIL_CHECK(set_ && set_->images.defined(), "InMemoryDataset: no image set");
  for (int64_t i : indices_)
    QIL_CHECK(i >= 0 && i < set_->size(), "InMemoryDataset: index ", i, " out of range for ", set_->size(),
              " images of ", set_->source);
  const int64_t c = set_->channels();
  QIL_CHECK(static_cast<int64_t>(transform_.mean.size()) == c && static_cast<int64_t>(transform_.std.size()) == c,
            "InMemoryDataset: ", set_->source, " has ", c, " channels but the transform has ", transform_.mean.size(),
            " means and ", transform_.std.size(), " stds");
}

engine::Shape InMemoryDataset::sample_shape() const {
  return {set_->channels(), set_->height(), set_->width()};
}

int32_t InMemoryDataset::get(int64_t index, float* out, engine::Generator& rng) const {
  QIL_CHECK(index >= 0 && index < size(), "InMemoryDataset: sample ", index, " out of range for ", size(), " samples");
  const int64_t i = indices_[index];
  const int64_t c = set_->channels(), h = set_->height(), w = set_->width();
  transform_.apply(set_->images.data<uint8_t>() + i * c * h * w, c, h, w, out, rng);
  return set_->labels[i];
}

ChannelStats channel_stats(const ImageSet& set, const std::vector<int64_t>& indices) {
  const int64_t c = set.channels(), hw = set.height() * set.width();
  const int64_t n = indices.empty() ? set.size() : static_cast<int64_t>(indices.size());
  QIL_CHECK(n > 0, "channel_stats: no images in ", set.source);
  const uint8_t* px = set.images.data<uint8_t>();
  // Integer sums are exact (a 255^2 * 2^40 bound is far away), so the result does not depend on order.
  std::vector<uint64_t> sum(c, 0), sq(c, 0);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = indices.empty() ? k : indices[k];
    QIL_CHECK(i >= 0 && i < set.size(), "channel_stats: index ", i, " out of range for ", set.size(), " images");
    for (int64_t ch = 0; ch < c; ++ch) {
      const uint8_t* p = px + (i * c + ch) * hw;
      uint64_t s = 0, q = 0;
      for (int64_t j = 0; j < hw; ++j) { s += p[j]; q += uint64_t(p[j]) * p[j]; }
      sum[ch] += s; sq[ch] += q;
    }
  }
  ChannelStats st;
  const double count = static_cast<double>(n) * hw;
  for (int64_t ch = 0; ch < c; ++ch) {
    const double m = sum[ch] / count, var = std::max(0.0, sq[ch] / count - m * m);
    st.mean.push_back(static_cast<float>(m / 255.0));
    st.std.push_back(static_cast<float>(std::sqrt(var) / 255.0));
  }
  return st;
}

std::vector<int64_t> permutation(int64_t n, engine::Generator& rng) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.below(static_cast<uint64_t>(i + 1))]);
  return p;
}

Split split_holdout(int64_t n, int64_t holdout, uint64_t seed) {
  QIL_CHECK(holdout >= 0 && holdout < n, "split_holdout: cannot hold out ", holdout, " of ", n, " samples");
  engine::Generator rng(seed);
  const std::vector<int64_t> p = permutation(n, rng);
  Split s;
  s.val.assign(p.begin(), p.begin() + holdout);
  s.train.assign(p.begin() + holdout, p.end());
  std::sort(s.val.begin(), s.val.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

}  // namespace data
