// train_main.c: elastic_train, the trainer's command line.
#define _GNU_SOURCE  // sched_getaffinity
#include <cblas.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "blas.h"
#include "comm.h"
#include "device.h"
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
    // the GPU of this rank: its rank among the ranks of its node
    const char* lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (!lr) lr = getenv("SLURM_LOCALID");
    device_set_fatal(die_message);
    if (device_init(cfg.device, lr ? atoi(lr) : 0, err)) die("%s", err);
    device_set_precision(!strcmp(cfg.precision, "bf16")   ? PRECISION_BF16
                         : !strcmp(cfg.precision, "tf32") ? PRECISION_TF32
                                                          : PRECISION_FP32);
    char dev[256], how[64];
    if (comm_start_device(&c, device_name(dev, sizeof dev), how, sizeof how, err)) die("%s", err);
    if (c.rank == 0 && (c.world > 1 || c.backend == COMM_NCCL))
        printf("comm: %s, %d rank%s\n", how, c.world, c.world > 1 ? "s" : "");
    if (cfg.threads > 0) {
#ifdef _OPENMP
        omp_set_num_threads(cfg.threads);
#endif
        openblas_set_num_threads(cfg.threads);
    }
    if (c.rank == 0) {
        char blas[512];
        printf("blas: %s\n", blas_describe(blas, sizeof blas));
        // mpirun binds each rank to one core by default: threads beyond the
        // rank's CPUs share them (half the speed at 2 threads on 1 core)
        cpu_set_t cpus;
        if (cfg.threads > 1 && !sched_getaffinity(0, sizeof cpus, &cpus) &&
            CPU_COUNT(&cpus) < cfg.threads) {
            printf(
                "warning: --threads %d, but this rank may run on %d CPU(s) only (its affinity): "
                "mpirun binds each rank to a core by default; add --bind-to none, or "
                "--map-by slot:PE=%d\n",
                cfg.threads, CPU_COUNT(&cpus), cfg.threads);
            fprintf(stderr, "elastic: warning: --threads %d on %d CPU(s)\n", cfg.threads,
                    CPU_COUNT(&cpus));
        }
    }
    rc = train_run(&cfg, &c);
    comm_finalize(&c);
    return rc;
}
