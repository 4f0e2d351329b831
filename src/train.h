// train.h: the training run of elastic_train. Defines: train_run, lr_at.
#ifndef ELASTIC_TRAIN_H
#define ELASTIC_TRAIN_H

#include <stdint.h>

#include "comm.h"
#include "config.h"

// Trains, validates, early-stops, checkpoints and tests as cfg says. Fatal
// errors stop every rank through die(). Returns the process exit code.
int train_run(const config* cfg, const comm* c);
// Learning rate after `step` completed steps of `total`.
double lr_at(const config* cfg, int64_t step, int64_t total);

#endif
