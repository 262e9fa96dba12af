// Checkpoint and safetensors reading and writing. Files are read whole into memory and every length is
// checked against the bytes actually present before anything is allocated, so a truncated or hostile file
// produces an error, never a huge allocation or an out-of-bounds read. Writes go through one atomic
// temporary-file-and-rename path.
#include "engine/serialize.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

namespace engine {

namespace {

// A fuzzing build (scripts/fuzz.sh) skips the checksum comparisons so that mutated files reach the parsing
// behind them; every other check stays. Never defined in a product build.
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
constexpr bool kVerifyChecksums = false;
#else
constexpr bool kVerifyChecksums = true;
#endif

// Temporary files are "<target>.tmp.<pid>.<n>".
constexpr const char* kTempInfix = ".tmp.";

// ---- bytes ----

// The formats are little-endian; tensors are copied as raw memory, so the host must be too.
void check_little_endian() {
  const uint16_t one = 1;
  uint8_t b;
  std::memcpy(&b, &one, 1);
  QIL_CHECK(b == 1, "serialize: big-endian hosts are not supported");
}


bool valid_dtype(uint8_t d) { return d <= static_cast<uint8_t>(DType::s32); }

template <class T> void put_le(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}
template <class T> T get_le(const uint8_t* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

uint32_t crc_update(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {  // zlib takes a uInt length
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = static_cast<uint32_t>(crc32(crc, p, chunk));
    p += chunk;
    n -= chunk;
  }
  return crc;
}

std::string errno_text() { return std::strerror(errno); }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// ---- atomic writes ----

struct Chunk {
  const void* data;
  size_t size;
};

// Test-only fault injection, read from the environment at each write (docs/reliability.md lists them):
//   QIL_TEST_FAIL_WRITE=N:BYTES:ERR  the N-th atomic write of the process (from 1) stops after BYTES bytes of
//                                    the file and fails with errno ERR (ENOSPC, EIO, EDQUOT or EFBIG), as a
//                                    full disk or a failing device would; a file shorter than BYTES fails
//                                    at its fsync instead. Writes are counted anew whenever the value changes.
//   QIL_TEST_SLOW_SAVE=MS            sleeps MS milliseconds between the complete temporary file and its
//                                    rename, so that a kill test can land inside a write.
struct InjectedFault {
  int64_t after_bytes = -1;  // -1: no fault in this write
  int err = 0;
};

InjectedFault injected_fault() {
  static std::mutex mu;
  static std::string seen;
  static int64_t writes = 0;
  const char* env = std::getenv("QIL_TEST_FAIL_WRITE");
  const std::string spec = env ? env : "";
  std::lock_guard<std::mutex> lock(mu);
  if (spec != seen) {
    seen = spec;
    writes = 0;
  }
  if (spec.empty()) return {};
  ++writes;
  const std::map<std::string, int> errs{{"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EDQUOT", EDQUOT}, {"EFBIG", EFBIG}};
  long long n = 0, bytes = 0;
  char name[16] = {};
  const bool ok = std::sscanf(spec.c_str(), "%lld:%lld:%15s", &n, &bytes, name) == 3 && n >= 1 && bytes >= 0 &&
                  errs.count(name);
  QIL_CHECK(ok, "QIL_TEST_FAIL_WRITE must be N:BYTES:ERR with ERR one of ENOSPC, EIO, EDQUOT, EFBIG, got '", spec,
            "'");
  if (writes != n) return {};
  return {bytes, errs.at(name)};
}

void write_all(int fd, const void* data, size_t n, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, 1u << 30));
    if (w < 0 && errno == EINTR) continue;
    QIL_CHECK(w > 0, what, ": write failed: ", w < 0 ? errno_text() : std::string("wrote nothing"));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Every chunk, then fsync; an injected fault cuts the file short at its byte count and fails as the system
// would (the same messages).
void write_and_sync(int fd, const std::vector<Chunk>& chunks, const std::string& what) {
  const InjectedFault fault = injected_fault();
  uint64_t done = 0;
  for (const Chunk& c : chunks) {
    if (fault.after_bytes >= 0 && done + c.size > static_cast<uint64_t>(fault.after_bytes)) {
      write_all(fd, c.data, static_cast<size_t>(fault.after_bytes) - done, what);
      errno = fault.err;
      throw Error(str_cat(what, ": write failed: ", errno_text()));
    }
    write_all(fd, c.data, c.size, what);
    done += c.size;
  }
  if (fault.after_bytes >= 0) {  // the file is shorter than the fault's byte count: its fsync fails
    errno = fault.err;
    throw Error(str_cat(what, ": fsync failed: ", errno_text()));
  }
  QIL_CHECK(::fsync(fd) == 0, what, ": fsync failed: ", errno_text());
}

void sleep_if_asked() {
  const char* ms = std::getenv("QIL_TEST_SLOW_SAVE");
  if (ms && std::atoi(ms) > 0) std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(ms)));
}

