// CIFAR-10 / CIFAR-100 binary readers on generated files: layout, labels, folders and malformed files.
#include <doctest/doctest.h>

#include "data/cifar.h"
#include "fixtures.h"

using namespace qiltest;
using engine::Error;

namespace {

// n records; record i: label bytes `labels(i)`, then pixel j of the 3072 = (i + j) % 251.
template <class LabelFn>
std::vector<uint8_t> cifar_records(int n, int label_bytes, LabelFn labels) {
  std::vector<uint8_t> b;
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < label_bytes; ++k) b.push_back(labels(i, k));
    for (int j = 0; j < 3072; ++j) b.push_back(static_cast<uint8_t>((i + j) % 251));
  }
  return b;
}

}  // namespace

TEST_CASE("cifar10: one file, channel planes, labels") {
  TempDir d;
  write_bytes(d.file("b.bin"), cifar_records(3, 1, [](int i, int) { return uint8_t(9 - i); }));
  data::ImageSet s = data::load_cifar10_file(d.file("b.bin"));
  CHECK(s.images.shape() == engine::Shape{3, 3, 32, 32});
  CHECK(s.labels == std::vector<int32_t>{9, 8, 7});
  CHECK(s.num_classes == 10);
  // Record 2, green plane (offset 1024), row 1, column 5 -> byte j = 1024 + 32 + 5 = 1061; (2 + 1061) % 251 = 59.
  CHECK(int(s.images.data<uint8_t>()[2 * 3072 + 1 * 1024 + 1 * 32 + 5]) == 59);
}

TEST_CASE("cifar10 folder: five train batches in order plus the test batch") {
  TempDir d;
  CHECK_THROWS_WITH_AS(data::load_cifar10(d.file("none")), has(d.file("none") + ": no such CIFAR-10 folder"), Error);
  for (int k = 1; k <= 5; ++k)
    write_bytes(d.file("data_batch_" + std::to_string(k) + ".bin"),
                cifar_records(2, 1, [k](int i, int) { return uint8_t(k); }));
  CHECK_THROWS_WITH_AS(data::load_cifar10(d.path().string()), has(d.file("test_batch.bin") + ": no such file"), Error);
  write_gz(d.file("test_batch.bin.gz"), cifar_records(4, 1, [](int i, int) { return uint8_t(0); }));
  data::CifarSplits c = data::load_cifar10(d.path().string());
  CHECK(c.train.labels == std::vector<int32_t>{1, 1, 2, 2, 3, 3, 4, 4, 5, 5});
  CHECK(c.train.images.shape() == engine::Shape{10, 3, 32, 32});
  CHECK(c.test.size() == 4);
  // Train image 3 is record 1 of batch 2: its first pixel is (1 + 0) % 251 = 1.
  CHECK(int(c.train.images.data<uint8_t>()[3 * 3072]) == 1);
}

TEST_CASE("cifar100: coarse and fine labels") {
  TempDir d;
  auto lab = [](int i, int k) { return k == 0 ? uint8_t(19 - i) : uint8_t(90 + i); };
  write_bytes(d.file("train.bin"), cifar_records(3, 2, lab));
  write_bytes(d.file("test.bin"), cifar_records(1, 2, lab));
  data::CifarSplits fine = data::load_cifar100(d.path().string());
  CHECK(fine.train.labels == std::vector<int32_t>{90, 91, 92});
  CHECK(fine.train.num_classes == 100);
  data::CifarSplits coarse = data::load_cifar100(d.path().string(), data::Cifar100Labels::coarse);
  CHECK(coarse.train.labels == std::vector<int32_t>{19, 18, 17});
  CHECK(coarse.test.num_classes == 20);
  // Pixels start after both label bytes: record 1, byte 0 -> (1 + 0) % 251 = 1.
  CHECK(int(fine.train.images.data<uint8_t>()[3072]) == 1);
}

TEST_CASE("cifar: malformed files name the file and the problem") {
  TempDir d;
  auto ok = cifar_records(2, 1, [](int, int) { return uint8_t(3); });
  auto cut = ok; cut.pop_back();
  write_bytes(d.file("cut.bin"), cut);
  CHECK_THROWS_WITH_AS(data::load_cifar10_file(d.file("cut.bin")),
                       has(d.file("cut.bin") + ": 6145 bytes is not a whole number of 3073-byte CIFAR-10 records"), Error);
  auto extra = ok; extra.push_back(1);
  write_bytes(d.file("extra.bin"), extra);
  CHECK_THROWS_WITH_AS(data::load_cifar10_file(d.file("extra.bin")), has(d.file("extra.bin") + ": 6147 bytes"), Error);
  write_bytes(d.file("empty.bin"), {});
  CHECK_THROWS_WITH_AS(data::load_cifar10_file(d.file("empty.bin")), has(d.file("empty.bin") + ": empty CIFAR-10 file"), Error);
  write_bytes(d.file("badlabel.bin"), cifar_records(2, 1, [](int i, int) { return uint8_t(i ? 10 : 0); }));
  CHECK_THROWS_WITH_AS(data::load_cifar10_file(d.file("badlabel.bin")),
                       has(d.file("badlabel.bin") + ": record 1 has label byte 10"), Error);
  // A CIFAR-10 file read as CIFAR-100: 2 records of 3073 bytes are not whole 3074-byte records.
  write_bytes(d.file("ten.bin"), ok);
  CHECK_THROWS_WITH_AS(data::load_cifar100_file(d.file("ten.bin")), has(d.file("ten.bin") + ": 6146 bytes"), Error);
  write_bytes(d.file("coarse.bin"), cifar_records(1, 2, [](int, int k) { return uint8_t(k == 0 ? 20 : 5); }));
  CHECK_THROWS_WITH_AS(data::load_cifar100_file(d.file("coarse.bin")),
                       has(d.file("coarse.bin") + ": record 0 has label byte 20 (CIFAR-100 labels must be below 20)"), Error);
  CHECK_THROWS_WITH_AS(data::load_cifar100(d.path().string()), has(d.file("train.bin") + ": no such file"), Error);
}
