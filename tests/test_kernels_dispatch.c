// test_kernels_dispatch.c: the dispatch attention of ELASTIC (DESIGN §3 step
// 3), built with real = double: forward and lse against a naive reference
// (one score list per query, explicit 2x2 RoPE rotations), every gradient
// against central finite differences (starting from random gradients, so
// accumulation is covered too), NULL gradients, causality, chunk locality and
// padding.
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
#define FD_ALL INT64_MAX  // every element of every tensor
#define FD_SAMPLE 0
#define FD_CHECK_GRAD

#include "fd.h"

static double max_abs(const real* a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

// the problem: sizes, padding and the five inputs
typedef struct {
    int B, L, d, H, k, C, nc;
    const int32_t* pad;
    real *q, *kl, *vl, *ki, *vi;
} prob;

static prob make(int B, int L, int d, int H, int k, int C, const int32_t* pad, double range) {
    prob p = {B, L, d, H, k, C, (L + C - 1) / C, pad, NULL, NULL, NULL, NULL, NULL};
    const int64_t n = (int64_t)B * L * d, ni = (int64_t)B * p.nc * k * d;
    p.q = rnd(n, -range, range), p.kl = rnd(n, -range, range), p.vl = rnd(n, -1, 1);
    p.ki = rnd(ni, -range, range), p.vi = rnd(ni, -1, 1);
    return p;
}

static void unmake(prob* p) { free(p->q), free(p->kl), free(p->vl), free(p->ki), free(p->vi); }

static int64_t nseq(const prob* p) { return (int64_t)p->B * p->L * p->d; }
static int64_t nint(const prob* p) { return (int64_t)p->B * p->nc * p->k * p->d; }

static void fwd(const prob* p, real* out, real* lse) {
    dispatch_forward(out, lse, p->q, p->kl, p->vl, p->ki, p->vi, p->pad, p->B, p->L, p->d, p->H,
                     p->k, p->C);
}

static void bwd(const prob* p, real* dq, real* dkl, real* dvl, real* dki, real* dvi,
                const real* dout, const real* out, const real* lse) {
    dispatch_backward(dq, dkl, dvl, dki, dvi, dout, out, lse, p->q, p->kl, p->vl, p->ki, p->vi,
                      p->pad, p->B, p->L, p->d, p->H, p->k, p->C);
}

// ---- naive reference

// y = x with pair i, (x[2i], x[2i+1]), turned by pos * 10000^(-2i/hd)
static void rope_ref(double* y, const real* x, int pos, int hd) {
    for (int i = 0; i < hd / 2; i++) {
        double a = pos * pow(10000.0, -2.0 * i / hd), c = cos(a), s = sin(a);
        y[2 * i] = c * x[2 * i] - s * x[2 * i + 1];
        y[2 * i + 1] = s * x[2 * i] + c * x[2 * i + 1];
    }
}

static void ref_forward(const prob* p, real* out, real* lse) {
    const int L = p->L, d = p->d, H = p->H, k = p->k, C = p->C, hd = d / H;
    double* sc = malloc(sizeof(double) * (k + C));
    double* qr = malloc(sizeof(double) * hd);
    double* kr = malloc(sizeof(double) * hd);
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < L; t++) {
                real* o = out + ((int64_t)b * L + t) * d + h * hd;
                real* ls = lse + ((int64_t)b * H + h) * L + t;
                for (int e = 0; e < hd; e++) o[e] = 0;
                *ls = 0;
                if (t < p->pad[b]) continue;
                const int c = t / C, j0 = c * C > p->pad[b] ? c * C : p->pad[b];
                const real* qt = p->q + ((int64_t)b * L + t) * d + h * hd;
                const int64_t ibase = ((int64_t)b * p->nc + c) * k * d + h * hd;
                // [k interests ; local keys j0..t]
                int n = 0;
                for (int e = 0; e < k; e++) {
                    double s = 0;
                    for (int x = 0; x < hd; x++) s += qt[x] * p->ki[ibase + (int64_t)e * d + x];
                    sc[n++] = s / sqrt(hd);
                }
                rope_ref(qr, qt, t, hd);
                for (int j = j0; j <= t; j++) {
                    rope_ref(kr, p->kl + ((int64_t)b * L + j) * d + h * hd, j, hd);
                    double s = 0;
                    for (int x = 0; x < hd; x++) s += qr[x] * kr[x];
                    sc[n++] = s / sqrt(hd);
                }
                double mx = -INFINITY, sum = 0;
                for (int i = 0; i < n; i++) mx = fmax(mx, sc[i]);
                for (int i = 0; i < n; i++) sum += (sc[i] = exp(sc[i] - mx));
                for (int i = 0; i < n; i++) {
                    const real* v = i < k ? p->vi + ibase + (int64_t)i * d
                                          : p->vl + ((int64_t)b * L + j0 + i - k) * d + h * hd;
                    for (int x = 0; x < hd; x++) o[x] += sc[i] / sum * v[x];
                }
                // cppcheck-suppress invalidFunctionArg ; n >= 1, so sum >= 1
                *ls = mx + log(sum);
            }
    free(sc), free(qr), free(kr);
}

