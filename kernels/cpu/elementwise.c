// elementwise.c: GELU (tanh approximation), dropout and the residual add.
#include <stdint.h>

#include "kernels.h"
#include "on_cuda.h"
#include "rng.h"
#include "vmath.h"

#define GELU_C 0.7978845608028654  // sqrt(2/pi)
#define GELU_A 0.044715

// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), as PyTorch's
// gelu(approximate="tanh"); computed through 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u))
// so that the loops vectorise with vexp.
void gelu_forward(real* out, const real* inp, int64_t n) {
    ON_CUDA(gelu_forward, out, inp, n);
    // out[n], inp[n]
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        real x = inp[i];
        real u = (real)GELU_C * (x + (real)GELU_A * x * x * x);
        out[i] = x / (1 + vexp(-2 * u));
    }
}

void gelu_backward(real* dinp, const real* inp, const real* dout, int64_t n) {
    ON_CUDA(gelu_backward, dinp, inp, dout, n);
    // dinp[n], inp[n], dout[n]
    // d/dx = s + x * 2 s (1 - s) * du/dx with s = 0.5 (1 + tanh(u))
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        real x = inp[i];
        real u = (real)GELU_C * (x + (real)GELU_A * x * x * x);
        real du = (real)GELU_C * (1 + 3 * (real)GELU_A * x * x);
        real s = 1 / (1 + vexp(-2 * u));
        dinp[i] += dout[i] * (s + 2 * x * s * (1 - s) * du);
    }
}

// element i is kept iff rng_uniform(seed, i) >= p, and kept values are scaled
// by 1 / (1 - p); the integer test in rng.h is the same comparison.
void dropout_forward(real* out, const real* inp, real p, uint64_t seed, int64_t first, int64_t n) {
    ON_CUDA(dropout_forward, out, inp, p, seed, first, n);
    // out[n], inp[n]; out may alias inp
    if (p <= 0) {
        if (out != inp)
#pragma omp parallel for simd
            for (int64_t i = 0; i < n; i++) out[i] = inp[i];
        return;
    }
    uint64_t base = mix64(seed), thr = rng_threshold(p);
    real scale = p < 1 ? 1 / (1 - p) : 0;
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        int keep = (rng_bits(base, (uint64_t)(first + i)) >> 11) >= thr;
        out[i] = keep ? inp[i] * scale : 0;
    }
}

void dropout_backward(real* dinp, const real* dout, real p, uint64_t seed, int64_t first,
                      int64_t n) {
    ON_CUDA(dropout_backward, dinp, dout, p, seed, first, n);
    // dinp[n], dout[n]
    if (p <= 0) {
#pragma omp parallel for simd
        for (int64_t i = 0; i < n; i++) dinp[i] += dout[i];
        return;
    }
    uint64_t base = mix64(seed), thr = rng_threshold(p);
    real scale = p < 1 ? 1 / (1 - p) : 0;
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        int keep = (rng_bits(base, (uint64_t)(first + i)) >> 11) >= thr;
        dinp[i] += keep ? dout[i] * scale : 0;
    }
}

void residual_forward(real* out, const real* a, const real* b, int64_t n) {
    ON_CUDA(residual_forward, out, a, b, n);
    // out[n], a[n], b[n]
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(real* da, real* db, const real* dout, int64_t n) {
    ON_CUDA(residual_backward, da, db, dout, n);
    // da[n], db[n], dout[n]
    if (da)
#pragma omp parallel for simd
        for (int64_t i = 0; i < n; i++) da[i] += dout[i];
    if (db)
#pragma omp parallel for simd
        for (int64_t i = 0; i < n; i++) db[i] += dout[i];
}
