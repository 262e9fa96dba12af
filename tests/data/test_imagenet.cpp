// ImageNet-style folders on trees generated here: scanning rules, label files, transforms, bad files.
#include <doctest/doctest.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>

#include "data/imagenet.h"
#include "data/loader.h"
#include "fixtures.h"

using namespace qiltest;
using engine::Error;

namespace {

void png(const std::string& path, int w, int h, uint8_t v) {
  std::vector<uint8_t> px(static_cast<size_t>(w * h * 3), v);
  REQUIRE(stbi_write_png(path.c_str(), w, h, 3, px.data(), w * 3));
}
void jpg(const std::string& path, int w, int h, uint8_t v) {
  std::vector<uint8_t> px(static_cast<size_t>(w * h * 3), v);
  REQUIRE(stbi_write_jpg(path.c_str(), w, h, 3, px.data(), 95));
}
void text(const std::string& path, const std::string& s) { write_bytes(path, std::vector<uint8_t>(s.begin(), s.end())); }

// root/train/{n01: a.JPEG (jpeg), b.JPEG (png); n02: empty; n03: gray, été.JPEG, bad.JPEG (text), .hidden};
// hidden entries at every level; root/val flat with three images.
void make_tree(const TempDir& d) {
  fs::create_directories(d.path() / "train/n01");
  fs::create_directories(d.path() / "train/n02");
  fs::create_directories(d.path() / "train/n03");
  fs::create_directories(d.path() / "train/.cache");
  fs::create_directories(d.path() / "val");
  jpg(d.file("train/n01/a.JPEG"), 40, 30, 100);
  png(d.file("train/n01/b.JPEG"), 20, 20, 200);
  std::vector<uint8_t> gray(25 * 25, 50);
  REQUIRE(stbi_write_jpg(d.file("train/n03/gray.JPEG").c_str(), 25, 25, 1, gray.data(), 95));
  png(d.file("train/n03/\xC3\xA9t\xC3\xA9.JPEG"), 30, 40, 10);
  text(d.file("train/n03/bad.JPEG"), "not an image");
  text(d.file("train/n03/.hidden.JPEG"), "hidden");
  text(d.file("train/.DS_Store"), "x");
  png(d.file("train/.cache/x.JPEG"), 4, 4, 1);
  png(d.file("val/v1.JPEG"), 16, 16, 1);
  png(d.file("val/v2.JPEG"), 16, 16, 2);
  png(d.file("val/v3.JPEG"), 16, 16, 3);
  text(d.file("val/.hidden"), "x");
}

}  // namespace

TEST_CASE("imagenet: class folders sorted, hidden entries skipped, empty class kept") {
  TempDir d;
  make_tree(d);
  data::ImageFolderIndex idx = data::scan_class_folders(d.file("train"));
  CHECK(idx.classes == std::vector<std::string>{"n01", "n02", "n03"});
  REQUIRE(idx.samples.size() == 5);
  CHECK(idx.samples[0].path == d.file("train/n01/a.JPEG"));
  CHECK(idx.samples[1].label == 0);
  // n03 sorted by bytes: "bad.JPEG" < "gray.JPEG" < "\xC3\xA9t\xC3\xA9.JPEG".
  CHECK(idx.samples[2].path == d.file("train/n03/bad.JPEG"));
  CHECK(idx.samples[3].path == d.file("train/n03/gray.JPEG"));
  CHECK(idx.samples[4].path == d.file("train/n03/\xC3\xA9t\xC3\xA9.JPEG"));
  for (size_t i = 2; i < 5; ++i) CHECK(idx.samples[i].label == 2);

  fs::create_directories(d.path() / "valc/n03");
  fs::create_directories(d.path() / "valc/n09");
  png(d.file("valc/n03/x.png"), 4, 4, 1);
  CHECK_THROWS_WITH_AS(data::scan_class_folders(d.file("valc"), idx.classes),
                       has(d.file("valc/n09") + ": class folder 'n09' is not one of the 3 known classes"), Error);
  fs::remove(d.path() / "valc/n09");
  data::ImageFolderIndex v = data::scan_class_folders(d.file("valc"), idx.classes);
  REQUIRE(v.samples.size() == 1);
  CHECK(v.samples[0].label == 2);  // numbered as in train, not by its own folders
  CHECK_THROWS_WITH_AS(data::scan_class_folders(d.file("nowhere")), has(d.file("nowhere") + ": no such folder"), Error);
}

