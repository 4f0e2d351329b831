// test_vmath.c: the code that only the float build runs, against libm in
// double: vexp (kernels/cpu/vmath.h, Cephes' polynomial; the double build uses
// libm's exp) over the whole float range, in the vectorised loops the kernels
// use; dot; the elementwise kernels built on vexp (GELU, SiLU, elu+1, forward
// and backward) and the tied cross-entropy at extreme arguments; the tile.h
// product at float's vector width. Linked against the float trainer library.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "cpu/tile.h"
#include "cpu/vmath.h"
#include "fd.h"

// y = vexp(x) as the kernels call it: inlined into a loop that vectorises
static void vexp_loop(float* y, const float* x, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = vexp(x[i]);
}

// the scalar code, kept out of any vector loop
__attribute__((noinline)) static float vexp_one(float x) { return vexp(x); }

static float from_bits(uint32_t b) {
    float x;
    memcpy(&x, &b, 4);
    return x;
}

// The contract of vexp: within 2 ulp of exp on [-86, 88]; below -86 a value
// no larger than exp(-86) ~ 4.5e-38 that stands for 0 (never negative, never
// a garbage exponent); above 88 saturated at exp(88), finite; NaN stays NaN;
// non-decreasing; the vector and scalar code agree bit for bit.
static void check_vexp(const float* x, const float* y, int64_t n, double* worst) {
    const double lo = exp(-86.0) * (1 + 4 * FLT_EPSILON), hi = (double)vexp_one(88.0f);
    for (int64_t i = 0; i < n; i++) {
        const float v = y[i];
        if (isnan(x[i])) {
            if (!isnan(v)) fail_msg("vexp(nan) = %g", v);
            continue;
        }
        if (memcmp(&v, &(float){vexp_one(x[i])}, 4))
            fail_msg("vexp(%a): vector %a, scalar %a", x[i], v, vexp_one(x[i]));
        const double want = exp((double)x[i]);
        if (x[i] < -86.0f) {
            if (!(v >= 0 && v <= lo)) fail_msg("vexp(%a) = %a, want in [0, exp(-86)]", x[i], v);
        } else if (x[i] > 88.0f) {
            if (!(v == hi && isfinite(v))) fail_msg("vexp(%a) = %a, want exp(88)", x[i], v);
        } else {
            const double e = fabs(v - want) / want;
            if (e > *worst) *worst = e;
            if (e > 2 * FLT_EPSILON)
                fail_msg("vexp(%a) = %.9g, exp %.9g: %.3g ulp", x[i], v, want, e / FLT_EPSILON);
        }
    }
}

static void test_vexp_range(void** state) {
    // every 1009th float of [-104, 90] on each side: the denormal and tiny
    // arguments, the clamps and the overflow of libm's expf included
    const uint32_t neg_end = 0xC2D00000u /* -104 */, pos_end = 0x42B40000u /* 90 */;
    const int64_t n = (int64_t)(neg_end - 0x80000000u) / 1009 + pos_end / 1009 + 2;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    int64_t k = 0;
    for (uint32_t b = neg_end; b >= 0x80000000u + 1009; b -= 1009) x[k++] = from_bits(b);
    x[k++] = -0.0f;                                                       // -104 up to -0
    for (uint32_t b = 0; b <= pos_end; b += 1009) x[k++] = from_bits(b);  // +0 up to 90
    assert_true(k <= n);
    vexp_loop(y, x, k);
    double worst = 0;
    check_vexp(x, y, k, &worst);
    for (int64_t i = 1; i < k; i++)
        if (y[i] < y[i - 1]) fail_msg("vexp decreases: %a -> %a", x[i - 1], x[i]);
    print_message("# vexp: %lld arguments, worst %.3g ulp on [-86, 88]\n", (long long)k,
                  worst / FLT_EPSILON);
    free(x);
    free(y);
}

static void test_vexp_special(void** state) {
    const float x[] = {0.0f,      -0.0f,    FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40f, -1e-40f,
                       FLT_MIN,   -FLT_MIN, 1e-30f,       -1e-30f,       1e-7f,  -1e-7f,
                       0.5f,      -0.5f,    0.34657359f,  -0.34657359f,  1,      -1,
                       10,        -10,      -85.9f,       -86,           -86.1f, -87.3f,
                       -88,       -103,     -104,         -1e4f,         -1e30f, -FLT_MAX,
                       -INFINITY, 87.9f,    88,           88.5f,         88.73f, 89,
                       1e4f,      1e30f,    FLT_MAX,      INFINITY,      NAN,    -NAN};
    enum { N = sizeof x / sizeof x[0] };
    float y[N];
    vexp_loop(y, x, N);
    double worst = 0;
    check_vexp(x, y, N, &worst);
    for (int i = 0; i < 10; i++) assert_true(y[i] == 1.0f);  // zero and denormal arguments
    assert_true(y[10] > 1 && y[11] < 1);                     // exp(+-1e-7) is not rounded to 1
}

