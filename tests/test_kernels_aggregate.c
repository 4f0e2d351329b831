// test_kernels_aggregate.c: ELASTIC's interest aggregation (kernels/cpu/aggregate.c),
// built with real = double: forward against a naive per-chunk sum, every
// gradient against central finite differences of loss = sum(P * G) (starting
// from random gradients, so += is checked too), causality and padding, and
// stability for scores far beyond exp's range against a log-sum-exp reference.
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
#define FD_ALL 400     // tensors up to this size are checked at every element,
#define FD_SAMPLE 200  // larger ones at this many random elements
#define NB 4           // rows per problem: pads 0, about L/3, L-1 and L (all padding)

#define FD_CHECK_GRAD
#include "fd.h"

// one aggregation problem: inputs, the loss weights G (= dP) and the outputs
typedef struct {
    int B, L, d, H, k, C, nc;
    int32_t pad[NB];
    real *qe, *kh, *vh, *u, *pb, *G, *P, *lse;
} prob;

static prob make(int L, int d, int H, int k, int C) {
    prob p = {.B = NB, .L = L, .d = d, .H = H, .k = k, .C = C, .nc = (L + C - 1) / C};
    p.pad[0] = 0, p.pad[1] = L / 3, p.pad[2] = L - 1, p.pad[3] = L;
    int64_t n = (int64_t)NB * L * d, np = (int64_t)NB * p.nc * k;
    p.qe = rnd((int64_t)k * d, -1, 1);
    p.kh = rnd(n, -1, 1);
    p.vh = rnd(n, -1, 1);
    p.u = rnd((int64_t)k * d, -1, 1);
    p.pb = rnd((int64_t)k * H, -1, 1);
    p.G = rnd(np * d, -1, 1);
    p.P = calloc(np * d, sizeof(real));
    p.lse = calloc(np * H, sizeof(real));
    return p;
}

static void release(prob* p) {
    free(p->qe), free(p->kh), free(p->vh), free(p->u), free(p->pb);
    free(p->G), free(p->P), free(p->lse);
}

static void forward(prob* p) {
    interest_aggregate_forward(p->P, p->lse, p->qe, p->kh, p->vh, p->u, p->pb, p->pad, p->B, p->L,
                               p->d, p->H, p->k, p->C);
}

static double loss_of(void* ctx) {
    prob* p = ctx;
    forward(p);
    int64_t n = (int64_t)p->B * p->nc * p->k * p->d;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += p->P[i] * p->G[i];
    return s;
}

static double score(const prob* p, int b, int e, int h, int j) {
    const int hd = p->d / p->H;
    const real* q = p->qe + (int64_t)e * p->d + h * hd;
    const real* x = p->kh + ((int64_t)b * p->L + j) * p->d + h * hd;
    double s = 0;
    for (int i = 0; i < hd; i++) s += q[i] * x[i];
    return s / sqrt((double)hd);
}

// The header's formula summed directly for every chunk. stable = 0: plain
// exp(pb) and exp(s_j); stable = 1: everything relative to the chunk's largest
// logit (the log-sum-exp reference).
static void ref_forward(real* P, real* lse, const prob* p, int stable) {
    const int hd = p->d / p->H;
    for (int b = 0; b < p->B; b++)
        for (int c = 0; c < p->nc; c++)
            for (int e = 0; e < p->k; e++)
                for (int h = 0; h < p->H; h++) {
                    const int p0 = p->pad[b] < p->L ? p->pad[b] : p->L;
                    const double pb = p->pb[e * p->H + h];
                    double mx = 0;
                    if (stable) {
                        mx = pb;
                        for (int j = p0; j < c * p->C; j++) mx = fmax(mx, score(p, b, e, h, j));
                    }
                    double num[hd], den = exp(pb - mx);
                    for (int i = 0; i < hd; i++)
                        num[i] = den * p->u[(int64_t)e * p->d + h * hd + i];
                    for (int j = p0; j < c * p->C; j++) {
                        double w = exp(score(p, b, e, h, j) - mx);
                        den += w;
                        for (int i = 0; i < hd; i++)
                            num[i] += w * p->vh[((int64_t)b * p->L + j) * p->d + h * hd + i];
                    }
                    int64_t row = ((int64_t)b * p->nc + c) * p->k + e;
                    for (int i = 0; i < hd; i++) P[row * p->d + h * hd + i] = num[i] / den;
                    lse[row * p->H + h] = mx + log(den);
                }
}

