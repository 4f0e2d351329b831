// ckpt_h5.h: what a checkpoint's HDF5 files hold (DESIGN §5), for ckpt.c,
// which owns the folder, the manifest and the protocol between ranks.
// Defines: ckpt_h5_write_dense, ckpt_h5_read_dense, ckpt_h5_read_config, ckpt_h5_read_legacy_bank
// (the bank's shards are ckpt_bank.h's).
// dense.h5: groups params, adam_m, adam_v and best (one dataset per tensor),
// the training state and the config as attributes, "world" the number of
// ranks that wrote it. Every dataset has HDF5's Fletcher32 checksum.
// Each returns 0, or -1 with err[512] naming the file (and tensor), the call
// and the reason.
#ifndef ELASTIC_CKPT_H5_H
#define ELASTIC_CKPT_H5_H

#include "bank.h"
#include "ckpt.h"
#include "model.h"

int ckpt_h5_write_dense(const char* file, const model* m, const real* params, const real* adam_m,
                        const real* adam_v, const real* best, const train_state* st,
                        const char* config_text, int world, char* err);
// (params, adam_m, adam_v and best are host memory laid out by m's tensor
// table: ckpt.c stages them to and from the device.)
// Reads what ckpt_h5_write_dense wrote (tensors checked by name and shape):
// *world the rank count that wrote it (1 for older checkpoints), *legacy_bank
// 1 when the bank is inside (a single-process checkpoint of format 2).
int ckpt_h5_read_dense(const char* file, const model* m, real* params, real* adam_m, real* adam_v,
                       real* best, int* has_best, train_state* st, char** config_text, int* world,
                       int* legacy_bank, char* err);
// The run's config text (what it was trained with), malloc'ed.
int ckpt_h5_read_config(const char* file, char** config_text, char* err);
// The whole bank of a single-process checkpoint's dense.h5 (one rank only).
int ckpt_h5_read_legacy_bank(const char* file, bank* b, char* err);

#endif