const char* file_type_name(mode_t m) {
  return S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
         : S_ISDIR(m) ? "a directory" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

// Writes the chunks to `path` through a temporary file in the same folder, so a reader sees either the old
// file or the complete new one, never a torn one, even across a crash (the fsyncs order data before rename).
void write_atomic(const std::string& path, const std::vector<Chunk>& chunks, const char* kind) {
  static std::atomic<uint64_t> counter{0};
  const std::string what = str_cat(kind, " ", path);
  // The rename below would replace a device node, a FIFO or a socket by a regular file (a directory makes it
  // fail): only a new path or a regular file is written.
  struct stat target{};
  QIL_CHECK(::stat(path.c_str(), &target) != 0 || S_ISREG(target.st_mode), what, ": not a regular file (",
            file_type_name(target.st_mode), "); qil writes only new paths or regular files (", path,
            " was not changed)");
  const std::string dir = parent_dir(path);
  const std::string tmp = str_cat(path, kTempInfix, ::getpid(), ".", counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  QIL_CHECK(fd >= 0, what, ": cannot create a temporary file in folder ", dir, ": ", errno_text());
  try {
    write_and_sync(fd, chunks, what);
    const int rc = ::close(fd);
    QIL_CHECK(rc == 0, what, ": close failed: ", errno_text());
  } catch (...) {
    ::close(fd);  // harmless EBADF when already closed
    ::unlink(tmp.c_str());
    try {
      throw;
    } catch (const Error& e) {
      throw Error(str_cat(e.what(), " (", path, " was not changed)"));
    }
  }
  sleep_if_asked();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errno_text();
    ::unlink(tmp.c_str());
    throw Error(str_cat(what, ": cannot rename the temporary file over it: ", err));
  }
  // Persist the rename itself. Some file systems refuse fsync on a folder (EINVAL); that is not a failure.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  QIL_CHECK(dfd >= 0, what, ": written, but cannot open folder ", dir, " to sync it: ", errno_text());
  const int rc = ::fsync(dfd);
  const std::string err = rc != 0 ? errno_text() : std::string();
  const bool einval = rc != 0 && errno == EINVAL;
  ::close(dfd);
  QIL_CHECK(rc == 0 || einval, what, ": written, but fsync of folder ", dir, " failed: ", err);
}

std::vector<uint8_t> read_whole(const std::string& path, const char* kind) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer before fstat could refuse it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  QIL_CHECK(fd >= 0, kind, " ", path, ": cannot open: ", errno_text());
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(str_cat(kind, " ", path, ": not a regular file (", file_type_name(st.st_mode), ")"));
  }
  std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < buf.size()) {
    const ssize_t r = ::read(fd, buf.data() + got, buf.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const std::string err = r < 0 ? errno_text() : "file shrank while reading";
      ::close(fd);
      throw Error(str_cat(kind, " ", path, ": read failed: ", err));
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return buf;
}

// ---- checkpoint layout (docs/checkpoints.md) ----
//   file    = header, section × count                  (nothing after the last section)
//   header  = magic "QILCKPT\0" (8) | version u32 | count u32 | crc32 of the previous 16 bytes u32
//   section = name_len u32 | name | type u8 | payload_len u64 | crc u32 | payload
//             crc = crc32 over name_len..payload_len (the bytes before it) and then the payload
//   tensor payload = dtype u8 | layout u8 (0 = plain) | ndim u8 | reserved u8 (0) | dims i64 × ndim | data

constexpr char kMagic[8] = {'Q', 'I', 'L', 'C', 'K', 'P', 'T', '\0'};
constexpr size_t kHeaderSize = 20;
constexpr uint32_t kMaxNameLen = 4096;
constexpr uint8_t kMaxDims = 8;

std::string tensor_meta(const Tensor& t) {  // the payload bytes before the data
  std::string m;
  put_le<uint8_t>(m, static_cast<uint8_t>(t.dtype()));
  put_le<uint8_t>(m, 0);
  put_le<uint8_t>(m, static_cast<uint8_t>(t.dim()));
  put_le<uint8_t>(m, 0);
  for (int64_t d : t.shape()) put_le<int64_t>(m, d);
  return m;
}

}  // namespace

