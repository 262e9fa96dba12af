// Decoding through stb_image (Debian's libstb carries the implementation: this file only includes the
// header) and the separable antialiased bilinear resampler.
#include "data/image.h"

#include <stb_image.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "engine/check.h"

namespace data {

std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  QIL_CHECK(fs::is_regular_file(path, ec), path, ": no such file");
  const auto size = fs::file_size(path, ec);
  QIL_CHECK(!ec, path, ": cannot read its size (", ec.message(), ")");
  QIL_CHECK(size <= max_bytes, path, ": ", size, " bytes is over the limit of ", max_bytes);
  std::vector<uint8_t> b(static_cast<size_t>(size));
  std::ifstream f(path, std::ios::binary);
  QIL_CHECK(f.good(), path, ": cannot open");
  f.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(b.size()));
  QIL_CHECK(f.gcount() == static_cast<std::streamsize>(b.size()), path, ": short read");
  return b;
}

namespace {

struct JpegFacts {
  int components = 0;   // from the first SOF marker
  int64_t height = 0, width = 0;
  bool adobe = false;   // an APP14 "Adobe" segment is present (stb then knows CMYK from YCCK)
  bool has_eoi = false; // an end-of-image marker follows the first scan
};

// Walks the marker segments up to the first scan, then looks for EOI in the entropy-coded data (where a
// literal 0xFF is always followed by 0x00 or a restart marker, so FF D9 can only be EOI).
JpegFacts scan_jpeg(const uint8_t* b, size_t n) {
  JpegFacts f;
  size_t p = 2;
  while (p + 4 <= n && b[p] == 0xFF) {
    const uint8_t m = b[p + 1];
    if (m == 0xFF) { ++p; continue; }  // fill byte
    const size_t len = (size_t(b[p + 2]) << 8) | b[p + 3];
    if (m == 0xEE && len >= 7 && p + 9 <= n && std::equal(b + p + 4, b + p + 9, "Adobe")) f.adobe = true;
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof && !f.components && p + 9 < n) {
      f.components = b[p + 9];
      f.height = (int64_t(b[p + 5]) << 8) | b[p + 6];
      f.width = (int64_t(b[p + 7]) << 8) | b[p + 8];
    }
    if (m == 0xDA) {  // start of scan: look for the end
      for (size_t q = p + 2 + len; q + 1 < n; ++q)
        if (b[q] == 0xFF && b[q + 1] == 0xD9) { f.has_eoi = true; break; }
      break;
    }
    p += 2 + len;
  }
  return f;
}

bool is_jpeg(const uint8_t* b, size_t n) { return n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }
bool is_png(const uint8_t* b, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  return n >= 8 && std::equal(sig, sig + 8, b);
}

// Our own reading of the size fields of PNG and JPEG headers, so that an absurd size is reported as such
// (stb_image refuses some of them too, but with a generic reason).
// The fields are 32-bit at most (PNG) or 16-bit (JPEG), so their product is exact in 64 unsigned bits.
void check_claimed_size(int64_t w, int64_t h, const std::string& name, int64_t max_pixels) {
  QIL_CHECK(w >= 0 && h >= 0 && w < (int64_t(1) << 32) && h < (int64_t(1) << 32), name, ": image header claims ",
            w, "x", h, " pixels");
  const uint64_t pixels = static_cast<uint64_t>(w) * static_cast<uint64_t>(h);
  QIL_CHECK(pixels <= static_cast<uint64_t>(max_pixels), name, ": image header claims ", w, "x", h, " = ", pixels,
            " pixels, over the limit of ", max_pixels);
}

}  // namespace

RgbImage decode_image(const uint8_t* bytes, size_t size, const std::string& name, int64_t max_pixels) {
  QIL_CHECK(size > 0, name, ": empty file");
  QIL_CHECK(size <= static_cast<size_t>(INT32_MAX), name, ": ", size, " bytes is too large to decode");
  const int len = static_cast<int>(size);
  JpegFacts jf;
  if (is_jpeg(bytes, size)) {
    jf = scan_jpeg(bytes, size);
    check_claimed_size(jf.width, jf.height, name, max_pixels);
  } else if (is_png(bytes, size) && size >= 24) {
    auto be32 = [&](size_t o) { return (int64_t(bytes[o]) << 24) | (bytes[o + 1] << 16) | (bytes[o + 2] << 8) | bytes[o + 3]; };
    check_claimed_size(be32(16), be32(20), name, max_pixels);
  }
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(bytes, len, &w, &h, &comp)) {
    const char* why = stbi_failure_reason();
    throw engine::Error(engine::str_cat(name, ": not a decodable image (", why ? why : "unknown format", ")"));
  }
  QIL_CHECK(w > 0 && h > 0, name, ": image header claims ", w, "x", h, " pixels");
  check_claimed_size(w, h, name, max_pixels);
  if (is_jpeg(bytes, size)) {
    QIL_CHECK(!(jf.components == 4 && !jf.adobe), name,
              ": 4-component (CMYK) JPEG without an Adobe APP14 marker; its colours cannot be decoded reliably");
    QIL_CHECK(jf.has_eoi, name, ": truncated JPEG (no end-of-image marker)");
  }
  int w2 = 0, h2 = 0, c2 = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> px(stbi_load_from_memory(bytes, len, &w2, &h2, &c2, 3), stbi_image_free);
  if (!px) {
    const char* why = stbi_failure_reason();
    throw engine::Error(engine::str_cat(name, ": cannot decode (", why ? why : "unknown error", ")"));
  }
  QIL_CHECK(w2 == w && h2 == h, name, ": decoded ", w2, "x", h2, " but the header said ", w, "x", h);
  RgbImage img;
  img.height = h;
  img.width = w;
  img.pixels.assign(px.get(), px.get() + static_cast<size_t>(w) * h * 3);
  return img;
}

