// rng.c: rng_hash64 and rng_uniform (the formula is in rng.h).

#include "rng.h"

#include "kernels.h"

uint64_t rng_hash64(uint64_t seed, uint64_t counter) { return rng_bits(mix64(seed), counter); }

double rng_uniform(uint64_t seed, uint64_t counter) {
    // the top 53 bits fill a double's mantissa exactly
    return (double)(rng_hash64(seed, counter) >> 11) * 0x1.0p-53;
}
