// comm.c: local and MPI backends of comm.h.
#include "comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "device.h"

// Formats MPI's own message for a failed call into err; returns -1.
#define mpiCheck(call)                                                                           \
    do {                                                                                         \
        int rc_ = (call);                                                                        \
        if (rc_ != MPI_SUCCESS) {                                                                \
            char msg_[MPI_MAX_ERROR_STRING];                                                     \
            int len_ = 0;                                                                        \
            MPI_Error_string(rc_, msg_, &len_);                                                  \
            snprintf(err, COMM_ERRLEN, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call, msg_); \
            return -1;                                                                           \
        }                                                                                        \
    } while (0)

static int launcher_world(void) {
    const char* vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char* s = getenv(vars[i]);
        if (s && *s) return atoi(s);
    }
    return 0;
}

int comm_init(comm* c, int* argc, char*** argv, const char* backend, char* err) {
    memset(c, 0, sizeof *c);
    c->world = 1;
    int launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
    const int automatic = !backend || !strcmp(backend, "auto");
    if (automatic) backend = launched ? "mpi" : "local";
    if (!strcmp(backend, "local")) {
        int lw = launcher_world();
        if (launched && lw > 1) {
            snprintf(err, COMM_ERRLEN,
                     "--comm local but the launcher started %d processes; use --comm mpi", lw);
            return -1;
        }
        c->backend = COMM_LOCAL;
        return 0;
    }
    if (strcmp(backend, "mpi") && strcmp(backend, "nccl")) {
        snprintf(err, COMM_ERRLEN, "unknown --comm '%s' (want auto, local, mpi or nccl)", backend);
        return -1;
    }
    c->backend = COMM_MPI;
    c->want_nccl = !strcmp(backend, "nccl") ? 1 : automatic ? 2 : 0;
    int provided = 0;
    mpiCheck(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &c->world));
    const char* slurm = getenv("SLURM_NTASKS");
    int expect = slurm && *slurm ? atoi(slurm) : launcher_world();
    if (expect > 0 && expect != c->world) {
        snprintf(err, COMM_ERRLEN,
                 "MPI world has %d ranks but the launcher asked for %d (SLURM_NTASKS/"
                 "OMPI_COMM_WORLD_SIZE); check the srun/mpirun line",
                 c->world, expect);
        return -1;
    }
    return 0;
}

