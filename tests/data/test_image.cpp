// Image decoding by content through stb_image, hostile and broken files, and the resampler's hand values.
#include <doctest/doctest.h>
#include <stb_image.h>
#include <stb_image_write.h>

#include <cstdlib>
#include <fstream>

#include "data/image.h"
#include "fixtures.h"
#include "skip.h"

using namespace qiltest;
using engine::Error;

namespace {

constexpr int64_t kMaxPx = 1 << 24;

data::RgbImage decode_file(const std::string& path) {
  std::vector<uint8_t> b = data::read_file(path, 1 << 26);
  return data::decode_image(b.data(), b.size(), path, kMaxPx);
}

std::vector<uint8_t> solid(int w, int h, int comp, std::vector<uint8_t> color) {
  std::vector<uint8_t> px;
  for (int i = 0; i < w * h; ++i) px.insert(px.end(), color.begin(), color.begin() + comp);
  return px;
}

std::vector<uint8_t> file_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A PNG signature and IHDR chunk claiming w x h RGB (CRC left zero: stb_image does not check it).
std::vector<uint8_t> png_header(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  put_be32(b, 13);
  b.insert(b.end(), {'I', 'H', 'D', 'R'});
  put_be32(b, w); put_be32(b, h);
  b.insert(b.end(), {8, 2, 0, 0, 0, 0, 0, 0, 0});
  return b;
}

}  // namespace

TEST_CASE("decode: baseline JPEG, PNG named .JPEG, grayscale, non-ASCII names") {
  TempDir d;
  REQUIRE(stbi_write_jpg(d.file("a.JPEG").c_str(), 16, 8, 3, solid(16, 8, 3, {200, 100, 50}).data(), 95));
  data::RgbImage j = decode_file(d.file("a.JPEG"));
  CHECK(j.height == 8);
  CHECK(j.width == 16);
  REQUIRE(j.pixels.size() == 16 * 8 * 3);
  for (size_t i = 0; i < j.pixels.size(); i += 3) {  // lossy, but a flat colour survives closely
    CHECK(std::abs(int(j.pixels[i]) - 200) <= 4);
    CHECK(std::abs(int(j.pixels[i + 1]) - 100) <= 4);
    CHECK(std::abs(int(j.pixels[i + 2]) - 50) <= 4);
  }
  // A PNG with a .JPEG name is decoded by its content, exactly.
  std::vector<uint8_t> px = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // 2x2 RGB
  REQUIRE(stbi_write_png(d.file("png.JPEG").c_str(), 2, 2, 3, px.data(), 6));
  CHECK(decode_file(d.file("png.JPEG")).pixels == px);
  // Grayscale PNG and JPEG come out as RGB with equal channels.
  REQUIRE(stbi_write_png(d.file("g.png").c_str(), 2, 1, 1, std::vector<uint8_t>{30, 220}.data(), 2));
  CHECK(decode_file(d.file("g.png")).pixels == std::vector<uint8_t>{30, 30, 30, 220, 220, 220});
  REQUIRE(stbi_write_jpg(d.file("g.JPEG").c_str(), 8, 8, 1, solid(8, 8, 1, {77}).data(), 95));
  data::RgbImage g = decode_file(d.file("g.JPEG"));
  REQUIRE(g.pixels.size() == 8 * 8 * 3);
  CHECK(g.pixels[0] == g.pixels[1]);
  CHECK(g.pixels[1] == g.pixels[2]);
  CHECK(std::abs(int(g.pixels[0]) - 77) <= 2);
  // Non-ASCII file name (UTF-8 bytes on disk).
  const std::string uni = d.file("\xC3\xA9t\xC3\xA9_\xE7\x8C\xAB.JPEG");  // "été_猫.JPEG"
  REQUIRE(stbi_write_png(uni.c_str(), 2, 2, 3, px.data(), 6));
  CHECK(decode_file(uni).pixels == px);
}

