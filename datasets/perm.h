// perm.h: a seeded pseudo-random permutation of 0..n-1 evaluated point by
// point, with no O(n) storage: a 4-round Feistel network on the smallest
// 2^(2h) >= n, keyed by hash(seed, epoch, round), with cycle-walking back into
// [0, n). Defines: perm, perm_init, perm_apply, perm_mix64.
#ifndef ELASTIC_PERM_H
#define ELASTIC_PERM_H

#include <stdint.h>

typedef struct {
    uint64_t n;
    int half;         // bits per Feistel half
    uint64_t mask;    // (1 << half) - 1
    uint64_t key[4];  // round keys
} perm;

// splitmix64's finaliser: a good 64-bit mixer.
static inline uint64_t perm_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void perm_init(perm* p, uint64_t n, uint64_t seed, uint64_t epoch);
// i in [0, n) -> its image in [0, n).
uint64_t perm_apply(const perm* p, uint64_t i);

#endif