// The backward of ref_forward(stable = 1), one chunk at a time: weights
// w = exp(logit - lse_c) from the reference lse, O(nc * L) work per row.
static void ref_backward(real* dqe, real* dkh, real* dvh, real* du, real* dpb, const prob* p,
                         const real* P, const real* lse) {
    const int hd = p->d / p->H;
    const double sc = 1 / sqrt((double)hd);
    for (int b = 0; b < p->B; b++)
        for (int c = 0; c < p->nc; c++)
            for (int e = 0; e < p->k; e++)
                for (int h = 0; h < p->H; h++) {
                    const int p0 = p->pad[b] < p->L ? p->pad[b] : p->L;
                    int64_t row = ((int64_t)b * p->nc + c) * p->k + e;
                    const real* G = p->G + row * p->d + h * hd;
                    const real* Pc = P + row * p->d + h * hd;
                    const real* ue = p->u + (int64_t)e * p->d + h * hd;
                    const real* qe = p->qe + (int64_t)e * p->d + h * hd;
                    double l = lse[row * p->H + h], D = 0, Gu = 0;
                    for (int i = 0; i < hd; i++) D += G[i] * Pc[i], Gu += G[i] * ue[i];
                    double w0 = exp(p->pb[e * p->H + h] - l);
                    for (int i = 0; i < hd; i++) du[(int64_t)e * p->d + h * hd + i] += w0 * G[i];
                    dpb[e * p->H + h] += w0 * (Gu - D);
                    for (int j = p0; j < c * p->C; j++) {
                        int64_t o = ((int64_t)b * p->L + j) * p->d + h * hd;
                        double w = exp(score(p, b, e, h, j) - l), Gv = 0;
                        for (int i = 0; i < hd; i++) Gv += G[i] * p->vh[o + i];
                        double ds = w * (Gv - D) * sc;
                        for (int i = 0; i < hd; i++) {
                            dvh[o + i] += w * G[i];
                            dkh[o + i] += ds * qe[i];
                            dqe[(int64_t)e * p->d + h * hd + i] += ds * p->kh[o + i];
                        }
                    }
                }
}

// (L, d, H, k, C): L not a multiple of C, C > L, C = 1, C = L, blocks of
// positions split inside a chunk (C > 64), head widths on the vector paths
static const int configs[][5] = {
    {7, 4, 2, 3, 3},    {5, 3, 1, 2, 8},      {6, 4, 2, 2, 1},     {9, 6, 3, 2, 3},
    {8, 2, 1, 1, 8},    {11, 8, 2, 5, 4},     {150, 64, 2, 5, 70}, {200, 32, 1, 3, 64},
    {97, 48, 3, 4, 16}, {130, 64, 4, 2, 130},
};
#define NCONF (int)(sizeof(configs) / sizeof(configs[0]))

static void test_forward(void** state) {
    for (int t = 0; t < NCONF; t++) {
        seed(100 + t);
        prob p = make(configs[t][0], configs[t][1], configs[t][2], configs[t][3], configs[t][4]);
        int64_t np = (int64_t)p.B * p.nc * p.k;
        real* P = calloc(np * p.d, sizeof(real));
        real* lse = calloc(np * p.H, sizeof(real));
        forward(&p);
        ref_forward(P, lse, &p, 0);
        double worst = 0;
        for (int64_t i = 0; i < np * p.d; i++) worst = fmax(worst, fabs(p.P[i] - P[i]));
        for (int64_t i = 0; i < np * p.H; i++) worst = fmax(worst, fabs(p.lse[i] - lse[i]));
        print_message("# L=%d d=%d H=%d k=%d C=%d: max diff %.3g\n", p.L, p.d, p.H, p.k, p.C,
                      worst);
        assert_true(worst < 1e-12);
        // a chunk with no earlier item is exactly the prior
        for (int b = 0; b < p.B; b++)
            for (int c = 0; c < p.nc; c++) {
                if (c * p.C > p.pad[b]) continue;
                for (int e = 0; e < p.k; e++) {
                    int64_t row = ((int64_t)b * p.nc + c) * p.k + e;
                    assert_memory_equal(p.P + row * p.d, p.u + (int64_t)e * p.d,
                                        sizeof(real) * p.d);
                    for (int h = 0; h < p.H; h++)
                        assert_true(p.lse[row * p.H + h] == p.pb[e * p.H + h]);
                }
            }
        free(P), free(lse);
        release(&p);
    }
}