TEST_CASE("decode: progressive and CMYK JPEGs (made with ImageMagick) come out as the right RGB") {
  // stb_image_write makes only baseline JPEGs. The test command installs ImageMagick for these two.
  const char* convert = "/usr/bin/convert";
  if (!std::ifstream(convert).good()) {
    qiltest::skip("tool", "ImageMagick not installed (scripts/test.sh installs it)");
    return;
  }
  TempDir d;
  REQUIRE(stbi_write_png(d.file("src.png").c_str(), 16, 8, 3, solid(16, 8, 3, {200, 100, 50}).data(), 48));
  const std::string base = std::string(convert) + " '" + d.file("src.png") + "' -quality 95 ";
  REQUIRE(std::system((base + "-interlace JPEG '" + d.file("prog.JPEG") + "'").c_str()) == 0);
  REQUIRE(std::system((base + "-colorspace CMYK '" + d.file("cmyk.JPEG") + "'").c_str()) == 0);
  // The files really are what they claim: a progressive (SOF2) and a 4-component (CMYK) JPEG.
  auto has_marker = [](const std::vector<uint8_t>& b, uint8_t m) {
    for (size_t i = 0; i + 1 < b.size(); ++i)
      if (b[i] == 0xFF && b[i + 1] == m) return true;
    return false;
  };
  CHECK(has_marker(file_bytes(d.file("prog.JPEG")), 0xC2));
  int w, h, comp;
  REQUIRE(stbi_info(d.file("cmyk.JPEG").c_str(), &w, &h, &comp));
  for (const char* f : {"prog.JPEG", "cmyk.JPEG"}) {
    data::RgbImage im = decode_file(d.file(f));
    REQUIRE_MESSAGE(im.pixels.size() == 16 * 8 * 3, f);
    for (size_t i = 0; i < im.pixels.size(); i += 3) {
      CHECK_MESSAGE(std::abs(int(im.pixels[i]) - 200) <= 6, f);
      CHECK_MESSAGE(std::abs(int(im.pixels[i + 1]) - 100) <= 6, f);
      CHECK_MESSAGE(std::abs(int(im.pixels[i + 2]) - 50) <= 6, f);
    }
  }
}

TEST_CASE("decode: broken and hostile files name the file and the problem") {
  TempDir d;
  REQUIRE(stbi_write_jpg(d.file("full.JPEG").c_str(), 32, 32, 3, solid(32, 32, 3, {9, 99, 199}).data(), 90));
  std::vector<uint8_t> jpg = file_bytes(d.file("full.JPEG"));
  std::vector<uint8_t> cut(jpg.begin(), jpg.begin() + static_cast<long>(jpg.size() * 2 / 3));
  CHECK_THROWS_WITH_AS(data::decode_image(cut.data(), cut.size(), "cut.JPEG", kMaxPx),
                       doctest::Contains("cut.JPEG: truncated JPEG (no end-of-image marker)"), Error);
  std::vector<uint8_t> px = solid(8, 8, 3, {1, 2, 3});
  REQUIRE(stbi_write_png(d.file("p.png").c_str(), 8, 8, 3, px.data(), 24));
  std::vector<uint8_t> png = file_bytes(d.file("p.png"));
  std::vector<uint8_t> pcut(png.begin(), png.begin() + 40);
  CHECK_THROWS_WITH_AS(data::decode_image(pcut.data(), pcut.size(), "cut.png", kMaxPx), doctest::Contains("cut.png: "), Error);

  write_bytes(d.file("empty.JPEG"), {});
  CHECK_THROWS_WITH_AS(decode_file(d.file("empty.JPEG")), has(d.file("empty.JPEG") + ": empty file"), Error);
  const std::string text = "this is not an image\n";
  write_bytes(d.file("text.JPEG"), std::vector<uint8_t>(text.begin(), text.end()));
  CHECK_THROWS_WITH_AS(decode_file(d.file("text.JPEG")), has(d.file("text.JPEG") + ": not a decodable image"), Error);
  CHECK_THROWS_WITH_AS(decode_file(d.file("missing.JPEG")), has(d.file("missing.JPEG") + ": no such file"), Error);
  CHECK_THROWS_WITH_AS(data::read_file(d.file("full.JPEG"), 10), has(d.file("full.JPEG") + ": "), Error);

  // Headers claiming huge images are refused before any pixel buffer exists.
  std::vector<uint8_t> huge = png_header(100000, 100000);
  CHECK_THROWS_WITH_AS(data::decode_image(huge.data(), huge.size(), "huge.JPEG", kMaxPx),
                       doctest::Contains("huge.JPEG: image header claims 100000x100000 = 10000000000 pixels, over the limit"),
                       Error);
  // Sizes near 2^32 whose product overflows 64 signed bits (found by scripts/fuzz.sh; UBSan reported the
  // overflow, and the wrapped product could pass the limit): still refused, with the exact product.
  std::vector<uint8_t> wrap = png_header(0xF0000000u, 0xF0000000u);
  CHECK_THROWS_WITH_AS(data::decode_image(wrap.data(), wrap.size(), "wrap.png", kMaxPx),
                       doctest::Contains("wrap.png: image header claims 4026531840x4026531840 = "
                                         "16212958658533785600 pixels, over the limit"),
                       Error);
  // 5000 x 4000 = 2e7 pixels: a header stb itself accepts, over a limit of 2^24 = 16777216.
  std::vector<uint8_t> big = png_header(5000, 4000);
  int w = 0, h = 0, c = 0;
  REQUIRE(stbi_info_from_memory(big.data(), static_cast<int>(big.size()), &w, &h, &c));
  CHECK_THROWS_WITH_AS(data::decode_image(big.data(), big.size(), "big.JPEG", kMaxPx),
                       doctest::Contains("big.JPEG: image header claims 5000x4000 = 20000000 pixels, over the limit"),
                       Error);
  // The same in a JPEG header: set the SOF0 height and width of a real JPEG to 60000 x 60000.
  {
    size_t p = 2;
    while (!(jpg[p] == 0xFF && jpg[p + 1] == 0xC0)) p += 2 + ((jpg[p + 2] << 8) | jpg[p + 3]);
    std::vector<uint8_t> j = jpg;
    j[p + 5] = 0xEA; j[p + 6] = 0x60; j[p + 7] = 0xEA; j[p + 8] = 0x60;  // 0xEA60 = 60000
    CHECK_THROWS_WITH_AS(data::decode_image(j.data(), j.size(), "wide.JPEG", kMaxPx),
                         doctest::Contains("wide.JPEG: image header claims 60000x60000"), Error);
  }

  // A 4-component JPEG without the Adobe marker: add a fourth component to the SOF0 segment.
  size_t sof = 2;
  while (!(jpg[sof] == 0xFF && jpg[sof + 1] == 0xC0)) sof += 2 + ((jpg[sof + 2] << 8) | jpg[sof + 3]);
  std::vector<uint8_t> cmyk = jpg;
  cmyk[sof + 3] += 3;   // segment length
  cmyk[sof + 9] = 4;    // component count
  const size_t after = sof + 10 + 3 * 3;
  cmyk.insert(cmyk.begin() + static_cast<long>(after), {4, 0x11, 0});
  CHECK_THROWS_WITH_AS(data::decode_image(cmyk.data(), cmyk.size(), "cmyk.JPEG", kMaxPx),
                       doctest::Contains("cmyk.JPEG: 4-component (CMYK) JPEG without an Adobe APP14 marker"), Error);
}

