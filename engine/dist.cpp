// MPI collectives for data-parallel training. Tensors are packed into one contiguous buffer per call: one
// large collective costs one latency instead of one per parameter (ResNet-18 has 62 parameter tensors). The
// bucketed gradient average packs a few such buffers and starts each as soon as backward has finished it.
#include "engine/dist.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace engine::dist {

namespace {

constexpr int64_t kParallelMin = 16384;
constexpr int64_t kMaxCount = INT_MAX;  // MPI counts are int: larger buffers go in pieces

bool g_started_here = false;  // init() called MPI_Init_thread (so finalize() may call MPI_Finalize)

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(str_cat("dist::", what, ": MPI error: ", std::string(msg, static_cast<size_t>(len))));
}

// The packing buffer is kept between calls: gradients are averaged every step with the same total size.
std::vector<char>& scratch(size_t bytes) {
  static std::vector<char> buf;
  if (buf.size() < bytes) buf.resize(bytes);
  return buf;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The watchdog: a thread that wakes once a second and looks at when the collective in progress (if any) began.
// The calling thread only stores two atomics per collective, so a step pays nothing measurable for it. The
// thread ends the process with _Exit (MPI may only be called from the main thread): mpirun reports a rank that
// exits without MPI_Finalize and ends the job.
struct Watchdog {
  std::atomic<int64_t> entered_ns{0};  // when the current collective began; 0 = none in progress
  std::atomic<const char*> what{""};
  double timeout_s = 0;
  int rank = 0, world = 1;
  std::mutex mu;
  std::condition_variable wake;
  bool stop = false;
  std::thread thread;

  void loop() {
    std::unique_lock<std::mutex> lk(mu);
    while (!wake.wait_for(lk, std::chrono::seconds(1), [&] { return stop; })) {
      const int64_t since = entered_ns.load();
      if (since == 0 || (now_ns() - since) * 1e-9 <= timeout_s) continue;
      std::fflush(stdout);
      std::fprintf(stderr,
                   "qil: error (rank %d of %d): %s has waited more than %g s for the other ranks (one of them is "
                   "stuck; --collective-timeout); ending the job\n",
                   rank, world, what.load(), timeout_s);
      std::fflush(stderr);
      std::_Exit(3);
    }
  }
};
Watchdog* g_watchdog = nullptr;  // never freed: an aborting process must not destroy a running thread

// Marks a blocking collective for the watchdog while it runs.
class Watched {
 public:
  explicit Watched(const char* what) {
    if (!g_watchdog) return;
    g_watchdog->what = what;
    g_watchdog->entered_ns = now_ns();
  }
  ~Watched() {
    if (g_watchdog) g_watchdog->entered_ns = 0;
  }
};

void stop_watchdog() {
  if (!g_watchdog || !g_watchdog->thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lk(g_watchdog->mu);
    g_watchdog->stop = true;
  }
  g_watchdog->wake.notify_all();
  g_watchdog->thread.join();
  g_watchdog = nullptr;  // leaked on purpose, see above
}

// Two sums of a tensor's 32-bit words (and of its trailing bytes), the second weighted by position, mod 2^64.
std::pair<uint64_t, uint64_t> fingerprint(const Tensor& t) {
  const auto* bytes = static_cast<const unsigned char*>(t.bytes());
  const int64_t nbytes = static_cast<int64_t>(t.nbytes()), words = nbytes / 4;
  uint64_t s1 = 0, s2 = 0;
#pragma omp parallel for reduction(+ : s1, s2) if (words > kParallelMin)
  for (int64_t i = 0; i < words; ++i) {
    uint32_t w;
    std::memcpy(&w, bytes + 4 * i, 4);
    s1 += w;
    s2 += w * static_cast<uint64_t>(i + 1);
  }
  for (int64_t i = 4 * words; i < nbytes; ++i) {
    s1 += bytes[i];
    s2 += bytes[i] * static_cast<uint64_t>(i + 1);
  }
  return {s1, s2};
}

}  // namespace

