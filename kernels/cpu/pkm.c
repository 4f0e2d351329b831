// pkm.c: the product-key memory of Lample et al. 2019 (DESIGN §3, step 2).
// Selection: a tile of queries is scored against blocks of PKM_BK sub-keys with
// smm (each block packed transposed), each query keeping its top-kk per half
// in a sorted array as the scores stream by; then the top-kk of the kk*kk sums,
// pruned because both lists are sorted; softmax. Read: out = sum of w * V rows,
// the rows where the caller holds them (the bank, or a sharded bank's fetched
// rows).
// idx lists each lookup's slots best first (ties: lower slot), w alike.
// Backward: dq per lookup; dK, shared by all queries, is cut into blocks of
// sub-keys that one task each owns, so it is race-free and summed in the same
// order (query, then slot) for any thread count.
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"
#include "tile.h"
#include "vmath.h"

#define PKM_BQ 32  // queries per forward tile (fewer when R is small)
#define PKM_BK 64  // sub-keys per packed block

// (s, i) ranks before (t, j): higher score, or equal score and lower index
static inline int ahead(real s, int32_t i, real t, int32_t j) { return s > t || (s == t && i < j); }

// Inserts (s, i) into the sorted top list ts/ti (*cnt entries, capacity kk) if
// it ranks there; the last entry falls out when the list is full.
static inline void top_push(real* ts, int32_t* ti, int* cnt, int kk, real s, int32_t i) {
    int p;
    if (*cnt < kk) {
        p = (*cnt)++;
    } else {
        if (!ahead(s, i, ts[kk - 1], ti[kk - 1])) return;
        p = kk - 1;
    }
    for (; p > 0 && ahead(s, i, ts[p - 1], ti[p - 1]); p--) ts[p] = ts[p - 1], ti[p] = ti[p - 1];
    ts[p] = s, ti[p] = i;
}

// sc[kk], slot[kk]: the top-kk of the sums s1[a] + s2[b] at slot i1[a]*n + i2[b].
// s1, s2 are sorted best first, so a row of sums stops at its first one below
// the current kk-th, and the rows stop at the first whose best sum is.
static void top_pairs(real* sc, int32_t* slot, const real* s1, const int32_t* i1, const real* s2,
                      const int32_t* i2, int kk, int n) {
    int cnt = 0;
    for (int a = 0; a < kk; a++) {
        if (cnt == kk && s1[a] + s2[0] < sc[kk - 1]) break;
        for (int b = 0; b < kk; b++) {
            real s = s1[a] + s2[b];
            if (cnt == kk && s < sc[kk - 1]) break;
            top_push(sc, slot, &cnt, kk, s, i1[a] * n + i2[b]);
        }
    }
}

