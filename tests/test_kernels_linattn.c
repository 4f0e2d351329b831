// test_kernels_linattn.c: RecGRELA's kernels (elu1, full-width RoPE, chunked
// causal linear attention), built with real = double: the chunked forward
// against the plain O(L^2) causal sums and, at the last position, against the
// authors' non-causal formula; every backward against central finite
// differences (from random gradients, so += is covered too); causality across
// chunk and tile boundaries; padding; RoPE's geometry.
// cmocka needs these first, in this order
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

_Static_assert(sizeof(real) == sizeof(double), "the kernel tests need the -DKERNELS_F64 build");

// eps 1e-5 balances truncation (eps^2) against rounding (ulp(loss) / eps)
#define FD_EPS 1e-5
#define FD_TOL 1e-6
#define FD_SAMPLE 1000  // tensors larger than this are checked at random elements
#define LA_EPS 1e-6     // the denominator's guard, as the header states

#define FD_CHECK_GRAD
#include "fd.h"

// elu1 of uniform(-2, 2): positive features as the model feeds them
static real* rnd_pos(int64_t n) {
    real* x = calloc(n, sizeof(real));  // calloc: gcc cannot see that the loop fills it
    for (int64_t i = 0; i < n; i++) x[i] = 4 * urand() - 2;
    elu1_forward(x, x, n);
    return x;
}

static double max_abs(const real* a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

// ---- linear attention: the problem, its plain reference

typedef struct {
    int B, L, d, H, C;
    int32_t* pad;
    real *qr, *kr, *qf, *kf, *v;  // inputs [B,L,d]
    real *out, *den, *G;          // out [B,L,d], den [B,H,L], G = dloss/dout [B,L,d]
} la_ctx;

static la_ctx la_new(int B, int L, int H, int hd, int C, const int32_t* pad) {
    const int d = H * hd;
    const int64_t n = (int64_t)B * L * d;
    la_ctx c = {.B = B, .L = L, .d = d, .H = H, .C = C, .pad = malloc(sizeof(int32_t) * B)};
    memcpy(c.pad, pad, sizeof(int32_t) * B);
    c.qr = rnd(n, -1, 1), c.kr = rnd(n, -1, 1), c.v = rnd(n, -1, 1);
    c.qf = rnd_pos(n), c.kf = rnd_pos(n);
    c.out = rnd(n, 7, 7), c.den = rnd((int64_t)B * H * L, 7, 7), c.G = rnd(n, -1, 1);
    return c;
}

static void la_free(la_ctx* c) {
    free(c->pad), free(c->qr), free(c->kr), free(c->qf), free(c->kf), free(c->v);
    free(c->out), free(c->den), free(c->G);
}

static void la_run(la_ctx* c) {
    linear_attention_forward(c->out, c->den, c->qr, c->kr, c->qf, c->kf, c->v, c->pad, c->B, c->L,
                             c->d, c->H, c->C);
}

static double la_loss(void* p) {
    la_ctx* c = p;
    la_run(c);
    return dotp(c->out, c->G, (int64_t)c->B * c->L * c->d);
}

// out_t = sum_{p<=j<=t} (qr_t.kr_j) v_j / (sum_{p<=j<=t} qf_t.kf_j + 1e-6), 0 for t < p
static void la_reference(real* out, real* den, const la_ctx* c) {
    const int L = c->L, d = c->d, H = c->H, hd = d / H;
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < L; t++) {
                const int64_t to = ((int64_t)b * L + t) * d + h * hd;
                real* o = out + to;
                double num[64] = {0}, dn = LA_EPS;
                for (int j = c->pad[b]; j <= t; j++) {
                    const int64_t jo = ((int64_t)b * L + j) * d + h * hd;
                    double a = dotp(c->qr + to, c->kr + jo, hd);
                    dn += dotp(c->qf + to, c->kf + jo, hd);
                    for (int e = 0; e < hd; e++) num[e] += a * c->v[jo + e];
                }
                const int item = t >= c->pad[b];
                for (int e = 0; e < hd; e++) o[e] = item ? num[e] / dn : 0;
                den[((int64_t)b * H + h) * L + t] = item ? dn : 0;
            }
}

// ---- (1) chunked forward = plain causal sums

