// step.h: one training step, the one the trainer and elastic_bench share:
// forward, the tied-embedding loss over the positions that have a target,
// backward, the dense gradients summed over ranks, AdamW on the dense
// parameters and the sparse row-wise Adam on the memory bank, both with the
// global step. Defines: stepper, step_result, stepper_init, stepper_free,
// stepper_run.
#ifndef ELASTIC_STEP_H
#define ELASTIC_STEP_H

#include <stdint.h>

#include "bank.h"
#include "comm.h"
#include "config.h"
#include "model.h"

typedef struct {
    model* m;
    const tensor_spec* wte;
    real *adam_m, *adam_v;  // [n_params] dense Adam moments (checkpointed)
    real beta1, beta2, eps, weight_decay;
    int ce_block;
    // the loss gathers the positions with a target: with left padding most
    // positions of a short-history batch are padding, and the loss costs
    // (rows x items)
    // (on the backend's memory, device.h, except the host staging)
    double* sums;             // [3] a step's loss and squared norms (device memory)
    real *h, *dh, *scratch;   // [B*L,d] x 2, [ce_block, V-1]: the loss's scratch
    int in_spare;             // which lives in the model's spare activations,
    size_t loss_bytes;        // or takes these bytes of its own
    int32_t *rows, *targets;  // [B*L], on the device
    // the batch's host side, page-locked on CUDA so that its copies to the
    // device run asynchronously, and double-buffered so that a step's
    // writes never meet the last step's copies still under way: inputs
    // [B*L], pad [B], rows and targets [B*L] of the loss, for step parity p
    int32_t* batch_h[2];
    int parity;
    int32_t *inputs_h, *pad_h, *rows_h, *targets_h;  // this step's, in batch_h[parity]
    // the dense all-reduce since the trainer last cleared them: bytes, seconds
    // inside its calls (waiting on the other ranks included)
    double dense_bytes, dense_wait_s;
    // overlap (cfg->allreduce_overlap, several ranks): layer l's slices of the
    // layered tensors are copied to stage[l*per_layer ..] and all-reduced there
    // (req[l]) as soon as its backward ends (m->layer_done); the rest after
    // backward, in place
    int overlap;
    real* stage;
    size_t per_layer;
    comm_request* req;
    const comm* c;  // of the step under way
    int failed;     // an all-reduce started in backward failed: err_text says why
    char err_text[512];
} stepper;

typedef struct {
    double loss;       // mean over the global batch's targets
    double grad_sq;    // squared norm of the global gradient, bank rows included
    double n_targets;  // targets in the global batch
} step_result;

// Moments and scratch for model m (batches of up to m->B rows) with cfg's
// Adam settings and loss blocking; dies when out of memory.
void stepper_init(stepper* s, model* m, const config* cfg);
void stepper_free(stepper* s);
// Trains on this rank's rows [B] of the global batch, the first of them its
// row row0 (inputs and pad as the model takes them, targets[B,L] with 0 where
// there is none; dropout is keyed by the global row) at learning rate
// lr and global step t (1-based). dropout_seed 0 means no dropout. Returns 0;
// -1 with err[512] when the global batch has no target, or when the loss or
// the dense gradient is not finite (then nothing was updated).
int stepper_run(stepper* s, const comm* c, const int32_t* inputs, const int32_t* pad,
                const int32_t* targets, int B, int64_t row0, uint64_t dropout_seed, double lr,
                int64_t t, step_result* r, char* err);

#endif