void check_input_file(const std::string& path, const char* what) {
  struct stat st{};
  QIL_CHECK(::stat(path.c_str(), &st) == 0, what, " ", path, ": cannot open: ", errno_text());
  QIL_CHECK(S_ISREG(st.st_mode), what, " ", path, ": not a regular file (", file_type_name(st.st_mode), ")");
}

void check_output_file(const std::string& path, const std::vector<std::pair<std::string, std::string>>& inputs,
                       const std::string& flag) {
  QIL_CHECK(!path.empty(), flag, ": empty path");
  struct stat out{};
  if (::stat(path.c_str(), &out) != 0) return;  // a new path (a missing folder fails at the write, named)
  QIL_CHECK(S_ISREG(out.st_mode), flag, " ", path, ": not a regular file (", file_type_name(out.st_mode),
            "); qil writes only new paths or regular files");
  for (const auto& [what, in] : inputs) {
    struct stat st{};
    QIL_CHECK(::stat(in.c_str(), &st) != 0 || st.st_dev != out.st_dev || st.st_ino != out.st_ino, flag, " ", path,
              ": is the input ", what, " ", in, " (writing it would destroy what is being read; choose another path)");
  }
}

// ---- Checkpoint ----

const char* section_type_name(SectionType t) {
  switch (t) {
    case SectionType::tensor: return "tensor";
    case SectionType::text: return "text";
    case SectionType::json: return "json";
  }
  return "?";
}

void Checkpoint::add(Section s) {
  QIL_CHECK(!s.name.empty() && s.name.size() <= kMaxNameLen, "checkpoint: section name of ", s.name.size(),
            " bytes (must be 1..", kMaxNameLen, ")");
  QIL_CHECK(!has(s.name), "checkpoint: section '", s.name, "' added twice");
  sections_.push_back(std::move(s));
}

void Checkpoint::add_tensor(const std::string& name, const Tensor& t) {
  QIL_CHECK(t.defined(), "checkpoint: tensor section '", name, "' is undefined");
  QIL_CHECK(t.layout() == Layout::plain, "checkpoint: tensor section '", name, "' is not in plain layout");
  QIL_CHECK(t.dim() <= kMaxDims, "checkpoint: tensor section '", name, "' has ", t.dim(), " dimensions (max ",
            int(kMaxDims), ")");
  Section s;
  s.name = name;
  s.type = SectionType::tensor;
  s.tensor = t.detach();
  add(std::move(s));
}

void Checkpoint::add_tensors(const NamedTensors& tensors, const std::string& prefix) {
  for (const auto& [name, t] : tensors) add_tensor(prefix + name, t);
}

void Checkpoint::add_text(const std::string& name, std::string text) {
  Section s;
  s.name = name;
  s.type = SectionType::text;
  s.text = std::move(text);
  add(std::move(s));
}

void Checkpoint::add_json(const std::string& name, std::string json) {
  QIL_CHECK(nlohmann::json::accept(json), "checkpoint: section '", name, "' is not valid JSON");
  Section s;
  s.name = name;
  s.type = SectionType::json;
  s.text = std::move(json);
  add(std::move(s));
}

std::string Checkpoint::where() const { return source.empty() ? "checkpoint" : "checkpoint " + source; }

const Section* Checkpoint::find(const std::string& name) const {
  for (const Section& s : sections_)
    if (s.name == name) return &s;
  return nullptr;
}

const Tensor& Checkpoint::tensor(const std::string& name) const {
  const Section* s = find(name);
  QIL_CHECK(s, where(), ": no section '", name, "'");
  QIL_CHECK(s->type == SectionType::tensor, where(), ": section '", name, "' is ", section_type_name(s->type),
            ", not a tensor");
  return s->tensor;
}