static void test_forward_reference(void** state) {
    // {L, C, H, hd}: L not a multiple of C, C = 1, C = L, C > L, chunks of
    // several LA_BQ x LA_BK tiles, odd head widths
    const int cfg[][4] = {{13, 4, 2, 3},   {13, 1, 1, 4},   {13, 13, 2, 2},    {13, 50, 1, 5},
                          {150, 70, 2, 5}, {130, 64, 1, 8}, {200, 1000, 2, 4}, {97, 33, 3, 1}};
    seed(11);
    for (size_t k = 0; k < sizeof(cfg) / sizeof(cfg[0]); k++) {
        const int L = cfg[k][0], C = cfg[k][1], H = cfg[k][2], hd = cfg[k][3], B = 4;
        const int32_t pad[4] = {0, L / 3, L - 1, L};
        la_ctx c = la_new(B, L, H, hd, C, pad);
        const int64_t n = (int64_t)B * L * c.d, nd = (int64_t)B * H * L;
        real *ref = rnd(n, 0, 0), *rden = rnd(nd, 0, 0);
        la_run(&c);
        la_reference(ref, rden, &c);
        double eo = max_abs_diff(c.out, ref, n) / max_abs(ref, n);
        double ed = max_abs_diff(c.den, rden, nd) / max_abs(rden, nd);
        print_message("# forward L=%d C=%d H=%d hd=%d: out %.3g den %.3g\n", L, C, H, hd, eo, ed);
        assert_true(eo < 1e-12 && ed < 1e-13);
        // padding queries (and the all-padding row) are exactly 0
        for (int b = 0; b < B; b++)
            for (int t = 0; t < pad[b]; t++) {
                for (int e = 0; e < c.d; e++)
                    assert_true(c.out[((int64_t)b * L + t) * c.d + e] == 0);
                for (int h = 0; h < H; h++) assert_true(c.den[((int64_t)b * H + h) * L + t] == 0);
            }
        free(ref), free(rden);
        la_free(&c);
    }
}

// ---- (2) the last position = the authors' non-causal formula over the whole
// sequence, features built by the kernels: qf = elu1(q), qr = rope(qf), ...
//   out_L = (qr_L . (Kr^T V)) / (qf_L . sum_j kf_j + 1e-6)

static void test_noncausal_last(void** state) {
    seed(12);
    const int B = 3, L = 24, H = 2, hd = 4, d = H * hd, C = 5;
    const int32_t pad[3] = {0, 7, 23};
    const int64_t n = (int64_t)B * L * d;
    real *q = rnd(n, -2, 2), *k = rnd(n, -2, 2), *v = rnd(n, -1, 1);
    real *qf = rnd(n, 0, 0), *kf = rnd(n, 0, 0), *qr = rnd(n, 0, 0), *kr = rnd(n, 0, 0);
    real *out = rnd(n, 0, 0), *den = rnd((int64_t)B * H * L, 0, 0);
    elu1_forward(qf, q, n);
    elu1_forward(kf, k, n);
    rope_forward(qr, qf, B, L, d);
    rope_forward(kr, kf, B, L, d);
    linear_attention_forward(out, den, qr, kr, qf, kf, v, pad, B, L, d, H, C);
    double worst = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            double kv[4][4] = {{0}}, zs[4] = {0};
            for (int j = pad[b]; j < L; j++) {
                const int64_t jo = ((int64_t)b * L + j) * d + h * hd;
                for (int x = 0; x < hd; x++) {
                    zs[x] += kf[jo + x];
                    for (int y = 0; y < hd; y++) kv[x][y] += kr[jo + x] * v[jo + y];
                }
            }
            const int64_t to = ((int64_t)b * L + L - 1) * d + h * hd;
            double dn = LA_EPS;
            for (int x = 0; x < hd; x++) dn += qf[to + x] * zs[x];
            for (int y = 0; y < hd; y++) {
                double num = 0;
                for (int x = 0; x < hd; x++) num += qr[to + x] * kv[x][y];
                worst = fmax(worst, rel_err(out[to + y], num / dn, 1e-3));
            }
        }
    print_message("# non-causal formula at the last position: worst %.3g\n", worst);
    assert_true(worst < 1e-12);
    free(q), free(k), free(v), free(qf), free(kf), free(qr), free(kr), free(out), free(den);
}

// ---- (3) gradients

