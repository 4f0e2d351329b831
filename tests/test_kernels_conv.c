// test_kernels_conv.c: RecGRELA's causal depthwise convolution, SiLU and the
// elementwise product (kernels/cpu/conv.c), built with real = double: forwards
// against naive loops, every gradient against central finite differences of
// loss = sum(out * G) (starting from random gradients, so += is checked too),
// causality and padding, and independence of the thread count.
// cmocka needs these first, in this order
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

_Static_assert(sizeof(real) == sizeof(double), "the kernel tests need the -DKERNELS_F64 build");

// eps 1e-5 balances truncation (eps^2) against rounding (ulp(loss) / eps)
#define FD_EPS 1e-5
#define FD_TOL 1e-6
#define FD_SAMPLE 1000  // tensors larger than this are checked at random elements
#define NB 4            // rows per problem: pads 0, 2, L-1 and L (all padding)

#define FD_CHECK_GRAD
#include "fd.h"

// ---- causal depthwise convolution

typedef struct {
    int B, L, d, K;
    const int32_t* pad;
    real *inp, *w, *bias, *out, *G;
} conv_ctx;

static double conv_loss(void* p) {
    conv_ctx* c = p;
    conv_causal_forward(c->out, c->inp, c->w, c->bias, c->pad, c->B, c->L, c->d, c->K);
    return dotp(c->out, c->G, (int64_t)c->B * c->L * c->d);
}

// the header's formula, one output at a time
static void conv_naive(real* out, const real* inp, const real* w, const real* bias,
                       const int32_t* pad, int B, int L, int d, int K) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int c = 0; c < d; c++) {
                double s = bias[c];
                for (int i = 0; i < K; i++)
                    if (t - i >= pad[b]) s += w[c * K + i] * inp[((int64_t)b * L + t - i) * d + c];
                out[((int64_t)b * L + t) * d + c] = s;
            }
}

static conv_ctx conv_make(int L, int d, int K, const int32_t* pad) {
    conv_ctx c = {.B = NB, .L = L, .d = d, .K = K, .pad = pad};
    int64_t n = (int64_t)NB * L * d;
    c.inp = rnd(n, -1.5, 1.5), c.w = rnd(d * K, -1, 1), c.bias = rnd(d, -1, 1);
    c.out = rnd(n, 7, 7), c.G = rnd(n, -1, 1);
    return c;
}

static void conv_free(conv_ctx* c) {
    free(c->inp), free(c->w), free(c->bias), free(c->out), free(c->G);
}

static void check_conv(int L, int d, int K) {
    const int32_t pad[NB] = {0, 2, L - 1, L};
    const int64_t n = (int64_t)NB * L * d;
    conv_ctx c = conv_make(L, d, K, pad);
    conv_loss(&c);
    real* ref = rnd(n, 0, 0);
    conv_naive(ref, c.inp, c.w, c.bias, pad, NB, L, d, K);
    assert_true(max_abs_diff(c.out, ref, n) < 1e-14);
    real *g0x = rnd(n, -1, 1), *g0w = rnd(d * K, -1, 1), *g0b = rnd(d, -1, 1);
    real *gx = dup(g0x, n), *gw = dup(g0w, d * K), *gb = dup(g0b, d);
    conv_causal_backward(gx, gw, gb, c.G, c.inp, c.w, pad, NB, L, d, K);
    char what[64];
    snprintf(what, sizeof what, "conv L=%d d=%d K=%d dinp", L, d, K);
    check_grad(what, c.inp, g0x, gx, n, conv_loss, &c);
    snprintf(what, sizeof what, "conv L=%d d=%d K=%d dw", L, d, K);
    check_grad(what, c.w, g0w, gw, d * K, conv_loss, &c);
    snprintf(what, sizeof what, "conv L=%d d=%d K=%d dbias", L, d, K);
    check_grad(what, c.bias, g0b, gb, d, conv_loss, &c);
    // no gradient reaches a padding input
    for (int b = 0; b < NB; b++)
        for (int t = 0; t < pad[b] && t < L; t++)
            assert_true(max_abs_diff(gx + ((int64_t)b * L + t) * d, g0x + ((int64_t)b * L + t) * d,
                                     d) == 0);
    // NULL gradients are skipped, and each is computed alone the same way
    real *gx2 = dup(g0x, n), *gw2 = dup(g0w, d * K), *gb2 = dup(g0b, d);
    conv_causal_backward(gx2, NULL, NULL, c.G, c.inp, c.w, pad, NB, L, d, K);
    conv_causal_backward(NULL, gw2, NULL, c.G, c.inp, c.w, pad, NB, L, d, K);
    conv_causal_backward(NULL, NULL, gb2, c.G, c.inp, c.w, pad, NB, L, d, K);
    assert_true(max_abs_diff(gx, gx2, n) == 0);
    assert_true(max_abs_diff(gw, gw2, d * K) == 0);
    assert_true(max_abs_diff(gb, gb2, d) == 0);
    conv_free(&c);
    free(ref), free(g0x), free(g0w), free(g0b), free(gx), free(gw), free(gb);
    free(gx2), free(gw2), free(gb2);
}