const std::string& Checkpoint::text(const std::string& name) const {
  const Section* s = find(name);
  QIL_CHECK(s, where(), ": no section '", name, "'");
  QIL_CHECK(s->type != SectionType::tensor, where(), ": section '", name, "' is a tensor, not text");
  return s->text;
}

NamedTensors Checkpoint::tensors(const std::string& prefix) const {
  NamedTensors out;
  for (const Section& s : sections_)
    if (s.type == SectionType::tensor && s.name.compare(0, prefix.size(), prefix) == 0)
      out.emplace_back(s.name.substr(prefix.size()), s.tensor);
  return out;
}

// ---- write ----

void write_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  check_little_endian();
  const std::vector<Section>& secs = ckpt.sections();
  QIL_CHECK(secs.size() <= std::numeric_limits<uint32_t>::max(), "checkpoint ", path, ": too many sections");
  std::string header(kMagic, sizeof kMagic);
  put_le<uint32_t>(header, kCheckpointVersion);
  put_le<uint32_t>(header, static_cast<uint32_t>(secs.size()));
  put_le<uint32_t>(header, crc_update(0, header.data(), header.size()));

  // Small per-section prefixes are built here; tensor data is written straight from the tensors.
  std::vector<std::string> heads(secs.size());
  std::vector<Chunk> chunks{{header.data(), header.size()}};
  for (size_t i = 0; i < secs.size(); ++i) {
    const Section& s = secs[i];
    std::string meta = s.type == SectionType::tensor ? tensor_meta(s.tensor) : std::string();
    const void* data = s.type == SectionType::tensor ? s.tensor.bytes() : s.text.data();
    const size_t nbytes = s.type == SectionType::tensor ? s.tensor.nbytes() : s.text.size();
    std::string& h = heads[i];
    put_le<uint32_t>(h, static_cast<uint32_t>(s.name.size()));
    h += s.name;
    put_le<uint8_t>(h, static_cast<uint8_t>(s.type));
    put_le<uint64_t>(h, meta.size() + nbytes);
    uint32_t crc = crc_update(0, h.data(), h.size());
    crc = crc_update(crc, meta.data(), meta.size());
    crc = crc_update(crc, data, nbytes);
    put_le<uint32_t>(h, crc);
    h += meta;  // part of the payload, kept in the same small chunk
    chunks.push_back({h.data(), h.size()});
    chunks.push_back({data, nbytes});
  }
  write_atomic(path, chunks, "checkpoint");
}

void write_file_atomic(const std::string& path, const std::string& bytes, const char* kind) {
  write_atomic(path, {{bytes.data(), bytes.size()}}, kind);
}

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  namespace fs = std::filesystem;
  static const std::regex temp_name(R"(.+\.tmp\.([0-9]{1,9})\.[0-9]+)");
  std::vector<std::string> removed;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, temp_name) || !e.is_regular_file(ec)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(m[1].str()));
    const bool alive = pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM;
    if (!alive && fs::remove(e.path(), ec)) removed.push_back(name);
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

// ---- read ----

namespace {

class CheckpointParser {
 public:
  CheckpointParser(const std::string& path, const std::vector<uint8_t>& buf) : path_(path), buf_(buf) {}

  Checkpoint parse() {
    QIL_CHECK(!buf_.empty(), where(), ": empty file");
    QIL_CHECK(buf_.size() >= sizeof kMagic && std::memcmp(buf_.data(), kMagic, sizeof kMagic) == 0, where(),
              ": not a qil checkpoint (bad magic)");
    need(kHeaderSize, "the file header");
    const uint32_t version = get_le<uint32_t>(&buf_[8]);
    QIL_CHECK(version != 0 && version <= kCheckpointVersion, where(), ": format version ", version,
              version ? " is newer than this build reads (" : " is invalid (", kCheckpointVersion, ")");
    const uint32_t count = get_le<uint32_t>(&buf_[12]);
    const uint32_t stored = get_le<uint32_t>(&buf_[16]);
    const uint32_t crc = crc_update(0, buf_.data(), 16);
    if (kVerifyChecksums) QIL_CHECK(stored == crc, where(), ": header checksum mismatch (corrupt file header)");
    pos_ = kHeaderSize;
    Checkpoint ckpt;
    std::set<std::string> names;
    for (index_ = 0; index_ < count; ++index_) {
      Section s = section();
      QIL_CHECK(names.insert(s.name).second, where(), ": duplicate section name");
      if (s.type == SectionType::tensor) ckpt.add_tensor(s.name, s.tensor);
      else if (s.type == SectionType::json) ckpt.add_json(s.name, std::move(s.text));
      else ckpt.add_text(s.name, std::move(s.text));
    }
    index_ = kNoSection;
    name_.clear();
    QIL_CHECK(pos_ == buf_.size(), where(), ": ", buf_.size() - pos_, " unexpected bytes after the last of ",
              count, " sections");
    return ckpt;
  }

