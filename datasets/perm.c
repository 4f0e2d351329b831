// perm.c: the Feistel permutation of perm.h.
#include "perm.h"

void perm_init(perm* p, uint64_t n, uint64_t seed, uint64_t epoch) {
    p->n = n;
    p->half = 1;
    while (p->half < 32 && (1ull << (2 * p->half)) < n) p->half++;
    p->mask = (1ull << p->half) - 1;
    uint64_t base = perm_mix64(seed ^ perm_mix64(epoch ^ 0x5EEDull));
    for (int r = 0; r < 4; r++) p->key[r] = perm_mix64(base + (uint64_t)r);
}

static uint64_t encrypt(const perm* p, uint64_t x) {
    uint64_t l = x >> p->half, r = x & p->mask;
    for (int k = 0; k < 4; k++) {
        uint64_t f = perm_mix64(r ^ p->key[k]) & p->mask;
        uint64_t t = l ^ f;
        l = r;
        r = t;
    }
    return (l << p->half) | r;
}

uint64_t perm_apply(const perm* p, uint64_t i) {
    // Cycle-walking: the domain is at most 4n, so ~4 steps in expectation.
    uint64_t y = encrypt(p, i);
    while (y >= p->n) y = encrypt(p, y);
    return y;
}
