// train.h: the training run of elastic_train. Defines: TRAIN_EXIT_REQUEUE, train_run, lr_at.
#ifndef ELASTIC_TRAIN_H
#define ELASTIC_TRAIN_H

#include <stdint.h>

#include "comm.h"
#include "config.h"

// The exit status of a run stopped by SIGTERM, SIGUSR1 or SIGINT after its
// checkpoint: EX_TEMPFAIL, "try again" (slurm.conf's RequeueExit=75, or the
// job script's `scontrol requeue`, puts the job back in the queue).
#define TRAIN_EXIT_REQUEUE 75

// Trains, validates, early-stops, checkpoints and tests as cfg says. Fatal
// errors stop every rank through die(). Returns the process exit code: 0, or
// TRAIN_EXIT_REQUEUE when a signal stopped it (checkpoint written).
int train_run(const config* cfg, const comm* c);
// Learning rate after `step` completed steps of `total`.
double lr_at(const config* cfg, int64_t step, int64_t total);

#endif