// dot's 16 partial sums, every tail length, against a double sum
static void test_dot(void** state) {
    seed(1);
    for (int n = 0; n <= 70; n++) {
        float* a = rnd(n, -1e3, 1e3);
        float* b = rnd(n, -1e-3, 1e-3);
        double want = 0, mag = 0;
        for (int i = 0; i < n; i++) want += (double)a[i] * b[i], mag += fabs((double)a[i] * b[i]);
        const double got = dot(a, b, n);
        if (fabs(got - want) > 2 * FLT_EPSILON * mag + 1e-30)
            fail_msg("dot n=%d: %.9g, want %.9g", n, got, want);
        free(a);
        free(b);
    }
}

// |got - want| <= rtol |want| + atol, printed at the first miss
static void close_to(const char* what, double x, double got, double want, double rtol,
                     double atol) {
    if (!(fabs(got - want) <= rtol * fabs(want) + atol))
        fail_msg("%s(%.9g) = %.9g, want %.9g", what, x, got, want);
}

// arguments from -100 to 100 (dense near 0), zero and denormals
static float* wide_args(int64_t* n) {
    enum { M = 4001 };
    float* x = malloc(sizeof(float) * (M + 8));
    int64_t k = 0;
    for (int i = 0; i < M; i++) {
        const double t = (i - (M - 1) / 2) / (double)((M - 1) / 2);  // -1..1
        x[k++] = (float)(100 * t * t * t);
    }
    const float extra[] = {0.0f, -0.0f, 1e-40f, -1e-40f, FLT_MIN, -FLT_MIN, 1e-20f, -1e-20f};
    for (int i = 0; i < 8; i++) x[k++] = extra[i];
    *n = k;
    return x;
}

// GELU (tanh form), SiLU and elu+1, forward and backward, against libm in
// double: relative 1e-5 of the value, absolute 1e-6 for a derivative (of
// order 1) and about 1e-36 for a value whose exp term vexp saturates
static void test_elementwise_wide(void** state) {
    int64_t n;
    float* x = wide_args(&n);
    float *y = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    float* one = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) one[i] = 1;
    const double c = sqrt(2 / M_PI), a = 0.044715;

    gelu_forward(y, x, n);
    memset(g, 0, sizeof(float) * n);
    gelu_backward(g, x, one, n);
    for (int64_t i = 0; i < n; i++) {
        // s = (1 + tanh u) / 2 without tanh's cancellation at large negative u
        const double v = x[i], u = c * (v + a * v * v * v), s = 1 / (1 + exp(-2 * u));
        const double du = c * (1 + 3 * a * v * v);
        close_to("gelu", v, y[i], v * s, 1e-5, 1e-36);
        close_to("gelu'", v, g[i], s + 2 * v * s * (1 - s) * du, 1e-5, 1e-6);
    }
    silu_forward(y, x, n);
    memset(g, 0, sizeof(float) * n);
    silu_backward(g, x, one, n);
    for (int64_t i = 0; i < n; i++) {
        const double v = x[i], s = 1 / (1 + exp(-v));
        close_to("silu", v, y[i], v * s, 1e-5, 1e-36);
        close_to("silu'", v, g[i], s * (1 + v * (1 - s)), 1e-5, 1e-6);
    }
    elu1_forward(y, x, n);
    memset(g, 0, sizeof(float) * n);
    elu1_backward(g, x, one, n);
    for (int64_t i = 0; i < n; i++) {
        const double v = x[i];
        close_to("elu1", v, y[i], v > 0 ? v + 1 : exp(v), 1e-5, 1e-37);
        close_to("elu1'", v, g[i], v > 0 ? 1 : exp(v), 1e-5, 1e-37);
        assert_true(y[i] > 0 || v < -80);  // positive features, or 0 standing for exp(v)
    }
    free(x), free(y), free(g), free(one);
}