static void test_grad(void** state) {
    for (int t = 0; t < NCONF; t++) {
        seed(200 + t);
        prob p = make(configs[t][0], configs[t][1], configs[t][2], configs[t][3], configs[t][4]);
        const int64_t nq = (int64_t)p.k * p.d, nx = (int64_t)p.B * p.L * p.d, nb = p.k * p.H;
        real *dqe0 = rnd(nq, -1, 1), *dkh0 = rnd(nx, -1, 1), *dvh0 = rnd(nx, -1, 1);
        real *du0 = rnd(nq, -1, 1), *dpb0 = rnd(nb, -1, 1);
        real *dqe = dup(dqe0, nq), *dkh = dup(dkh0, nx), *dvh = dup(dvh0, nx);
        real *du = dup(du0, nq), *dpb = dup(dpb0, nb);
        forward(&p);
        interest_aggregate_backward(dqe, dkh, dvh, du, dpb, p.G, p.P, p.lse, p.qe, p.kh, p.vh, p.u,
                                    p.pb, p.pad, p.B, p.L, p.d, p.H, p.k, p.C);
        print_message("# L=%d d=%d H=%d k=%d C=%d\n", p.L, p.d, p.H, p.k, p.C);
        check_grad("dqe", p.qe, dqe0, dqe, nq, loss_of, &p);
        check_grad("dkh", p.kh, dkh0, dkh, nx, loss_of, &p);
        check_grad("dvh", p.vh, dvh0, dvh, nx, loss_of, &p);
        check_grad("du", p.u, du0, du, nq, loss_of, &p);
        check_grad("dpb", p.pb, dpb0, dpb, nb, loss_of, &p);
        // padding positions and the last chunk's (which feed no chunk) get nothing
        for (int b = 0; b < p.B; b++)
            for (int j = 0; j < p.L; j++) {
                if (j >= p.pad[b] && j < (p.nc - 1) * p.C) continue;
                int64_t o = ((int64_t)b * p.L + j) * p.d;
                assert_memory_equal(dkh + o, dkh0 + o, sizeof(real) * p.d);
                assert_memory_equal(dvh + o, dvh0 + o, sizeof(real) * p.d);
            }
        // each gradient alone (the others NULL) adds what it added with all of them
        forward(&p);
        real* outs[5] = {dqe, dkh, dvh, du, dpb};
        real* ins[5] = {dqe0, dkh0, dvh0, du0, dpb0};
        const int64_t ns[5] = {nq, nx, nx, nq, nb};
        for (int g = 0; g < 5; g++) {
            real* one = dup(ins[g], ns[g]);
            real* args[5] = {NULL, NULL, NULL, NULL, NULL};
            args[g] = one;
            interest_aggregate_backward(args[0], args[1], args[2], args[3], args[4], p.G, p.P,
                                        p.lse, p.qe, p.kh, p.vh, p.u, p.pb, p.pad, p.B, p.L, p.d,
                                        p.H, p.k, p.C);
            double worst = 0;
            for (int64_t i = 0; i < ns[g]; i++) worst = fmax(worst, fabs(one[i] - outs[g][i]));
            assert_true(worst < 1e-12);
            free(one);
        }
        free(dqe0), free(dkh0), free(dvh0), free(du0), free(dpb0);
        free(dqe), free(dkh), free(dvh), free(du), free(dpb);
        release(&p);
    }
}

// P of chunk c depends only on positions before c*C; padding positions on nothing
static void test_causality_padding(void** state) {
    for (int t = 0; t < 6; t++) {
        seed(300 + t);
        prob p = make(configs[t][0], configs[t][1], configs[t][2], configs[t][3], configs[t][4]);
        const int64_t nx = (int64_t)p.B * p.L * p.d, rowP = (int64_t)p.k * p.d, rowl = p.k * p.H;
        forward(&p);
        real *P0 = dup(p.P, (int64_t)p.B * p.nc * rowP),
             *l0 = dup(p.lse, (int64_t)p.B * p.nc * rowl);
        real *kh0 = dup(p.kh, nx), *vh0 = dup(p.vh, nx);
        for (int c = 0; c < p.nc; c++) {
            for (int b = 0; b < p.B; b++)
                for (int j = c * p.C; j < p.L; j++)
                    for (int i = 0; i < p.d; i++) {
                        int64_t o = ((int64_t)b * p.L + j) * p.d + i;
                        p.kh[o] += 3 * urand() - 1.5, p.vh[o] += 3 * urand() - 1.5;
                    }
            forward(&p);
            for (int b = 0; b < p.B; b++) {
                int64_t r = (int64_t)b * p.nc;
                assert_memory_equal(p.P + r * rowP, P0 + r * rowP, sizeof(real) * (c + 1) * rowP);
                assert_memory_equal(p.lse + r * rowl, l0 + r * rowl, sizeof(real) * (c + 1) * rowl);
            }
            memcpy(p.kh, kh0, sizeof(real) * nx);
            memcpy(p.vh, vh0, sizeof(real) * nx);
        }
        for (int b = 0; b < p.B; b++)
            for (int j = 0; j < p.pad[b] && j < p.L; j++)
                for (int i = 0; i < p.d; i++) {
                    int64_t o = ((int64_t)b * p.L + j) * p.d + i;
                    p.kh[o] += 50 * urand() - 25, p.vh[o] += 50 * urand() - 25;
                }
        forward(&p);
        assert_memory_equal(p.P, P0, sizeof(real) * p.B * p.nc * rowP);
        assert_memory_equal(p.lse, l0, sizeof(real) * p.B * p.nc * rowl);
        free(P0), free(l0), free(kh0), free(vh0);
        release(&p);
    }
}

