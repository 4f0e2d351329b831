// train_main.c: elastic_train, the trainer's command line.
#include <cblas.h>
#include <stdio.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "blas.h"
#include "comm.h"
#include "config.h"
#include "train.h"
#include "util.h"

int main(int argc, char** argv) {
    blas_autocorrect(argc, argv);  // may re-exec: before MPI, threads and output
    config cfg;
    config_defaults(&cfg);
    char err[512];
    int rc = config_parse(&cfg, argc, argv, err);
    if (rc == 1) return 0;
    if (rc < 0 || config_validate(&cfg, err)) {
        fprintf(stderr, "elastic_train: %s\n", err);
        return 2;
    }
    comm c;
    if (comm_init(&c, &argc, &argv, cfg.comm, err)) {
        fprintf(stderr, "elastic_train: %s\n", err);
        return 2;
    }
    util_set_comm(&c);
    if (cfg.threads > 0) {
#ifdef _OPENMP
        omp_set_num_threads(cfg.threads);
#endif
        openblas_set_num_threads(cfg.threads);
    }
    if (c.rank == 0) {
        char blas[512];
        printf("blas: %s\n", blas_describe(blas, sizeof blas));
    }
    rc = train_run(&cfg, &c);
    comm_finalize(&c);
    return rc;
}