void init(int* argc, char*** argv) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  QIL_CHECK(!finalized, "dist::init: MPI was already finalized in this process and cannot restart");
  if (initialized) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init");
  g_started_here = true;
  // Errors come back as codes that check_mpi turns into exceptions instead of aborting every rank.
  check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "init");
  QIL_CHECK(provided >= MPI_THREAD_FUNNELED, "dist::init: the MPI library provides thread level ", provided,
            ", qil needs MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED, ")");
}

void finalize() {
  stop_watchdog();
  if (!active() || !g_started_here) return;
  check_mpi(MPI_Finalize(), "finalize");
}

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (active()) MPI_Abort(MPI_COMM_WORLD, code);
}

void set_collective_timeout(double seconds) {
  stop_watchdog();
  if (seconds <= 0 || world_size() == 1) return;
  g_watchdog = new Watchdog;
  g_watchdog->timeout_s = seconds;
  g_watchdog->rank = rank();
  g_watchdog->world = world_size();
  g_watchdog->thread = std::thread([w = g_watchdog] { w->loop(); });
}

bool launched_by_mpi() {
  if (const char* force = std::getenv("QIL_MPI"); force && *force) return std::strcmp(force, "0") != 0;
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

bool active() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

int rank() {
  if (!active()) return 0;
  int r = 0;
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &r), "rank");
  return r;
}

int world_size() {
  if (!active()) return 1;
  int n = 1;
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &n), "world_size");
  return n;
}

void allreduce_mean(std::vector<Tensor>& tensors) {
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    QIL_CHECK(tensors[i].defined() && tensors[i].dtype() == DType::f32, "dist::allreduce_mean: tensor ", i,
              " is ", tensors[i], ", expected a defined f32 tensor");
    total += tensors[i].numel();
  }
  const int world = world_size();
  if (world == 1 || total == 0) return;  // the mean over one rank is the value itself

  float* buf = reinterpret_cast<float*>(scratch(static_cast<size_t>(total) * sizeof(float)).data());
  int64_t off = 0;
  for (const Tensor& t : tensors) {
    std::memcpy(buf + off, t.data<float>(), t.nbytes());
    off += t.numel();
  }
  {
    Watched w("allreduce_mean");
    for (int64_t at = 0; at < total; at += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, total - at));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, buf + at, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "allreduce_mean");
    }
  }
  const float inv = 1.f / static_cast<float>(world);
  off = 0;
  for (Tensor& t : tensors) {
    float* p = t.data<float>();
    const float* src = buf + off;
    const int64_t n = t.numel();
#pragma omp parallel for simd if (n > kParallelMin)
    for (int64_t k = 0; k < n; ++k) p[k] = src[k] * inv;
    off += n;
  }
}

// Buffers and requests of the bucketed average, one per bucket; MPI_REQUEST_NULL when none is in flight. The
// sums arrive in a buffer of their own: Open MPI's nonblocking all-reduce (libnbc) reduces an in-place buffer
// through one rank and broadcasts it back (binomial tree, log2(W) full copies on the way), and picks its
// bandwidth-optimal reduce-scatter + all-gather only for separate buffers (from 4 ranks on).
struct GradAverager::Comm {
  std::vector<std::vector<float>> buffers, sums;
  std::vector<MPI_Request> requests;
  std::unordered_map<const void*, size_t> index;  // parameter -> position in the list
  int world = 1;
};

namespace {
std::vector<int64_t> numels_of(const std::vector<Tensor>& tensors) {
  std::vector<int64_t> n;
  for (size_t i = 0; i < tensors.size(); ++i) {
    QIL_CHECK(tensors[i].defined() && tensors[i].dtype() == DType::f32, "dist::GradAverager: parameter ", i,
              " is ", tensors[i], ", expected a defined f32 tensor");
    n.push_back(tensors[i].numel());
  }
  return n;
}
}  // namespace

