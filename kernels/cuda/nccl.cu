// nccl.cu: the NCCL side of comm's nccl backend (DESIGN §4), on device
// memory: the communicator (its unique id made by rank 0 and broadcast by
// comm over MPI), in-place float all-reduces on the compute stream or, for
// the gradients' overlap with backward, on a side stream ordered by events,
// and the bank's variable all-to-all as grouped ncclSend/ncclRecv. One check
// macro, ncclCheck, for every NCCL call: the call, where, NCCL's reason into
// err, and -1 (comm's callers stop every rank). Built without NCCL
// (ELASTIC_NO_NCCL: no nccl.h found), each entry says so.
#include <stdio.h>
#include <string.h>

#include "common.cuh"

#ifndef ELASTIC_NO_NCCL
#include <nccl.h>

#define ncclCheck(call)                                                           \
    do {                                                                          \
        ncclResult_t r_ = (call);                                                 \
        if (r_ != ncclSuccess) {                                                  \
            snprintf(err, 512, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, \
                     ncclGetErrorString(r_));                                     \
            return -1;                                                            \
        }                                                                         \
    } while (0)

static ncclComm_t g_comm;
static int g_rank, g_world;
static cudaStream_t g_side;          // the overlapped all-reduces
static cudaEvent_t g_ready, g_done;  // compute -> side, side -> compute

extern "C" int cuda_nccl_unique_id(void* id, size_t bytes, char* err) {
    if (bytes < sizeof(ncclUniqueId)) {
        snprintf(err, 512, "NCCL unique id: %zu bytes given, %zu needed", bytes,
                 sizeof(ncclUniqueId));
        return -1;
    }
    ncclUniqueId u;
    ncclCheck(ncclGetUniqueId(&u));
    memcpy(id, &u, sizeof u);
    return 0;
}

extern "C" int cuda_nccl_start(const void* id, int rank, int world, char* err) {
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclCheck(ncclCommInitRank(&g_comm, world, u, rank));
    g_rank = rank, g_world = world;
    cudaCheck(cudaStreamCreateWithFlags(&g_side, cudaStreamNonBlocking));
    cudaCheck(cudaEventCreateWithFlags(&g_ready, cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&g_done, cudaEventDisableTiming));
    return 0;
}

// In place over n floats at buf (device memory), summed or averaged. Blocking
// calls run on the compute stream, in order with the kernels around them;
// an overlapped one (side) on the side stream once the compute stream has
// reached this point, finished for the compute stream by cuda_nccl_wait.
extern "C" int cuda_nccl_allreduce(float* buf, int64_t n, int mean, int side, char* err) {
    if (!g_comm) {
        snprintf(err, 512, "NCCL all-reduce before the communicator was started");
        return -1;
    }
    const ncclRedOp_t op = mean ? ncclAvg : ncclSum;
    if (!side) {
        ncclCheck(ncclAllReduce(buf, buf, (size_t)n, ncclFloat32, op, g_comm, cuda_stream()));
        return 0;
    }
    cudaCheck(cudaEventRecord(g_ready, cuda_stream()));
    cudaCheck(cudaStreamWaitEvent(g_side, g_ready, 0));
    ncclCheck(ncclAllReduce(buf, buf, (size_t)n, ncclFloat32, op, g_comm, g_side));
    cudaCheck(cudaEventRecord(g_done, g_side));
    return 0;
}

// The compute stream waits for every overlapped all-reduce started so far
// (the side stream runs them in order: the last one's event covers all).
extern "C" int cuda_nccl_wait(char* err) {
    (void)err;
    cudaCheck(cudaStreamWaitEvent(cuda_stream(), g_done, 0));
    return 0;
}

// comm_alltoallv_dev's contract (comm.h) on device memory, counts and offsets
// on the host in elements of elem bytes: this rank's own part copied on the
// device, the others as one group of sends and receives on the compute stream.
extern "C" int cuda_nccl_alltoallv(const void* send, const int64_t* send_counts,
                                   const int64_t* send_offsets, void* recv,
                                   const int64_t* recv_counts, const int64_t* recv_offsets,
                                   size_t elem, char* err) {
    const char* s = (const char*)send;
    char* r = (char*)recv;
    const int me = g_rank;
    if (send_counts[me] != recv_counts[me]) {
        snprintf(err, 512, "NCCL all-to-all: rank %d sends %lld elements to itself, expecting %lld",
                 me, (long long)send_counts[me], (long long)recv_counts[me]);
        return -1;
    }
    if (send_counts[me])
        cudaCheck(cudaMemcpyAsync(
            r + (size_t)recv_offsets[me] * elem, s + (size_t)send_offsets[me] * elem,
            (size_t)send_counts[me] * elem, cudaMemcpyDeviceToDevice, cuda_stream()));
    if (g_world == 1) return 0;
    ncclCheck(ncclGroupStart());
    for (int q = 0; q < g_world; q++) {
        if (q == me) continue;
        if (send_counts[q])
            ncclCheck(ncclSend(s + (size_t)send_offsets[q] * elem, (size_t)send_counts[q] * elem,
                               ncclUint8, q, g_comm, cuda_stream()));
        if (recv_counts[q])
            ncclCheck(ncclRecv(r + (size_t)recv_offsets[q] * elem, (size_t)recv_counts[q] * elem,
                               ncclUint8, q, g_comm, cuda_stream()));
    }
    ncclCheck(ncclGroupEnd());
    return 0;
}

extern "C" void cuda_nccl_stop(void) {
    if (!g_comm) return;
    cudaStreamSynchronize(g_side);
    ncclCommDestroy(g_comm);  // at exit: a failure here changes nothing
    cudaStreamDestroy(g_side);
    cudaEventDestroy(g_ready);
    cudaEventDestroy(g_done);
    g_comm = NULL;
}

#else  // built without NCCL

static int no_nccl(char* err) {
    snprintf(err, 512,
             "this build has no NCCL (no nccl.h was found when libelastic_cuda.so was built; "
             "NCCL_HOME=... make): use --comm mpi");
    return -1;
}
extern "C" int cuda_nccl_unique_id(void*, size_t, char* err) { return no_nccl(err); }
extern "C" int cuda_nccl_start(const void*, int, int, char* err) { return no_nccl(err); }
extern "C" int cuda_nccl_allreduce(float*, int64_t, int, int, char* err) { return no_nccl(err); }
extern "C" int cuda_nccl_wait(char* err) { return no_nccl(err); }
extern "C" int cuda_nccl_alltoallv(const void*, const int64_t*, const int64_t*, void*,
                                   const int64_t*, const int64_t*, size_t, char* err) {
    return no_nccl(err);
}
extern "C" void cuda_nccl_stop(void) {}

#endif
