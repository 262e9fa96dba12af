// Files that hold tensors: qil's own checkpoint format (versioned, every section checksummed, written
// atomically) and safetensors (the interchange format other tools read). Both validate everything they read
// and name the file and the part of it that is bad. Not a model format: what the tensors and text sections
// mean (parameter names, optimizer state, loader position) is the caller's business. The byte layout is
// documented in docs/checkpoints.md.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace engine {

// (name, tensor) pairs in a fixed order (also declared in optim.h).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// ---- qil checkpoints ----

constexpr uint32_t kCheckpointVersion = 1;  // the format version this build writes and the newest it reads

enum class SectionType : uint8_t { tensor = 1, text = 2, json = 3 };
const char* section_type_name(SectionType t);

struct Section {
  std::string name;
  SectionType type = SectionType::text;
  Tensor tensor;     // type == tensor: any dtype, plain layout
  std::string text;  // type == text or json (json: a complete JSON document)
};

// An ordered set of uniquely named sections: tensors (parameters, buffers, optimizer state) and text or JSON
// (resolved config, RNG state, loader position, metadata).
class Checkpoint {
 public:
  // Tensors are held by handle and read when written: do not modify them in between.
  void add_tensor(const std::string& name, const Tensor& t);
  // Adds every tensor as prefix + name (e.g. prefix "optim." for optimizer buffers).
  void add_tensors(const NamedTensors& tensors, const std::string& prefix = "");
  void add_text(const std::string& name, std::string text);
  void add_json(const std::string& name, std::string json);  // checked to parse

  bool has(const std::string& name) const { return find(name) != nullptr; }
  const Section* find(const std::string& name) const;
  // Throw, naming the section, when it is missing or of another type.
  const Tensor& tensor(const std::string& name) const;
  const std::string& text(const std::string& name) const;  // text or json
  // Tensor sections whose name starts with prefix, in file order, with the prefix removed.
  NamedTensors tensors(const std::string& prefix = "") const;
  const std::vector<Section>& sections() const { return sections_; }
  // The file read_checkpoint read it from ("" for one built in memory), named by the errors above.
  std::string source;

 private:
  std::string where() const;
  void add(Section s);
  std::vector<Section> sections_;
};

// Writes atomically: a temporary file in the target's folder, fsync, rename over the target, fsync of the
// folder. On failure the target is untouched, the temporary file removed, and the error names the path.
void write_checkpoint(const std::string& path, const Checkpoint& ckpt);
// Validates the magic, the format version, the header checksum, every section's length and CRC-32 and the
// tensor metadata; errors name the file and the section (index and name) that is bad.
Checkpoint read_checkpoint(const std::string& path);

// Writes `bytes` to `path` the same atomic way (a run's config.toml and rewritten logs, which a kill must not
// leave half-written). `kind` starts the error messages ("config runs/a/config.toml: write failed: ...").
void write_file_atomic(const std::string& path, const std::string& bytes, const char* kind);

// Refuses, without blocking, anything but an existing regular file as an input: a FIFO would block its reader
// forever, a device or a directory be read as garbage. Errors read "<what> <path>: not a regular file (a FIFO)".
void check_input_file(const std::string& path, const char* what);
// An output qil may write: a new path or an existing regular file — never a device, FIFO, socket or directory
// (the atomic rename would replace a device node by a regular file) — and not the same file as any of
// `inputs` (the write would destroy what it reads; compared by device and inode, so other spellings and links
// count). Errors start with `flag` and the path ("--out runs/a/best.ckpt: is the input checkpoint ...").
void check_output_file(const std::string& path, const std::vector<std::pair<std::string, std::string>>& inputs,
                       const std::string& flag);

// Removes the temporary files ("<name>.tmp.<pid>.<n>") that atomic writes left in `dir` when their process
// was killed mid-write; files of a process still running are kept. Returns the names removed, sorted.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

// ---- safetensors ----

struct SafeTensors {
  NamedTensors tensors;                          // in data-offset order
  std::map<std::string, std::string> metadata;   // the "__metadata__" object (string values only)
};

// dtypes written: F32 (and BF16, I8, U8, I32 for the other qil dtypes); plain layout. Written atomically.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Reads F32, BF16, I8, U8, I32, F16 (converted to f32, exactly) and I64 (converted to s32 when every value
// fits, e.g. PyTorch's num_batches_tracked). Validates the header length, the JSON, every dtype, shape and data_offsets (within
// the buffer, matching the shape, no overlap, no gap).
SafeTensors read_safetensors(const std::string& path);

}  // namespace engine