GradAverager::GradAverager(std::vector<Tensor> params, int64_t bucket_bytes)
    : params_(std::move(params)), plan_(numels_of(params_), bucket_bytes), comm_(std::make_unique<Comm>()) {
  comm_->world = world_size();
  for (size_t i = 0; i < params_.size(); ++i) comm_->index[params_[i].id()] = i;
  for (const BucketPlan::Bucket& b : plan_.buckets()) {
    QIL_CHECK(b.numel <= kMaxCount, "dist::GradAverager: a bucket of ", b.numel, " values is too many for one call");
    comm_->buffers.emplace_back(comm_->world > 1 ? static_cast<size_t>(b.numel) : 0);
    comm_->sums.emplace_back(comm_->buffers.back().size());
  }
  comm_->requests.assign(plan_.buckets().size(), MPI_REQUEST_NULL);
}

GradAverager::~GradAverager() {
  for (MPI_Request r : comm_->requests)
    if (r != MPI_REQUEST_NULL) {
      comm_.release();  // MPI may still write into the buffers: leaked on purpose, the job is ending
      return;
    }
}

void GradAverager::begin(float scale) {
  QIL_CHECK(!in_round_, "dist::GradAverager::begin: the previous round was not finished");
  plan_.reset();
  scale_ = scale;
  in_round_ = true;
  started_early_ = 0;
}

void GradAverager::ready(const Tensor& param) {
  QIL_CHECK(in_round_, "dist::GradAverager::ready: no round in progress (begin() first)");
  auto it = comm_->index.find(param.id());
  if (it == comm_->index.end()) return;
  for (size_t b : plan_.mark_ready(it->second)) start(b);
}

// Packs bucket b (scaled) and starts its all-reduce.
void GradAverager::start(size_t b) {
  if (comm_->world == 1) return;
  float* buf = comm_->buffers[b].data();
  const float scale = scale_;
  for (const BucketPlan::Slot& s : plan_.buckets()[b].slots) {
    const Tensor& g = params_[s.tensor].grad();
    float* dst = buf + s.offset;
    if (!g.defined()) {
      std::fill(dst, dst + s.numel, 0.f);
    } else if (scale == 1.f) {
      std::memcpy(dst, g.data<float>(), static_cast<size_t>(s.numel) * sizeof(float));
    } else {
      const float* src = g.data<float>();
#pragma omp parallel for simd if (s.numel > kParallelMin)
      for (int64_t k = 0; k < s.numel; ++k) dst[k] = src[k] * scale;
    }
  }
  const int count = static_cast<int>(plan_.buckets()[b].numel);
  check_mpi(MPI_Iallreduce(buf, comm_->sums[b].data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                           &comm_->requests[b]),
            "allreduce_mean (bucketed)");
}

void GradAverager::poll() {
  if (comm_->world == 1 || plan_.started() == 0) return;
  int done = 0;
  check_mpi(MPI_Testall(static_cast<int>(plan_.started()), comm_->requests.data(), &done, MPI_STATUSES_IGNORE),
            "allreduce_mean (bucketed)");
}

void GradAverager::finish() {
  QIL_CHECK(in_round_, "dist::GradAverager::finish: no round in progress (begin() first)");
  in_round_ = false;
  started_early_ = plan_.started();
  for (size_t b : plan_.mark_all_ready()) start(b);
  if (comm_->world == 1) {
    if (scale_ == 1.f) return;
    for (Tensor& p : params_)
      if (p.grad().defined()) {
        float* g = p.grad().data<float>();
        const int64_t n = p.grad().numel();
#pragma omp parallel for simd if (n > kParallelMin)
        for (int64_t k = 0; k < n; ++k) g[k] *= scale_;
      }
    return;
  }
  {
    Watched w("allreduce_mean (bucketed)");
    check_mpi(MPI_Waitall(static_cast<int>(comm_->requests.size()), comm_->requests.data(), MPI_STATUSES_IGNORE),
              "allreduce_mean (bucketed)");
  }
  const float inv = 1.f / static_cast<float>(comm_->world);
  for (size_t b = 0; b < plan_.buckets().size(); ++b)
    for (const BucketPlan::Slot& s : plan_.buckets()[b].slots) {
      Tensor& g = params_[s.tensor].grad();
      if (!g.defined()) continue;
      float* p = g.data<float>();
      const float* src = comm_->sums[b].data() + s.offset;
#pragma omp parallel for simd if (s.numel > kParallelMin)
      for (int64_t k = 0; k < s.numel; ++k) p[k] = src[k] * inv;
    }
}