static void check_forward(int B, int L, int d, int H, int k, int C, const int32_t* pad,
                          double range) {
    prob p = make(B, L, d, H, k, C, pad, range);
    const int64_t n = nseq(&p), nl = (int64_t)B * H * L;
    real *out = rnd(n, 7, 7), *lse = rnd(nl, 7, 7), *ro = rnd(n, 0, 0), *rl = rnd(nl, 0, 0);
    fwd(&p, out, lse);
    ref_forward(&p, ro, rl);
    double eo = max_abs_diff(out, ro, n), el = max_abs_diff(lse, rl, nl) / fmax(1, max_abs(rl, nl));
    print_message("# L=%d C=%d k=%d H=%d hd=%d: out %.3g lse %.3g\n", L, C, k, H, d / H, eo, el);
    assert_true(eo < 1e-10);
    assert_true(el < 1e-12);
    // padding queries: exactly 0
    for (int b = 0; b < B; b++)
        for (int t = 0; t < pad[b]; t++) {
            for (int x = 0; x < d; x++) assert_true(out[((int64_t)b * L + t) * d + x] == 0);
            for (int h = 0; h < H; h++) assert_true(lse[((int64_t)b * H + h) * L + t] == 0);
        }
    free(out), free(lse), free(ro), free(rl);
    unmake(&p);
}

static void test_dispatch_forward(void** state) {
    seed(1);
    const int32_t p3[3] = {0, 3, 9};
    check_forward(3, 10, 8, 2, 3, 4, p3, 1);  // L not a multiple of C
    const int32_t p3b[3] = {0, 17, 69};
    check_forward(3, 70, 16, 2, 5, 16, p3b, 1);
    const int32_t p2[2] = {0, 5};
    check_forward(2, 20, 6, 1, 2, 32, p2, 1);  // C > L
    const int32_t p2b[2] = {0, 15};
    check_forward(2, 16, 20, 2, 1, 16, p2b, 1);  // C == L, hd = 10
    const int32_t p2c[2] = {0, 4};
    check_forward(2, 9, 12, 3, 2, 1, p2c, 1);  // C == 1: a query sees only itself locally
    // several query and key blocks per chunk, k past one key block, pads off block edges
    const int32_t p3c[3] = {0, 100, 299};
    check_forward(3, 300, 32, 2, 70, 150, p3c, 1);
    const int32_t p2d[2] = {0, 37};
    check_forward(2, 130, 128, 2, 8, 64, p2d, 1);  // hd = 64, whole vectors
    // scores in the hundreds: the online softmax must stay finite and exact
    const int32_t p2e[2] = {0, 3};
    check_forward(2, 40, 32, 2, 4, 8, p2e, 8);
}

// ---- gradients

typedef struct {
    const prob* p;
    const real* G;
    real *out, *lse;
} loss_ctx;