 private:
  std::string where() const {
    std::string w = str_cat("checkpoint ", path_);
    if (index_ != kNoSection) w += str_cat(": section ", index_, name_.empty() ? "" : " '" + name_ + "'");
    return w;
  }
  void need(uint64_t n, const char* what) const {
    QIL_CHECK(n <= buf_.size() - pos_, where(), ": truncated: ", what, " needs ", n, " bytes at offset ", pos_,
              ", the file has ", buf_.size() - pos_, " left");
  }

  Section section() {
    name_.clear();
    const size_t start = pos_;
    need(4, "the section header");
    const uint32_t name_len = get_le<uint32_t>(&buf_[pos_]);
    QIL_CHECK(name_len >= 1 && name_len <= kMaxNameLen, where(), ": name length ", name_len,
              " out of range (corrupt section header)");
    need(4 + name_len + 1 + 8 + 4, "the section header");
    Section s;
    s.name.assign(reinterpret_cast<const char*>(&buf_[pos_ + 4]), name_len);
    name_ = s.name;
    pos_ += 4 + name_len;
    const uint8_t type = buf_[pos_];
    const uint64_t len = get_le<uint64_t>(&buf_[pos_ + 1]);
    const uint32_t stored = get_le<uint32_t>(&buf_[pos_ + 9]);
    uint32_t crc = crc_update(0, &buf_[start], pos_ + 9 - start);
    pos_ += 13;
    need(len, "the section data");
    crc = crc_update(crc, &buf_[pos_], len);
    if (kVerifyChecksums) {
      QIL_CHECK(crc == stored, where(), ": checksum mismatch (stored ", stored, ", computed ", crc,
                "): the section is corrupt");
    }
    const uint8_t* p = &buf_[pos_];
    pos_ += len;
    switch (type) {
      case static_cast<uint8_t>(SectionType::tensor):
        s.type = SectionType::tensor;
        s.tensor = tensor(p, len);
        break;
      case static_cast<uint8_t>(SectionType::json):
      case static_cast<uint8_t>(SectionType::text):
        s.type = static_cast<SectionType>(type);
        s.text.assign(reinterpret_cast<const char*>(p), len);
        QIL_CHECK(s.type != SectionType::json || nlohmann::json::accept(s.text), where(), ": invalid JSON");
        break;
      default:
        throw Error(str_cat(where(), ": unknown section type ", int(type)));
    }
    return s;
  }

  // Checksum already verified: a bad value here comes from a writer bug or a crafted file.
  Tensor tensor(const uint8_t* p, uint64_t len) const {
    QIL_CHECK(len >= 4, where(), ": tensor payload of ", len, " bytes is too short");
    const uint8_t dtype = p[0], layout = p[1], ndim = p[2];
    QIL_CHECK(valid_dtype(dtype), where(), ": unknown dtype code ", int(dtype));
    QIL_CHECK(layout == 0, where(), ": unsupported layout code ", int(layout));
    QIL_CHECK(ndim <= kMaxDims && len >= 4 + 8ull * ndim, where(), ": bad dimension count ", int(ndim));
    Shape shape(ndim);
    uint64_t numel = 1;
    for (uint8_t d = 0; d < ndim; ++d) {
      shape[d] = get_le<int64_t>(p + 4 + 8 * d);
      QIL_CHECK(shape[d] >= 0 && static_cast<uint64_t>(shape[d]) <= len, where(), ": bad shape ", shape);
      QIL_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(shape[d]), &numel), where(),
                ": bad shape ", shape);
    }
    const uint64_t meta = 4 + 8ull * ndim;
    const uint64_t want = numel * dtype_size(static_cast<DType>(dtype));
    QIL_CHECK(numel <= len && want == len - meta, where(), ": shape ", shape, " of ",
              dtype_name(static_cast<DType>(dtype)), " needs ", want, " data bytes, the section holds ", len - meta);
    Tensor t = Tensor::empty(shape, static_cast<DType>(dtype));
    if (want) std::memcpy(t.bytes(), p + meta, want);
    return t;
  }

  static constexpr uint32_t kNoSection = std::numeric_limits<uint32_t>::max();
  const std::string& path_;
  const std::vector<uint8_t>& buf_;
  size_t pos_ = 0;
  uint32_t index_ = kNoSection;
  std::string name_;
};

}  // namespace

