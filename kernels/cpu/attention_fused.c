// attention_fused.c: the attention of attention.c, flash-style. Forward runs an
// online softmax over blocks of FA_BK keys for blocks of FA_BQ queries and
// keeps lse[B,H,L] (the log-sum-exp of each query's scaled scores, 0 for
// padding queries); backward recomputes P = exp(s - lse) tile by tile and uses
// D_t = dout_t . out_t. Per thread it holds a few tiles (FA_BQ x FA_BK and
// hd x FA_BK), never L x L. Each (b,h) is one OpenMP task writing only its own
// head's columns; indices inside a task count from p0 = pad[b].
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"
#include "tile.h"
#include "vmath.h"

#define FA_BQ 32
#define FA_BK 64

void attention_fused_forward(real* out, real* lse, const real* qkv, const int32_t* pad, int B,
                             int L, int d, int H) {
    PROF_FLOPS(2.0 * B * L * L * d);  // causal: half of QK^T and of PV
    ON_CUDA(attention_fused_forward, out, lse, qkv, pad, B, L, d, H);
    // out[B,L,d], lse[B,H,L], qkv[B,L,3d], pad[B]
    const int hd = d / H, C3 = 3 * d;
    const real scale = (real)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const int p0 = pad[b] < L ? pad[b] : L, M = L - p0;
            const real* Q = qkv + ((int64_t)b * L + p0) * C3 + h * hd;
            const real *K = Q + d, *V = Q + 2 * d;
            real* O = out + ((int64_t)b * L + p0) * d + h * hd;
            real* ls = lse + ((int64_t)b * H + h) * L;
            real s[FA_BQ * FA_BK], m[FA_BQ], l[FA_BQ], kt[hd * FA_BK];
            for (int t = 0; t < p0; t++) {
                memset(out + ((int64_t)b * L + t) * d + h * hd, 0, sizeof(real) * hd);
                ls[t] = 0;
            }
            ls += p0;
            for (int t0 = 0; t0 < M; t0 += FA_BQ) {
                const int nq = M - t0 < FA_BQ ? M - t0 : FA_BQ;
                real* Ob = O + (int64_t)t0 * d;
                // running max m and sum l of exp(s - m); O holds the unnormalised sum
                for (int i = 0; i < nq; i++) {
                    memset(Ob + (int64_t)i * d, 0, sizeof(real) * hd);
                    m[i] = -INFINITY, l[i] = 0;
                }
                for (int j0 = 0; j0 < t0 + nq; j0 += FA_BK) {
                    const int nj = t0 + nq - j0 < FA_BK ? t0 + nq - j0 : FA_BK;
                    pack_t(kt, FA_BK, K + (int64_t)j0 * C3, C3, nj, hd);
                    smm(0, nq, nj, hd, Q + (int64_t)t0 * C3, C3, 1, kt, FA_BK, s, FA_BK);
                    for (int i = 0; i < nq; i++) {
                        real* si = s + i * FA_BK;
                        real* o = Ob + (int64_t)i * d;
                        // keys j0 + jj <= t0 + i are allowed
                        int nv = t0 + i - j0 + 1 < nj ? t0 + i - j0 + 1 : nj;
                        nv = nv > 0 ? nv : 0;
                        real mb = m[i];
#pragma omp simd reduction(max : mb)
                        for (int jj = 0; jj < nv; jj++) {
                            si[jj] *= scale;
                            mb = si[jj] > mb ? si[jj] : mb;
                        }
                        // rescale what earlier blocks summed to the new max (exp(-inf) = 0)
                        if (mb > m[i]) {
                            real corr = (real)exp(m[i] - mb);
                            l[i] *= corr;
                            for (int c = 0; c < hd; c++) o[c] *= corr;
                            m[i] = mb;
                        }
                        real sum = 0;
#pragma omp simd reduction(+ : sum)
                        for (int jj = 0; jj < nv; jj++) {
                            si[jj] = vexp(si[jj] - mb);
                            sum += si[jj];
                        }
                        l[i] += sum;
                        for (int jj = nv; jj < nj; jj++) si[jj] = 0;
                    }
                    smm(1, nq, hd, nj, s, FA_BK, 1, V + (int64_t)j0 * C3, C3, Ob, d);
                }
                for (int i = 0; i < nq; i++) {
                    real inv = 1 / l[i];
                    for (int c = 0; c < hd; c++) Ob[(int64_t)i * d + c] *= inv;
                    ls[t0 + i] = m[i] + (real)log(l[i]);
                }
            }
        }
    }
}

