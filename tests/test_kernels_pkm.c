// test_kernels_pkm.c: the product-key memory and the row-sparse kernels behind
// it, built with real = double. pkm_select + pkm_read against a brute force that scores
// all n*n slots (with random data the product-key top-k is the exact top-k);
// pkm_backward against central finite differences with the selection held
// fixed; sparse_rows_reduce against a dense scatter-add; adam_sparse_update
// against a dense Adam on the touched rows, the others left bit-identical.
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

#define FD_EPS 1e-6
#define FD_TOL 1e-6

#include "fd.h"

// ---- pkm_select + pkm_read against all n*n slots

// Scores every slot a*n+b as s1[a] + s2[b], takes the global top-kk best first
// (ties: lower slot), softmaxes them and sums the value rows.
static void pkm_ref(real* out, int32_t* idx, real* w, const real* q, const real* K, const real* V,
                    int R, int Hm, int dk, int n, int kk, int d) {
    const int half = dk / 2;
    double *s1 = malloc(sizeof(double) * n), *s2 = malloc(sizeof(double) * n);
    double *all = malloc(sizeof(double) * n * n), *sc = malloc(sizeof(double) * kk);
    char* taken = malloc(n * n);
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < d; c++) out[r * d + c] = 0;
        for (int h = 0; h < Hm; h++) {
            const real* qh = q + (r * Hm + h) * dk;
            for (int a = 0; a < n; a++) {
                s1[a] = s2[a] = 0;
                for (int c = 0; c < half; c++) {
                    s1[a] += qh[c] * K[((h * 2 + 0) * n + a) * half + c];
                    s2[a] += qh[half + c] * K[((h * 2 + 1) * n + a) * half + c];
                }
            }
            for (int a = 0; a < n; a++)
                for (int b = 0; b < n; b++) all[a * n + b] = s1[a] + s2[b], taken[a * n + b] = 0;
            int32_t* ix = idx + (r * Hm + h) * kk;
            for (int j = 0; j < kk; j++) {
                int best = -1;
                for (int s = 0; s < n * n; s++)
                    if (!taken[s] && (best < 0 || all[s] > all[best])) best = s;
                taken[best] = 1, ix[j] = best, sc[j] = all[best];
            }
            double sum = 0;
            for (int j = 0; j < kk; j++) sum += exp(sc[j] - sc[0]);
            for (int j = 0; j < kk; j++) {
                w[(r * Hm + h) * kk + j] = exp(sc[j] - sc[0]) / sum;
                for (int c = 0; c < d; c++)
                    out[r * d + c] += w[(r * Hm + h) * kk + j] * V[(int64_t)ix[j] * d + c];
            }
        }
    }
    free(s1), free(s2), free(all), free(sc), free(taken);
}

