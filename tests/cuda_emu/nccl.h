// nccl.h of the CUDA emulator (tests/cuda_emu): the NCCL calls the backend
// makes (kernels/cuda/nccl.cu), carried out over MPI between the processes of
// an mpirun, on the emulator's device memory (host memory that cudaMalloc
// gave: every buffer is checked to be one). So comm's nccl backend, its id
// broadcast, its all-reduces and the bank's grouped sends and receives run
// on a machine without a GPU, against the MPI backend's numbers. The group
// collects its sends and receives and posts them all at ncclGroupEnd, as
// NCCL fuses a group; a send without its matching receive hangs, as on the
// GPU (mpirun's timeout in the tests names it). Not emulated: streams (every
// call completes at once) and NCCL's own reduction order.
#ifndef ELASTIC_CUDA_EMU_NCCL_H
#define ELASTIC_CUDA_EMU_NCCL_H

#define OMPI_SKIP_MPICXX 1  // the C API only: no C++ bindings to link
#include <mpi.h>

#include <cstring>
#include <vector>

#include "cuda_runtime.h"

typedef enum { ncclSuccess = 0, ncclInvalidArgument = 4, ncclSystemError = 2 } ncclResult_t;
typedef enum {
    ncclInt8 = 0,
    ncclChar = 0,
    ncclUint8 = 1,
    ncclFloat32 = 7,
    ncclFloat = 7
} ncclDataType_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;
struct emu_nccl_comm {
    int rank, world;
    ncclUniqueId id;
};
typedef emu_nccl_comm* ncclComm_t;

namespace emu {
struct p2p {
    bool send;
    void* buf;
    size_t bytes;
    int peer;
};
inline std::vector<p2p> group;
inline int group_depth;
inline ncclResult_t nccl_bad(const char* what) {
    fprintf(stderr, "cuda_emu: %s\n", what);
    return ncclInvalidArgument;
}
inline size_t type_bytes(ncclDataType_t t) { return t == ncclFloat32 ? 4 : 1; }
}  // namespace emu

inline const char* ncclGetErrorString(ncclResult_t r) {
    return r == ncclSuccess ? "no error" : "emulated NCCL error";
}

inline ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) id->internal[i] = (char)(rand() & 0xff);
    return ncclSuccess;
}

// Every rank must bring rank 0's id: checked by an all-gather over MPI.
inline ncclResult_t ncclCommInitRank(ncclComm_t* c, int world, ncclUniqueId id, int rank) {
    int up = 0, w = 0, r = 0;
    MPI_Initialized(&up);
    if (!up) return emu::nccl_bad("ncclCommInitRank: the emulator needs MPI started");
    MPI_Comm_size(MPI_COMM_WORLD, &w), MPI_Comm_rank(MPI_COMM_WORLD, &r);
    if (w != world || r != rank)
        return emu::nccl_bad("ncclCommInitRank: rank or world size differ from MPI's");
    std::vector<char> all((size_t)world * NCCL_UNIQUE_ID_BYTES);
    MPI_Allgather(id.internal, NCCL_UNIQUE_ID_BYTES, MPI_BYTE, all.data(), NCCL_UNIQUE_ID_BYTES,
                  MPI_BYTE, MPI_COMM_WORLD);
    for (int q = 0; q < world; q++)
        if (memcmp(all.data() + (size_t)q * NCCL_UNIQUE_ID_BYTES, all.data(), NCCL_UNIQUE_ID_BYTES))
            return emu::nccl_bad("ncclCommInitRank: the ranks brought different unique ids");
    *c = new emu_nccl_comm{rank, world, id};
    return ncclSuccess;
}

inline ncclResult_t ncclCommDestroy(ncclComm_t c) {
    delete c;
    return ncclSuccess;
}

inline ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t,
                                  ncclRedOp_t op, ncclComm_t c, cudaStream_t) {
    if (!c) return emu::nccl_bad("ncclAllReduce: no communicator");
    emu::not_while_capturing("ncclAllReduce");  // not recorded: the backend captures none
    emu::need_device(send, "ncclAllReduce", 0), emu::need_device(recv, "ncclAllReduce", 1);
    if (t != ncclFloat32 || (op != ncclSum && op != ncclAvg))
        return emu::nccl_bad("ncclAllReduce: only float sums and averages are emulated");
    float* out = (float*)recv;
    if (send != recv) memcpy(recv, send, count * sizeof(float));
    for (size_t off = 0; off < count; off += 1 << 28) {
        const int n = (int)(count - off < ((size_t)1 << 28) ? count - off : (size_t)1 << 28);
        if (MPI_Allreduce(MPI_IN_PLACE, out + off, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD))
            return ncclSystemError;
    }
    if (op == ncclAvg)
        for (size_t i = 0; i < count; i++) out[i] /= (float)c->world;
    return ncclSuccess;
}

inline ncclResult_t ncclGroupStart() {
    emu::not_while_capturing("ncclGroupStart");
    emu::group_depth++;
    return ncclSuccess;
}

inline ncclResult_t emu_p2p(bool send, const void* buf, size_t count, ncclDataType_t t, int peer,
                            ncclComm_t c) {
    if (!c || peer < 0 || peer >= c->world || peer == c->rank)
        return emu::nccl_bad("ncclSend/ncclRecv: bad peer");
    emu::need_device(buf, send ? "ncclSend" : "ncclRecv", 0);
    if (!emu::group_depth)
        return emu::nccl_bad("ncclSend/ncclRecv outside a group: the backend always groups them");
    emu::group.push_back({send, (void*)buf, count * emu::type_bytes(t), peer});
    return ncclSuccess;
}
inline ncclResult_t ncclSend(const void* buf, size_t count, ncclDataType_t t, int peer,
                             ncclComm_t c, cudaStream_t) {
    return emu_p2p(true, buf, count, t, peer, c);
}
inline ncclResult_t ncclRecv(void* buf, size_t count, ncclDataType_t t, int peer, ncclComm_t c,
                             cudaStream_t) {
    return emu_p2p(false, buf, count, t, peer, c);
}

// The group's sends and receives, all posted, then all awaited.
inline ncclResult_t ncclGroupEnd() {
    if (--emu::group_depth > 0) return ncclSuccess;
    std::vector<MPI_Request> req;
    int rc = 0;
    for (const auto& p : emu::group) {
        if (p.bytes > (size_t)1 << 30) return emu::nccl_bad("ncclSend/ncclRecv: over 1 GB");
        req.emplace_back();
        rc |=
            p.send
                ? MPI_Isend(p.buf, (int)p.bytes, MPI_BYTE, p.peer, 99, MPI_COMM_WORLD, &req.back())
                : MPI_Irecv(p.buf, (int)p.bytes, MPI_BYTE, p.peer, 99, MPI_COMM_WORLD, &req.back());
    }
    emu::group.clear();
    if (!rc && !req.empty()) rc = MPI_Waitall((int)req.size(), req.data(), MPI_STATUSES_IGNORE);
    return rc ? ncclSystemError : ncclSuccess;
}

#endif