static void test_conv_grad(void** state) {
    seed(1);
    const int Ks[4] = {1, 2, 4, 7};
    // d = 5 is one partial channel block; d = 37 two full blocks and a partial one
    for (int k = 0; k < 4; k++) {
        check_conv(9, 5, Ks[k]);
        check_conv(6, 37, Ks[k]);
    }
    // a kernel longer than the sequence
    check_conv(5, 3, 7);
}

// changing inputs after t leaves every output up to t bit-identical; changing
// padding inputs leaves every output bit-identical (they are never read)
static void test_conv_causality(void** state) {
    seed(2);
    const int L = 10, d = 6, K = 4;
    const int32_t pad[NB] = {0, 2, L - 1, L};
    const int64_t n = (int64_t)NB * L * d;
    conv_ctx c = conv_make(L, d, K, pad);
    conv_loss(&c);
    real *base = dup(c.out, n), *x0 = dup(c.inp, n);
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < NB; b++)
            for (int s = t + 1; s < L; s++)
                for (int k = 0; k < d; k++) c.inp[((int64_t)b * L + s) * d + k] += 1 + urand();
        conv_loss(&c);
        for (int b = 0; b < NB; b++) {
            const real* o = c.out + (int64_t)b * L * d;
            assert_true(memcmp(o, base + (int64_t)b * L * d, sizeof(real) * (t + 1) * d) == 0);
            // the perturbation does reach t+1 where the row has items
            if (t + 1 < L && t + 1 >= pad[b])
                assert_true(
                    max_abs_diff(o + (t + 1) * d, base + (int64_t)b * L * d + (t + 1) * d, d) > 0);
        }
        memcpy(c.inp, x0, sizeof(real) * n);
    }
    for (int b = 0; b < NB; b++)
        for (int s = 0; s < pad[b]; s++)
            for (int k = 0; k < d; k++) c.inp[((int64_t)b * L + s) * d + k] = 100 * urand() - 50;
    conv_loss(&c);
    assert_true(memcmp(c.out, base, sizeof(real) * n) == 0);
    conv_free(&c);
    free(base), free(x0);
}

// the channel-block reduction and the row loops give the same bits on any thread count
static void test_conv_threads(void** state) {
    seed(3);
    const int L = 50, d = 70, K = 4;
    const int32_t pad[NB] = {0, 2, L - 1, 17};
    const int64_t n = (int64_t)NB * L * d;
    conv_ctx c = conv_make(L, d, K, pad);
    real *out[2], *gx[2], *gw[2], *gb[2];
    int saved = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k == 0 ? 1 : 3);
        conv_loss(&c);
        out[k] = dup(c.out, n);
        gx[k] = rnd(n, 0, 0), gw[k] = rnd(d * K, 0, 0), gb[k] = rnd(d, 0, 0);
        conv_causal_backward(gx[k], gw[k], gb[k], c.G, c.inp, c.w, pad, NB, L, d, K);
    }
    omp_set_num_threads(saved);
    assert_true(memcmp(out[0], out[1], sizeof(real) * n) == 0);
    assert_true(memcmp(gx[0], gx[1], sizeof(real) * n) == 0);
    assert_true(memcmp(gw[0], gw[1], sizeof(real) * d * K) == 0);
    assert_true(memcmp(gb[0], gb[1], sizeof(real) * d) == 0);
    conv_free(&c);
    for (int k = 0; k < 2; k++) free(out[k]), free(gx[k]), free(gw[k]), free(gb[k]);
}

