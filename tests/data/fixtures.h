// Test fixtures for the data suite: a self-deleting temp folder and writers for raw or gzipped files.
#pragma once
#include <unistd.h>
#include <zlib.h>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/check.h"

namespace qiltest {

namespace fs = std::filesystem;

// doctest::Contains from a std::string (it takes only its own String).
inline doctest::Contains has(const std::string& s) { return doctest::Contains(s.c_str()); }

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("qil_data_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { std::error_code ec; fs::remove_all(path_, ec); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  QIL_CHECK(f.good(), "test: cannot write ", path);
}

inline void write_gz(const std::string& path, const std::vector<uint8_t>& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  QIL_CHECK(f, "test: cannot open ", path);
  if (!b.empty()) gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
  gzclose(f);
}

inline void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

// IDX images: magic 0x803, (n, h, w), pixel (i, y, x) = (i * 7 + y * 3 + x) % 256.
inline std::vector<uint8_t> idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::vector<uint8_t> b;
  put_be32(b, 0x00000803); put_be32(b, n); put_be32(b, h); put_be32(b, w);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t y = 0; y < h; ++y)
      for (uint32_t x = 0; x < w; ++x) b.push_back(static_cast<uint8_t>((i * 7 + y * 3 + x) % 256));
  return b;
}

// IDX labels: magic 0x801, (n), label i = i % classes.
inline std::vector<uint8_t> idx_labels(uint32_t n, uint32_t classes) {
  std::vector<uint8_t> b;
  put_be32(b, 0x00000801); put_be32(b, n);
  for (uint32_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(i % classes));
  return b;
}

}  // namespace qiltest