int comm_start_device(comm* c, const char* device_name, char* what, size_t n, char* err) {
    int use = c->want_nccl == 1;
    if (c->want_nccl == 2 && c->world > 1 && device_current() == DEVICE_CUDA) {
        // auto: NCCL unless two ranks of a node share a GPU (NCCL refuses them)
        char host[256] = "", me[512];
        gethostname(host, sizeof host - 1);
        snprintf(me, sizeof me, "%s %s", host, device_name);
        char* all = malloc((size_t)c->world * sizeof me);
        if (!all) {
            snprintf(err, COMM_ERRLEN, "comm: out of memory");
            return -1;
        }
        int shared = 0;
        if (comm_allgather(c, me, all, sizeof me, err)) return free(all), -1;
        for (int q = 0; q < c->world && !shared; q++)
            shared = q != c->rank && !strcmp(all + (size_t)q * sizeof me, me);
        free(all);
        int any = shared;  // every rank must take the same road
        mpiCheck(MPI_Allreduce(&shared, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
        use = !any;
    }
    if (use) {
        char id[DEV_NCCL_ID_BYTES];
        int ok = c->rank != 0 || !dev_nccl_unique_id(id, sizeof id, err);
        int all_ok = ok;  // rank 0's failure stops every rank, not only itself
        if (c->backend == COMM_MPI)
            mpiCheck(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
        if (!all_ok) {
            if (ok) snprintf(err, COMM_ERRLEN, "rank 0 could not start NCCL");
            return -1;
        }
        if (comm_bcast(c, id, sizeof id, 0, err) || dev_nccl_start(id, c->rank, c->world, err))
            return -1;
        c->backend = COMM_NCCL;
    }
    snprintf(what, n, "%s",
             c->backend == COMM_NCCL  ? "nccl"
             : c->backend == COMM_MPI ? (c->world > 1 && device_current() == DEVICE_CUDA
                                             ? "mpi (device memory through host copies)"
                                             : "mpi")
                                      : "local");
    return 0;
}

void comm_abort(const comm* c, int code) {
    fflush(NULL);
    if (c && c->backend != COMM_LOCAL && c->world > 1) MPI_Abort(MPI_COMM_WORLD, code);
    // _exit, not exit: libraries' exit handlers must not run on a failed state
    // (HDF5's crashes on a file whose close failed on a full disk)
    _exit(code);
}

void comm_finalize(comm* c) {
    if (c->backend == COMM_NCCL) dev_nccl_stop();
    if (c->backend != COMM_LOCAL) MPI_Finalize();
}

// MPI counts are int: large buffers go in pieces.
static int allreduce(const comm* c, void* buf, int64_t n, MPI_Datatype t, size_t size, char* err) {
    if (c->backend == COMM_LOCAL || c->world == 1) return 0;
    for (int64_t off = 0; off < n; off += INT_MAX / 2) {
        int64_t m = n - off < INT_MAX / 2 ? n - off : INT_MAX / 2;
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, (char*)buf + off * size, (int)m, t, MPI_SUM,
                               MPI_COMM_WORLD));
    }
    return 0;
}

// The float collectives take the process's device memory (device.h). On
// CUDA they go through a host copy: an MPI built without CUDA support cannot
// read a GPU's memory. (NCCL, which reads it directly, is the faster road.)
static int on_device(const comm* c, int64_t n) {
    return c->backend != COMM_LOCAL && c->world > 1 && n > 0 && device_current() == DEVICE_CUDA;
}

static float* g_stage;  // the host copy of a blocking collective's buffer
static size_t g_stage_n;

static float* host_stage(int64_t n, char* err) {
    if ((size_t)n > g_stage_n) {
        free(g_stage);
        g_stage = malloc((size_t)n * sizeof(float));
        g_stage_n = g_stage ? (size_t)n : 0;
        if (!g_stage)
            snprintf(err, COMM_ERRLEN, "comm: out of memory for a host copy of %lld floats",
                     (long long)n);
    }
    return g_stage;
}

// in place, n floats at buf in device memory, each times `scale` after the sum
static int allreduce_floats(const comm* c, float* buf, int64_t n, float scale, char* err) {
    if (c->backend == COMM_NCCL) return n ? dev_nccl_allreduce(buf, n, scale != 1, 0, err) : 0;
    if (!on_device(c, n)) {
        if (allreduce(c, buf, n, MPI_FLOAT, sizeof(float), err)) return -1;
        if (scale != 1)
            for (int64_t i = 0; i < n; i++) buf[i] *= scale;
        return 0;
    }
    float* h = host_stage(n, err);
    if (!h) return -1;
    dev_to_host(h, buf, (size_t)n * sizeof(float));
    if (allreduce(c, h, n, MPI_FLOAT, sizeof(float), err)) return -1;
    if (scale != 1)
        for (int64_t i = 0; i < n; i++) h[i] *= scale;
    dev_to_device(buf, h, (size_t)n * sizeof(float));
    return 0;
}

int comm_allreduce_sum(const comm* c, float* buf, int64_t n, char* err) {
    return allreduce_floats(c, buf, n, 1, err);
}

int comm_allreduce_sum_f64(const comm* c, double* buf, int64_t n, char* err) {
    return allreduce(c, buf, n, MPI_DOUBLE, sizeof(double), err);
}

// a non-blocking all-reduce in flight: on device memory, over a host copy
typedef struct {
    MPI_Request req;
    float* dev;  // the device buffer the sum goes back to, or NULL
    int64_t n;
    float host[];
} pending;

int comm_iallreduce_sum(const comm* c, float* buf, int64_t n, comm_request* r, char* err) {
    r->impl = NULL;
    if (c->backend == COMM_LOCAL || c->world == 1 || n == 0) return 0;
    if (c->backend == COMM_NCCL) {  // on the side stream; comm_wait orders it back
        if (dev_nccl_allreduce(buf, n, 0, 1, err)) return -1;
        r->impl = (void*)c;  // not NULL: something to wait for
        return 0;
    }
    if (n > INT_MAX) {
        snprintf(err, COMM_ERRLEN, "comm_iallreduce_sum: %lld elements (at most %d at once)",
                 (long long)n, INT_MAX);
        return -1;
    }
    // the request, then (device memory) the buffer's host copy behind it
    const int dev = on_device(c, n);
    pending* q = malloc(sizeof *q + (dev ? (size_t)n * sizeof(float) : 0));
    if (!q) {
        snprintf(err, COMM_ERRLEN, "comm_iallreduce_sum: out of memory");
        return -1;
    }
    q->dev = dev ? buf : NULL, q->n = n;
    r->impl = q;  // freed by comm_wait (an error here ends the run)
    float* h = buf;
    if (dev) dev_to_host(h = q->host, buf, (size_t)n * sizeof(float));
    mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, h, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &q->req));
    return 0;
}

int comm_wait(const comm* c, comm_request* r, char* err) {
    if (!r->impl) return 0;
    if (c->backend == COMM_NCCL) {
        r->impl = NULL;
        return dev_nccl_wait(err);
    }
    pending* q = r->impl;
    mpiCheck(MPI_Wait(&q->req, MPI_STATUS_IGNORE));
    if (q->dev) dev_to_device(q->dev, q->host, (size_t)q->n * sizeof(float));
    free(q);
    r->impl = NULL;
    return 0;
}

