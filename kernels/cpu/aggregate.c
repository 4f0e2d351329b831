// aggregate.c: ELASTIC's interest aggregation (DESIGN §3 step 1). For row b,
// head h and every expert e at once, forward walks the chunks in order keeping
// an online softmax state (max m, sum l of exp(x - m), weighted sum acc) that
// starts as the prior (pb, 1, u); chunk c's interest P = acc / l is read out
// before chunk c's positions are absorbed, so it sees only earlier chunks.
// Backward walks the chunks in reverse with suffix sums over later chunks,
// scaled to the lse of the chunk after the one being processed, so that every
// weight exp(s_j - lse) is <= 1: O(L*k*d), nothing overflows. Positions come in
// blocks of AG_BK whose products are register-tiled smm calls (tile.h); each
// (b,h) is one OpenMP iteration writing only its own head's columns.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <omp.h>

#include "kernels.h"
#include "on_cuda.h"
#include "tile.h"
#include "vmath.h"

#define AG_BK 64

void interest_aggregate_forward(real* P, real* lse, const real* qe, const real* kh, const real* vh,
                                const real* u, const real* pb, const int32_t* pad, int B, int L,
                                int d, int H, int k, int C) {
    ON_CUDA(interest_aggregate_forward, P, lse, qe, kh, vh, u, pb, pad, B, L, d, H, k, C);
    // P[B,nc,k,d], lse[B,nc,k,H], qe[k,d], kh[B,L,d], vh[B,L,d], u[k,d], pb[k,H], pad[B]
    const int hd = d / H, nc = (L + C - 1) / C;
    const real scale = (real)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const int p0 = pad[b] < L ? pad[b] : L;
            const real* Q = qe + h * hd;
            const real* K = kh + (int64_t)b * L * d + h * hd;
            const real* V = vh + (int64_t)b * L * d + h * hd;
            real m[k], l[k], acc[k * hd], s[k * AG_BK], kt[hd * AG_BK];
            for (int e = 0; e < k; e++) {
                m[e] = pb[e * H + h], l[e] = 1;
                memcpy(acc + e * hd, u + (int64_t)e * d + h * hd, sizeof(real) * hd);
            }
            for (int c = 0; c < nc; c++) {
                for (int e = 0; e < k; e++) {
                    real* out = P + (((int64_t)b * nc + c) * k + e) * d + h * hd;
                    real inv = 1 / l[e];
                    for (int i = 0; i < hd; i++) out[i] = acc[e * hd + i] * inv;
                    lse[(((int64_t)b * nc + c) * k + e) * H + h] = m[e] + (real)log(l[e]);
                }
                if (c == nc - 1) break;  // the last chunk's positions feed no chunk
                const int jlo = c * C > p0 ? c * C : p0, jhi = (c + 1) * C < L ? (c + 1) * C : L;
                for (int j0 = jlo; j0 < jhi; j0 += AG_BK) {
                    const int nj = jhi - j0 < AG_BK ? jhi - j0 : AG_BK;
                    pack_t(kt, AG_BK, K + (int64_t)j0 * d, d, nj, hd);
                    smm(0, k, nj, hd, Q, d, 1, kt, AG_BK, s, AG_BK);
                    for (int e = 0; e < k; e++) {
                        real* se = s + e * AG_BK;
                        real mb = m[e];
#pragma omp simd reduction(max : mb)
                        for (int j = 0; j < nj; j++) {
                            se[j] *= scale;
                            mb = se[j] > mb ? se[j] : mb;
                        }
                        // a larger max rescales what earlier positions (and the prior) summed
                        if (mb > m[e]) {
                            real corr = (real)exp(m[e] - mb);
                            l[e] *= corr;
                            for (int i = 0; i < hd; i++) acc[e * hd + i] *= corr;
                            m[e] = mb;
                        }
                        real sum = 0;
#pragma omp simd reduction(+ : sum)
                        for (int j = 0; j < nj; j++) {
                            se[j] = vexp(se[j] - mb);
                            sum += se[j];
                        }
                        l[e] += sum;
                    }
                    smm(1, k, hd, nj, s, AG_BK, 1, V + (int64_t)j0 * d, d, acc, hd);
                }
            }
        }
    }
}