// integer data (exact sums, many ties) checks the tie rule too
static void check_forward(int R, int Hm, int dk, int n, int kk, int d, int integer) {
    real* q = rnd((int64_t)R * Hm * dk, -1, 1);
    real* K = rnd((int64_t)Hm * n * dk, -1, 1);
    real* V = rnd((int64_t)n * n * d, -1, 1);
    if (integer) {
        for (int64_t i = 0; i < (int64_t)R * Hm * dk; i++) q[i] = floor(3 * q[i]);
        for (int64_t i = 0; i < (int64_t)Hm * n * dk; i++) K[i] = floor(3 * K[i]);
    }
    const int64_t nl = (int64_t)R * Hm * kk;
    real *out = malloc(sizeof(real) * R * d), *out_ref = malloc(sizeof(real) * R * d);
    real *w = malloc(sizeof(real) * nl), *w_ref = malloc(sizeof(real) * nl);
    int32_t *idx = malloc(sizeof(int32_t) * nl), *idx_ref = malloc(sizeof(int32_t) * nl);
    for (int i = 0; i < R * d; i++) out[i] = 1e9;  // overwritten, not accumulated
    pkm_select(idx, w, q, K, R, Hm, dk, n, kk);
    pkm_read(out, idx, w, V, R, Hm, kk, d);
    pkm_ref(out_ref, idx_ref, w_ref, q, K, V, R, Hm, dk, n, kk, d);
    // a query's result does not depend on the thread count (nor on its tile)
    real *out1 = malloc(sizeof(real) * R * d), *w1 = malloc(sizeof(real) * nl);
    int32_t* idx1 = malloc(sizeof(int32_t) * nl);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    pkm_select(idx1, w1, q, K, R, Hm, dk, n, kk);
    pkm_read(out1, idx1, w1, V, R, Hm, kk, d);
    omp_set_num_threads(threads);
    assert_memory_equal(out1, out, sizeof(real) * R * d);
    assert_memory_equal(idx1, idx, sizeof(int32_t) * nl);
    assert_memory_equal(w1, w, sizeof(real) * nl);
    free(out1), free(w1), free(idx1);
    int same = memcmp(idx, idx_ref, sizeof(int32_t) * nl) == 0;
    double dw = max_abs_diff(w, w_ref, nl), dout = max_abs_diff(out, out_ref, (int64_t)R * d);
    print_message("# pkm_forward R=%d Hm=%d dk=%d n=%d kk=%d d=%d%s: idx %s, w %.3g, out %.3g\n", R,
                  Hm, dk, n, kk, d, integer ? " (ties)" : "", same ? "equal" : "DIFFER", dw, dout);
    assert_true(same);
    assert_true(dw < 1e-12);
    assert_true(dout < 1e-12);
    free(q), free(K), free(V), free(out), free(out_ref), free(w), free(w_ref), free(idx);
    free(idx_ref);
}

static void test_pkm_forward(void** state) {
    seed(1);
    check_forward(5, 1, 4, 8, 1, 3, 0);  // kk = 1
    check_forward(7, 2, 6, 10, 4, 5, 0);
    check_forward(6, 2, 8, 16, 16, 4, 0);     // kk = n
    check_forward(4, 1, 2, 5, 5, 2, 0);       // kk = n, one-wide halves
    check_forward(9, 3, 8, 64, 8, 7, 0);      // one full key block
    check_forward(70, 2, 16, 100, 32, 9, 0);  // several query tiles and key blocks
    check_forward(11, 2, 4, 10, 5, 3, 1);     // ties
    check_forward(8, 1, 2, 12, 12, 2, 1);     // ties, kk = n
}

