// linear_attention.c: RecGRELA's causal linear attention (DESIGN §3), chunk-wise.
// Per (b,h) the items p0 = pad[b]..L-1 are cut into chunks of C positions
// counted from p0. For query t of a chunk starting at c0,
//   num_t = qr_t S + sum_{c0<=j<=t} (qr_t.kr_j) v_j,   S = sum_{p0<=j<c0} kr_j v_j^T
//   den_t = qf_t . z_t + 1e-6,                          z_t = sum_{p0<=j<=t} kf_j
// and out_t = num_t / den_t. S (hd x hd) is carried across chunks; inside a
// chunk the masked C x C product runs as LA_BQ x LA_BK tiles of smm, so a
// thread holds a few tiles and S, never C x C. z is a running sum (O(L*hd)).
// Backward, with g_t = dout_t / den_t and D_t = -(dout_t . out_t) / den_t:
//   dqr_t = g_t S_t^T,  dkr_j = sum_{t>=j} (g_t.v_j) qr_t,  dv_j = sum_{t>=j} (qr_t.kr_j) g_t,
//   dqf_t = D_t z_t,    dkf_j = sum_{t>=j} D_t qf_t.
// Pass 1 runs forward over chunks: the intra-chunk tiles (all of dqr's, dkr's
// and dv's same-chunk terms) and dqr's state term from S^T rebuilt chunk by
// chunk, with dqf from the running z. Pass 2 runs backward over chunks with
// the reverse state R = sum over later chunks of qr_t g_t^T: dv_j += kr_j R,
// dkr_j += v_j R^T, and dkf from a running suffix sum. Each (b,h) is one OpenMP
// task writing only its own head's columns, so nothing races.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"
#include "tile.h"
#include "vmath.h"

#define LA_BQ 64  // query rows per tile
#define LA_BK 64  // key rows per tile
#define LA_EPS 1e-6

static inline int imin(int a, int b) { return a < b ? a : b; }

// end of the chunk starting at c0, without overflowing c0 + C
static inline int chunk_end(int c0, int C, int L) { return L - c0 > C ? c0 + C : L; }

// zeroes s[i*LA_BK + jj] unless key j0 + jj <= query t0 + i (shift = t0 - j0)
static inline void causal_mask(real* s, int nq, int nj, int shift) {
    for (int i = 0; i < nq; i++) {
        int nv = imin(i + shift + 1, nj);
        for (int jj = nv > 0 ? nv : 0; jj < nj; jj++) s[i * LA_BK + jj] = 0;
    }
}

// g[i*hd + e] = dout[t0+i, e] / den[t0+i]: the tile of scaled output gradients
static inline void grad_tile(real* g, const real* G, const real* dn, int t0, int nq, int d,
                             int hd) {
    for (int i = 0; i < nq; i++) {
        const real* gt = G + (ptrdiff_t)(t0 + i) * d;
        const real inv = 1 / dn[t0 + i];
        for (int e = 0; e < hd; e++) g[i * hd + e] = gt[e] * inv;
    }
}

