// comm.h: the communicator (DESIGN §4). Defines: comm, comm_init, comm_abort,
// comm_finalize, comm_allreduce_sum, comm_allreduce_sum_f64, comm_request,
// comm_iallreduce_sum, comm_wait,
// comm_allreduce_mean, comm_bcast, comm_barrier, comm_allgather,
// comm_alltoall_i64, comm_alltoallv, comm_alltoallv_dev, comm_start_device.
// Buffers are opaque pointers and counts are int64 (an exchange of any size),
// so a device backend (NCCL) can take the same calls.
// Backends: "local" (one process, every collective is the identity), "mpi"
// (host buffers; device memory through host copies) and "nccl" (MPI for the
// host collectives and the bootstrap, NCCL for those on device memory: the
// float all-reduces and comm_alltoallv_dev). "auto" picks mpi when a launcher
// started us (mpirun, srun), local otherwise, and on CUDA with several ranks
// each on a GPU of its own, nccl (comm_start_device).
#ifndef ELASTIC_COMM_H
#define ELASTIC_COMM_H

#include <stddef.h>
#include <stdint.h>

#define COMM_ERRLEN 512

typedef enum { COMM_LOCAL = 0, COMM_MPI = 1, COMM_NCCL = 2 } comm_backend;

typedef struct {
    int rank, world;
    comm_backend backend;
    int want_nccl;  // asked for by comm_init: 1 nccl, 2 auto (if each rank has its own GPU)
} comm;

// Initialises the backend named by `backend` ("auto", "local", "mpi", "nccl") and
// checks the world size against the launcher's (OMPI_COMM_WORLD_SIZE,
// PMI_SIZE, SLURM_NTASKS): a mismatch is an error that names both numbers.
int comm_init(comm* c, int* argc, char*** argv, const char* backend, char* err);
// After device_init: starts NCCL where it was asked for ("nccl": an error on
// the CPU or without NCCL; "auto": on CUDA with several ranks when no two
// ranks of a node share a GPU, which NCCL refuses, else mpi stays). Rank 0
// makes the unique id, MPI broadcasts it. Every rank calls it. Writes the
// backend in use into what[n] ("mpi", "nccl", ...).
int comm_start_device(comm* c, const char* device_name, char* what, size_t n, char* err);
// Stops every rank with `code` (MPI_Abort under mpi); never returns.
void comm_abort(const comm* c, int code) __attribute__((noreturn));
void comm_finalize(comm* c);
// In-place sums over ranks; 0 on success, -1 with err set.
// The float collectives (allreduce_sum, iallreduce_sum, allreduce_mean) take
// the process's device memory (device.h): on CUDA, through a host copy.
int comm_allreduce_sum(const comm* c, float* buf, int64_t n, char* err);
int comm_allreduce_sum_f64(const comm* c, double* buf, int64_t n, char* err);
// A non-blocking in-place sum over ranks (n < 2^31), finished by
// comm_wait; the buffer must not be touched in between. The local backend
// finishes at once.
typedef struct {
    void* impl;  // the backend's request; NULL when there is none
} comm_request;
int comm_iallreduce_sum(const comm* c, float* buf, int64_t n, comm_request* r, char* err);
int comm_wait(const comm* c, comm_request* r, char* err);
// In-place average over ranks (the sum divided by the world size).
int comm_allreduce_mean(const comm* c, float* buf, int64_t n, char* err);
int comm_bcast(const comm* c, void* buf, size_t bytes, int root, char* err);
int comm_barrier(const comm* c, char* err);
// recv[q*bytes .. (q+1)*bytes) = rank q's send[0 .. bytes), for every rank q.
int comm_allgather(const comm* c, const void* send, void* recv, size_t bytes, char* err);
// recv[q] = rank q's send[rank], for every rank q: the counts of an exchange.
int comm_alltoall_i64(const comm* c, const int64_t* send, int64_t* recv, char* err);
// All-to-all with variable counts, in elements of elem bytes: rank r sends
// send_counts[q] elements from send + send_offsets[q]*elem to rank q, and
// receives recv_counts[q] elements from rank q into recv + recv_offsets[q]*elem
// (exchange the counts first with comm_alltoall_i64). Any count may be 0; the
// send and receive buffers must not overlap.
int comm_alltoallv(const comm* c, const void* send, const int64_t* send_counts,
                   const int64_t* send_offsets, void* recv, const int64_t* recv_counts,
                   const int64_t* recv_offsets, size_t elem, char* err);

// comm_alltoallv on buffers in the process's device memory (device.h):
// NCCL's grouped sends and receives under nccl; on CUDA otherwise, this
// rank's own part copied on the device and the others' over MPI through host
// copies; comm_alltoallv itself on the CPU.
int comm_alltoallv_dev(const comm* c, const void* send, const int64_t* send_counts,
                       const int64_t* send_offsets, void* recv, const int64_t* recv_counts,
                       const int64_t* recv_offsets, size_t elem, char* err);

#endif