// ---- the read and backward from fetched rows (a sharded bank's: only the
// selected rows, in another order, row[] pointing at them) equal those from
// the whole bank, exactly
static void test_pkm_fetched_rows(void** state) {
    seed(5);
    const int R = 9, Hm = 2, dk = 6, n = 8, kk = 3, d = 5;
    const int64_t nq = R * Hm * dk, nK = Hm * n * dk, nl = R * Hm * kk;
    real *q = rnd(nq, -1, 1), *K = rnd(nK, -1, 1), *V = rnd((int64_t)n * n * d, -1, 1);
    real* G = rnd(R * d, -1, 1);
    real *w = malloc(sizeof(real) * nl), *o1 = malloc(sizeof(real) * R * d),
         *o2 = malloc(sizeof(real) * R * d);
    int32_t *idx = malloc(sizeof(int32_t) * nl), *row = malloc(sizeof(int32_t) * nl);
    pkm_select(idx, w, q, K, R, Hm, dk, n, kk);
    // fetched: the distinct slots, newest first (another order than the bank's)
    int32_t* pos = malloc(sizeof(int32_t) * n * n);
    for (int i = 0; i < n * n; i++) pos[i] = -1;
    real* F = malloc(sizeof(real) * nl * d);
    int nf = 0;
    for (int64_t l = nl - 1; l >= 0; l--)
        if (pos[idx[l]] < 0) {
            pos[idx[l]] = nf;
            memcpy(F + (int64_t)nf++ * d, V + (int64_t)idx[l] * d, sizeof(real) * d);
        }
    for (int64_t l = 0; l < nl; l++) row[l] = pos[idx[l]];
    assert_true(nf < nl);  // some slots repeat
    pkm_read(o1, idx, w, V, R, Hm, kk, d);
    pkm_read(o2, row, w, F, R, Hm, kk, d);
    assert_memory_equal(o1, o2, sizeof(real) * R * d);
    real *dq1 = calloc(nq, sizeof(real)), *dq2 = calloc(nq, sizeof(real));
    real *dK1 = calloc(nK, sizeof(real)), *dK2 = calloc(nK, sizeof(real));
    real *r1 = malloc(sizeof(real) * nl * d), *r2 = malloc(sizeof(real) * nl * d);
    pkm_backward(dq1, dK1, r1, G, idx, idx, w, q, K, V, R, Hm, dk, n, kk, d);
    pkm_backward(dq2, dK2, r2, G, idx, row, w, q, K, F, R, Hm, dk, n, kk, d);
    assert_memory_equal(dq1, dq2, sizeof(real) * nq);
    assert_memory_equal(dK1, dK2, sizeof(real) * nK);
    assert_memory_equal(r1, r2, sizeof(real) * nl * d);
    free(q), free(K), free(V), free(G), free(w), free(o1), free(o2), free(idx), free(row);
    free(pos), free(F), free(dq1), free(dq2), free(dK1), free(dK2), free(r1), free(r2);
}

// ---- pkm_backward against finite differences, selection fixed

typedef struct {
    int R, Hm, dk, n, kk, d;
    const real *q, *K, *V, *G;
    const int32_t* idx0;  // the selection at the unperturbed point
    real *out, *w;
    int32_t* idx;
    int moved;  // set when a perturbation changed the selection
} pkm_ctx;

static double pkm_loss(void* p) {
    pkm_ctx* c = p;
    pkm_select(c->idx, c->w, c->q, c->K, c->R, c->Hm, c->dk, c->n, c->kk);
    pkm_read(c->out, c->idx, c->w, c->V, c->R, c->Hm, c->kk, c->d);
    if (memcmp(c->idx, c->idx0, sizeof(int32_t) * c->R * c->Hm * c->kk)) c->moved = 1;
    double s = 0;
    for (int i = 0; i < c->R * c->d; i++) s += c->out[i] * c->G[i];
    return s;
}

// g1 - g0 is the analytic gradient of the loss w.r.t. x[n]; every element is
// compared with central differences, relative to the larger, floored at 1e-3
static void check_grad(const char* what, real* x, const real* g0, const real* g1, int64_t n,
                       pkm_ctx* c) {
    double worst = 0;
    int64_t worst_i = 0;
    for (int64_t i = 0; i < n; i++) {
        real x0 = x[i];
        x[i] = x0 + FD_EPS;
        double lp = pkm_loss(c);
        x[i] = x0 - FD_EPS;
        double lm = pkm_loss(c);
        x[i] = x0;
        double num = (lp - lm) / (2 * FD_EPS), ana = g1[i] - g0[i];
        double err = fabs(ana - num) / fmax(1e-3, fmax(fabs(ana), fabs(num)));
        if (err > worst) worst = err, worst_i = i;
    }
    print_message("# %s: worst %.3g\n", what, worst);
    if (worst > FD_TOL)
        print_error("%s: gradient [%lld] off by %.3g relative\n", what, (long long)worst_i, worst);
    assert_false(c->moved);
    assert_true(worst <= FD_TOL);
}