void linear_attention_forward(real* out, real* den, const real* qr, const real* kr, const real* qf,
                              const real* kf, const real* v, const int32_t* pad, int B, int L,
                              int d, int H, int C) {
    ON_CUDA(linear_attention_forward, out, den, qr, kr, qf, kf, v, pad, B, L, d, H, C);
    // out, qr, kr, qf, kf, v [B,L,d], den[B,H,L] (0 for padding queries), pad[B]
    const int hd = d / H;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const int p0 = pad[b] < 0 ? 0 : pad[b] < L ? pad[b] : L;
            const ptrdiff_t row = (ptrdiff_t)b * L * d + h * hd;
            const real *Qr = qr + row, *Kr = kr + row, *Qf = qf + row, *Kf = kf + row;
            const real* V = v + row;
            real* O = out + row;
            real* dn = den + ((ptrdiff_t)b * H + h) * L;
            real S[hd * hd], z[hd], s[LA_BQ * LA_BK], kt[hd * LA_BK];
            memset(S, 0, sizeof(S));
            memset(z, 0, sizeof(z));
            for (int t = 0; t < p0; t++) {
                memset(O + (ptrdiff_t)t * d, 0, sizeof(real) * hd);
                dn[t] = 0;
            }
            for (int c0 = p0, c1; c0 < L; c0 = c1) {
                c1 = chunk_end(c0, C, L);
                for (int t0 = c0; t0 < c1; t0 += LA_BQ) {
                    const int nq = imin(c1 - t0, LA_BQ);
                    const real* Qb = Qr + (ptrdiff_t)t0 * d;
                    real* Ob = O + (ptrdiff_t)t0 * d;
                    // earlier chunks through the state, then the chunk's keys c0..t
                    smm(0, nq, hd, hd, Qb, d, 1, S, hd, Ob, d);
                    for (int j0 = c0; j0 < t0 + nq; j0 += LA_BK) {
                        const int nj = imin(t0 + nq - j0, LA_BK);
                        pack_t(kt, LA_BK, Kr + (ptrdiff_t)j0 * d, d, nj, hd);
                        smm(0, nq, nj, hd, Qb, d, 1, kt, LA_BK, s, LA_BK);
                        causal_mask(s, nq, nj, t0 - j0);
                        smm(1, nq, hd, nj, s, LA_BK, 1, V + (ptrdiff_t)j0 * d, d, Ob, d);
                    }
                    for (int i = 0; i < nq; i++) {
                        const ptrdiff_t to = (ptrdiff_t)(t0 + i) * d;
                        for (int e = 0; e < hd; e++) z[e] += Kf[to + e];
                        const real dt = dot(Qf + to, z, hd) + (real)LA_EPS;
                        dn[t0 + i] = dt;
                        for (int e = 0; e < hd; e++) O[to + e] /= dt;
                    }
                }
                // S += Kr_chunk^T V_chunk
                if (c1 < L)
                    smm(1, hd, hd, c1 - c0, Kr + (ptrdiff_t)c0 * d, 1, d, V + (ptrdiff_t)c0 * d, d,
                        S, hd);
            }
        }
    }
}

