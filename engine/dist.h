// Data-parallel collectives over MPI: start-up and shut-down, rank and world size, gradient averaging (through
// one fused buffer at the end of a step, or in buckets that start during backward and overlap it), parameter
// broadcast, sums (evaluation counts), a barrier, a cross-rank comparison of tensors (the divergence guard),
// ending the whole job from one rank, and a watchdog that bounds how long any collective may wait for the other
// ranks. The same binary runs with and without mpirun: started alone, or before init(), it is rank 0 of 1 and
// every collective is a no-op. Not a general communication layer (no point-to-point, no sub-communicators, no
// communication from threads other than the one that called init()).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/buckets.h"
#include "engine/tensor.h"

namespace engine::dist {

// MPI_Init_thread with MPI_THREAD_FUNNELED (OpenMP threads compute, only the calling thread communicates).
// Idempotent; works under mpirun and as a singleton. MPI errors are turned into engine::Error.
void init(int* argc, char*** argv);
// MPI_Finalize if init() started MPI and it is still running. Collectives become single-rank no-ops again.
void finalize();
bool active();  // MPI initialized and not finalized
// True when this process was started by an MPI launcher (mpirun/mpiexec of Open MPI, MPICH or Intel MPI,
// srun with PMI/PMIx: their environment variables), or when QIL_MPI=1 asks for MPI. A plain start then
// initializes no MPI at all, so it needs no MPI runtime and starts no singleton daemon (orted).
bool launched_by_mpi();

int rank();        // 0 when MPI is not active
int world_size();  // 1 when MPI is not active

// Every rank passes the same list (same count, shapes, order) of defined f32 tensors, e.g. the parameters'
// gradients; afterwards each holds the mean over ranks. One MPI_Allreduce over a packed buffer.
void allreduce_mean(std::vector<Tensor>& tensors);
// The gradients of a fixed list of parameters averaged over ranks in buckets (BucketPlan: filled from the last
// parameter backwards, up to bucket_bytes each) that start while backward still runs: each bucket is packed and
// its nonblocking all-reduce (MPI_Iallreduce) started as soon as its gradients are final and every earlier
// bucket has started; poll() between backward nodes lets MPI move the data (Open MPI progresses nonblocking
// collectives only inside MPI calls, and only this thread may make them); finish() starts what is left, waits
// under the watchdog, and writes each mean back into its gradient. Every rank builds it from the same list
// (count, sizes, order) and calls begin() and finish() in the same steps; the order in which ready() reports
// the parameters may differ between ranks. With 2 ranks the result equals allreduce_mean's bit for bit (each
// element is one addition, a + b = b + a); with more, the summation order inside MPI may differ between
// bucket sizes, so the two agree to rounding, while all ranks still hold the same values.
// Memory: two buffers of the gradients' size (what is sent, and the sums). Without MPI or with one rank, none,
// and finish() only applies the scale.
class GradAverager {
 public:
  GradAverager(std::vector<Tensor> params, int64_t bucket_bytes);
  // With buckets in flight (an exception during backward), the buffers are left to MPI rather than freed: the
  // process is about to end the job (main's error path) and must not wait for ranks that may never arrive.
  ~GradAverager();
  GradAverager(const GradAverager&) = delete;
  GradAverager& operator=(const GradAverager&) = delete;

  // A new round: every gradient is multiplied by `scale` as it is packed (1/K for the mean of K micro-batches),
  // exactly as if the caller had scaled it in place first.
  void begin(float scale = 1.f);
  // `param`'s gradient is final for this round (BackwardHooks::on_leaf_ready); tensors not in the list are
  // ignored. An undefined gradient is sent as zeros and stays undefined.
  void ready(const Tensor& param);
  // Lets MPI move the data of the buckets in flight (BackwardHooks::after_node); never blocks.
  void poll();
  // Starts the buckets not started yet (parameters backward did not reach), waits for all, and leaves each
  // defined gradient holding the mean over ranks of its scaled value.
  void finish();
  bool in_round() const { return in_round_; }

  const BucketPlan& plan() const { return plan_; }
  // Buckets started before finish() in the last round: the ones that overlapped backward.
  size_t started_early() const { return started_early_; }

 private:
  void start(size_t bucket);

  struct Comm;  // MPI requests and buffers (dist.cpp)
  std::vector<Tensor> params_;
  BucketPlan plan_;
  std::unique_ptr<Comm> comm_;
  float scale_ = 1.f;
  bool in_round_ = false;
  size_t started_early_ = 0;
};

// Sums over ranks, in place (e.g. correct-prediction counts of a sharded evaluation).
void allreduce_sum_i64(std::vector<int64_t>& values);
int64_t allreduce_sum_i64(int64_t value);
// Maxima over ranks, in place (e.g. flags that one rank raised and all must act on).
void allreduce_max_i64(std::vector<int64_t>& values);
// Sums over ranks, in place. Exact where at most one rank holds a non-zero value per element (x + 0 = x), which
// is how a sharded evaluation gathers per-batch loss sums and then adds them in one fixed order.
void allreduce_sum_f64(std::vector<double>& values);
// Copies root's tensors (any dtype, same shapes on every rank) to every rank, through one packed buffer.
void broadcast(std::vector<Tensor>& tensors, int root = 0);
void barrier();

// Which tensor, if any, differs between ranks: every rank passes the same list (same count and sizes); each
// tensor's bytes are reduced to a fingerprint (two 64-bit sums of its 32-bit words, one position-weighted: a
// change of any one word always shows) and compared with rank 0's. Two small collectives, no tensor traffic.
struct Divergence {
  int64_t index = -1;  // the first tensor (in list order) that differs on some rank; -1 when all agree
  int rank = -1;       // the lowest rank whose copy of it differs from rank 0's
  bool found() const { return index >= 0; }
};
Divergence find_divergence(const std::vector<Tensor>& tensors);

// Ends every process of the job from this one (MPI_Abort), with `code` as the job's exit status. Output is
// flushed first. Without MPI it returns, and the caller exits as it would alone.
void abort_job(int code);

// A collective that waits longer than `seconds` for the other ranks ends this process with an error naming
// the rank and the collective (exit code 3); mpirun then ends the job. Guards against a rank that hangs
// rather than dies (a dead or failing rank ends the job by itself). 0 turns the watchdog off. Only under MPI
// with more than one rank; call after init().
void set_collective_timeout(double seconds);

}  // namespace engine::dist