Checkpoint read_checkpoint(const std::string& path) {
  check_little_endian();
  const std::vector<uint8_t> buf = read_whole(path, "checkpoint");
  Checkpoint c = CheckpointParser(path, buf).parse();
  c.source = path;
  return c;
}

// ---- safetensors ----
// file = header_len u64 | JSON header (padded with spaces) | data buffer. The header maps each tensor name
// to {"dtype", "shape", "data_offsets": [begin, end)} with offsets relative to the buffer, plus an optional
// "__metadata__" object of strings.

namespace {

constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;  // the reference implementation's limit

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::s8: return "I8";
    case DType::u8: return "U8";
    case DType::s32: return "I32";
  }
  return "?";
}

struct StEntry {
  std::string name;
  std::string dtype;  // safetensors spelling
  Shape shape;
  uint64_t begin = 0, end = 0;
};

StEntry parse_entry(const std::string& where, const std::string& name, const nlohmann::json& v) {
  const std::string w = str_cat(where, ": tensor '", name, "'");
  QIL_CHECK(v.is_object(), w, ": header entry is not an object");
  QIL_CHECK(v.contains("dtype") && v["dtype"].is_string(), w, ": missing or non-string \"dtype\"");
  QIL_CHECK(v.contains("shape") && v["shape"].is_array(), w, ": missing or non-array \"shape\"");
  QIL_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2, w,
            ": \"data_offsets\" must be an array of two offsets");
  StEntry e;
  e.name = name;
  e.dtype = v["dtype"].get<std::string>();
  for (const auto& d : v["shape"]) {
    QIL_CHECK(d.is_number_unsigned(), w, ": shape entry ", d.dump(), " is not a non-negative integer");
    const uint64_t dim = d.get<uint64_t>();
    QIL_CHECK(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), w, ": dimension ", dim,
              " too large");
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  for (int k = 0; k < 2; ++k)
    QIL_CHECK(v["data_offsets"][k].is_number_unsigned(), w, ": data offset ", v["data_offsets"][k].dump(),
              " is not a non-negative integer");
  e.begin = v["data_offsets"][0].get<uint64_t>();
  e.end = v["data_offsets"][1].get<uint64_t>();
  return e;
}

// IEEE 754 binary16 -> binary32, exactly (every half is a float): normal, subnormal, zero, infinity, NaN.
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // infinity, NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);  // rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: shift the mantissa up to a leading 1
    exp = 113;
    while (!(man & 0x400u)) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