// loss = sum(out * G)
static double loss(const loss_ctx* c) {
    fwd(c->p, c->out, c->lse);
    double s = 0;
    for (int64_t i = 0; i < nseq(c->p); i++) s += c->out[i] * c->G[i];
    return s;
}

static double loss_of(void* c) { return loss(c); }

static void check_grads(int B, int L, int d, int H, int k, int C, const int32_t* pad) {
    prob p = make(B, L, d, H, k, C, pad, 1);
    const int64_t n = nseq(&p), ni = nint(&p);
    real *G = rnd(n, -1, 1), *out = rnd(n, 0, 0), *lse = rnd((int64_t)B * H * L, 0, 0);
    // random starting gradients: backward must add
    real *dq0 = rnd(n, -1, 1), *dkl0 = rnd(n, -1, 1), *dvl0 = rnd(n, -1, 1);
    real *dki0 = rnd(ni, -1, 1), *dvi0 = rnd(ni, -1, 1);
    real *dq = dup(dq0, n), *dkl = dup(dkl0, n), *dvl = dup(dvl0, n);
    real *dki = dup(dki0, ni), *dvi = dup(dvi0, ni);
    fwd(&p, out, lse);
    bwd(&p, dq, dkl, dvl, dki, dvi, G, out, lse);
    print_message("# L=%d C=%d k=%d H=%d hd=%d\n", L, C, k, H, d / H);
    loss_ctx c = {&p, G, rnd(n, 0, 0), rnd((int64_t)B * H * L, 0, 0)};
    check_grad("dq", p.q, dq0, dq, n, loss_of, &c);
    check_grad("dkl", p.kl, dkl0, dkl, n, loss_of, &c);
    check_grad("dvl", p.vl, dvl0, dvl, n, loss_of, &c);
    check_grad("dki", p.ki, dki0, dki, ni, loss_of, &c);
    check_grad("dvi", p.vi, dvi0, dvi, ni, loss_of, &c);
    // padding positions, and interests of chunks with no item, get exactly nothing
    for (int b = 0; b < B; b++) {
        const int64_t np = (int64_t)(pad[b] < L ? pad[b] : L) * d, o = (int64_t)b * L * d;
        assert_true(memcmp(dq + o, dq0 + o, sizeof(real) * np) == 0);
        assert_true(memcmp(dkl + o, dkl0 + o, sizeof(real) * np) == 0);
        assert_true(memcmp(dvl + o, dvl0 + o, sizeof(real) * np) == 0);
        for (int ch = 0; ch < p.nc; ch++) {
            if (ch * C + C > pad[b]) break;
            const int64_t io = ((int64_t)b * p.nc + ch) * k * d;
            assert_true(memcmp(dki + io, dki0 + io, sizeof(real) * k * d) == 0);
            assert_true(memcmp(dvi + io, dvi0 + io, sizeof(real) * k * d) == 0);
        }
    }
    // NULL gradients are skipped and do not change the others
    real *a = dup(dq0, n), *bk = dup(dkl0, n), *bv = dup(dvi0, ni);
    bwd(&p, a, NULL, NULL, NULL, NULL, G, out, lse);
    bwd(&p, NULL, bk, NULL, NULL, bv, G, out, lse);
    assert_true(max_abs_diff(a, dq, n) == 0);
    assert_true(max_abs_diff(bk, dkl, n) == 0);
    assert_true(max_abs_diff(bv, dvi, ni) == 0);
    free(a), free(bk), free(bv);
    free(G), free(out), free(lse), free(c.out), free(c.lse);
    free(dq0), free(dkl0), free(dvl0), free(dki0), free(dvi0);
    free(dq), free(dkl), free(dvl), free(dki), free(dvi);
    unmake(&p);
}