void linear_attention_backward(real* dqr, real* dkr, real* dqf, real* dkf, real* dv,
                               const real* dout, const real* out, const real* den, const real* qr,
                               const real* kr, const real* qf, const real* kf, const real* v,
                               const int32_t* pad, int B, int L, int d, int H, int C) {
    ON_CUDA(linear_attention_backward, dqr, dkr, dqf, dkf, dv, dout, out, den, qr, kr, qf, kf, v,
            pad, B, L, d, H, C);
    // dqr, dkr, dqf, dkf, dv, dout, out [B,L,d] (gradients +=); the rest as forward
    const int hd = d / H;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const int p0 = pad[b] < 0 ? 0 : pad[b] < L ? pad[b] : L;
            if (p0 == L) continue;
            const ptrdiff_t row = (ptrdiff_t)b * L * d + h * hd;
            const real *Qr = qr + row, *Kr = kr + row, *Qf = qf + row, *Kf = kf + row;
            const real *V = v + row, *G = dout + row, *O = out + row;
            real* dQr = dqr ? dqr + row : NULL;
            real* dKr = dkr ? dkr + row : NULL;
            real* dQf = dqf ? dqf + row : NULL;
            real* dKf = dkf ? dkf + row : NULL;
            real* dV = dv ? dv + row : NULL;
            const real* dn = den + ((ptrdiff_t)b * H + h) * L;
            // St = S^T in pass 1, R in pass 2; Rt = R^T; z: prefix of kf, then suffix of D qf
            real St[hd * hd], Rt[hd * hd], z[hd];
            real g[LA_BQ * hd], a[LA_BQ * LA_BK], dp[LA_BQ * LA_BK];
            real kt[hd * LA_BK], vt[hd * LA_BK];

            // pass 1, forward over chunks
            memset(St, 0, sizeof(St));
            memset(z, 0, sizeof(z));
            for (int c0 = p0, c1; c0 < L; c0 = c1) {
                c1 = chunk_end(c0, C, L);
                for (int t0 = c0; t0 < c1; t0 += LA_BQ) {
                    const int nq = imin(c1 - t0, LA_BQ);
                    const real* Qb = Qr + (ptrdiff_t)t0 * d;
                    if (dQr || dKr || dV) grad_tile(g, G, dn, t0, nq, d, hd);
                    if (dQf)
                        for (int t = t0; t < t0 + nq; t++) {
                            const ptrdiff_t to = (ptrdiff_t)t * d;
                            for (int e = 0; e < hd; e++) z[e] += Kf[to + e];
                            const real Dt = -dot(G + to, O + to, hd) / dn[t];
                            for (int e = 0; e < hd; e++) dQf[to + e] += Dt * z[e];
                        }
                    if (dQr) smm(1, nq, hd, hd, g, hd, 1, St, hd, dQr + (ptrdiff_t)t0 * d, d);
                    // the chunk's keys j0.. <= t: a = qr.kr (for dv), dp = g.v (for dqr, dkr)
                    for (int j0 = c0; j0 < t0 + nq && (dQr || dKr || dV); j0 += LA_BK) {
                        const int nj = imin(t0 + nq - j0, LA_BK);
                        const ptrdiff_t jo = (ptrdiff_t)j0 * d;
                        if (dQr || dKr) {
                            pack_t(vt, LA_BK, V + jo, d, nj, hd);
                            smm(0, nq, nj, hd, g, hd, 1, vt, LA_BK, dp, LA_BK);
                            causal_mask(dp, nq, nj, t0 - j0);
                        }
                        if (dV) {
                            pack_t(kt, LA_BK, Kr + jo, d, nj, hd);
                            smm(0, nq, nj, hd, Qb, d, 1, kt, LA_BK, a, LA_BK);
                            causal_mask(a, nq, nj, t0 - j0);
                            smm(1, nj, hd, nq, a, 1, LA_BK, g, hd, dV + jo, d);
                        }
                        if (dKr) smm(1, nj, hd, nq, dp, 1, LA_BK, Qb, d, dKr + jo, d);
                        if (dQr)
                            smm(1, nq, hd, nj, dp, LA_BK, 1, Kr + jo, d, dQr + (ptrdiff_t)t0 * d,
                                d);
                    }
                }
                // S^T += V_chunk^T Kr_chunk
                if (dQr && c1 < L)
                    smm(1, hd, hd, c1 - c0, V + (ptrdiff_t)c0 * d, 1, d, Kr + (ptrdiff_t)c0 * d, d,
                        St, hd);
            }

            // pass 2, backward over chunks with R = sum over later chunks of qr_t g_t^T
            if (!dKr && !dV && !dKf) continue;
            real* R = St;
            memset(R, 0, sizeof(St));
            memset(Rt, 0, sizeof(Rt));
            memset(z, 0, sizeof(z));
            const int M = L - p0, nch = M / C + (M % C != 0);
            for (int c = nch - 1; c >= 0; c--) {
                const int c0 = p0 + c * C, c1 = chunk_end(c0, C, L);
                if (c < nch - 1)
                    for (int j0 = c0; j0 < c1; j0 += LA_BK) {
                        const int nj = imin(c1 - j0, LA_BK);
                        const ptrdiff_t jo = (ptrdiff_t)j0 * d;
                        if (dV) smm(1, nj, hd, hd, Kr + jo, d, 1, R, hd, dV + jo, d);
                        if (dKr) smm(1, nj, hd, hd, V + jo, d, 1, Rt, hd, dKr + jo, d);
                    }
                if (dKf)
                    for (int t = c1 - 1; t >= c0; t--) {
                        const ptrdiff_t to = (ptrdiff_t)t * d;
                        const real Dt = -dot(G + to, O + to, hd) / dn[t];
                        for (int e = 0; e < hd; e++) z[e] += Dt * Qf[to + e];
                        for (int e = 0; e < hd; e++) dKf[to + e] += z[e];
                    }
                if (c == 0 || !(dV || dKr)) continue;
                for (int t0 = c0; t0 < c1; t0 += LA_BQ) {
                    const int nq = imin(c1 - t0, LA_BQ);
                    grad_tile(g, G, dn, t0, nq, d, hd);
                    smm(1, hd, hd, nq, Qr + (ptrdiff_t)t0 * d, 1, d, g, hd, R, hd);
                }
                if (dKr)
                    for (int x = 0; x < hd; x++)
                        for (int y = 0; y < hd; y++) Rt[y * hd + x] = R[x * hd + y];
            }
        }
    }
}