namespace {

// Taps of one output coordinate: source index range [first, first + weights.size()).
struct Taps {
  int64_t first = 0;
  std::vector<float> weights;
};

// PIL's resampling coefficients (ImagingResample, bilinear filter with support 1): output pixel o covers
// source centre  start + (o + 0.5) * scale; when shrinking, the triangle widens by `scale`.
std::vector<Taps> make_taps(double start, double extent, int64_t out, int64_t in) {
  const double scale = extent / static_cast<double>(out);
  const double fscale = std::max(scale, 1.0);
  const double support = 1.0 * fscale;
  std::vector<Taps> taps(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    const double center = start + (o + 0.5) * scale;
    int64_t lo = static_cast<int64_t>(std::floor(center - support + 0.5));
    int64_t hi = static_cast<int64_t>(std::floor(center + support + 0.5));
    lo = std::clamp<int64_t>(lo, 0, in - 1);
    hi = std::clamp<int64_t>(hi, lo + 1, in);
    Taps& t = taps[o];
    t.first = lo;
    double total = 0;
    for (int64_t x = lo; x < hi; ++x) {
      const double d = std::abs((x - center + 0.5) / fscale);
      const double wgt = d < 1.0 ? 1.0 - d : 0.0;
      t.weights.push_back(static_cast<float>(wgt));
      total += wgt;
    }
    if (total <= 0) {  // a box narrower than a pixel at the border: take the nearest pixel
      std::fill(t.weights.begin(), t.weights.end(), 0.f);
      const int64_t near = std::clamp<int64_t>(static_cast<int64_t>(std::floor(center)), lo, hi - 1);
      t.weights[near - lo] = 1.f;
    } else {
      for (float& wgt : t.weights) wgt = static_cast<float>(wgt / total);
    }
  }
  return taps;
}

}  // namespace

void resample_bilinear(const RgbImage& src, double top, double left, double box_h, double box_w, int64_t out_h,
                       int64_t out_w, float* out) {
  QIL_CHECK(out_h > 0 && out_w > 0 && box_h > 0 && box_w > 0, "resample_bilinear: box ", box_h, "x", box_w,
            " to ", out_h, "x", out_w);
  const std::vector<Taps> ty = make_taps(top, box_h, out_h, src.height);
  const std::vector<Taps> tx = make_taps(left, box_w, out_w, src.width);
  // Rows the vertical taps touch.
  const int64_t r0 = ty.front().first;
  const int64_t r1 = ty.back().first + static_cast<int64_t>(ty.back().weights.size());
  // Horizontal pass over the rows in use: (r1 - r0, out_w, 3).
  std::vector<float> mid(static_cast<size_t>((r1 - r0) * out_w * 3));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = src.pixels.data() + r * src.width * 3;
    float* m = mid.data() + (r - r0) * out_w * 3;
    for (int64_t o = 0; o < out_w; ++o) {
      float acc[3] = {0, 0, 0};
      const Taps& t = tx[o];
      for (size_t k = 0; k < t.weights.size(); ++k) {
        const uint8_t* p = row + (t.first + static_cast<int64_t>(k)) * 3;
        acc[0] += t.weights[k] * p[0]; acc[1] += t.weights[k] * p[1]; acc[2] += t.weights[k] * p[2];
      }
      m[o * 3] = acc[0]; m[o * 3 + 1] = acc[1]; m[o * 3 + 2] = acc[2];
    }
  }
  // Vertical pass.
  for (int64_t o = 0; o < out_h; ++o) {
    const Taps& t = ty[o];
    float* dst = out + o * out_w * 3;
    std::fill(dst, dst + out_w * 3, 0.f);
    for (size_t k = 0; k < t.weights.size(); ++k) {
      const float* m = mid.data() + (t.first + static_cast<int64_t>(k) - r0) * out_w * 3;
      for (int64_t j = 0; j < out_w * 3; ++j) dst[j] += t.weights[k] * m[j];
    }
  }
}

}  // namespace data