static void check_la_grad(int B, int L, int H, int hd, int C, const int32_t* pad) {
    la_ctx c = la_new(B, L, H, hd, C, pad);
    const int64_t n = (int64_t)B * L * c.d;
    la_run(&c);
    real* in[5] = {c.qr, c.kr, c.qf, c.kf, c.v};
    const char* name[5] = {"linattn dqr", "linattn dkr", "linattn dqf", "linattn dkf",
                           "linattn dv"};
    real *g0[5], *g1[5];
    for (int i = 0; i < 5; i++) g0[i] = rnd(n, -1, 1), g1[i] = dup(g0[i], n);
    linear_attention_backward(g1[0], g1[1], g1[2], g1[3], g1[4], c.G, c.out, c.den, c.qr, c.kr,
                              c.qf, c.kf, c.v, c.pad, B, L, c.d, H, C);
    print_message("# linattn grad L=%d C=%d H=%d hd=%d\n", L, C, H, hd);
    for (int i = 0; i < 5; i++) check_grad(name[i], in[i], g0[i], g1[i], n, la_loss, &c);
    // padding positions get exactly nothing
    for (int i = 0; i < 5; i++)
        for (int b = 0; b < B; b++) {
            const int64_t o = (int64_t)b * L * c.d;
            assert_true(memcmp(g0[i] + o, g1[i] + o, sizeof(real) * pad[b] * c.d) == 0);
        }
    // each gradient alone (the others NULL) is the same, bit for bit; the
    // finite differences left out/den at a perturbed input, so rerun forward
    la_run(&c);
    for (int i = 0; i < 5; i++) {
        real* gi = dup(g0[i], n);
        real* one[5] = {NULL, NULL, NULL, NULL, NULL};
        one[i] = gi;
        linear_attention_backward(one[0], one[1], one[2], one[3], one[4], c.G, c.out, c.den, c.qr,
                                  c.kr, c.qf, c.kf, c.v, c.pad, B, L, c.d, H, C);
        assert_true(memcmp(gi, g1[i], sizeof(real) * n) == 0);
        free(gi);
    }
    for (int i = 0; i < 5; i++) free(g0[i]), free(g1[i]);
    la_free(&c);
}

static void test_linattn_grad(void** state) {
    seed(13);
    const int32_t pad3[3] = {0, 5, 12}, pad2[2] = {0, 37};
    check_la_grad(3, 13, 2, 3, 4, pad3);
    check_la_grad(3, 13, 2, 3, 1, pad3);
    check_la_grad(3, 13, 1, 4, 13, pad3);
    check_la_grad(3, 13, 2, 2, 20, pad3);
    // chunks of two tiles, a partial last chunk
    check_la_grad(2, 150, 1, 4, 70, pad2);
}

typedef struct {
    int B, L, d;
    int64_t n;
    real *inp, *out, *G;
} ew_ctx;

static double rope_loss(void* p) {
    ew_ctx* c = p;
    rope_forward(c->out, c->inp, c->B, c->L, c->d);
    return dotp(c->out, c->G, c->n);
}

static double elu1_loss(void* p) {
    ew_ctx* c = p;
    elu1_forward(c->out, c->inp, c->n);
    return dotp(c->out, c->G, c->n);
}

static void test_rope_elu1_grad(void** state) {
    seed(14);
    const int B = 2, L = 9, d = 12;
    const int64_t n = (int64_t)B * L * d;
    ew_ctx c = {B, L, d, n, rnd(n, -3, 3), rnd(n, 0, 0), rnd(n, -1, 1)};
    real *g0 = rnd(n, -1, 1), *g1 = dup(g0, n);
    rope_backward(g1, c.G, B, L, d);
    check_grad("rope dinp", c.inp, g0, g1, n, rope_loss, &c);
    // elu1: the formula, then the gradient
    elu1_loss(&c);
    for (int64_t i = 0; i < n; i++) {
        const double x = c.inp[i];
        assert_true(rel_err(c.out[i], x > 0 ? x + 1 : exp(x), 1e-300) < 1e-15);
    }
    memcpy(g1, g0, sizeof(real) * n);
    elu1_backward(g1, c.inp, c.G, n);
    check_grad("elu1 dinp", c.inp, g0, g1, n, elu1_loss, &c);
    free(c.inp), free(c.out), free(c.G), free(g0), free(g1);
}

// ---- (4) causality and padding

static void perturb_rows(la_ctx* c, int b, int t0, int t1) {
    real* in[5] = {c->qr, c->kr, c->qf, c->kf, c->v};
    for (int i = 0; i < 5; i++)
        for (int t = t0; t < t1; t++)
            for (int e = 0; e < c->d; e++) {
                real* x = in[i] + ((int64_t)b * c->L + t) * c->d + e;
                *x = i == 2 || i == 3 ? 0.5 + urand() : 3 * urand() - 1.5;
            }
}

