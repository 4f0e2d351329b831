// comm.c: local and MPI backends of comm.h.
#include "comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

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
    if (!backend || !strcmp(backend, "auto")) backend = launched ? "mpi" : "local";
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
    if (strcmp(backend, "mpi")) {
        snprintf(err, COMM_ERRLEN, "unknown --comm '%s' (want auto, local or mpi)", backend);
        return -1;
    }
    c->backend = COMM_MPI;
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

void comm_abort(const comm* c, int code) {
    fflush(NULL);
    if (c && c->backend == COMM_MPI && c->world > 1) MPI_Abort(MPI_COMM_WORLD, code);
    // _exit, not exit: libraries' exit handlers must not run on a failed state
    // (HDF5's crashes on a file whose close failed on a full disk)
    _exit(code);
}

void comm_finalize(comm* c) {
    if (c->backend == COMM_MPI) MPI_Finalize();
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

int comm_allreduce_sum(const comm* c, float* buf, int64_t n, char* err) {
    return allreduce(c, buf, n, MPI_FLOAT, sizeof(float), err);
}

int comm_allreduce_sum_f64(const comm* c, double* buf, int64_t n, char* err) {
    return allreduce(c, buf, n, MPI_DOUBLE, sizeof(double), err);
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