TEST_CASE("resample: hand values for shrinking and enlarging") {
  // 2x2 -> 1x1 with the triangle widened by 2: both taps weigh 0.75 before normalizing -> the plain mean.
  data::RgbImage s;
  s.height = 2; s.width = 2;
  s.pixels = {0, 0, 0, 100, 10, 1, 200, 20, 2, 40, 4, 0};
  float out[3];
  data::resample_bilinear(s, 0, 0, 2, 2, 1, 1, out);
  CHECK(out[0] == doctest::Approx(85.0));  // (0 + 100 + 200 + 40) / 4
  CHECK(out[1] == doctest::Approx(8.5));
  CHECK(out[2] == doctest::Approx(0.75));
  // 1x2 -> 1x4: output centres at source x = 0.25, 0.75, 1.25, 1.75 (pixel centres at 0.5, 1.5):
  // [p0, 0.75 p0 + 0.25 p1, 0.25 p0 + 0.75 p1, p1] = [0, 25, 75, 100].
  data::RgbImage r;
  r.height = 1; r.width = 2;
  r.pixels = {0, 0, 0, 100, 100, 100};
  float wide[12];
  data::resample_bilinear(r, 0, 0, 1, 2, 1, 4, wide);
  const float want[4] = {0.f, 25.f, 75.f, 100.f};
  for (int i = 0; i < 4; ++i) CHECK(wide[i * 3] == doctest::Approx(want[i]));
  // A box at scale 1 aligned to pixels copies them: the 1x1 box at (1, 0) of s is pixel (1, 0) = (200, 20, 2).
  data::resample_bilinear(s, 1, 0, 1, 1, 1, 1, out);
  CHECK(out[0] == doctest::Approx(200.0));
  CHECK(out[1] == doctest::Approx(20.0));
}