// With G_c = dP[b,c,e], D_c = G_c . P_c and w_cj = exp(s_j - lse_c) for j in
// chunks < c (w_c0 = exp(pb - lse_c) for the prior), for j in chunk cj:
//   dvh_j += sum_{c>cj} w_cj G_c,  ds_j = sum_{c>cj} w_cj (G_c . vh_j - D_c),
//   du += sum_c w_c0 G_c,          dpb += sum_c w_c0 G_c . (u - P_c).
// The suffix sums A_c = sum_{c'>=c} exp(lse_c - lse_c') G_c' and likewise
// Dt_c (of D_c) and Eu_c (of G_c . (u - P_c), which keeps the exact zero of
// chunks that are all prior instead of cancelling G.u - D) are built from the
// last chunk back (A_c = G_c + exp(lse_c - lse_c+1) A_c+1; lse grows with c,
// so each factor is <= 1), and then sum_{c>cj} w_cj G_c = exp(s_j - lse_cj+1)
// A_cj+1 with s_j <= lse_cj+1.
// dqe, du and dpb sum over rows: each thread accumulates its rows into a private
// copy, and the threads add theirs in thread order, so that a run is
// reproducible for a given thread count.
void interest_aggregate_backward(real* dqe, real* dkh, real* dvh, real* du, real* dpb,
                                 const real* dP, const real* P, const real* lse, const real* qe,
                                 const real* kh, const real* vh, const real* u, const real* pb,
                                 const int32_t* pad, int B, int L, int d, int H, int k, int C) {
    ON_CUDA(interest_aggregate_backward, dqe, dkh, dvh, du, dpb, dP, P, lse, qe, kh, vh, u, pb, pad,
            B, L, d, H, k, C);
    // dqe[k,d], dkh[B,L,d], dvh[B,L,d], du[k,d], dpb[k,H], dP[B,nc,k,d], P[B,nc,k,d],
    // lse[B,nc,k,H], qe[k,d], kh[B,L,d], vh[B,L,d], u[k,d], pb[k,H], pad[B]
    const int hd = d / H, nc = (L + C - 1) / C;
    const real scale = (real)(1.0 / sqrt((double)hd));
    const int need_ds = dqe || dkh, need_w = need_ds || dvh;
#pragma omp parallel
    {
        // this thread's dqe[k,d] | du[k,d] | dpb[k,H]
        real part[2 * k * d + k * H];
        real *dq = part, *dup = part + k * d, *dpbp = part + 2 * k * d;
        memset(part, 0, sizeof(part));
#pragma omp for collapse(2) schedule(static, 1)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                const int p0 = pad[b] < L ? pad[b] : L;
                const real* Q = qe + h * hd;
                const real* K = kh + (int64_t)b * L * d + h * hd;
                const real* V = vh + (int64_t)b * L * d + h * hd;
                real A[k * hd], Dt[k], Eu[k], lref[k], w[k * AG_BK], g[k * AG_BK], kt[hd * AG_BK],
                    vt[hd * AG_BK];
                memset(A, 0, sizeof(real) * k * hd);
                for (int e = 0; e < k; e++) Dt[e] = 0, Eu[e] = 0, lref[e] = 0;
                for (int c = nc - 1; c >= 0; c--) {
                    const int64_t row = ((int64_t)b * nc + c) * k;
                    // chunk c's positions, weighted by the chunks after it (none for the last)
                    const int jlo = c * C > p0 ? c * C : p0,
                              jhi = (c + 1) * C < L ? (c + 1) * C : L;
                    for (int j0 = jlo; need_w && c < nc - 1 && j0 < jhi; j0 += AG_BK) {
                        const int nj = jhi - j0 < AG_BK ? jhi - j0 : AG_BK;
                        pack_t(kt, AG_BK, K + (int64_t)j0 * d, d, nj, hd);
                        smm(0, k, nj, hd, Q, d, 1, kt, AG_BK, w, AG_BK);
                        if (need_ds) {
                            pack_t(vt, AG_BK, V + (int64_t)j0 * d, d, nj, hd);
                            smm(0, k, nj, hd, A, hd, 1, vt, AG_BK, g, AG_BK);
                        }
                        for (int e = 0; e < k; e++) {
                            real *we = w + e * AG_BK, *ge = g + e * AG_BK;
                            const real le = lref[e], De = Dt[e];
#pragma omp simd
                            for (int j = 0; j < nj; j++) we[j] = vexp(scale * we[j] - le);
                            if (need_ds) {
#pragma omp simd
                                for (int j = 0; j < nj; j++) ge[j] = scale * we[j] * (ge[j] - De);
                            }
                        }
                        if (dvh)
                            smm(1, nj, hd, k, w, 1, AG_BK, A, hd,
                                dvh + ((int64_t)b * L + j0) * d + h * hd, d);
                        if (dkh)
                            smm(1, nj, hd, k, g, 1, AG_BK, Q, d,
                                dkh + ((int64_t)b * L + j0) * d + h * hd, d);
                        if (dqe)
                            smm(1, k, hd, nj, g, AG_BK, 1, K + (int64_t)j0 * d, d, dq + h * hd, d);
                    }
                    // fold chunk c into the suffix sums, rescaled from lse_c+1 to lse_c
                    for (int e = 0; e < k; e++) {
                        const real* G = dP + (row + e) * d + h * hd;
                        const real* Pc = P + (row + e) * d + h * hd;
                        const real lc = lse[(row + e) * H + h];
                        const real f = c < nc - 1 ? (real)exp(lc - lref[e]) : 0;
                        real* Ae = A + e * hd;
                        for (int i = 0; i < hd; i++) Ae[i] = G[i] + f * Ae[i];
                        const real* ue = u + (int64_t)e * d + h * hd;
                        real gu = 0;
                        for (int i = 0; i < hd; i++) gu += G[i] * (ue[i] - Pc[i]);
                        Dt[e] = dot(G, Pc, hd) + f * Dt[e];
                        Eu[e] = gu + f * Eu[e];
                        lref[e] = lc;
                    }
                }
                // the prior's weight in chunk c is exp(pb - lse_c); A and Eu are relative to lse_0
                for (int e = 0; e < k; e++) {
                    const real w0 = (real)exp(pb[e * H + h] - lref[e]);
                    real* due = dup + (int64_t)e * d + h * hd;
                    for (int i = 0; i < hd; i++) due[i] += w0 * A[e * hd + i];
                    dpbp[e * H + h] += w0 * Eu[e];
                }
            }
        }
        // iteration t is thread t's (static, 1), and ordered runs them in t order
#pragma omp for ordered schedule(static, 1)
        for (int t = 0; t < omp_get_num_threads(); t++) {
#pragma omp ordered
            {
                for (int i = 0; dqe && i < k * d; i++) dqe[i] += dq[i];
                for (int i = 0; du && i < k * d; i++) du[i] += dup[i];
                for (int i = 0; dpb && i < k * H; i++) dpb[i] += dpbp[i];
            }
        }
    }
}