TEST_CASE("imagenet: flat val folder with a label file, both forms") {
  TempDir d;
  make_tree(d);
  const std::vector<std::string> classes = {"n01", "n02", "n03"};
  text(d.file("pairs.txt"), "v2.JPEG n03\nv1.JPEG 1\r\n\nv3.JPEG n01\n");
  data::ImageFolderIndex a = data::scan_flat_folder(d.file("val"), d.file("pairs.txt"), classes);
  REQUIRE(a.samples.size() == 3);
  CHECK(a.samples[0].path == d.file("val/v2.JPEG"));
  CHECK(a.samples[0].label == 2);
  CHECK(a.samples[1].label == 1);
  CHECK(a.samples[2].label == 0);
  // Lone labels: one per file of the folder in sorted order (v1, v2, v3; the hidden file does not count).
  text(d.file("val_labels.txt"), "n02\nn02\n0\n");
  data::ImageNetSplits s = data::scan_imagenet(d.path().string());
  CHECK(s.train.classes == classes);
  REQUIRE(s.val.samples.size() == 3);
  CHECK(s.val.samples[2].path == d.file("val/v3.JPEG"));
  CHECK(s.val.samples[2].label == 0);
  CHECK(s.val.samples[0].label == 1);

  text(d.file("short.txt"), "n02\nn02\n");
  CHECK_THROWS_WITH_AS(data::scan_flat_folder(d.file("val"), d.file("short.txt"), classes),
                       has(d.file("short.txt") + ": 2 labels for 3 files"), Error);
  text(d.file("unknown.txt"), "v1.JPEG n77\n");
  CHECK_THROWS_WITH_AS(data::scan_flat_folder(d.file("val"), d.file("unknown.txt"), classes),
                       has(d.file("unknown.txt") + ": label 'n77' is neither a class name nor a class number"), Error);
  text(d.file("range.txt"), "v1.JPEG 3\n");
  CHECK_THROWS_WITH_AS(data::scan_flat_folder(d.file("val"), d.file("range.txt"), classes),
                       has(d.file("range.txt") + ": class number 3 is out of range for 3 classes"), Error);
  text(d.file("missing.txt"), "v9.JPEG 0\n");
  CHECK_THROWS_WITH_AS(data::scan_flat_folder(d.file("val"), d.file("missing.txt"), classes),
                       has(d.file("val/v9.JPEG") + ", which does not exist"), Error);
  CHECK_THROWS_WITH_AS(data::scan_flat_folder(d.file("val"), d.file("none.txt"), classes),
                       has(d.file("none.txt") + ": no such label file"), Error);
}

TEST_CASE("imagenet transform: eval resize + center crop by hand") {
  // 16 wide x 8 high, red = x * 10, green = y * 20, blue = 0; resize 8 (already the shorter side: scale 1),
  // crop 4: top = round((8 - 4) / 2) = 2, left = round((16 - 4) / 2) = 6; an exact copy of that window.
  data::RgbImage img;
  img.height = 8; img.width = 16;
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 16; ++x) img.pixels.insert(img.pixels.end(), {uint8_t(x * 10), uint8_t(y * 20), 0});
  data::ImageNetTransform t = data::ImageNetTransform::eval_default(4, 8);
  t.mean = {0.f, 0.f, 0.5f};
  t.std = {1.f, 1.f, 0.5f};
  std::vector<float> out(3 * 16, 99.f);
  engine::Generator g(0);
  t.apply(img, out.data(), g);
  CHECK(out[0] * 255.f == doctest::Approx(60.0));            // red at (0, 0) = source x 6
  CHECK(out[3] * 255.f == doctest::Approx(90.0));            // red at (0, 3) = source x 9
  CHECK(out[16 + 4 * 1] * 255.f == doctest::Approx(60.0));   // green at (1, 0) = source y 3
  CHECK(out[32] == doctest::Approx(-1.0));                   // blue 0: (0 - 0.5) / 0.5
  // A 20 x 10 (h x w) image, resize 5: shorter side 10 -> 5, longer 20 -> 10 (scale 2 both ways);
  // crop 4: top = round(3) = 3, left = round(0.5) = 0 (half to even) -> source box (6, 0, 8, 8).
  data::ImageNetTransform::Box b = data::ImageNetTransform::eval_default(4, 5).crop_box(20, 10, g);
  CHECK(b.top == 6.0);
  CHECK(b.left == 0.0);
  CHECK(b.height == 8.0);
  CHECK(b.width == 8.0);
}