int comm_bcast(const comm* c, void* buf, size_t bytes, int root, char* err) {
    if (c->backend == COMM_LOCAL || c->world == 1) return 0;
    for (size_t off = 0; off < bytes; off += INT_MAX / 2) {
        size_t m = bytes - off < INT_MAX / 2 ? bytes - off : INT_MAX / 2;
        mpiCheck(MPI_Bcast((char*)buf + off, (int)m, MPI_BYTE, root, MPI_COMM_WORLD));
    }
    return 0;
}

int comm_barrier(const comm* c, char* err) {
    if (c->backend == COMM_LOCAL || c->world == 1) return 0;
    mpiCheck(MPI_Barrier(MPI_COMM_WORLD));
    return 0;
}

int comm_allreduce_mean(const comm* c, float* buf, int64_t n, char* err) {
    return allreduce_floats(c, buf, n, c->world > 1 ? 1.0f / (float)c->world : 1, err);
}

// One message of any size to `to` and one from `from`, each in pieces that fit
// MPI's int counts; every piece of a direction is posted before any is
// waited on, so the two sides never disagree on how many messages they make.
static int sendrecv(const char* send, size_t sbytes, int to, char* recv, size_t rbytes, int from,
                    char* err) {
    const size_t piece = INT_MAX / 2;
    const size_t ns = (sbytes + piece - 1) / piece, nr = (rbytes + piece - 1) / piece;
    MPI_Request one[2], *req = ns + nr <= 2 ? one : malloc((ns + nr) * sizeof *req);
    if (!req) {
        snprintf(err, COMM_ERRLEN, "comm: out of memory for %zu requests", ns + nr);
        return -1;
    }
    int exchange = 0, n = 0;
    for (size_t i = 0; i < nr && !exchange; i++) {
        const size_t off = i * piece, len = rbytes - off < piece ? rbytes - off : piece;
        exchange = MPI_Irecv(recv + off, (int)len, MPI_BYTE, from, 7, MPI_COMM_WORLD, &req[n++]);
    }
    for (size_t i = 0; i < ns && !exchange; i++) {
        const size_t off = i * piece, len = sbytes - off < piece ? sbytes - off : piece;
        exchange = MPI_Isend(send + off, (int)len, MPI_BYTE, to, 7, MPI_COMM_WORLD, &req[n++]);
    }
    if (!exchange) exchange = MPI_Waitall(n, req, MPI_STATUSES_IGNORE);
    if (req != one) free(req);
    mpiCheck(exchange);
    return 0;
}

int comm_allgather(const comm* c, const void* send, void* recv, size_t bytes, char* err) {
    char* r = recv;
    if (c->backend == COMM_LOCAL || c->world == 1) {
        if (bytes && recv != send) memmove(recv, send, bytes);
        return 0;
    }
    if (bytes <= INT_MAX / 2) {
        mpiCheck(
            MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD));
        return 0;
    }
    // beyond MPI's int counts: P-1 rounds of pairwise exchange
    const int P = c->world, me = c->rank;
    memcpy(r + (size_t)me * bytes, send, bytes);
    for (int k = 1; k < P; k++) {
        const int from = (me - k + P) % P;
        if (sendrecv(send, bytes, (me + k) % P, r + (size_t)from * bytes, bytes, from, err))
            return -1;
    }
    return 0;
}

int comm_alltoall_i64(const comm* c, const int64_t* send, int64_t* recv, char* err) {
    if (c->backend == COMM_LOCAL || c->world == 1) {
        recv[0] = send[0];
        return 0;
    }
    mpiCheck(MPI_Alltoall(send, 1, MPI_INT64_T, recv, 1, MPI_INT64_T, MPI_COMM_WORLD));
    return 0;
}