void pkm_select(int32_t* idx, real* w, const real* q, const real* K, int R, int Hm, int dk, int n,
                int kk) {
    ON_CUDA(pkm_select, idx, w, q, K, R, Hm, dk, n, kk);
    // idx[R,Hm,kk], w[R,Hm,kk], q[R,Hm,dk], K[Hm,2,n,dk/2]
    const int half = dk / 2;
    // enough tiles for every thread; a query's scores do not depend on its tile
    int bq = (R + 2 * omp_get_max_threads() - 1) / (2 * omp_get_max_threads());
    bq = bq < 4 ? 4 : bq > PKM_BQ ? PKM_BQ : (bq + 3) / 4 * 4;
#pragma omp parallel for schedule(dynamic) if (R > bq)
    for (int r0 = 0; r0 < R; r0 += bq) {
        const int nq = R - r0 < bq ? R - r0 : bq;
        real s[PKM_BQ * PKM_BK], kt[half * PKM_BK];
        real ts[2][PKM_BQ][kk], sc[kk];
        int32_t ti[2][PKM_BQ][kk], slot[kk];
        int cnt[2][PKM_BQ];
        for (int h = 0; h < Hm; h++) {
            for (int p = 0; p < 2; p++) {
                // s[i, j] = q[r0+i, h, half p] . K[h, p, j0+j]
                const real* Kp = K + ((int64_t)h * 2 + p) * n * half;
                const real* Q = q + (int64_t)r0 * Hm * dk + h * dk + p * half;
                for (int i = 0; i < nq; i++) cnt[p][i] = 0;
                for (int j0 = 0; j0 < n; j0 += PKM_BK) {
                    const int nj = n - j0 < PKM_BK ? n - j0 : PKM_BK;
                    pack_t(kt, PKM_BK, Kp + (int64_t)j0 * half, half, nj, half);
                    smm(0, nq, nj, half, Q, (ptrdiff_t)Hm * dk, 1, kt, PKM_BK, s, PKM_BK);
                    for (int i = 0; i < nq; i++) {
                        real *t = ts[p][i], *si = s + i * PKM_BK;
                        for (int j = 0; j < nj; j++)
                            if (cnt[p][i] < kk || si[j] > t[kk - 1])
                                top_push(t, ti[p][i], &cnt[p][i], kk, si[j], j0 + j);
                    }
                }
            }
            for (int i = 0; i < nq; i++) {
                const int64_t l0 = ((int64_t)(r0 + i) * Hm + h) * kk;
                top_pairs(sc, slot, ts[0][i], ti[0][i], ts[1][i], ti[1][i], kk, n);
                // softmax; sc is sorted, so sc[0] is its maximum
                const real mx = sc[0];
                real sum = 0;
                for (int j = 0; j < kk; j++) sum += sc[j] = vexp(sc[j] - mx);
                for (int j = 0; j < kk; j++) idx[l0 + j] = slot[j], w[l0 + j] = sc[j] / sum;
            }
        }
    }
}

void pkm_read(real* out, const int32_t* row, const real* w, const real* V, int R, int Hm, int kk,
              int d) {
    ON_CUDA(pkm_read, out, row, w, V, R, Hm, kk, d);
    // out[R,d], row[R,Hm,kk], w[R,Hm,kk], V[*,d]; per query, heads then slots
#pragma omp parallel for if (R > 16)
    for (int r = 0; r < R; r++) {
        real* o = out + (int64_t)r * d;
        memset(o, 0, sizeof(real) * d);
        for (int64_t l = (int64_t)r * Hm * kk; l < (int64_t)(r + 1) * Hm * kk; l++) {
            const real* v = V + (int64_t)row[l] * d;
            for (int c = 0; c < d; c++) o[c] += w[l] * v[c];
        }
    }
}

