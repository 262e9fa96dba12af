// Data-parallel collectives over MPI: start-up and shut-down, rank and world size, gradient averaging through
// one fused buffer, parameter broadcast, integer sums (evaluation counts) and a barrier. The same binary runs
// with and without mpirun: started alone, or before init(), it is rank 0 of 1 and every collective is a
// no-op. Not a general communication layer (no point-to-point, no sub-communicators, no overlap of
// communication with backward).
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
// Copies root's tensors (any dtype, same shapes on every rank) to every rank, through one packed buffer.
void broadcast(std::vector<Tensor>& tensors, int root = 0);
void barrier();

}  // namespace engine::dist
