// fd.h: what the kernel tests share: a seeded generator independent of the
// kernels' rng, random tensors, small reductions and, for a file that defines
// FD_CHECK_GRAD (with FD_EPS, FD_TOL, FD_SAMPLE, and FD_ALL if tensors up to
// that size are to be checked at every element; default FD_SAMPLE), the
// central-difference gradient check. Include after cmocka.h, kernels.h and those defines; one
// test file each (everything here is static).
#ifndef ELASTIC_TESTS_FD_H
#define ELASTIC_TESTS_FD_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static uint64_t test_state;

__attribute__((unused)) static void seed(uint64_t s) { test_state = s * 0x9E3779B97F4A7C15ull + 1; }

// xorshift64*, independent of the kernels' rng
__attribute__((unused)) static double urand(void) {
    test_state ^= test_state >> 12;
    test_state ^= test_state << 25;
    test_state ^= test_state >> 27;
    return (double)((test_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

__attribute__((unused)) static real* rnd(int64_t n, double lo, double hi) {
    real* x = malloc(sizeof(real) * (n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * urand();
    return x;
}

__attribute__((unused)) static real* dup(const real* x, int64_t n) {
    real* y = malloc(sizeof(real) * n);
    memcpy(y, x, sizeof(real) * n);
    return y;
}

__attribute__((unused)) static double dotp(const real* a, const real* b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

__attribute__((unused)) static double max_abs_diff(const real* a, const real* b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

// |a - b| relative to max(|a|, |b|, lo)
__attribute__((unused)) static double rel_err(double a, double b, double lo) {
    return fabs(a - b) / fmax(lo, fmax(fabs(a), fabs(b)));
}

typedef double (*loss_fn)(void* ctx);

#ifdef FD_CHECK_GRAD
#ifndef FD_ALL
#define FD_ALL FD_SAMPLE
#endif
// The analytic gradient of loss() w.r.t. x[n] is g1 - g0 (what backward added
// to the random g0). Compares it with central differences at every element,
// or (past FD_ALL elements) at FD_SAMPLE random ones. Errors are relative to the larger of the two,
// floored at 1e-3 * max(1, |loss|) since rounding the loss limits the differences.
__attribute__((unused)) static void check_grad(const char* what, real* x, const real* g0,
                                               const real* g1, int64_t n, loss_fn loss, void* ctx) {
    int64_t count = n <= FD_ALL ? n : FD_SAMPLE;
    double noise = 1e-3 * fmax(1, fabs(loss(ctx)));
    double worst = 0;
    int64_t worst_i = 0;
    for (int64_t k = 0; k < count; k++) {
        int64_t i = n <= FD_ALL ? k : (int64_t)(urand() * n);
        real x0 = x[i];
        x[i] = x0 + FD_EPS;
        double lp = loss(ctx);
        x[i] = x0 - FD_EPS;
        double lm = loss(ctx);
        x[i] = x0;
        double num = (lp - lm) / (2 * FD_EPS);
        double err = rel_err(g1[i] - g0[i], num, noise);
        if (err > worst) {
            worst = err;
            worst_i = i;
        }
    }
    print_message("# %s: worst %.3g\n", what, worst);
    if (worst > FD_TOL)
        print_error("%s: gradient [%lld] off by %.3g relative\n", what, (long long)worst_i, worst);
    assert_true(worst <= FD_TOL);
}
#endif

#endif