namespace {
// One MPI_Allreduce in place over `count` values of `type`.
void allreduce_values(void* values, size_t count, MPI_Datatype type, MPI_Op op, const char* what) {
  if (world_size() == 1 || count == 0) return;
  QIL_CHECK(static_cast<int64_t>(count) <= kMaxCount, "dist::", what, ": ", count, " values is too many for one call");
  Watched w(what);
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, values, static_cast<int>(count), type, op, MPI_COMM_WORLD), what);
}
}  // namespace

void allreduce_sum_i64(std::vector<int64_t>& values) {
  allreduce_values(values.data(), values.size(), MPI_INT64_T, MPI_SUM, "allreduce_sum_i64");
}

void allreduce_max_i64(std::vector<int64_t>& values) {
  allreduce_values(values.data(), values.size(), MPI_INT64_T, MPI_MAX, "allreduce_max_i64");
}

int64_t allreduce_sum_i64(int64_t value) {
  std::vector<int64_t> v{value};
  allreduce_sum_i64(v);
  return v[0];
}

void allreduce_sum_f64(std::vector<double>& values) {
  allreduce_values(values.data(), values.size(), MPI_DOUBLE, MPI_SUM, "allreduce_sum_f64");
}

void broadcast(std::vector<Tensor>& tensors, int root) {
  const int world = world_size();
  QIL_CHECK(root >= 0 && root < world, "dist::broadcast: root ", root, " outside [0, ", world, ")");
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    QIL_CHECK(tensors[i].defined(), "dist::broadcast: tensor ", i, " is undefined");
    total += static_cast<int64_t>(tensors[i].nbytes());
  }
  if (world == 1 || total == 0) return;

  const bool is_root = rank() == root;
  char* buf = scratch(static_cast<size_t>(total)).data();
  int64_t off = 0;
  if (is_root)
    for (const Tensor& t : tensors) {
      std::memcpy(buf + off, t.bytes(), t.nbytes());
      off += static_cast<int64_t>(t.nbytes());
    }
  {
    Watched w("broadcast");
    for (int64_t at = 0; at < total; at += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, total - at));
      check_mpi(MPI_Bcast(buf + at, count, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
    }
  }
  if (is_root) return;
  off = 0;
  for (Tensor& t : tensors) {
    std::memcpy(t.bytes(), buf + off, t.nbytes());
    off += static_cast<int64_t>(t.nbytes());
  }
}

void barrier() {
  if (world_size() == 1) return;
  Watched w("barrier");
  check_mpi(MPI_Barrier(MPI_COMM_WORLD), "barrier");
}

Divergence find_divergence(const std::vector<Tensor>& tensors) {
  const int world = world_size();
  if (world == 1) return {};
  QIL_CHECK(static_cast<int64_t>(tensors.size()) * 2 <= kMaxCount, "dist::find_divergence: too many tensors");
  std::vector<uint64_t> mine, root;  // (s1, s2) per tensor
  for (size_t i = 0; i < tensors.size(); ++i) {
    QIL_CHECK(tensors[i].defined(), "dist::find_divergence: tensor ", i, " is undefined");
    const auto [s1, s2] = fingerprint(tensors[i]);
    mine.push_back(s1);
    mine.push_back(s2);
  }
  root = mine;
  Watched w("find_divergence");
  check_mpi(MPI_Bcast(root.data(), static_cast<int>(root.size()), MPI_UINT64_T, 0, MPI_COMM_WORLD),
            "find_divergence");
  int64_t first = INT64_MAX;  // index * world + rank of this rank's first differing tensor
  for (size_t i = 0; i < tensors.size() && first == INT64_MAX; ++i)
    if (mine[2 * i] != root[2 * i] || mine[2 * i + 1] != root[2 * i + 1])
      first = static_cast<int64_t>(i) * world + rank();
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD), "find_divergence");
  if (first == INT64_MAX) return {};
  return {first / world, static_cast<int>(first % world)};
}

}  // namespace engine::dist
