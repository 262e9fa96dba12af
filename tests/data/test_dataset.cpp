// Small-image transform golden values worked by hand, the in-memory dataset, channel statistics, splits.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "data/dataset.h"
#include "fixtures.h"

using namespace qiltest;
using engine::Error;
using engine::Generator;

namespace {

// One 3x3 channel with no 0 pixel, so a zero-padded pixel is told apart from an image pixel.
// With mean 0.5, std 0.25: x -> (x/255 - 0.5)/0.25, so 51 -> -1.2, 102 -> -0.4, 153 -> 0.4, 204 -> 1.2,
// 255 -> 2, and padding (pixel 0) -> -2.
const std::vector<uint8_t> kImg = {51, 102, 153,
                                   204, 255, 102,
                                   153, 51, 204};
constexpr float P = -2.f;  // a padded pixel after normalization

std::vector<float> run(const data::SmallImageTransform& t, Generator g) {
  std::vector<float> out(9, 99.f);  // poison: every element must be written
  t.apply(kImg.data(), 1, 3, 3, out.data(), g);
  return out;
}

void check_close(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-6));
}

}  // namespace

TEST_CASE("transform: eval normalizes only, per channel") {
  check_close(run(data::SmallImageTransform::eval({0.5f}, {0.25f}), Generator(1)),
              {-1.2f, -0.4f, 0.4f, 1.2f, 2.f, -0.4f, 0.4f, -1.2f, 1.2f});
  // Two channels, different constants: channel 0 (mean 0, std 1) -> x/255; channel 1 (mean 1, std 0.5) -> 2x/255 - 2.
  const std::vector<uint8_t> two = {0, 255, 51, 204};  // (2, 1, 2)
  data::SmallImageTransform t = data::SmallImageTransform::eval({0.f, 1.f}, {1.f, 0.5f});
  std::vector<float> out(4);
  Generator g(0);
  t.apply(two.data(), 2, 1, 2, out.data(), g);
  check_close(out, {0.f, 1.f, -1.6f, -0.4f});
  CHECK_THROWS_WITH_AS(t.apply(two.data(), 3, 1, 1, out.data(), g), doctest::Contains("3 channels but 2 means"), Error);
}

TEST_CASE("transform: horizontal flip mirrors each row") {
  const data::SmallImageTransform t = data::SmallImageTransform::train({0.5f}, {0.25f}, 0, true);
  const std::vector<float> plain = {-1.2f, -0.4f, 0.4f, 1.2f, 2.f, -0.4f, 0.4f, -1.2f, 1.2f};
  const std::vector<float> mirrored = {0.4f, -0.4f, -1.2f, -0.4f, 2.f, 1.2f, 1.2f, -1.2f, 0.4f};
  int flips = 0;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    Generator probe(seed);
    const bool flip = probe.uniform() < 0.5f;  // the transform's one draw when pad = 0
    flips += flip;
    check_close(run(t, Generator(seed)), flip ? mirrored : plain);
  }
  CHECK(flips > 150);  // p = 1/2 over 400 draws
  CHECK(flips < 250);
}

TEST_CASE("transform: random crop with zero padding 1, then flip") {
  const data::SmallImageTransform crop = data::SmallImageTransform::train({0.5f}, {0.25f}, 1, false);
  const data::SmallImageTransform both = data::SmallImageTransform::train({0.5f}, {0.25f}, 1, true);
  // Window offsets (top, left) in the 5x5 padded image, worked by hand:
  // (0,0): shifted down-right, pixels 51 102 / 204 255 in the lower right.
  const std::vector<float> c00 = {P, P, P, P, -1.2f, -0.4f, P, 1.2f, 2.f};
  // (1,1): the image itself.
  const std::vector<float> c11 = {-1.2f, -0.4f, 0.4f, 1.2f, 2.f, -0.4f, 0.4f, -1.2f, 1.2f};
  // (2,2): shifted up-left, pixels 255 102 / 51 204 in the upper left.
  const std::vector<float> c22 = {2.f, -0.4f, P, -1.2f, 1.2f, P, P, P, P};
  // (2,0): rows 1..2 shifted right: 204 255 / 153 51.
  const std::vector<float> c20 = {P, 1.2f, 2.f, P, 0.4f, -1.2f, P, P, P};
  // (0,0) then flipped: each row of c00 reversed.
  const std::vector<float> c00f = {P, P, P, -0.4f, -1.2f, P, 2.f, 1.2f, P};
  std::set<std::pair<int, int>> seen;
  int checked = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    Generator probe(seed);  // the documented draw order: top, left, then the flip
    const int top = static_cast<int>(probe.below(3)), left = static_cast<int>(probe.below(3));
    const bool flip = probe.uniform() < 0.5f;
    seen.insert({top, left});
    if (top == 0 && left == 0) { check_close(run(crop, Generator(seed)), c00); ++checked; }
    if (top == 1 && left == 1) { check_close(run(crop, Generator(seed)), c11); ++checked; }
    if (top == 2 && left == 2) { check_close(run(crop, Generator(seed)), c22); ++checked; }
    if (top == 2 && left == 0) { check_close(run(crop, Generator(seed)), c20); ++checked; }
    if (top == 0 && left == 0 && flip) { check_close(run(both, Generator(seed)), c00f); ++checked; }
  }
  CHECK(seen.size() == 9);  // every offset in [0, 2]^2 occurs
  CHECK(checked > 100);
}

