// IDX readers: generated raw and gzipped files, every malformed-file error, and a real Fashion-MNIST read.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "data/idx.h"
#include "fixtures.h"
#include "skip.h"

using namespace qiltest;
using data::ImageSet;
using engine::Error;

TEST_CASE("idx: raw and gzipped pairs read back the same pixels and labels") {
  TempDir d;
  write_bytes(d.file("im"), idx_images(5, 3, 4));
  write_bytes(d.file("lb"), idx_labels(5, 3));
  write_gz(d.file("im.gz"), idx_images(5, 3, 4));
  write_gz(d.file("lb.gz"), idx_labels(5, 3));
  for (auto [im, lb] : {std::pair{"im", "lb"}, std::pair{"im.gz", "lb.gz"}}) {
    ImageSet s = data::load_idx_pair(d.file(im), d.file(lb));
    CHECK(s.images.shape() == engine::Shape{5, 1, 3, 4});
    CHECK(s.images.dtype() == engine::DType::u8);
    CHECK(s.labels == std::vector<int32_t>{0, 1, 2, 0, 1});
    CHECK(s.num_classes == 3);
    // image 2, row 1, column 3: (2*7 + 1*3 + 3) % 256 = 20
    CHECK(int(s.images.data<uint8_t>()[2 * 12 + 1 * 4 + 3]) == 20);
    CHECK(s.source == d.file(im));
  }
}

TEST_CASE("idx: malformed files are errors that name the file and the problem") {
  TempDir d;
  write_bytes(d.file("lb"), idx_labels(4, 2));
  std::vector<uint8_t> good = idx_images(4, 2, 2);

  auto truncated = good; truncated.pop_back();
  write_bytes(d.file("trunc"), truncated);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("trunc"), d.file("lb")),
                       has(d.file("trunc") + ": truncated"), Error);

  auto trailing = good; trailing.push_back(0);
  write_bytes(d.file("trail"), trailing);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("trail"), d.file("lb")),
                       has(d.file("trail") + ": 1 trailing bytes"), Error);

  auto magic = good; magic[3] = 0x01;  // a labels magic on an images file
  write_bytes(d.file("magic"), magic);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("magic"), d.file("lb")),
                       has(d.file("magic") + ": wrong magic number 0x00000801"), Error);
  // An images file given as labels.
  write_bytes(d.file("im"), good);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("im"), d.file("im")),
                       has(d.file("im") + ": wrong magic number 0x00000803 for an IDX labels"), Error);

  // Wrong dims: the header says 3x3 but the payload holds 2x2 images.
  auto dims = good; dims[11] = 3; dims[15] = 3;
  write_bytes(d.file("dims"), dims);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("dims"), d.file("lb")),
                       has(d.file("dims") + ": truncated: header says [4, 3, 3]"), Error);

  write_bytes(d.file("lb5"), idx_labels(5, 2));
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("im"), d.file("lb5")),
                       has("4 images but " + d.file("lb5") + " has 5 labels"), Error);

  write_bytes(d.file("empty"), {});
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("empty"), d.file("lb")),
                       has(d.file("empty") + ": truncated IDX file (0 bytes"), Error);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("nope"), d.file("lb")),
                       has(d.file("nope") + ": no such file"), Error);

  // A gzip stream cut in half.
  write_gz(d.file("full.gz"), idx_images(50, 8, 8));
  std::vector<uint8_t> gz = data::read_file_maybe_gzipped(d.file("full.gz"), 1 << 20);
  CHECK(gz.size() == 16 + 50 * 64);  // decompressed
  {
    std::ifstream f(d.file("full.gz"), std::ios::binary);
    std::vector<uint8_t> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    raw.resize(raw.size() / 2);
    write_bytes(d.file("cut.gz"), raw);
  }
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("cut.gz"), d.file("lb")),
                       has(d.file("cut.gz") + ": corrupt or truncated gzip stream"), Error);
  // The decompressed-size guard.
  CHECK_THROWS_WITH_AS(data::read_file_maybe_gzipped(d.file("full.gz"), 1000),
                       has(d.file("full.gz") + ": larger than the limit of 1000 bytes"), Error);
}

TEST_CASE("idx folder: train pair required, t10k pair optional, raw or gzipped") {
  TempDir d;
  CHECK_THROWS_WITH_AS(data::load_idx_folder(d.file("missing")),
                       has(d.file("missing") + ": no such IDX folder"), Error);
  CHECK_THROWS_WITH_AS(data::load_idx_folder(d.path().string()),
                       has("train-images-idx3-ubyte[.gz]: no such file"), Error);
  write_gz(d.file("train-images-idx3-ubyte.gz"), idx_images(6, 2, 2));
  CHECK_THROWS_WITH_AS(data::load_idx_folder(d.path().string()),
                       has("train-labels-idx1-ubyte[.gz]: no such file"), Error);
  write_bytes(d.file("train-labels-idx1-ubyte"), idx_labels(6, 4));
  data::IdxFolder f = data::load_idx_folder(d.path().string());
  CHECK(f.train.size() == 6);
  CHECK_FALSE(f.test.has_value());

  write_bytes(d.file("t10k-images-idx3-ubyte"), idx_images(3, 2, 2));
  CHECK_THROWS_WITH_AS(data::load_idx_folder(d.path().string()),
                       has("t10k-labels-idx1-ubyte[.gz]: no such file"), Error);
  write_gz(d.file("t10k-labels-idx1-ubyte.gz"), idx_labels(3, 6));  // labels 0,1,2: the train set has 0..3
  f = data::load_idx_folder(d.path().string());
  REQUIRE(f.test.has_value());
  CHECK(f.test->size() == 3);
  CHECK(f.train.num_classes == 4);
  CHECK(f.test->num_classes == 4);

  write_bytes(d.file("t10k-labels-idx1-ubyte"), idx_labels(4, 2));  // the raw file wins over the .gz
  CHECK_THROWS_WITH_AS(data::load_idx_folder(d.path().string()),
                       has("3 images but " + d.file("t10k-labels-idx1-ubyte") + " has 4 labels"), Error);
}