int comm_alltoallv(const comm* c, const void* send, const int64_t* send_counts,
                   const int64_t* send_offsets, void* recv, const int64_t* recv_counts,
                   const int64_t* recv_offsets, size_t elem, char* err) {
    const char* s = send;
    char* r = recv;
    if (c->backend == COMM_LOCAL || c->world == 1) {
        if (send_counts[0] != recv_counts[0]) {
            snprintf(err, COMM_ERRLEN,
                     "comm_alltoallv: sending %lld elements to itself, expecting %lld",
                     (long long)send_counts[0], (long long)recv_counts[0]);
            return -1;
        }
        if (send_counts[0])
            memcpy(r + (size_t)recv_offsets[0] * elem, s + (size_t)send_offsets[0] * elem,
                   (size_t)send_counts[0] * elem);
        return 0;
    }
    // P rounds of pairwise exchange: in round k, send to rank+k and receive
    // from rank-k (round 0 is this rank's own part). int64 counts of any
    // size, and every rank makes the same P-1 calls whatever its counts.
    const int P = c->world, me = c->rank;
    for (int k = 0; k < P; k++) {
        const int to = (me + k) % P, from = (me - k + P) % P;
        const size_t sb = (size_t)send_counts[to] * elem, rb = (size_t)recv_counts[from] * elem;
        if (k == 0) {
            if (sb != rb) {
                snprintf(err, COMM_ERRLEN,
                         "comm_alltoallv: rank %d sends %lld elements to itself, expecting %lld",
                         me, (long long)send_counts[me], (long long)recv_counts[me]);
                return -1;
            }
            if (sb)
                memcpy(r + (size_t)recv_offsets[me] * elem, s + (size_t)send_offsets[me] * elem,
                       sb);
            continue;
        }
        if (sendrecv(s + (size_t)send_offsets[to] * elem, sb, to,
                     r + (size_t)recv_offsets[from] * elem, rb, from, err))
            return -1;
    }
    return 0;
}

// The host side of comm_alltoallv_dev under MPI on CUDA, kept between calls
// (the bank exchanges every layer of every step): grown, never shrunk.
static char* g_xstage;
static size_t g_xstage_n;
static int64_t* g_xcounts;  // [2P]: the counts with this rank's own part zeroed
static int g_xcounts_p;

int comm_alltoallv_dev(const comm* c, const void* send, const int64_t* send_counts,
                       const int64_t* send_offsets, void* recv, const int64_t* recv_counts,
                       const int64_t* recv_offsets, size_t elem, char* err) {
    if (c->backend == COMM_NCCL)
        return dev_nccl_alltoallv(send, send_counts, send_offsets, recv, recv_counts, recv_offsets,
                                  elem, err);
    if (device_current() != DEVICE_CUDA)
        return comm_alltoallv(c, send, send_counts, send_offsets, recv, recv_counts, recv_offsets,
                              elem, err);
    // this rank's own part, device to device
    const int P = c->world, me = c->rank;
    if (send_counts[me] != recv_counts[me]) {
        snprintf(err, COMM_ERRLEN,
                 "comm_alltoallv_dev: rank %d sends %lld elements to itself, "
                 "expecting %lld",
                 me, (long long)send_counts[me], (long long)recv_counts[me]);
        return -1;
    }
    if (send_counts[me])
        dev_copy((char*)recv + (size_t)recv_offsets[me] * elem,
                 (const char*)send + (size_t)send_offsets[me] * elem,
                 (size_t)send_counts[me] * elem);
    if (c->backend == COMM_LOCAL || P == 1) return 0;
    // the other ranks' parts over MPI, through host copies of both extents
    size_t sb = 0, rb = 0;
    for (int q = 0; q < P; q++) {
        if (q == me) continue;
        const size_t se = (size_t)(send_offsets[q] + send_counts[q]) * elem,
                     re = (size_t)(recv_offsets[q] + recv_counts[q]) * elem;
        sb = send_counts[q] && se > sb ? se : sb;
        rb = recv_counts[q] && re > rb ? re : rb;
    }
    if (sb + rb > g_xstage_n || P > g_xcounts_p) {
        free(g_xstage), free(g_xcounts);
        g_xstage = malloc(sb + rb + 1), g_xcounts = malloc(2 * (size_t)P * sizeof *g_xcounts);
        g_xstage_n = g_xstage ? sb + rb : 0, g_xcounts_p = g_xcounts ? P : 0;
        if (!g_xstage || !g_xcounts) {
            snprintf(err, COMM_ERRLEN, "comm: out of memory for host copies of %zu bytes", sb + rb);
            return -1;
        }
    }
    char* h = g_xstage;
    int64_t *sc = g_xcounts, *rc_ = g_xcounts + P;
    for (int q = 0; q < P; q++) {
        sc[q] = q == me ? 0 : send_counts[q], rc_[q] = q == me ? 0 : recv_counts[q];
        if (sc[q])  // each part, not the gaps between them
            dev_to_host(h + (size_t)send_offsets[q] * elem,
                        (const char*)send + (size_t)send_offsets[q] * elem, (size_t)sc[q] * elem);
    }
    if (comm_alltoallv(c, h, sc, send_offsets, h + sb, rc_, recv_offsets, elem, err)) return -1;
    for (int q = 0; q < P; q++)
        if (rc_[q])
            dev_to_device((char*)recv + (size_t)recv_offsets[q] * elem,
                          h + sb + (size_t)recv_offsets[q] * elem, (size_t)rc_[q] * elem);
    return 0;
}