static void test_pkm_backward(void** state) {
    seed(2);
    const int R = 4, Hm = 2, dk = 6, n = 7, kk = 3, d = 5;
    const int64_t nq = R * Hm * dk, nK = Hm * n * dk, nV = n * n * d, nl = R * Hm * kk;
    real *q = rnd(nq, -1, 1), *K = rnd(nK, -1, 1), *V = rnd(nV, -1, 1), *G = rnd(R * d, -1, 1);
    // query 3 repeats query 1, so slots are hit twice and dV_rows must be reduced
    for (int c = 0; c < Hm * dk; c++) q[3 * Hm * dk + c] = q[1 * Hm * dk + c];
    real *out = malloc(sizeof(real) * R * d), *w = malloc(sizeof(real) * nl);
    int32_t *idx0 = malloc(sizeof(int32_t) * nl), *idx = malloc(sizeof(int32_t) * nl);
    pkm_select(idx0, w, q, K, R, Hm, dk, n, kk);
    pkm_read(out, idx0, w, V, R, Hm, kk, d);
    real* w0 = dup(w, nl);

    // from random gradients, so accumulation (+=) is checked too
    real *dq0 = rnd(nq, -1, 1), *dK0 = rnd(nK, -1, 1);
    real *dq = dup(dq0, nq), *dK = dup(dK0, nK), *dV_rows = malloc(sizeof(real) * nl * d);
    pkm_backward(dq, dK, dV_rows, G, idx0, idx0, w0, q, K, V, R, Hm, dk, n, kk, d);
    for (int64_t l = 0; l < nl; l++)
        for (int c = 0; c < d; c++)
            assert_true(dV_rows[l * d + c] == w0[l] * G[l / (Hm * kk) * d + c]);

    pkm_ctx c = {R, Hm, dk, n, kk, d, q, K, V, G, idx0, out, w, idx, 0};
    check_grad("pkm dq", q, dq0, dq, nq, &c);
    check_grad("pkm dK", K, dK0, dK, nK, &c);

    // the per-lookup rows, summed per slot, are the gradient of V
    int32_t* uniq = malloc(sizeof(int32_t) * nl);
    real *red = malloc(sizeof(real) * nl * d), *dV = calloc(nV, sizeof(real));
    real* zero = calloc(nV, sizeof(real));
    int64_t* perm = malloc(sizeof(int64_t) * nl);
    int64_t m = sparse_rows_reduce(uniq, red, idx0, dV_rows, nl, d, perm);
    print_message("# pkm: %lld lookups hit %lld slots\n", (long long)nl, (long long)m);
    assert_true(m < nl);
    for (int64_t j = 0; j < m; j++)
        memcpy(dV + (int64_t)uniq[j] * d, red + j * d, sizeof(real) * d);
    check_grad("pkm dV", V, zero, dV, nV, &c);

    // each gradient alone, and dK without dV_rows (recomputed scores), agree
    real *dq1 = dup(dq0, nq), *dK1 = dup(dK0, nK);
    pkm_backward(dq1, NULL, NULL, G, idx0, idx0, w0, q, K, V, R, Hm, dk, n, kk, d);
    pkm_backward(NULL, dK1, NULL, G, idx0, idx0, w0, q, K, V, R, Hm, dk, n, kk, d);
    assert_true(max_abs_diff(dq1, dq, nq) < 1e-14);
    assert_true(max_abs_diff(dK1, dK, nK) < 1e-14);

    // dK is summed in one order whatever the thread count
    const int threads = omp_get_max_threads();
    for (int t = 1; t <= 3; t += 2) {
        omp_set_num_threads(t);
        memcpy(dK1, dK0, sizeof(real) * nK);
        pkm_backward(NULL, dK1, dV_rows, G, idx0, idx0, w0, q, K, V, R, Hm, dk, n, kk, d);
        assert_memory_equal(dK1, dK, sizeof(real) * nK);
    }
    omp_set_num_threads(threads);

    free(q), free(K), free(V), free(G), free(out), free(w), free(w0), free(idx0), free(idx);
    free(dq0), free(dK0), free(dq), free(dK), free(dV_rows), free(uniq), free(red), free(dV);
    free(zero), free(perm), free(dq1), free(dK1);
}