// The tied cross-entropy with logits of up to +-200 (where a float softmax
// without the max shift overflows): loss and gradients against a double
// log-sum-exp, blocks of 3 rows so the last block is short.
static void test_crossentropy_extreme(void** state) {
    enum { R = 7, d = 8, V = 41, N = V - 1 };
    seed(2);
    float* h = rnd(R * d, -10, 10);
    float* wte = rnd(V * d, -10, 10);
    const int32_t targets[R] = {1, 40, 17, 0, 3, 3, 22};
    float dh[R * d] = {0}, dwte[V * d] = {0}, scratch[3 * N];
    const float scale = 0.25f;
    const double loss = crossentropy_tied(dh, dwte, h, wte, targets, R, d, V, scale, scratch, 3);
    double want = 0, wdh[R * d] = {0}, wdwte[V * d] = {0}, maxlogit = 0;
    for (int r = 0; r < R; r++) {
        if (!targets[r]) continue;
        double z[N], mx = -INFINITY, sum = 0;
        for (int j = 0; j < N; j++) {
            z[j] = 0;
            for (int k = 0; k < d; k++) z[j] += (double)h[r * d + k] * wte[(j + 1) * d + k];
            mx = fmax(mx, z[j]);
            maxlogit = fmax(maxlogit, fabs(z[j]));
        }
        for (int j = 0; j < N; j++) sum += exp(z[j] - mx);
        want += mx + log(sum) - z[targets[r] - 1];
        for (int j = 0; j < N; j++) {
            const double p = exp(z[j] - mx) / sum - (j + 1 == targets[r]);
            for (int k = 0; k < d; k++) {
                wdh[r * d + k] += scale * p * wte[(j + 1) * d + k];
                wdwte[(j + 1) * d + k] += scale * p * h[r * d + k];
            }
        }
    }
    print_message("# crossentropy: largest |logit| %.1f, loss %.9g, double %.9g\n", maxlogit, loss,
                  want);
    assert_true(maxlogit > 100);
    assert_true(isfinite(loss) && fabs(loss - want) <= 1e-5 * fabs(want));
    double dmax = 0, emax = 0;
    for (int i = 0; i < R * d; i++)
        dmax = fmax(dmax, fabs(wdh[i])), emax = fmax(emax, fabs(dh[i] - wdh[i]));
    for (int i = 0; i < V * d; i++)
        dmax = fmax(dmax, fabs(wdwte[i])), emax = fmax(emax, fabs(dwte[i] - wdwte[i]));
    for (int k = 0; k < d; k++) assert_true(dwte[k] == 0);  // row 0 is never a class
    assert_true(emax <= 1e-5 * dmax);
    free(h), free(wte);
}

// tile.h's smm at float's vector width (VL floats, 16 with AVX-512): every
// remainder of rows (1..3 past a tile of 4) and of columns (vector pairs,
// single vectors, a scalar tail), both A layouts, accumulating or not.
static void test_smm_float(void** state) {
    enum { MM = 9, NN = 2 * VBYTES / 4 + VBYTES / 4 + 5, KK = 7 };
    seed(3);
    float* A = rnd(MM * KK, -1, 1);
    float* B = rnd(KK * NN, -1, 1);
    float* C0 = rnd(MM * NN, -1, 1);
    float C[MM * NN];
    for (int t = 0; t < 2; t++)
        for (int acc = 0; acc < 2; acc++)
            for (int M = 1; M <= MM; M++)
                for (int N = 1; N <= NN; N++)
                    for (int K = 1; K <= KK; K += 3) {
                        // A[i,k] at i*ars + k*acs: row-major [M,KK] or its transpose [KK,MM]
                        const ptrdiff_t ars = t ? 1 : KK, acs = t ? MM : 1;
                        memcpy(C, C0, sizeof C);
                        smm(acc, M, N, K, A, ars, acs, B, NN, C, NN);
                        for (int i = 0; i < MM; i++)
                            for (int j = 0; j < NN; j++) {
                                double want = C0[i * NN + j], mag = fabs(want);
                                if (i < M && j < N) {
                                    want = acc ? want : 0, mag = acc ? mag : 0;
                                    for (int k = 0; k < K; k++) {
                                        const double p =
                                            (double)A[i * ars + k * acs] * B[k * NN + j];
                                        want += p, mag += fabs(p);
                                    }
                                }
                                if (fabs(C[i * NN + j] - want) > 4 * FLT_EPSILON * mag)
                                    fail_msg(
                                        "smm t=%d acc=%d M=%d N=%d K=%d: C[%d,%d] %.9g, want %.9g",
                                        t, acc, M, N, K, i, j, C[i * NN + j], want);
                            }
                    }
    free(A), free(B), free(C0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vexp_range),
        cmocka_unit_test(test_vexp_special),
        cmocka_unit_test(test_dot),
        cmocka_unit_test(test_elementwise_wide),
        cmocka_unit_test(test_crossentropy_extreme),
        cmocka_unit_test(test_smm_float),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