static void test_dispatch_grad(void** state) {
    seed(2);
    const int32_t p2[2] = {0, 5};
    check_grads(2, 11, 8, 2, 3, 4, p2);  // row 1's chunk 0 is all padding
    const int32_t p2b[2] = {0, 5};
    check_grads(2, 6, 4, 1, 2, 8, p2b);  // C > L, pad L-1
    const int32_t p1[1] = {2};
    check_grads(1, 5, 6, 1, 1, 1, p1);  // C == 1
    const int32_t p1b[1] = {1};
    check_grads(1, 9, 12, 2, 2, 3, p1b);  // hd = 6, L == 3C
}

// ---- causality, chunk locality, padding

// out and ref differ exactly in rows [lo, hi) of sequence bb: bit-identical
// elsewhere, different in every one of those rows
static void assert_changed_rows(const real* out, const real* ref, int B, int L, int d, int bb,
                                int lo, int hi) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++) {
            const int64_t o = ((int64_t)b * L + t) * d;
            if (b == bb && t >= lo && t < hi)
                assert_true(max_abs_diff(out + o, ref + o, d) > 0);
            else
                assert_true(memcmp(out + o, ref + o, sizeof(real) * d) == 0);
        }
}

static void test_dispatch_causality(void** state) {
    seed(3);
    const int B = 2, L = 40, d = 16, H = 2, k = 3, C = 8;
    const int32_t pad[2] = {0, 11};
    prob p = make(B, L, d, H, k, C, pad, 1);
    const int64_t n = nseq(&p);
    real *ref = rnd(n, 0, 0), *out = rnd(n, 0, 0), *lse = rnd((int64_t)B * H * L, 0, 0);
    fwd(&p, ref, lse);
    real* xs[3] = {p.q, p.kl, p.vl};
    // a local key or value at s reaches only s..(end of its chunk); a query only itself
    const int bs[4] = {0, 1, 1, 0}, ss[4] = {5, 13, 16, 39};
    for (int w = 0; w < 3; w++)
        for (int i = 0; i < 4; i++) {
            const int b = bs[i], s = ss[i], end = w == 0 ? s + 1 : (s / C + 1) * C;
            real* x = xs[w] + ((int64_t)b * L + s) * d;
            real* keep = dup(x, d);
            for (int e = 0; e < d; e++) x[e] += 0.5;
            fwd(&p, out, lse);
            assert_changed_rows(out, ref, B, L, d, b, s, end < L ? end : L);
            memcpy(x, keep, sizeof(real) * d);
            free(keep);
        }
    // a chunk's interests reach exactly its own items
    real* is[2] = {p.ki, p.vi};
    const int bc[3] = {0, 1, 1}, cc[3] = {0, 1, 4};
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 3; i++) {
            const int b = bc[i], c = cc[i], lo = c * C > pad[b] ? c * C : pad[b];
            real* x = is[w] + ((int64_t)b * p.nc + c) * k * d;
            real* keep = dup(x, (int64_t)k * d);
            for (int e = 0; e < k * d; e++) x[e] -= 0.5;
            fwd(&p, out, lse);
            assert_changed_rows(out, ref, B, L, d, b, lo, c * C + C);
            memcpy(x, keep, sizeof(real) * k * d);
            free(keep);
        }
    // padding positions (q, kl, vl) and the interests of an all-padding chunk reach nothing
    for (int w = 0; w < 3; w++)
        for (int t = 0; t < pad[1]; t += 3)
            for (int e = 0; e < d; e++) xs[w][((int64_t)1 * L + t) * d + e] += 2;
    for (int e = 0; e < k * d; e++) p.ki[((int64_t)1 * p.nc) * k * d + e] += 2;
    for (int e = 0; e < k * d; e++) p.vi[((int64_t)1 * p.nc) * k * d + e] += 2;
    fwd(&p, out, lse);
    assert_true(memcmp(out, ref, sizeof(real) * n) == 0);
    free(ref), free(out), free(lse);
    unmake(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_forward),
        cmocka_unit_test(test_dispatch_grad),
        cmocka_unit_test(test_dispatch_causality),
    };
    return cmocka_run_group_tests_name("kernels_dispatch", tests, NULL, NULL);
}
