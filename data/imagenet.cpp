// ImageNet-style folders: scanning, label files, the two transforms and the decoding dataset.
#include "data/imagenet.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "engine/check.h"

namespace data {
namespace fs = std::filesystem;

namespace {

bool hidden(const fs::path& p) { const std::string n = p.filename().string(); return !n.empty() && n[0] == '.'; }

// Sorted names of the non-hidden entries of dir that are folders (want_dirs) or regular files.
std::vector<std::string> list_names(const std::string& dir, bool want_dirs) {
  std::error_code ec;
  QIL_CHECK(fs::is_directory(dir, ec), dir, ": no such folder");
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (hidden(it->path())) continue;
    const bool is_dir = it->is_directory(ec), is_file = it->is_regular_file(ec);
    if (want_dirs ? is_dir : is_file) names.push_back(it->path().filename().string());
  }
  QIL_CHECK(!ec, dir, ": cannot list (", ec.message(), ")");
  std::sort(names.begin(), names.end());
  return names;
}

// A class name from `classes` or a 0-based number below classes.size().
int32_t parse_label(const std::string& tok, const std::map<std::string, int32_t>& by_name, size_t nclasses,
                    const std::string& where) {
  auto it = by_name.find(tok);
  if (it != by_name.end()) return it->second;
  const bool numeric = !tok.empty() && std::all_of(tok.begin(), tok.end(), [](char c) { return c >= '0' && c <= '9'; });
  QIL_CHECK(numeric && tok.size() < 10, where, ": label '", tok, "' is neither a class name nor a class number");
  const long v = std::stol(tok);
  QIL_CHECK(v >= 0 && static_cast<size_t>(v) < nclasses, where, ": class number ", v, " is out of range for ",
            nclasses, " classes");
  return static_cast<int32_t>(v);
}

}  // namespace

ImageFolderIndex scan_class_folders(const std::string& dir, const std::vector<std::string>& classes) {
  ImageFolderIndex idx;
  idx.root = dir;
  const std::vector<std::string> found = list_names(dir, true);
  if (classes.empty()) {
    idx.classes = found;
  } else {
    idx.classes = classes;
    for (const std::string& f : found)
      QIL_CHECK(std::binary_search(classes.begin(), classes.end(), f), (fs::path(dir) / f).string(),
                ": class folder '", f, "' is not one of the ", classes.size(), " known classes");
  }
  QIL_CHECK(!idx.classes.empty(), dir, ": no class folders");
  for (const std::string& c : found) {
    const int32_t label = static_cast<int32_t>(
        std::lower_bound(idx.classes.begin(), idx.classes.end(), c) - idx.classes.begin());
    const std::string cdir = (fs::path(dir) / c).string();
    for (const std::string& f : list_names(cdir, false))
      idx.samples.push_back({(fs::path(cdir) / f).string(), label});
  }
  QIL_CHECK(!idx.samples.empty(), dir, ": no image files in ", found.size(), " class folders");
  return idx;
}

ImageFolderIndex scan_flat_folder(const std::string& dir, const std::string& label_file,
                                  const std::vector<std::string>& classes) {
  QIL_CHECK(!classes.empty(), dir, ": a flat folder needs the class list (e.g. from the train folders)");
  std::map<std::string, int32_t> by_name;
  for (size_t i = 0; i < classes.size(); ++i) by_name[classes[i]] = static_cast<int32_t>(i);
  std::ifstream in(label_file);
  QIL_CHECK(in.good(), label_file, ": no such label file");
  std::vector<std::vector<std::string>> rows;
  std::string line;
  int64_t lineno = 0;
  for (; std::getline(in, line); ) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream ls(line);
    std::vector<std::string> tok;
    for (std::string t; ls >> t; ) tok.push_back(t);
    if (tok.empty()) continue;
    QIL_CHECK(tok.size() <= 2, label_file, ":", lineno, ": expected 'file label' or 'label', got '", line, "'");
    QIL_CHECK(rows.empty() || rows.front().size() == tok.size(), label_file, ":", lineno,
              ": mixes 'file label' and lone-label lines");
    rows.push_back(tok);
  }
  QIL_CHECK(!rows.empty(), label_file, ": empty label file");
  ImageFolderIndex idx;
  idx.root = dir;
  idx.classes = classes;
  const std::string own = fs::path(label_file).filename().string();
  const bool inside = fs::weakly_canonical(fs::path(label_file).parent_path()) == fs::weakly_canonical(dir);
  if (rows.front().size() == 2) {
    for (size_t r = 0; r < rows.size(); ++r) {
      const std::string path = (fs::path(dir) / rows[r][0]).string();
      std::error_code ec;
      QIL_CHECK(fs::is_regular_file(path, ec), label_file, ": lists ", path, ", which does not exist");
      idx.samples.push_back({path, parse_label(rows[r][1], by_name, classes.size(), label_file)});
    }
  } else {
    std::vector<std::string> files = list_names(dir, false);
    if (inside) files.erase(std::remove(files.begin(), files.end(), own), files.end());
    QIL_CHECK(files.size() == rows.size(), label_file, ": ", rows.size(), " labels for ", files.size(),
              " files in ", dir);
    for (size_t r = 0; r < rows.size(); ++r)
      idx.samples.push_back({(fs::path(dir) / files[r]).string(),
                             parse_label(rows[r][0], by_name, classes.size(), label_file)});
  }
  return idx;
}

