// ckpt.h: checkpoints (DESIGN §5). Defines: train_state, ckpt_save, ckpt_load,
// ckpt_latest, ckpt_resolve, ckpt_verify, ckpt_seal, ckpt_set_aside, ckpt_remove,
// ckpt_prepare_dir, ckpt_prune.
// A checkpoint is a directory DIR/step_XXXXXXXX/ holding dense.h5 (parameters,
// Adam moments, the best parameters so far, the training state and the config,
// written by rank 0), one bank-RRRRR-of-PPPPP.h5 per rank when the model has a
// memory bank (its rows with their global ids and moments, written by that
// rank), every dataset with HDF5's Fletcher32 checksum (src/ckpt_h5.h), and
// MANIFEST (size and standard 64-bit FNV-1a of each file). It is written under
// a temporary name (.tmp.step_N.HOST.PID of rank 0, agreed by all ranks),
// synced, and renamed by rank 0 once every rank has reported its files
// written, so neither a crash nor a power loss nor one rank's failure leaves a
// partial step_ directory. The folder must be one that every rank sees (a
// shared file system across nodes).
#ifndef ELASTIC_CKPT_H
#define ELASTIC_CKPT_H

#include <stdint.h>

#include "comm.h"
#include "model.h"

typedef struct {
    int64_t step;          // optimizer steps completed
    int64_t epoch, index;  // cursor of the next batch to train on
    double best_metric;    // best validation NDCG@10 so far (-1: none yet)
    int64_t best_step;
    int64_t bad_evals;          // validations since the best one
    double train_seconds;       // wall time spent training, for the log
    double log_loss_sum;        // loss summed since the last progress line, so a resumed
    int64_t log_loss_n;         // run prints the same averages as an uninterrupted one
    uint64_t data_fingerprint;  // ds_fingerprint of the training data (0: unknown)
} train_state;

// Writes DIR/step_XXXXXXXX: collective over c (every rank calls it). best may
// be NULL; the model's memory bank (its rows and moments) goes in each rank's
// shard. Returns 0, or -1 on every rank with the same err[512] (the failing
// rank named), and nothing of the checkpoint left.
int ckpt_save(const char* dir, const comm* c, const model* m, const real* adam_m,
              const real* adam_v, const real* best, const train_state* st, const char* config_text,
              char* err);
// Collective: each rank checks dense.h5 and its own shard against the
// manifest, then loads them into m (tensors must match by name and shape; the
// bank's shard was written at this rank count), adam_m, adam_v, best (when
// present: *has_best = 1). *config_text is malloc'ed. Returns 0, or -1 on
// every rank with err naming the rank, the file and what is wrong.
int ckpt_load(const char* path, const comm* c, model* m, real* adam_m, real* adam_v, real* best,
              int* has_best, train_state* st, char** config_text, char* err);
// Checks every file of the manifest (size and checksum); 0 if intact.
int ckpt_verify(const char* path, char* err);
// Path of the newest complete checkpoint in dir into out[4096]; 0 if found, 1
// if there is none, -1 on error. Complete means what its manifest records:
// every file there at its size (nothing is re-hashed here: loading checks the
// checksums of what each rank reads, ckpt_verify all of them). When the
// newest is incomplete: without fallback, -1 with err saying which and why
// (nothing is changed); with fallback, each incomplete one newer than the
// chosen one is renamed PATH.corrupt (ckpt_set_aside) and named, with the
// reason, in report (one line each).
int ckpt_latest(const char* dir, int fallback, char* out, char* report, size_t report_len,
                char* err);
// The checkpoint folder a user named: path itself when it holds a MANIFEST,
// else the newest complete checkpoint of the directory path, into out[4096].
// 0, or -1 with err.
int ckpt_resolve(const char* path, char* out, char* err);
// Seals folder tmp (dense.h5 and, with shards > 0, bank shards 0..shards-1
// of shards) as a checkpoint: each file synced and hashed into its MANIFEST,
// then tmp renamed to final, which must not exist (offline tools:
// elastic_ckpt). 0, or -1 with err and tmp left for the caller to remove.
int ckpt_seal(const char* tmp, const char* final, int shards, char* err);
// Renames a checkpoint folder that failed to PATH.corrupt (or .corrupt.N), its
// new name into out[n]; 0, or -1 with errno.
int ckpt_set_aside(const char* path, char* out, size_t n);
// Removes a checkpoint folder and its files (a flat folder, as every
// checkpoint and its temporary are); 0, or -1 with errno.
int ckpt_remove(const char* path);
// Creates dir and its missing parents and checks that a file can be written
// there (at start, before training); 0, or -1 with err.
int ckpt_prepare_dir(const char* dir, char* err);
// Deletes all but the newest `keep` step_ folders of dir (keep 0: none).
int ckpt_prune(const char* dir, int keep, char* err);

#endif
