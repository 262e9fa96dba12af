// MPI collectives for data-parallel training. Tensors are packed into one contiguous buffer per call: one
// large collective costs one latency instead of one per parameter (ResNet-18 has 62 parameter tensors).
#include "engine/dist.h"

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstring>

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
  if (!active() || !g_started_here) return;
  check_mpi(MPI_Finalize(), "finalize");
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
  for (int64_t at = 0; at < total; at += kMaxCount) {
    const int count = static_cast<int>(std::min(kMaxCount, total - at));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, buf + at, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "allreduce_mean");
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

void allreduce_sum_i64(std::vector<int64_t>& values) {
  if (world_size() == 1 || values.empty()) return;
  QIL_CHECK(static_cast<int64_t>(values.size()) <= kMaxCount, "dist::allreduce_sum_i64: ", values.size(),
            " values is too many for one call");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_INT64_T, MPI_SUM,
                          MPI_COMM_WORLD),
            "allreduce_sum_i64");
}

int64_t allreduce_sum_i64(int64_t value) {
  std::vector<int64_t> v{value};
  allreduce_sum_i64(v);
  return v[0];
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
  for (int64_t at = 0; at < total; at += kMaxCount) {
    const int count = static_cast<int>(std::min(kMaxCount, total - at));
    check_mpi(MPI_Bcast(buf + at, count, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
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
  check_mpi(MPI_Barrier(MPI_COMM_WORLD), "barrier");
}

}  // namespace engine::dist
