// eval.h: ranking metrics and the evaluation loop (DESIGN §2). Defines:
// EVAL_NK, EVAL_KS, EVAL_MISS, metrics, metrics_add_rank, target_rank, eval_protocol,
// eval_protocol_str, evaluate, recommend, popularity_scores.
#ifndef ELASTIC_EVAL_H
#define ELASTIC_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "comm.h"
#include "loader.h"
#include "model.h"

#define EVAL_NK 3
// The rank of a target that cannot be recommended (masked): a miss at every K,
// however few items there are.
#define EVAL_MISS INT64_MAX
extern const int EVAL_KS[EVAL_NK];  // 5, 10, 20

typedef struct {
    double hr[EVAL_NK], ndcg[EVAL_NK], mrr[EVAL_NK];  // sums until metrics_finish
    double n;                                         // users
} metrics;

// rank is 0-based (0 = the target scored best among the candidates).
void metrics_add_rank(metrics* m, int64_t rank);
void metrics_finish(metrics* m);

typedef struct {
    int mask_history;       // history items cannot be recommended
    int sampled_negatives;  // 0: rank among all items; else among this many sampled negatives
    uint64_t seed;          // of the negative sampling
} eval_protocol;

// "full ranking over 12101 items, history not masked" and the like, into buf[160];
// more sampled negatives than other items: "ranked against all 299 other items
// (100000 sampled negatives requested), ...", the count actually used.
const char* eval_protocol_str(const eval_protocol* p, int64_t n_items, char* buf);

// Rank of `target` (1..N) given scores[N] (scores[i] is item i+1). Items that
// tie with the target count as ranked above it, so a constant scorer gets no
// credit. With mask, items of hist[nh] are excluded, the target too if it is
// there (the protocol of the published numbers: a repeated target is a miss,
// rank EVAL_MISS).
// With negs > 0, the candidates are `negs` items drawn uniformly from those not
// in hist and not the target, seeded by (seed, user). mark is scratch [N+1]
// of zeros, left zeroed.
int64_t target_rank(const real* scores, int64_t N, int32_t target, const int32_t* hist, int64_t nh,
                    const eval_protocol* p, int64_t user, uint8_t* mark);

// Evaluates the model (or, when pop_scores[N] is given, that fixed scorer) on
// every batch of ev, summing over ranks. The model's batch must be at least
// the evaler's. Returns 0, or -1 with err[512] set.
int evaluate(model* m, const real* pop_scores, evaler* ev, const eval_protocol* p, const comm* c,
             metrics* out, char* err);

// Every user of ev on this rank (the model's batch at least the evaler's): its
// k best items by the model's scores, ties to the lower item index, its
// history left out with exclude_seen, as CSV lines "user,rank,item,score"
// (rank 1 the best; user and item as user_ids[u] and item_ids[i-1] when
// given, else as indices). Collective like evaluate. 0, or -1 with err[512].
int recommend(model* m, evaler* ev, int k, int exclude_seen, char* const* user_ids,
              char* const* item_ids, FILE* out, char* err);

// The k best items by scores[N] (scores[i] is item i+1): best[0..n) their
// items, best first, ties to the lower item; items with mark[item] set (when
// mark is not NULL) left out. Returns n (k, or fewer items than k).
int top_items(const real* scores, int64_t N, int k, const uint8_t* mark, int32_t* best);

// Popularity scorer from training-part counts: counts + a deterministic
// jitter in [0, 0.5) that breaks ties between equally popular items at random.
int popularity_scores(ds_file* f, real* scores, char* err);

#endif
