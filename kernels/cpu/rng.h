// rng.h (private to kernels/cpu): the counter-based generator of kernels.h,
// inlined so that dropout's loops vectorise. Element `counter` of stream `seed`
// is element counter+1 of the splitmix64 sequence whose state starts at
// mix64(seed); hashing the seed first keeps streams of nearby seeds apart.
#ifndef ELASTIC_CPU_RNG_H
#define ELASTIC_CPU_RNG_H

#include <math.h>
#include <stdint.h>

#define RNG_GOLDEN 0x9E3779B97F4A7C15ull

// the splitmix64 output function
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// base = mix64(seed), hoisted out of loops over the counter
static inline uint64_t rng_bits(uint64_t base, uint64_t counter) {
    return mix64(base + (counter + 1) * RNG_GOLDEN);
}

// rng_uniform(seed, i) >= p  <=>  (rng_hash64(seed, i) >> 11) >= rng_threshold(p),
// an exact integer form of the comparison (x * 2^-53 >= p, x an integer)
static inline uint64_t rng_threshold(double p) {
    if (p <= 0) return 0;
    if (p >= 1) return 1ull << 53;
    return (uint64_t)ceil(p * 9007199254740992.0);
}

#endif