// ---- SiLU and the product

typedef struct {
    int64_t n;
    real *a, *b, *out, *G;
} ew_ctx;

static double silu_loss(void* p) {
    ew_ctx* c = p;
    silu_forward(c->out, c->a, c->n);
    return dotp(c->out, c->G, c->n);
}

static void test_silu(void** state) {
    seed(4);
    const int n = 300;
    ew_ctx c = {n, rnd(n, -8, 8), NULL, rnd(n, 0, 0), rnd(n, -1, 1)};
    c.a[0] = 0, c.a[1] = -40, c.a[2] = 40, c.a[3] = -800;
    silu_loss(&c);
    for (int i = 0; i < n; i++) {
        double x = c.a[i];
        double ref = x / (1 + exp(-x));
        assert_true(fabs(c.out[i] - ref) < 1e-15 * fmax(1, fabs(x)));
    }
    assert_true(c.out[3] == 0);  // exp overflows: the limit, not a NaN
    real *g0 = rnd(n, -1, 1), *g = dup(g0, n);
    silu_backward(g, c.a, c.G, n);
    assert_true(g[3] == g0[3]);
    check_grad("silu dinp", c.a, g0, g, n, silu_loss, &c);
    // in place gives the same
    silu_loss(&c);
    real* y = dup(c.a, n);
    silu_forward(y, y, n);
    assert_true(max_abs_diff(y, c.out, n) == 0);
    free(c.a), free(c.out), free(c.G), free(g0), free(g), free(y);
}

static double mul_loss(void* p) {
    ew_ctx* c = p;
    mul_forward(c->out, c->a, c->b, c->n);
    return dotp(c->out, c->G, c->n);
}

static void test_mul(void** state) {
    seed(5);
    const int n = 200;
    ew_ctx c = {n, rnd(n, -2, 2), rnd(n, -2, 2), rnd(n, 0, 0), rnd(n, -1, 1)};
    mul_loss(&c);
    for (int i = 0; i < n; i++) assert_true(c.out[i] == c.a[i] * c.b[i]);
    real *g0a = rnd(n, -1, 1), *g0b = rnd(n, -1, 1), *ga = dup(g0a, n), *gb = dup(g0b, n);
    mul_backward(ga, gb, c.a, c.b, c.G, n);
    check_grad("mul da", c.a, g0a, ga, n, mul_loss, &c);
    check_grad("mul db", c.b, g0b, gb, n, mul_loss, &c);
    // NULL gradients are skipped
    real* ga2 = dup(g0a, n);
    mul_backward(ga2, NULL, c.a, c.b, c.G, n);
    assert_true(max_abs_diff(ga, ga2, n) == 0);
    real* gb2 = dup(g0b, n);
    mul_backward(NULL, gb2, c.a, c.b, c.G, n);
    assert_true(max_abs_diff(gb, gb2, n) == 0);
    free(c.a), free(c.b), free(c.out), free(c.G);
    free(g0a), free(g0b), free(ga), free(gb), free(ga2), free(gb2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_grad),    cmocka_unit_test(test_conv_causality),
        cmocka_unit_test(test_conv_threads), cmocka_unit_test(test_silu),
        cmocka_unit_test(test_mul),
    };
    return cmocka_run_group_tests_name("kernels_conv", tests, NULL, NULL);
}
