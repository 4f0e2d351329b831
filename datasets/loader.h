// loader.h: streaming training windows and evaluation batches from a dataset
// file (DESIGN §2). Defines: loader_config, batch, loader_*, eval_batch,
// evaler_*.
//
// Split (leave-one-out): for a user with history x_0..x_{n-1} (n >= 3), the
// training history is x_0..x_{n-3}, the validation target x_{n-2} (history
// x_0..x_{n-3}), the test target x_{n-1} (history x_0..x_{n-2}).
//
// Training windows: over the training history h (length m), windows of L+1
// items ending at m, m-stride, m-2*stride, ... while the end is >= 2 (a window
// needs at least two items); a window starts at max(0, end-L-1) and is
// left-padded with 0 to L+1. inputs = w[0..L-1], targets = w[1..L], and
// targets[t] = 0 wherever inputs[t] is padding. Windows of a user are numbered
// newest first.
//
// Order: every epoch visits the windows in a seeded pseudo-random permutation
// of 0..W-1 that depends only on (seed, epoch) and is computed without storing
// it (a bijection on the index). Global batch i of an epoch is permutation
// positions [i*batch, (i+1)*batch); the last partial global batch is dropped.
// Rank r of P takes rows [r*batch/P, (r+1)*batch/P) of each global batch, so
// the union over ranks is the global batch whatever P is.
//
// Memory: the loader keeps /offsets and a per-user window prefix (8 bytes per
// user each) and the prefetched batches; never /items.
#ifndef ELASTIC_LOADER_H
#define ELASTIC_LOADER_H

#include <stdint.h>

#include "dataset.h"

typedef struct {
    int L;       // input length; windows hold L+1 items
    int stride;  // distance between window ends, default (0) means L
    int batch;   // global batch size in sequences
    int rank, world;
    uint64_t seed;
    int prefetch;  // batches kept ready by the prefetch thread, default (0) means 2
} loader_config;

typedef struct {
    int B, L;           // B = this rank's rows
    int64_t row0;       // the global batch's index of this rank's first row
    int32_t* inputs;    // [B,L], left-padded with 0
    int32_t* targets;   // [B,L], 0 = no target at this position
    int32_t* pad;       // [B], leading padding positions of each row
    int64_t n_targets;  // number of non-zero targets in this rank's rows
    int64_t epoch;      // cursor of this batch: epoch and batch index within it
    int64_t index;
} batch;

typedef struct loader loader;

// Fails if the file cannot be opened or validated, if L < 1, batch < 1,
// world < 1, rank outside 0..world-1, batch < world, or if the dataset has
// fewer training windows than one global batch.
loader* loader_open(const char* path, const loader_config* cfg, char* err);
void loader_close(loader* ld);
int64_t loader_windows(const loader* ld);            // W, training windows
int64_t loader_batches_per_epoch(const loader* ld);  // floor(W / batch)
const ds_file* loader_dataset(const loader* ld);
// Positions the stream so the next batch returned is (epoch, index).
int loader_seek(loader* ld, int64_t epoch, int64_t index, char* err);
// Next batch (valid until the following call); NULL with err set on failure.
// Wraps into the next epoch after the last batch of an epoch.
const batch* loader_next(loader* ld, char* err);

// Reads window w (0..W-1, unpermuted numbering) into inputs/targets [L] and
// returns its padding count, or -1 with err set. For tests and tools.
int loader_window(loader* ld, int64_t w, int32_t* inputs, int32_t* targets, char* err);

// ---- evaluation: one row per user, the last L items of its validation or
// test history, left-padded, plus the full history (for --mask-history).
// SPLIT_ALL: the whole history, no target (recommendations after the last event).
typedef enum { SPLIT_VALID = 0, SPLIT_TEST = 1, SPLIT_ALL = 2 } split_kind;

typedef struct {
    int B, L;           // B users in this batch (the last batch may be short)
    int32_t* inputs;    // [B,L]
    int32_t* pad;       // [B]
    int32_t* target;    // [B] (0 for SPLIT_ALL)
    int64_t* user;      // [B] user index in the file
    int32_t* hist;      // full histories concatenated (history before target)
    int64_t* hist_off;  // [B+1]
} eval_batch;

typedef struct evaler evaler;

// Rank r of P evaluates users u with u % P == r. max_users > 0 evaluates only
// users 0..max_users-1 (a fixed subset, for quick validation).
evaler* evaler_open(const char* path, int L, int batch, split_kind split, int rank, int world,
                    int64_t max_users, char* err);
// Only the listed users (dataset indices, n of them, in that order) from now
// on: rank r of P takes list positions i with i % P == r. 0, or -1 with
// err[512] (an index out of range, out of memory).
int evaler_only(evaler* ev, const int64_t* users, int64_t n, char* err);
void evaler_close(evaler* ev);
void evaler_rewind(evaler* ev);
// Batches of a pass for the rank with the most (rank 0): every rank runs this
// many rounds, a rank past its last batch with none, so that the forward's
// collective exchanges match across ranks.
int64_t evaler_rounds(const evaler* ev);
// Next batch or NULL at the end (err[0] == 0) or on failure (err set).
const eval_batch* evaler_next(evaler* ev, char* err);

#endif