void attention_fused_backward(real* dqkv, const real* dout, const real* out, const real* lse,
                              const real* qkv, const int32_t* pad, int B, int L, int d, int H) {
    PROF_FLOPS(5.0 * B * L * L * d);  // causal halves of five L x L x d products
    ON_CUDA(attention_fused_backward, dqkv, dout, out, lse, qkv, pad, B, L, d, H);
    // dqkv[B,L,3d], dout[B,L,d], out[B,L,d], lse[B,H,L], qkv[B,L,3d], pad[B]
    // per tile: P = exp(scale QK^T - lse), dS = scale P (dout V^T - D);
    // dV += P^T dout, dK += dS^T Q, dQ += dS K
    const int hd = d / H, C3 = 3 * d;
    const real scale = (real)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const int p0 = pad[b] < L ? pad[b] : L, M = L - p0;
            const real* Q = qkv + ((int64_t)b * L + p0) * C3 + h * hd;
            const real *K = Q + d, *V = Q + 2 * d;
            real* dQ = dqkv + ((int64_t)b * L + p0) * C3 + h * hd;
            real *dK = dQ + d, *dV = dQ + 2 * d;
            const real* G = dout + ((int64_t)b * L + p0) * d + h * hd;
            const real* O = out + ((int64_t)b * L + p0) * d + h * hd;
            const real* ls = lse + ((int64_t)b * H + h) * L + p0;
            real p[FA_BQ * FA_BK], ds[FA_BQ * FA_BK], kt[hd * FA_BK], vt[hd * FA_BK];
            for (int j0 = 0; j0 < M; j0 += FA_BK) {
                const int nj = M - j0 < FA_BK ? M - j0 : FA_BK;
                pack_t(kt, FA_BK, K + (int64_t)j0 * C3, C3, nj, hd);
                pack_t(vt, FA_BK, V + (int64_t)j0 * C3, C3, nj, hd);
                // the query blocks with some t >= j0
                for (int t0 = j0 / FA_BQ * FA_BQ; t0 < M; t0 += FA_BQ) {
                    const int nq = M - t0 < FA_BQ ? M - t0 : FA_BQ;
                    smm(0, nq, nj, hd, Q + (int64_t)t0 * C3, C3, 1, kt, FA_BK, p, FA_BK);
                    smm(0, nq, nj, hd, G + (int64_t)t0 * d, d, 1, vt, FA_BK, ds, FA_BK);
                    for (int i = 0; i < nq; i++) {
                        const int t = t0 + i;
                        real* pi = p + i * FA_BK;
                        real* di = ds + i * FA_BK;
                        int nv = t - j0 + 1 < nj ? t - j0 + 1 : nj;
                        nv = nv > 0 ? nv : 0;
                        // D_t = sum_j P_tj dP_tj = dout_t . out_t
                        real D = dot(G + (int64_t)t * d, O + (int64_t)t * d, hd), lt = ls[t];
#pragma omp simd
                        for (int jj = 0; jj < nv; jj++) {
                            pi[jj] = vexp(scale * pi[jj] - lt);
                            di[jj] = scale * pi[jj] * (di[jj] - D);
                        }
                        for (int jj = nv; jj < nj; jj++) pi[jj] = 0, di[jj] = 0;
                    }
                    smm(1, nj, hd, nq, p, 1, FA_BK, G + (int64_t)t0 * d, d, dV + (int64_t)j0 * C3,
                        C3);
                    smm(1, nj, hd, nq, ds, 1, FA_BK, Q + (int64_t)t0 * C3, C3,
                        dK + (int64_t)j0 * C3, C3);
                    smm(1, nq, hd, nj, ds, FA_BK, 1, K + (int64_t)j0 * C3, C3,
                        dQ + (int64_t)t0 * C3, C3);
                }
            }
        }
    }
}

void attention_last(real* out, const real* qkv, const int32_t* pad, int B, int L, int d, int H) {
    ON_CUDA(attention_last, out, qkv, pad, B, L, d, H);
    // out[B,d], qkv[B,L,3d], pad[B]: query L-1 over keys p0..L-1, in two
    // passes (the max, then the exponentials and their weighted values)
    const int hd = d / H, C3 = 3 * d;
    const double scale = 1.0 / sqrt((double)hd);
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const int p0 = pad[b] < 0 ? 0 : pad[b] < L ? pad[b] : L;
            real* o = out + (int64_t)b * d + h * hd;
            const real* row = qkv + (int64_t)b * L * C3 + h * hd;
            const real* q = row + (int64_t)(L - 1) * C3;
            double mx = -INFINITY, sum = 0, acc[hd];
            for (int c = 0; c < hd; c++) acc[c] = 0;
            for (int j = p0; j < L; j++) {
                double s = 0;
                for (int c = 0; c < hd; c++) s += (double)q[c] * row[(int64_t)j * C3 + d + c];
                mx = fmax(mx, s * scale);
            }
            for (int j = p0; j < L; j++) {
                double s = 0;
                for (int c = 0; c < hd; c++) s += (double)q[c] * row[(int64_t)j * C3 + d + c];
                const double e = exp(s * scale - mx);
                sum += e;
                for (int c = 0; c < hd; c++) acc[c] += e * row[(int64_t)j * C3 + 2 * d + c];
            }
            for (int c = 0; c < hd; c++) o[c] = p0 < L ? (real)(acc[c] / sum) : 0;
        }
    }
}