ImageNetSplits scan_imagenet(const std::string& root, const std::string& val_label_file) {
  std::error_code ec;
  QIL_CHECK(fs::is_directory(root, ec), root, ": no such ImageNet folder");
  ImageNetSplits s;
  s.train = scan_class_folders((fs::path(root) / "train").string());
  const std::string val = (fs::path(root) / "val").string();
  if (!list_names(val, true).empty()) {
    s.val = scan_class_folders(val, s.train.classes);
  } else {
    const std::string lf = val_label_file.empty() ? (fs::path(root) / "val_labels.txt").string() : val_label_file;
    s.val = scan_flat_folder(val, lf, s.train.classes);
  }
  return s;
}

ImageNetTransform::Box ImageNetTransform::crop_box(int64_t h, int64_t w, engine::Generator& rng) const {
  if (!train) {
    // Resize the shorter side to `resize`, then a centered size x size window, mapped back to the source.
    const bool wide = w >= h;
    const int64_t rh = wide ? resize : static_cast<int64_t>(static_cast<double>(resize) * h / w);
    const int64_t rw = wide ? static_cast<int64_t>(static_cast<double>(resize) * w / h) : resize;
    const double sy = static_cast<double>(h) / rh, sx = static_cast<double>(w) / rw;
    // Python round() (half to even), as torchvision center_crop.
    const double top = std::nearbyint((rh - size) / 2.0), left = std::nearbyint((rw - size) / 2.0);
    return {top * sy, left * sx, size * sy, size * sx};
  }
  const double area = static_cast<double>(h) * w;
  const double lr0 = std::log(ratio_min), lr1 = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scale_min, scale_max);
    const double aspect = std::exp(rng.uniform(static_cast<float>(lr0), static_cast<float>(lr1)));
    const int64_t cw = static_cast<int64_t>(std::nearbyint(std::sqrt(target * aspect)));
    const int64_t ch = static_cast<int64_t>(std::nearbyint(std::sqrt(target / aspect)));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      const int64_t top = static_cast<int64_t>(rng.below(static_cast<uint64_t>(h - ch + 1)));
      const int64_t left = static_cast<int64_t>(rng.below(static_cast<uint64_t>(w - cw + 1)));
      return {double(top), double(left), double(ch), double(cw)};
    }
  }
  // Fallback: the largest centered box whose ratio is within range.
  const double in_ratio = static_cast<double>(w) / h;
  int64_t cw = w, ch = h;
  if (in_ratio < ratio_min) ch = static_cast<int64_t>(std::nearbyint(w / ratio_min));
  else if (in_ratio > ratio_max) cw = static_cast<int64_t>(std::nearbyint(h * ratio_max));
  return {double((h - ch) / 2), double((w - cw) / 2), double(ch), double(cw)};
}

void ImageNetTransform::apply(const RgbImage& img, float* out, engine::Generator& rng) const {
  QIL_CHECK(mean.size() == 3 && std.size() == 3, "ImageNetTransform: needs 3 means and 3 stds");
  QIL_CHECK(size > 0 && (train || resize >= size), "ImageNetTransform: resize ", resize, " is below crop size ", size);
  const Box b = crop_box(img.height, img.width, rng);
  const bool mirror = flip && rng.uniform() < 0.5f;
  std::vector<float> hwc(static_cast<size_t>(size * size * 3));  // (size, size, 3), 0..255
  resample_bilinear(img, b.top, b.left, b.height, b.width, size, size, hwc.data());
  for (int64_t c = 0; c < 3; ++c) {
    const float scale = 1.f / (255.f * std[c]), shift = -mean[c] / std[c];
    float* plane = out + c * size * size;
    for (int64_t y = 0; y < size; ++y)
      for (int64_t x = 0; x < size; ++x) {
        const int64_t sx = mirror ? size - 1 - x : x;
        plane[y * size + x] = hwc[(y * size + sx) * 3 + c] * scale + shift;
      }
  }
}

ImageFolderDataset::ImageFolderDataset(ImageFolderIndex index, ImageNetTransform transform, ImageFolderOptions options)
    : index_(std::move(index)), transform_(std::move(transform)), options_(options) {
  QIL_CHECK(!index_.samples.empty(), "ImageFolderDataset: ", index_.root, " has no samples");
}

void ImageFolderDataset::record_bad(const std::string& path, const std::string& why) const {
  std::lock_guard<std::mutex> lk(bad_mu_);
  if (bad_.insert(path).second && options_.warn) std::cerr << "warning: skipping undecodable image: " << why << "\n";
  QIL_CHECK(static_cast<int64_t>(bad_.size()) <= options_.max_bad_files, index_.root, ": ", bad_.size(),
            " undecodable image files, more than the limit of ", options_.max_bad_files, " (latest: ", why, ")");
}

int32_t ImageFolderDataset::get(int64_t index, float* out, engine::Generator& rng) const {
  QIL_CHECK(index >= 0 && index < size(), "ImageFolderDataset: sample ", index, " out of range for ", size());
  for (int64_t k = 0; k < size(); ++k) {
    const ImageEntry& e = index_.samples[static_cast<size_t>((index + k) % size())];
    RgbImage img;
    try {
      const std::vector<uint8_t> bytes = read_file(e.path, options_.max_file_bytes);
      img = decode_image(bytes.data(), bytes.size(), e.path, options_.max_pixels);
    } catch (const engine::Error& err) {
      record_bad(e.path, err.what());
      continue;  // the generator is untouched: the replacement draws what this sample would have
    }
    transform_.apply(img, out, rng);
    return e.label;
  }
  throw engine::Error(engine::str_cat(index_.root, ": no decodable image at all"));
}

int64_t ImageFolderDataset::bad_files() const {
  std::lock_guard<std::mutex> lk(bad_mu_);
  return static_cast<int64_t>(bad_.size());
}

std::vector<std::string> ImageFolderDataset::bad_file_names() const {
  std::lock_guard<std::mutex> lk(bad_mu_);
  return {bad_.begin(), bad_.end()};
}

}  // namespace data
