// synth.h: a seeded synthetic dataset with planted structure, written in the
// dataset layout (dataset.h) by streaming, so millions of users fit.
//
// Items 1..N are split into K contiguous clusters (long-term interests). Each
// user has 1-3 clusters with random weights and a history length drawn
// log-uniformly from [min_len, max_len]. Every next item is, with
//   p_burst: the continuation of a short burst: the successor of the previous
//            item inside its cluster (i -> i+1 w.p. 3/4, else i+2, wrapping),
//   p_long:  a draw from one of the user's clusters (weights), Zipf(zipf)
//            popularity inside the cluster (its first items most popular),
//   else:    global Zipf(zipf) popularity over a seeded shuffle of all items.
// A sequence model can learn the bursts and the user's clusters; popularity
// alone cannot, so a model that learns beats popularity.
// Defines: synth_config, synth_defaults, synth_write, synth_user.
#ifndef ELASTIC_SYNTH_H
#define ELASTIC_SYNTH_H

#include <stdint.h>

typedef struct {
    int64_t users, items;
    int64_t clusters;          // 0: one per 100 items (at least 1)
    int64_t min_len, max_len;  // min_len >= 3; equal gives a fixed length
    uint64_t seed;
    double p_burst, p_long;  // p_burst + p_long <= 1; the rest is noise
    double zipf;             // popularity exponent
} synth_config;

// users=1000 items=1000 clusters=0 len 3..50 seed=1 p_burst=0.5 p_long=0.4 zipf=1.
synth_config synth_defaults(void);

// Writes the dataset to path (path.tmp + rename); no /timestamps, no id
// tables (item i's original id is i). Memory: O(items + max_len + a block).
int synth_write(const char* path, const synth_config* c, char* err);

// Generates user u's history alone (the same items synth_write writes):
// *len items into out[max_len]. For tests.
int synth_user(const synth_config* c, int64_t u, int32_t* out, int64_t* len, char* err);

#endif