TEST_CASE("idx: Fashion-MNIST t10k from Debian's dataset-fashion-mnist") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  const std::string im = data::find_maybe_gzipped(dir, "t10k-images-idx3-ubyte");
  const std::string lb = data::find_maybe_gzipped(dir, "t10k-labels-idx1-ubyte");
  if (im.empty() || lb.empty()) {
    qiltest::skip("dataset", dir + " is absent (install dataset-fashion-mnist)");
    return;
  }
  ImageSet s = data::load_idx_pair(im, lb);
  CHECK(s.images.shape() == engine::Shape{10000, 1, 28, 28});
  CHECK(s.num_classes == 10);
  // The published test set is balanced: 1,000 images of each of the 10 classes.
  std::vector<int> hist(10, 0);
  for (int32_t l : s.labels) { REQUIRE(l >= 0); REQUIRE(l < 10); ++hist[l]; }
  CHECK(hist == std::vector<int>(10, 1000));
  // Its first label is 9 (ankle boot), the second 2 (pullover), as the dataset's documentation shows.
  CHECK(s.labels[0] == 9);
  CHECK(s.labels[1] == 2);
  // Images are on a black background: the corners are 0 in nearly every image, and some pixels reach 255.
  const uint8_t* p = s.images.data<uint8_t>();
  int64_t dark_corners = 0, max_px = 0;
  for (int64_t i = 0; i < 10000; ++i) {
    dark_corners += p[i * 784] == 0;
    for (int64_t j = 0; j < 784; ++j) max_px = std::max<int64_t>(max_px, p[i * 784 + j]);
  }
  CHECK(dark_corners > 9900);
  CHECK(max_px == 255);
}

TEST_CASE("a gzip bomb is refused from its header, before its payload is inflated") {
  TempDir d;
  // 8 MB of zeros after a header that claims 10 million 28x28 images (7.84 GB): gzip shrinks it to a few KB.
  std::vector<uint8_t> bomb = {0, 0, 8, 3, 0x00, 0x98, 0x96, 0x80, 0, 0, 0, 28, 0, 0, 0, 28};
  bomb.resize(bomb.size() + (size_t(8) << 20), 0);
  write_gz(d.file("bomb.gz"), bomb);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("bomb.gz"), d.file("bomb.gz")),
                       has(d.file("bomb.gz") + ": header says [10000000, 28, 28] (7840000016 bytes), more than "
                                                "the IDX size limit of 268435456 bytes (256 MiB; --max-idx-mb "
                                                "raises it)"),
                       Error);
}

// Peak resident memory of this process so far, in MB.
static double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

TEST_CASE("a short file whose header declares gigabytes is refused without allocating them") {
  TempDir d;
  // 16 bytes declaring 1000 images of 1000x4000 (4.0 GB), raw and gzipped. Under the default limit they are
  // refused from the header; under a limit raised past them, the memory reserved for the declared size must
  // stay untouched but for the bytes that arrive (found by scripts/fuzz.sh).
  const std::vector<uint8_t> head = {0, 0, 8, 3, 0, 0, 0x03, 0xE8, 0, 0, 0x03, 0xE8, 0, 0, 0x0F, 0xA0};
  write_bytes(d.file("short"), head);
  write_gz(d.file("short.gz"), head);
  for (const char* name : {"short", "short.gz"}) {
    CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file(name), d.file(name)),
                         has(d.file(name) + ": header says [1000, 1000, 4000] (4000000016 bytes), more than the "
                                            "IDX size limit"),
                         Error);
    const double before = peak_rss_mb();
    CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file(name), d.file(name), size_t(8) << 30),
                         has(d.file(name) + ": truncated: header says [1000, 1000, 4000] (4000000016 bytes), file "
                                            "has 16 bytes"),
                         Error);
    CHECK(peak_rss_mb() - before < 64);
  }
}

TEST_CASE("idx: a file of exactly the limit is read, one byte more is refused, and labels cannot outnumber images") {
  TempDir d;
  const std::vector<uint8_t> im = idx_images(5, 3, 4), lb = idx_labels(5, 3);  // 16 + 60 and 8 + 5 bytes
  write_bytes(d.file("im"), im);
  write_bytes(d.file("lb"), lb);
  CHECK(data::load_idx_pair(d.file("im"), d.file("lb"), im.size()).images.numel() == 60);
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("im"), d.file("lb"), im.size() - 1),
                       has(d.file("im") + ": header says [5, 3, 4] (76 bytes), more than the IDX size limit of 75 "
                                          "bytes"),
                       Error);
  // A labels header that claims more labels than there are images is refused before its payload is read.
  write_bytes(d.file("lb9"), idx_labels(9, 3));
  CHECK_THROWS_WITH_AS(data::load_idx_pair(d.file("im"), d.file("lb9")),
                       has("has 5 images but " + d.file("lb9") + " has 9 labels"), Error);
}
