// ckpt.h: checkpoints (DESIGN §5). Defines: train_state, ckpt_save, ckpt_load,
// ckpt_latest, ckpt_verify.
// A checkpoint is a directory DIR/step_XXXXXXXX/ holding dense.h5 (parameters,
// Adam moments, the best parameters so far, the training state and the config,
// every dataset with HDF5's Fletcher32 checksum) and MANIFEST (size and
// standard 64-bit FNV-1a of each file). It is written under a temporary name
// (.tmp.step_N.HOST.PID), synced, and renamed once complete, so neither a crash
// nor a power loss leaves a partial step_ directory.
#ifndef ELASTIC_CKPT_H
#define ELASTIC_CKPT_H

#include <stdint.h>

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

// Writes DIR/step_XXXXXXXX; returns 0, or -1 with err[512]. best may be NULL.
// When the model has a memory bank, it and its moments bank_m, bank_v go too.
int ckpt_save(const char* dir, const model* m, const real* adam_m, const real* adam_v,
              const real* best, const real* bank_m, const real* bank_v, const train_state* st,
              const char* config_text, char* err);
// Verifies the manifest, then loads into m (tensors must match by name and
// shape), adam_m, adam_v, best (when present: *has_best = 1). *config_text is
// malloc'ed. Returns 0, or -1 with err naming the file and what is wrong.
int ckpt_load(const char* path, model* m, real* adam_m, real* adam_v, real* best, int* has_best,
              real* bank_m, real* bank_v, train_state* st, char** config_text, char* err);
// Checks every file of the manifest (size and checksum); 0 if intact.
int ckpt_verify(const char* path, char* err);
// Path of the newest checkpoint in dir into out[4096]; 0 if found, 1 if there
// is none, -1 on error. When the newest fails verification: without fallback,
// -1 with err saying which and why (nothing is changed); with fallback, each
// failing one newer than the chosen one is renamed PATH.corrupt and named,
// with the reason, in report (one line each).
int ckpt_latest(const char* dir, int fallback, char* out, char* report, size_t report_len,
                char* err);
// Creates dir and its missing parents and checks that a file can be written
// there (at start, before training); 0, or -1 with err.
int ckpt_prepare_dir(const char* dir, char* err);
// Deletes all but the newest `keep` step_ folders of dir (keep 0: none).
int ckpt_prune(const char* dir, int keep, char* err);

#endif
