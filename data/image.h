// Image decoding (stb_image, from memory, by content — never by file extension) and antialiased bilinear
// resampling for the ImageNet-style pipeline. Always RGB uint8. Not an image library: no writing, no
// colour management (ICC profiles are ignored), no EXIF orientation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace data {

struct RgbImage {
  std::vector<uint8_t> pixels;  // (H, W, 3), interleaved RGB
  int64_t height = 0;
  int64_t width = 0;
};

// A whole file into memory; throws engine::Error naming the file if it is missing, unreadable or larger
// than max_bytes.
std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes);

// Decodes JPEG (baseline or progressive), PNG, BMP, GIF (first frame), TGA, PNM... into RGB. The header's
// pixel count is checked against max_pixels with stbi_info_from_memory BEFORE decoding, so a hostile header
// cannot make the decoder allocate. Grayscale is replicated to RGB; Adobe CMYK/YCCK JPEGs are converted
// by stb_image; a 4-component JPEG without the Adobe marker (whose colours cannot be known) and a JPEG
// without its end-of-image marker (truncated) are errors. Throws engine::Error starting with `name`.
RgbImage decode_image(const uint8_t* bytes, size_t size, const std::string& name, int64_t max_pixels);

// Resamples the source box (top, left, box_h, box_w), in source pixels, to (out_h, out_w) with a triangle
// (bilinear) filter whose support widens when shrinking — the antialiased bilinear of PIL and of
// torchvision's resize(antialias=True). out: f32 (out_h, out_w, 3), values on the 0..255 scale, unrounded.
void resample_bilinear(const RgbImage& src, double top, double left, double box_h, double box_w, int64_t out_h,
                       int64_t out_w, float* out);

}  // namespace data