// ---- sparse_rows_reduce

// ids[n] drawn from [lo, lo + span), a fraction `rep` repeating an earlier id
static int32_t* rand_ids(int64_t n, int64_t lo, int64_t span, double rep) {
    int32_t* ids = malloc(sizeof(int32_t) * n);
    for (int64_t i = 0; i < n; i++)
        ids[i] = i > 0 && urand() < rep ? ids[(int64_t)(urand() * i)]
                                        : (int32_t)(lo + (int64_t)(urand() * span));
    return ids;
}

typedef struct {
    int32_t id;
    int64_t i;
} id_pos;

static int by_id_pos(const void* x, const void* y) {
    const id_pos *a = x, *b = y;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

// Runs sparse_rows_reduce with 1, 2 and 3 threads (the same bits each time)
// and checks it against the rows summed in input order per id: by a dense
// scatter-add over [0, span) when dense, else by sorting (id, position).
static void check_reduce(int64_t n, int d, const int32_t* ids, int dense, int64_t span) {
    real* rows = rnd(n * d, -1, 1);
    int32_t *uniq = malloc(sizeof(int32_t) * (n + 1)), *uniq1 = malloc(sizeof(int32_t) * (n + 1));
    real *out = malloc(sizeof(real) * (n + 1) * d), *out1 = malloc(sizeof(real) * (n + 1) * d);
    int64_t* perm = malloc(sizeof(int64_t) * (n + 1));
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    int64_t m = sparse_rows_reduce(uniq1, out1, ids, rows, n, d, perm);
    for (int t = 2; t <= 3; t++) {
        omp_set_num_threads(t);
        assert_int_equal(sparse_rows_reduce(uniq, out, ids, rows, n, d, perm), m);
        assert_memory_equal(uniq, uniq1, sizeof(int32_t) * m);
        assert_memory_equal(out, out1, sizeof(real) * m * d);
    }
    omp_set_num_threads(threads);

    int32_t* ref_id = malloc(sizeof(int32_t) * (n + 1));
    real* ref = calloc((n + 1) * d, sizeof(real));
    int64_t mr = 0;
    if (dense) {
        real* acc = calloc(span * d, sizeof(real));
        char* hit = calloc(span, 1);
        for (int64_t i = 0; i < n; i++) {
            hit[ids[i]] = 1;
            for (int c = 0; c < d; c++) acc[ids[i] * d + c] += rows[i * d + c];
        }
        for (int64_t s = 0; s < span; s++)
            if (hit[s])
                ref_id[mr] = (int32_t)s, memcpy(ref + mr++ * d, acc + s * d, sizeof(real) * d);
        free(acc), free(hit);
    } else {
        id_pos* p = malloc(sizeof(id_pos) * (n + 1));
        for (int64_t i = 0; i < n; i++) p[i] = (id_pos){ids[i], i};
        qsort(p, n, sizeof(id_pos), by_id_pos);
        for (int64_t i = 0; i < n; i++) {
            if (i == 0 || p[i].id != p[i - 1].id) ref_id[mr++] = p[i].id;
            for (int c = 0; c < d; c++) ref[(mr - 1) * d + c] += rows[p[i].i * d + c];
        }
        free(p);
    }
    print_message("# sparse_rows_reduce n=%lld d=%d: %lld ids\n", (long long)n, d, (long long)m);
    assert_int_equal(m, mr);
    assert_memory_equal(uniq, ref_id, sizeof(int32_t) * m);
    // summed in the same order from 0, so the same bits
    assert_memory_equal(out, ref, sizeof(real) * m * d);
    free(rows), free(uniq), free(uniq1), free(out), free(out1), free(perm), free(ref_id), free(ref);
}

static void test_sparse_rows_reduce(void** state) {
    seed(3);
    int32_t* ids = rand_ids(5000, 0, 200, 0);
    check_reduce(5000, 3, ids, 1, 200);
    free(ids);
    ids = rand_ids(200000, 0, 1 << 20, 0.3);  // several radix levels
    check_reduce(200000, 2, ids, 1, 1 << 20);
    free(ids);
    ids = rand_ids(3000, INT32_MIN, (int64_t)1 << 32, 0.5);  // the whole int32 range
    ids[0] = INT32_MIN, ids[1] = INT32_MAX, ids[2] = INT32_MAX;
    check_reduce(3000, 4, ids, 0, 0);
    free(ids);
    ids = rand_ids(1000, 5, 1, 0);  // one id
    check_reduce(1000, 2, ids, 1, 6);
    check_reduce(1, 2, ids, 1, 6);
    check_reduce(0, 2, ids, 1, 6);
    free(ids);
}

// ---- adam_sparse_update

static void test_adam_sparse(void** state) {
    seed(4);
    const int N = 20, d = 5, nr = 5;
    const int32_t rows[5] = {7, 2, 19, 0, 11};
    const double lr = 1e-2, b1 = 0.9, b2 = 0.98, eps = 1e-8;
    real *p = rnd(N * d, -1, 1), *m = rnd(N * d, -0.1, 0.1), *v = rnd(N * d, 0, 0.01);
    real *p0 = dup(p, N * d), *m0 = dup(m, N * d), *v0 = dup(v, N * d);
    // the dense reference holds the touched rows only
    double pr[5][5], mr[5][5], vr[5][5];
    for (int i = 0; i < nr; i++)
        for (int c = 0; c < d; c++)
            pr[i][c] = p[rows[i] * d + c], mr[i][c] = m[rows[i] * d + c],
            vr[i][c] = v[rows[i] * d + c];
    for (int t = 1; t <= 3; t++) {
        real* g = rnd(nr * d, -1, 1);
        adam_sparse_update(p, m, v, rows, g, nr, d, lr, b1, b2, eps, t);
        double worst = 0;
        for (int i = 0; i < nr; i++)
            for (int c = 0; c < d; c++) {
                double gi = g[i * d + c];
                mr[i][c] = b1 * mr[i][c] + (1 - b1) * gi;
                vr[i][c] = b2 * vr[i][c] + (1 - b2) * gi * gi;
                double mh = mr[i][c] / (1 - pow(b1, t)), vh = vr[i][c] / (1 - pow(b2, t));
                pr[i][c] -= lr * mh / (sqrt(vh) + eps);
                const int64_t o = rows[i] * d + c;
                worst = fmax(worst,
                             fabs(p[o] - pr[i][c]) + fabs(m[o] - mr[i][c]) + fabs(v[o] - vr[i][c]));
                // touched rows move
                assert_true(p[o] != p0[o]);
            }
        print_message("# adam_sparse step %d: worst %.3g\n", t, worst);
        assert_true(worst < 1e-13);
        for (int r = 0; r < N; r++) {
            int touched = 0;
            for (int i = 0; i < nr; i++) touched |= rows[i] == r;
            if (touched) continue;
            assert_memory_equal(p + r * d, p0 + r * d, sizeof(real) * d);
            assert_memory_equal(m + r * d, m0 + r * d, sizeof(real) * d);
            assert_memory_equal(v + r * d, v0 + r * d, sizeof(real) * d);
        }
        free(g);
    }
    free(p), free(m), free(v), free(p0), free(m0), free(v0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pkm_forward),      cmocka_unit_test(test_pkm_backward),
        cmocka_unit_test(test_pkm_fetched_rows), cmocka_unit_test(test_sparse_rows_reduce),
        cmocka_unit_test(test_adam_sparse),
    };
    return cmocka_run_group_tests_name("kernels_pkm", tests, NULL, NULL);
}