TEST_CASE("in-memory dataset: subset, shape, label, range errors") {
  auto set = std::make_shared<data::ImageSet>();
  set->images = engine::Tensor::empty({2, 1, 3, 3}, engine::DType::u8);
  std::copy(kImg.begin(), kImg.end(), set->images.data<uint8_t>());
  std::fill(set->images.data<uint8_t>() + 9, set->images.data<uint8_t>() + 18, uint8_t(255));
  set->labels = {4, 7};
  set->num_classes = 8;
  set->source = "toy";
  data::InMemoryDataset ds(set, {1, 0, 1}, data::SmallImageTransform::eval({0.5f}, {0.25f}));
  CHECK(ds.size() == 3);
  CHECK(ds.sample_shape() == engine::Shape{1, 3, 3});
  CHECK(ds.num_classes() == 8);
  std::vector<float> out(9);
  Generator g(0);
  CHECK(ds.get(1, out.data(), g) == 4);
  CHECK(out[0] == doctest::Approx(-1.2f));
  CHECK(ds.get(2, out.data(), g) == 7);
  CHECK(out[8] == doctest::Approx(2.f));
  CHECK_THROWS_WITH_AS(ds.get(3, out.data(), g), doctest::Contains("sample 3 out of range for 3"), Error);
  CHECK_THROWS_WITH_AS(data::InMemoryDataset(set, {2}, data::SmallImageTransform::eval({0.5f}, {0.25f})),
                       doctest::Contains("index 2 out of range for 2 images of toy"), Error);
  CHECK_THROWS_WITH_AS(data::InMemoryDataset(set, data::SmallImageTransform::eval({0.5f, 0.5f}, {1.f, 1.f})),
                       doctest::Contains("toy has 1 channels but the transform has 2 means"), Error);
}

TEST_CASE("channel statistics by hand") {
  data::ImageSet s;
  s.images = engine::Tensor::empty({2, 2, 1, 2}, engine::DType::u8);  // (N=2, C=2, 1, 2)
  // Channel 0 over both images: {0, 255, 255, 255} -> mean 0.75, var 0.75 - 0.5625 = 0.1875, std 0.4330127.
  // Channel 1: {51, 51, 102, 102} -> mean 76.5/255 = 0.3, std 25.5/255 = 0.1.
  const uint8_t px[] = {0, 255, 51, 51, 255, 255, 102, 102};
  std::copy(px, px + 8, s.images.data<uint8_t>());
  s.labels = {0, 1};
  data::ChannelStats st = data::channel_stats(s);
  CHECK(st.mean[0] == doctest::Approx(0.75));
  CHECK(st.std[0] == doctest::Approx(0.4330127));
  CHECK(st.mean[1] == doctest::Approx(0.3));
  CHECK(st.std[1] == doctest::Approx(0.1));
  data::ChannelStats one = data::channel_stats(s, {1});  // image 1 only: channel 0 all 255
  CHECK(one.mean[0] == doctest::Approx(1.0));
  CHECK(one.std[0] == doctest::Approx(0.0));
  CHECK(one.mean[1] == doctest::Approx(0.4));
}

TEST_CASE("split_holdout: seeded, disjoint, covering, deterministic") {
  data::Split a = data::split_holdout(1000, 100, 42);
  CHECK(a.val.size() == 100);
  CHECK(a.train.size() == 900);
  std::vector<int64_t> all = a.train;
  all.insert(all.end(), a.val.begin(), a.val.end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(all[i] == i);
  CHECK(std::is_sorted(a.val.begin(), a.val.end()));
  data::Split b = data::split_holdout(1000, 100, 42);
  CHECK(a.val == b.val);
  CHECK(a.train == b.train);
  CHECK(data::split_holdout(1000, 100, 43).val != a.val);
  // Not just the first or last 100 indices.
  CHECK(a.val.front() < 900);
  CHECK(a.val.back() >= 100);
  CHECK(data::split_holdout(10, 0, 1).train.size() == 10);
  CHECK_THROWS_WITH_AS(data::split_holdout(10, 10, 1), doctest::Contains("cannot hold out 10 of 10"), Error);
}