static inline void axpy(real* y, real a, const real* x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// dsc[kk], the gradient of lookup l0's kk scores (softmax backward):
// dw_i = g . V[idx_i], dsc_i = w_i (dw_i - sum_j w_j dw_j), g = dout[r]
static void score_grads(real* dsc, const real* g, const int32_t* rw, const real* wl, const real* V,
                        int kk, int d) {
    real s = 0;
    for (int i = 0; i < kk; i++) {
        dsc[i] = dot(g, V + (int64_t)rw[i] * d, d);
        s += wl[i] * dsc[i];
    }
    for (int i = 0; i < kk; i++) dsc[i] = wl[i] * (dsc[i] - s);
}

void pkm_backward(real* dq, real* dK, real* dV_rows, const real* dout, const int32_t* idx,
                  const int32_t* row, const real* w, const real* q, const real* K, const real* V,
                  int R, int Hm, int dk, int n, int kk, int d) {
    ON_CUDA(pkm_backward, dq, dK, dV_rows, dout, idx, row, w, q, K, V, R, Hm, dk, n, kk, d);
    // dq[R,Hm,dk], dK[Hm,2,n,dk/2], dV_rows[R*Hm*kk,d], dout[R,d], idx, row, w [R,Hm,kk]
    if (!dq && !dK && !dV_rows) return;
    const int half = dk / 2;
    const int64_t nl = (int64_t)R * Hm * kk;
    // pass 1, per lookup: dq, the value rows, and dsc parked in column 0 of
    // dV_rows for pass 2 (column 0 is written last)
#pragma omp parallel for collapse(2)
    for (int r = 0; r < R; r++) {
        for (int h = 0; h < Hm; h++) {
            const int64_t l0 = ((int64_t)r * Hm + h) * kk;
            const real* g = dout + (int64_t)r * d;
            real dsc[kk];
            if (dq || dK) score_grads(dsc, g, row + l0, w + l0, V, kk, d);
            if (dq) {
                real* dq1 = dq + ((int64_t)r * Hm + h) * dk;
                const real *K1 = K + (int64_t)h * 2 * n * half, *K2 = K1 + (int64_t)n * half;
                for (int i = 0; i < kk; i++) {
                    const int32_t a = idx[l0 + i] / n, b = idx[l0 + i] % n;
                    axpy(dq1, dsc[i], K1 + (int64_t)a * half, half);
                    axpy(dq1 + half, dsc[i], K2 + (int64_t)b * half, half);
                }
            }
            if (dV_rows) {
                for (int i = 0; i < kk; i++) {
                    real* vr = dV_rows + (l0 + i) * d;
                    for (int c = 0; c < d; c++) vr[c] = w[l0 + i] * g[c];
                    if (dK) vr[0] = dsc[i];
                }
            }
        }
    }
    if (!dK) return;
    if (dV_rows) {
        // pass 2: task (h, p, block) owns sub-keys [lo, hi) of K[h, p]
        const int want = 4 * omp_get_max_threads();
        int nb = (want + 2 * Hm - 1) / (2 * Hm);
        nb = nb > n ? n : nb;
        const int bs = (n + nb - 1) / nb;
#pragma omp parallel for collapse(3) schedule(dynamic)
        for (int h = 0; h < Hm; h++) {
            for (int p = 0; p < 2; p++) {
                for (int blk = 0; blk < nb; blk++) {
                    const int lo = blk * bs, hi = lo + bs < n ? lo + bs : n;
                    real* dKp = dK + ((int64_t)h * 2 + p) * n * half;
                    for (int r = 0; r < R; r++) {
                        const int64_t l0 = ((int64_t)r * Hm + h) * kk;
                        const real* qh = q + ((int64_t)r * Hm + h) * dk + p * half;
                        for (int i = 0; i < kk; i++) {
                            const int32_t a = p ? idx[l0 + i] % n : idx[l0 + i] / n;
                            if (a >= lo && a < hi)
                                axpy(dKp + (int64_t)a * half, dV_rows[(l0 + i) * d], qh, half);
                        }
                    }
                }
            }
        }
        // pass 3: column 0 of the value rows, as pass 1 computed the others
#pragma omp parallel for
        for (int64_t l = 0; l < nl; l++) dV_rows[l * d] = w[l] * dout[l / ((int64_t)Hm * kk) * d];
    } else {
        // no row list to park dsc in: a task per head recomputes it
#pragma omp parallel for
        for (int h = 0; h < Hm; h++) {
            real* dK1 = dK + (int64_t)h * 2 * n * half;
            real* dK2 = dK1 + (int64_t)n * half;
            real dsc[kk];
            for (int r = 0; r < R; r++) {
                const int64_t l0 = ((int64_t)r * Hm + h) * kk;
                const real* qh = q + ((int64_t)r * Hm + h) * dk;
                score_grads(dsc, dout + (int64_t)r * d, row + l0, w + l0, V, kk, d);
                for (int i = 0; i < kk; i++) {
                    axpy(dK1 + (int64_t)(idx[l0 + i] / n) * half, dsc[i], qh, half);
                    axpy(dK2 + (int64_t)(idx[l0 + i] % n) * half, dsc[i], qh + half, half);
                }
            }
        }
    }
}
