// fingerprint.h: the 64-bit FNV-1a hash behind ds_fingerprint (dataset.h),
// over integers as their little-endian bytes, whatever the host's order.
// Shared by datasets/, the checkpoints' manifest (src/ckpt.c) and the tests. Defines: FNV_OFFSET, FNV_PRIME,
// fnv1a_i64, fnv1a_i32, fp_combine.
#ifndef ELASTIC_FINGERPRINT_H
#define ELASTIC_FINGERPRINT_H

#include <stdint.h>

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t fnv1a_i64(uint64_t h, const int64_t* v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < 64; b += 8) h = (h ^ (((uint64_t)v[i] >> b) & 0xff)) * FNV_PRIME;
    return h;
}

static inline uint64_t fnv1a_i32(uint64_t h, const int32_t* v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < 32; b += 8) h = (h ^ (((uint32_t)v[i] >> b) & 0xff)) * FNV_PRIME;
    return h;
}

// FNV-1a of four int64s: (n_users, n_items, hash of /offsets, hash of /items)
// for a stored fingerprint, (n_users, n_items, n_interactions, hash of
// /offsets) for the fallback of older files.
static inline uint64_t fp_combine(int64_t a, int64_t b, uint64_t c, uint64_t d) {
    const int64_t v[4] = {a, b, (int64_t)c, (int64_t)d};
    return fnv1a_i64(FNV_OFFSET, v, 4);
}

#endif