static void check_causality(int L, int H, int hd, int C, const int* cuts, int ncuts) {
    const int B = 2;
    const int32_t pad[2] = {0, 9};
    la_ctx c = la_new(B, L, H, hd, C, pad);
    const int64_t n = (int64_t)B * L * c.d, nd = (int64_t)B * H * L;
    la_run(&c);
    real *out0 = dup(c.out, n), *den0 = dup(c.den, nd);
    for (int k = 0; k < ncuts; k++) {
        const int t = cuts[k];
        for (int b = 0; b < B; b++) perturb_rows(&c, b, t + 1, L);
        la_run(&c);
        for (int b = 0; b < B; b++) {
            const int64_t o = (int64_t)b * L * c.d;
            assert_true(memcmp(out0 + o, c.out + o, sizeof(real) * (t + 1) * c.d) == 0);
            for (int h = 0; h < H; h++) {
                const int64_t od = ((int64_t)b * H + h) * L;
                assert_true(memcmp(den0 + od, c.den + od, sizeof(real) * (t + 1)) == 0);
            }
        }
        // the reference for the next, later cut
        memcpy(out0, c.out, sizeof(real) * n);
        memcpy(den0, c.den, sizeof(real) * nd);
    }
    // padding positions (and dout there) change nothing, forward or backward
    real* g0[5];
    real *ga[5], *gb[5];
    for (int i = 0; i < 5; i++) g0[i] = rnd(n, -1, 1), ga[i] = dup(g0[i], n), gb[i] = dup(g0[i], n);
    linear_attention_backward(ga[0], ga[1], ga[2], ga[3], ga[4], c.G, c.out, c.den, c.qr, c.kr,
                              c.qf, c.kf, c.v, c.pad, B, L, c.d, H, C);
    perturb_rows(&c, 1, 0, pad[1]);
    for (int64_t i = 0; i < (int64_t)pad[1] * c.d; i++) c.G[(int64_t)L * c.d + i] = urand();
    la_run(&c);
    assert_true(memcmp(out0, c.out, sizeof(real) * n) == 0);
    assert_true(memcmp(den0, c.den, sizeof(real) * nd) == 0);
    linear_attention_backward(gb[0], gb[1], gb[2], gb[3], gb[4], c.G, c.out, c.den, c.qr, c.kr,
                              c.qf, c.kf, c.v, c.pad, B, L, c.d, H, C);
    for (int i = 0; i < 5; i++) {
        assert_true(memcmp(ga[i], gb[i], sizeof(real) * n) == 0);
        free(g0[i]), free(ga[i]), free(gb[i]);
    }
    free(out0), free(den0);
    la_free(&c);
}

static void test_linattn_causality(void** state) {
    seed(15);
    // cuts on both sides of chunk boundaries (C = 8) and tile boundaries (64)
    const int cuts1[] = {3, 7, 8, 9, 15, 16, 23, 30, 38};
    check_causality(40, 2, 4, 8, cuts1, sizeof(cuts1) / sizeof(cuts1[0]));
    const int cuts2[] = {20, 63, 64, 65, 99, 100, 108, 109, 130, 148};
    check_causality(150, 1, 3, 100, cuts2, sizeof(cuts2) / sizeof(cuts2[0]));
}

// ---- (5) RoPE's geometry

static void test_rope_geometry(void** state) {
    seed(16);
    const int B = 2, L = 30, d = 10;
    const int64_t n = (int64_t)B * L * d;
    real *x = rnd(n, -1, 1), *y = rnd(n, 0, 0), *w = rnd(n, -1, 1), *xb = rnd(n, 0, 0);
    rope_forward(y, x, B, L, d);
    double worst_norm = 0, worst_formula = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int i = 0; i < d / 2; i++) {
                const int64_t o = ((int64_t)b * L + t) * d + 2 * i;
                const double x0 = x[o], x1 = x[o + 1], y0 = y[o], y1 = y[o + 1];
                worst_norm = fmax(worst_norm, fabs(hypot(x0, x1) - hypot(y0, y1)));
                // the documented angle: t * 10000^(-2i/d)
                const double a = t * pow(10000.0, -2.0 * i / d);
                worst_formula = fmax(worst_formula, fabs(y0 - (x0 * cos(a) - x1 * sin(a))));
                worst_formula = fmax(worst_formula, fabs(y1 - (x0 * sin(a) + x1 * cos(a))));
                if (t == 0) assert_true(y0 == x0 && y1 == x1);
            }
    print_message("# rope: pair norms %.3g, formula %.3g\n", worst_norm, worst_formula);
    assert_true(worst_norm < 1e-14 && worst_formula < 1e-14);
    // in place = out of place, bit for bit
    real* z = dup(x, n);
    rope_forward(z, z, B, L, d);
    assert_true(memcmp(z, y, sizeof(real) * n) == 0);
    // backward is the transpose: <rope(x), w> = <x, rope_backward(w)>
    rope_backward(xb, w, B, L, d);
    const double lhs = dotp(y, w, n), rhs = dotp(x, xb, n);
    assert_true(rel_err(lhs, rhs, 1) < 1e-13);
    // and the inverse: backward of forward is the identity
    real* r = rnd(n, 0, 0);
    rope_backward(r, y, B, L, d);
    assert_true(max_abs_diff(r, x, n) < 1e-14);
    free(x), free(y), free(w), free(xb), free(z), free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_reference), cmocka_unit_test(test_noncausal_last),
        cmocka_unit_test(test_linattn_grad),      cmocka_unit_test(test_rope_elu1_grad),
        cmocka_unit_test(test_linattn_causality), cmocka_unit_test(test_rope_geometry),
    };
    return cmocka_run_group_tests_name("kernels_linattn", tests, NULL, NULL);
}
