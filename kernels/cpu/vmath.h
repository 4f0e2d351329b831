// vmath.h (private to kernels/cpu): vexp, exp at the precision of real, and
// dot, a dot product; both inline so that the loops calling them vectorise.
// For float, libm's expf is an opaque call that keeps a loop scalar, so vexp is
// Cephes' expf polynomial (about 1 ulp); for double (the finite-difference
// tests) it is libm's exp.
#ifndef ELASTIC_CPU_VMATH_H
#define ELASTIC_CPU_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#ifdef KERNELS_F64
static inline double vexp(double x) { return exp(x); }
#else
static inline float vexp(float x) {
    // clamped so that 2^n stays a normal float: exp(-86) ~ 4e-38 stands for 0
    x = x < -86.0f ? -86.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // n = round(x / ln2) by the 1.5 * 2^23 trick, which leaves n in the low bits
    const float shifter = 12582912.0f;
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    int32_t tb, sb;
    memcpy(&tb, &t, 4);
    memcpy(&sb, &shifter, 4);
    int32_t ni = tb - sb;
    // r = x - n ln2 in two parts (Cody-Waite), |r| <= ln2 / 2
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    // y * 2^n by adding n to the exponent field
    // in unsigned arithmetic: a NaN input makes ni garbage, and signed
    // overflow would be undefined (the result is NaN either way)
    uint32_t yb;
    memcpy(&yb, &y, 4);
    yb += (uint32_t)ni << 23;
    memcpy(&y, &yb, 4);
    return y;
}
#endif

// 16 independent partial sums: a plain loop is a serial float chain that gcc
// may not reorder, and omp simd reductions are lost when this is inlined
static inline real dot(const real* a, const real* b, int n) {
    real acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) acc[k] += a[i + k] * b[i + k];
    real s = 0;
    for (; i < n; i++) s += a[i] * b[i];
    for (int k = 0; k < 16; k++) s += acc[k];
    return s;
}

#endif
