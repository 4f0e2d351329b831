// attention.c: causal multi-head attention with left padding, materialised:
// att[B,H,L,L] keeps the probabilities for backward. qkv[B,L,3d] = q | k | v;
// head h of each is columns h*hd..(h+1)*hd-1. Query t of sequence b sees keys
// pad[b]..t; a padding query (t < pad[b]) has an all-zero att row and outputs 0.
// Each (b,h) is one OpenMP task writing only its own head's columns, so the
// loops are race-free; its products are register-tiled smm calls (tile.h) over
// the causal triangle in blocks of ATT_B, indices counted from p0 = pad[b].
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"
#include "tile.h"
#include "vmath.h"

// smaller blocks waste less of the triangle's diagonal blocks
#define ATT_B 32

void attention_forward(real* out, real* att, const real* qkv, const int32_t* pad, int B, int L,
                       int d, int H) {
    ON_CUDA(attention_forward, out, att, qkv, pad, B, L, d, H);
    // out[B,L,d], att[B,H,L,L], qkv[B,L,3d], pad[B]
    const int hd = d / H, C3 = 3 * d;
    const real scale = (real)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const int p0 = pad[b] < L ? pad[b] : L, M = L - p0;
            const real* Q = qkv + ((int64_t)b * L + p0) * C3 + h * hd;
            const real *K = Q + d, *V = Q + 2 * d;
            real* O = out + ((int64_t)b * L + p0) * d + h * hd;
            real* A = att + ((int64_t)b * H + h) * L * L;
            real* S = A + (int64_t)p0 * L + p0;  // S[t][j] = S[t*L + j], t, j >= p0
            real kt[hd * ATT_B];
            memset(A, 0, sizeof(real) * p0 * L);
            for (int t = 0; t < p0; t++)
                memset(out + ((int64_t)b * L + t) * d + h * hd, 0, sizeof(real) * hd);
            // raw scores Q K^T: queries t >= j0 see the keys of block j0
            for (int j0 = 0; j0 < M; j0 += ATT_B) {
                int nj = M - j0 < ATT_B ? M - j0 : ATT_B;
                pack_t(kt, ATT_B, K + (int64_t)j0 * C3, C3, nj, hd);
                smm(0, M - j0, nj, hd, Q + (int64_t)j0 * C3, C3, 1, kt, ATT_B,
                    S + (int64_t)j0 * L + j0, L);
            }
            // softmax over keys 0..t; everything else in the row is 0
            for (int t = 0; t < M; t++) {
                real* s = S + (int64_t)t * L;
                memset(s - p0, 0, sizeof(real) * p0);
                real mx = -INFINITY;
#pragma omp simd reduction(max : mx)
                for (int j = 0; j <= t; j++) {
                    s[j] *= scale;
                    mx = s[j] > mx ? s[j] : mx;
                }
                real sum = 0;
#pragma omp simd reduction(+ : sum)
                for (int j = 0; j <= t; j++) {
                    s[j] = vexp(s[j] - mx);
                    sum += s[j];
                }
                real inv = 1 / sum;
                for (int j = 0; j <= t; j++) s[j] *= inv;
                memset(s + t + 1, 0, sizeof(real) * (M - t - 1));
            }
            // O = P V; P is 0 right of the diagonal, so a block needs keys up to its last query
            for (int t0 = 0; t0 < M; t0 += ATT_B) {
                int nq = M - t0 < ATT_B ? M - t0 : ATT_B;
                smm(0, nq, hd, t0 + nq, S + (int64_t)t0 * L, L, 1, V, C3, O + (int64_t)t0 * d, d);
            }
        }
    }
}

void attention_backward(real* dqkv, real* datt, const real* dout, const real* qkv, const real* att,
                        const int32_t* pad, int B, int L, int d, int H) {
    ON_CUDA(attention_backward, dqkv, datt, dout, qkv, att, pad, B, L, d, H);
    // dqkv[B,L,3d], datt[B,H,L,L] scratch, dout[B,L,d], qkv[B,L,3d], att[B,H,L,L], pad[B]
    // dP = dout V^T, dS = P (dP - rowsum(P dP)); dQ += scale dS K,
    // dK += scale dS^T Q, dV += P^T dout. Padding rows and columns take no part.
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
            const real* P = att + ((int64_t)b * H + h) * L * L + (int64_t)p0 * L + p0;
            real* dS = datt + ((int64_t)b * H + h) * L * L + (int64_t)p0 * L + p0;
            real vt[hd * ATT_B];
            for (int j0 = 0; j0 < M; j0 += ATT_B) {
                int nj = M - j0 < ATT_B ? M - j0 : ATT_B;
                pack_t(vt, ATT_B, V + (int64_t)j0 * C3, C3, nj, hd);
                smm(0, M - j0, nj, hd, G + (int64_t)j0 * d, d, 1, vt, ATT_B,
                    dS + (int64_t)j0 * L + j0, L);
            }
            for (int t = 0; t < M; t++) {
                const real* p = P + (int64_t)t * L;
                real* ds = dS + (int64_t)t * L;
                real D = 0;
                for (int j = 0; j <= t; j++) D += p[j] * ds[j];
                for (int j = 0; j <= t; j++) ds[j] = scale * p[j] * (ds[j] - D);
                memset(ds + t + 1, 0, sizeof(real) * (M - t - 1));
            }
            // keys j0.. are seen by queries t >= j0 (P and dS are 0 above the diagonal)
            for (int j0 = 0; j0 < M; j0 += ATT_B) {
                int nj = M - j0 < ATT_B ? M - j0 : ATT_B;
                const int64_t o = (int64_t)j0 * L + j0;
                smm(1, nj, hd, M - j0, P + o, 1, L, G + (int64_t)j0 * d, d, dV + (int64_t)j0 * C3,
                    C3);
                smm(1, nj, hd, M - j0, dS + o, 1, L, Q + (int64_t)j0 * C3, C3,
                    dK + (int64_t)j0 * C3, C3);
            }
            for (int t0 = 0; t0 < M; t0 += ATT_B) {
                int nq = M - t0 < ATT_B ? M - t0 : ATT_B;
                smm(1, nq, hd, t0 + nq, dS + (int64_t)t0 * L, L, 1, K, C3, dQ + (int64_t)t0 * C3,
                    C3);
            }
        }
    }
}