Tensor load_entry(const std::string& where, const StEntry& e, const uint8_t* data) {
  const std::string w = str_cat(where, ": tensor '", e.name, "'");
  uint64_t numel = 1;
  for (int64_t d : e.shape)
    QIL_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel), w, ": shape ", e.shape,
              " overflows");
  const std::map<std::string, std::pair<DType, uint64_t>> kinds = {
      {"F32", {DType::f32, 4}}, {"BF16", {DType::bf16, 2}}, {"I8", {DType::s8, 1}},
      {"U8", {DType::u8, 1}},   {"I32", {DType::s32, 4}},   {"I64", {DType::s32, 8}}, {"F16", {DType::f32, 2}}};
  const auto k = kinds.find(e.dtype);
  QIL_CHECK(k != kinds.end(), w, ": unsupported dtype ", e.dtype, " (qil reads F32, F16, BF16, I8, U8, I32, I64)");
  const auto [dtype, elem] = k->second;
  QIL_CHECK(numel <= std::numeric_limits<uint64_t>::max() / elem && e.end - e.begin == numel * elem, w,
            ": data_offsets [", e.begin, ", ", e.end, ") hold ", e.end - e.begin, " bytes but ", e.dtype, " shape ",
            e.shape, " needs ", numel * elem);
  Tensor t = Tensor::empty(e.shape, dtype);
  const uint8_t* src = data + e.begin;
  if (e.dtype == "I64") {  // stored as s32: qil has no 64-bit dtype
    int32_t* dst = t.data<int32_t>();
    for (uint64_t i = 0; i < numel; ++i) {
      const int64_t v = get_le<int64_t>(src + 8 * i);
      QIL_CHECK(v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(), w,
                ": I64 value ", v, " at element ", i, " does not fit in 32 bits");
      dst[i] = static_cast<int32_t>(v);
    }
  } else if (e.dtype == "F16") {  // read as f32: qil has no 16-bit float dtype but bf16
    float* dst = t.data();
    for (uint64_t i = 0; i < numel; ++i) dst[i] = half_to_float(get_le<uint16_t>(src + 2 * i));
  } else if (numel) {
    std::memcpy(t.bytes(), src, numel * elem);
  }
  return t;
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_little_endian();
  const std::string where = str_cat("safetensors ", path);
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<Chunk> data;
  for (const auto& [name, t] : tensors) {
    QIL_CHECK(!name.empty() && name != "__metadata__", where, ": invalid tensor name '", name, "'");
    QIL_CHECK(!header.contains(name), where, ": tensor '", name, "' given twice");
    QIL_CHECK(t.defined() && t.layout() == Layout::plain, where, ": tensor '", name, "' is ", t,
              ", not a defined plain tensor");
    const uint64_t n = t.nbytes();
    header[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    data.push_back({t.bytes(), n});
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // the buffer then starts 8-byte aligned
  std::string len;
  put_le<uint64_t>(len, json.size());
  std::vector<Chunk> chunks{{len.data(), len.size()}, {json.data(), json.size()}};
  chunks.insert(chunks.end(), data.begin(), data.end());
  write_atomic(path, chunks, "safetensors");
}

SafeTensors read_safetensors(const std::string& path) {
  check_little_endian();
  const std::string where = str_cat("safetensors ", path);
  const std::vector<uint8_t> buf = read_whole(path, "safetensors");
  QIL_CHECK(buf.size() >= 8, where, ": file of ", buf.size(), " bytes is too short for the header length");
  const uint64_t n = get_le<uint64_t>(buf.data());
  QIL_CHECK(n <= buf.size() - 8, where, ": header length ", n, " is larger than the file (", buf.size(),
            " bytes)");
  QIL_CHECK(n <= kMaxSafetensorsHeader, where, ": header length ", n, " exceeds the limit of ",
            kMaxSafetensorsHeader);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(buf.begin() + 8, buf.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(where, ": header is not valid JSON: ", e.what()));
  }
  QIL_CHECK(header.is_object(), where, ": header is not a JSON object");
  const uint8_t* data = buf.data() + 8 + n;
  const uint64_t data_size = buf.size() - 8 - n;

  SafeTensors out;
  std::vector<StEntry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      QIL_CHECK(value.is_object(), where, ": \"__metadata__\" is not an object");
      for (const auto& [mk, mv] : value.items()) {
        QIL_CHECK(mv.is_string(), where, ": metadata '", mk, "' is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(where, key, value));
  }
  // The tensors must tile the buffer exactly: no overlap (aliasing), no gap, nothing past the end.
  std::sort(entries.begin(), entries.end(), [](const StEntry& a, const StEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const StEntry& e : entries) {
    QIL_CHECK(e.begin <= e.end && e.end <= data_size, where, ": tensor '", e.name, "' data_offsets [", e.begin,
              ", ", e.end, ") out of range of the ", data_size, "-byte data buffer");
    QIL_CHECK(e.begin == expect, where, ": tensor '", e.name, "' starts at ", e.begin, ", expected ", expect,
              e.begin < expect ? " (overlaps the previous tensor)" : " (gap in the data buffer)");
    expect = e.end;
  }
  QIL_CHECK(expect == data_size, where, ": the tensors cover ", expect, " bytes of a ", data_size,
            "-byte data buffer");
  for (const StEntry& e : entries) out.tensors.emplace_back(e.name, load_entry(where, e, data));
  return out;
}

}  // namespace engine
