// The limits on what a command line may ask of the process — compute threads, decode workers, the size of an
// IDX file — with the one check every command applies to them (docs/reliability.md, "Limits"). Not the
// limits of the file formats themselves (engine/serialize.h, data/idx.h), nor train's other options
// (apps/config.cpp, which uses these same bounds).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace CLI {
class App;
class Validator;
}

namespace apps {

// OpenMP threads: far beyond the machine they crash the runtime (each thread's stack), and values past
// 2^31 wrapped when narrowed to OpenMP's int. 0 = OpenMP's default.
constexpr int64_t kMaxThreads = 1024;
// Data decode threads: the process runs out of threads (EAGAIN) long before a million.
constexpr int64_t kMaxWorkers = 256;
// --max-idx-mb: the largest IDX file (header + payload, decompressed) a command reads; data/idx.h's default
// of 256 MiB, up to 1 TiB.
constexpr int64_t kDefaultMaxIdxMb = 256;
constexpr int64_t kMaxIdxMb = int64_t(1) << 20;

// A check on one number of an option. CLI11 would report a failed check as "--flag: message"; this throws
// engine::Error with the message whole, "<flag> <requirement>, got <value>" ("--batch must be at least 1, got
// 0"), as every other error of qil reads. A value that is not a number passes here and fails CLI11's
// conversion, which names it. `help` is the short form --help shows after the type (INT:POSITIVE).
CLI::Validator number_check(std::string flag, std::function<bool(double)> ok, std::string requirement,
                            std::string help);

// `--threads N` (0..kMaxThreads), `--workers N` (1..kMaxWorkers) and `--max-idx-mb N` (1..kMaxIdxMb) on a
// subcommand. A value out of range is an error naming the flag, the range and the value
// ("--threads must be in 0..1024, got 100000"), before anything runs.
void add_threads_flag(CLI::App& app, int64_t& threads);
void add_workers_flag(CLI::App& app, int64_t& workers, const std::string& help);
void add_max_idx_flag(CLI::App& app, int64_t& max_idx_mb);
// The help text of --max-idx-mb (train registers it through its own field table).
inline constexpr const char* kMaxIdxHelp =
    "largest IDX file to read, MiB after decompression (a header claiming more is refused before anything is "
    "allocated; raise it for IDX data bigger than 256 MiB)";

}  // namespace apps