TEST_CASE("imagenet transform: random-resized-crop boxes and the center fallback") {
  const data::ImageNetTransform t = data::ImageNetTransform::train_default(32);
  for (uint64_t seed = 0; seed < 500; ++seed) {
    engine::Generator g(seed);
    const auto b = t.crop_box(80, 100, g);
    REQUIRE(b.top >= 0);
    REQUIRE(b.left >= 0);
    REQUIRE(b.top + b.height <= 80);
    REQUIRE(b.left + b.width <= 100);
    const double frac = b.height * b.width / 8000.0, ratio = b.width / b.height;
    REQUIRE(frac >= 0.07);   // 0.08 up to rounding of the sides
    REQUIRE(frac <= 1.0);
    REQUIRE(ratio >= 0.7);   // 3/4 .. 4/3 up to rounding
    REQUIRE(ratio <= 1.4);
  }
  // 10 high x 1000 wide with scale >= 0.9: no box of ratio <= 4/3 fits in 10 rows, so after 10 tries the
  // fallback takes the full height and width round(10 * 4/3) = 13, centered: left = (1000 - 13) / 2 = 493.
  data::ImageNetTransform wide = t;
  wide.scale_min = 0.9f;
  engine::Generator g(1);
  const auto b = wide.crop_box(10, 1000, g);
  CHECK(b.top == 0.0);
  CHECK(b.height == 10.0);
  CHECK(b.width == 13.0);
  CHECK(b.left == 493.0);
}

TEST_CASE("imagenet dataset: bad files replaced deterministically, counted, and limited") {
  TempDir d;
  make_tree(d);
  data::ImageFolderIndex idx = data::scan_class_folders(d.file("train"));
  data::ImageFolderOptions o;
  o.warn = false;
  auto ds = std::make_shared<data::ImageFolderDataset>(idx, data::ImageNetTransform::train_default(8), o);
  CHECK(ds->sample_shape() == engine::Shape{3, 8, 8});
  CHECK(ds->num_classes() == 3);
  // Sample 2 (bad.JPEG, text) is replaced by sample 3 (gray.JPEG) with the same generator.
  std::vector<float> a(3 * 64), b(3 * 64);
  engine::Generator g1(5), g2(5);
  CHECK(ds->get(2, a.data(), g1) == 2);
  CHECK(ds->get(3, b.data(), g2) == 2);
  CHECK(a == b);
  CHECK(ds->bad_files() == 1);
  CHECK(ds->bad_file_names() == std::vector<std::string>{d.file("train/n03/bad.JPEG")});
  CHECK(ds->get(2, a.data(), g1) == 2);
  CHECK(ds->bad_files() == 1);  // counted once per file

  // Through the loader, 1 and 2 workers give the same full batches.
  auto run = [&](int64_t workers) {
    data::LoaderOptions lo;
    lo.batch_size = 2; lo.workers = workers; lo.seed = 3;
    data::Loader l(ds, lo);
    l.start_epoch(0);
    std::vector<float> all;
    data::Batch bt;
    while (l.next(bt)) {
      const float* p = bt.images.data<float>();
      all.insert(all.end(), p, p + bt.images.numel());
    }
    return all;
  };
  std::vector<float> one = run(1);
  CHECK(one.size() == 5 * 3 * 64);
  CHECK(one == run(2));

  // More bad files than the limit: the error names the folder, the limit and the latest file.
  text(d.file("train/n01/c.JPEG"), "");
  data::ImageFolderOptions strict = o;
  strict.max_bad_files = 1;
  data::ImageFolderDataset s(data::scan_class_folders(d.file("train")), data::ImageNetTransform::eval_default(8, 8), strict);
  engine::Generator g(0);
  CHECK(s.get(3, a.data(), g) == 2);  // bad.JPEG: the first bad file is tolerated
  CHECK_THROWS_WITH_AS(s.get(2, a.data(), g),
                       has(d.file("train") + ": 2 undecodable image files, more than the limit of 1 (latest: " +
                           d.file("train/n01/c.JPEG") + ": empty file)"),
                       Error);
}
