// The shared file helper of the in-memory readers: whole-file reads through zlib, gzipped or not.
#include "data/image_set.h"

#include <zlib.h>

#include <filesystem>

#include "engine/check.h"

namespace data {

std::vector<uint8_t> read_file_maybe_gzipped(const std::string& path, size_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  QIL_CHECK(fs::exists(path, ec), path, ": no such file");
  QIL_CHECK(fs::is_regular_file(path, ec), path, ": not a regular file");
  gzFile f = gzopen(path.c_str(), "rb");
  QIL_CHECK(f != nullptr, path, ": cannot open");
  gzbuffer(f, 1 << 18);
  std::vector<uint8_t> bytes;
  // The on-disk size is a good first guess for raw files; gzipped ones grow as they decompress.
  bytes.reserve(std::min<size_t>(static_cast<size_t>(fs::file_size(path, ec)), max_bytes));
  constexpr unsigned kChunk = 1u << 20;
  for (;;) {
    const size_t old = bytes.size();
    if (old + kChunk > max_bytes + 1) bytes.resize(max_bytes + 1); else bytes.resize(old + kChunk);
    const unsigned want = static_cast<unsigned>(bytes.size() - old);
    const int got = want ? gzread(f, bytes.data() + old, want) : 0;
    if (got < 0) {
      int errnum = 0;
      std::string msg = gzerror(f, &errnum);
      gzclose(f);
      throw engine::Error(engine::str_cat(path, ": read error (", msg, ")"));
    }
    bytes.resize(old + static_cast<size_t>(got));
    if (bytes.size() > max_bytes) {
      gzclose(f);
      throw engine::Error(engine::str_cat(path, ": larger than the limit of ", max_bytes, " bytes"));
    }
    if (static_cast<unsigned>(got) < want) break;
  }
  // gzread reports a gzip stream cut short as a clean end of file on some zlib versions; ask explicitly.
  int errnum = 0;
  const char* msg = gzerror(f, &errnum);
  const std::string err = msg ? msg : "";
  gzclose(f);
  QIL_CHECK(errnum == Z_OK || errnum == Z_STREAM_END, path, ": corrupt or truncated gzip stream (", err, ")");
  return bytes;
}

}  // namespace data