// Scores and prior logits up to |80| and |800| (exp(800) overflows double):
// outputs finite and equal to the log-sum-exp reference, gradients finite and
// equal to the reference backward built on it.
static void test_stability(void** state) {
    const double targets[2] = {80, 800};
    for (int t = 0; t < 2; t++)
        for (int cf = 0; cf < 8; cf++) {
            seed(400 + 10 * t + cf);
            prob p = make(configs[cf][0], configs[cf][1], configs[cf][2], configs[cf][3],
                          configs[cf][4]);
            const int hd = p.d / p.H;
            const int64_t np = (int64_t)p.B * p.nc * p.k, nq = (int64_t)p.k * p.d,
                          nx = (int64_t)p.B * p.L * p.d, nb = p.k * p.H;
            // scale each head of each expert query so that its largest |s| is the target
            for (int e = 0; e < p.k; e++)
                for (int h = 0; h < p.H; h++) {
                    double mx = 1e-3;
                    for (int b = 0; b < p.B; b++)
                        for (int j = 0; j < p.L; j++) mx = fmax(mx, fabs(score(&p, b, e, h, j)));
                    for (int i = 0; i < hd; i++)
                        p.qe[(int64_t)e * p.d + h * hd + i] *= targets[t] / mx;
                    p.pb[e * p.H + h] *= targets[t];
                }
            real* P = calloc(np * p.d, sizeof(real));
            real* lse = calloc(np * p.H, sizeof(real));
            forward(&p);
            ref_forward(P, lse, &p, 1);
            double worst = 0;
            for (int64_t i = 0; i < np * p.d; i++) {
                assert_true(isfinite(p.P[i]));
                worst = fmax(worst, rel_err(p.P[i], P[i], 1e-3));
            }
            for (int64_t i = 0; i < np * p.H; i++) {
                assert_true(isfinite(p.lse[i]));
                worst = fmax(worst, rel_err(p.lse[i], lse[i], 1e-3));
            }
            print_message("# |s| <= %g, L=%d C=%d: forward worst %.3g\n", targets[t], p.L, p.C,
                          worst);
            assert_true(worst <= 1e-6);

            real *g[5], *r[5];
            const int64_t ns[5] = {nq, nx, nx, nq, nb};
            for (int k = 0; k < 5; k++)
                g[k] = calloc(ns[k], sizeof(real)), r[k] = calloc(ns[k], sizeof(real));
            interest_aggregate_backward(g[0], g[1], g[2], g[3], g[4], p.G, p.P, p.lse, p.qe, p.kh,
                                        p.vh, p.u, p.pb, p.pad, p.B, p.L, p.d, p.H, p.k, p.C);
            ref_backward(r[0], r[1], r[2], r[3], r[4], &p, P, lse);
            // compared relative to each gradient's largest element: ds cancels (G.v - D)
            for (int k = 0; k < 5; k++) {
                double scale = 0, diff = 0;
                for (int64_t i = 0; i < ns[k]; i++) {
                    assert_true(isfinite(g[k][i]));
                    scale = fmax(scale, fabs(r[k][i]));
                    diff = fmax(diff, fabs(g[k][i] - r[k][i]));
                }
                print_message("#   grad %d: max %.3g, diff %.3g\n", k, scale, diff);
                assert_true(diff <= 1e-6 * fmax(scale, 1e-12));
                free(g[k]), free(r[k]);
            }
            free(P), free(lse);
            release(&p);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_grad),
        cmocka_unit_test(test_causality_padding),
        cmocka_unit_test(test_stability),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
