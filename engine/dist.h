// Data-parallel collectives over MPI: start-up and shut-down, rank and world size, gradient averaging through
// one fused buffer, parameter broadcast, sums (evaluation counts), a barrier, a cross-rank comparison of
// tensors (the divergence guard), ending the whole job from one rank, and a watchdog that bounds how long any
// collective may wait for the other ranks. The same binary runs with and without mpirun: started alone, or
// before init(), it is rank 0 of 1 and every collective is a no-op. Not a general communication layer (no
// point-to-point, no sub-communicators, no overlap of communication with backward).
#pragma once
#include <cstdint>
#include <vector>

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
