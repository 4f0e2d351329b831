// dispatch.c: ELASTIC's dispatch attention (DESIGN §3 step 3). Query t of chunk
// c attends, one softmax, to the k interests of its chunk (unrotated scores)
// and to the local keys max(cC, pad[b])..t (RoPE scores). Flash-style like
// attention_fused.c: an online softmax over blocks of DP_BK keys, interests
// first, for blocks of DP_BQ queries; lse[B,H,L] is kept and backward
// recomputes P = exp(s - lse) with D_t = dout_t . out_t. Per thread it holds a
// few tiles (DP_BQ x DP_BK and hd x DP_BK), never C x C. Each (b,h,c) is one
// OpenMP task: it writes only its chunk's rows and its head's columns, and it
// alone touches dki/dvi[b,c,:,head], so nothing races.
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"
#include "tile.h"
#include "vmath.h"

#define DP_BQ 64
#define DP_BK 64

static inline int imin(int a, int b) { return a < b ? a : b; }

// RoPE of n rows of width hd at positions pos0, pos0+1, ...: pair i of a row,
// (x0, x1) = (x[2i], x[2i+1]) at angle a = pos * 10000^(-2i/hd), becomes
// (x0 cos a - x1 sin a, x0 sin a + x1 cos a); inv applies the transpose (the
// inverse), which carries a gradient back. Row r of src is src[r*lds..];
// element (r,c) of dst is dst[r*drs + c*dcs], so dst may be a transposed tile;
// acc adds into dst. The angles advance row by row by the angle-sum formula in
// double, from one cos/sin per pair per call (rows per call <= 64). An odd
// last dimension has no pair and passes through.
static void rope(real* dst, ptrdiff_t drs, ptrdiff_t dcs, const real* src, ptrdiff_t lds, int n,
                 int pos0, int hd, int inv, int acc) {
    const int np = hd / 2;
    double cs[np > 0 ? np : 1], sn[np > 0 ? np : 1], dcs1[np > 0 ? np : 1], dsn1[np > 0 ? np : 1];
    for (int i = 0; i < np; i++) {
        const double th = pow(10000.0, -2.0 * i / hd);
        cs[i] = cos(pos0 * th), sn[i] = sin(pos0 * th);
        dcs1[i] = cos(th), dsn1[i] = sin(th);
    }
    const double sg = inv ? -1 : 1;
    for (int r = 0; r < n; r++) {
        const real* x = src + (ptrdiff_t)r * lds;
        real* y = dst + (ptrdiff_t)r * drs;
        for (int i = 0; i < np; i++) {
            const double x0 = x[2 * i], x1 = x[2 * i + 1], c = cs[i], s = sg * sn[i];
            const real y0 = (real)(x0 * c - x1 * s), y1 = (real)(x0 * s + x1 * c);
            real *p0 = y + (ptrdiff_t)(2 * i) * dcs, *p1 = y + (ptrdiff_t)(2 * i + 1) * dcs;
            *p0 = acc ? *p0 + y0 : y0;
            *p1 = acc ? *p1 + y1 : y1;
            const double cn = cs[i] * dcs1[i] - sn[i] * dsn1[i];
            sn[i] = sn[i] * dcs1[i] + cs[i] * dsn1[i];
            cs[i] = cn;
        }
        if (hd & 1) {
            real* p = y + (ptrdiff_t)(hd - 1) * dcs;
            *p = acc ? *p + x[hd - 1] : x[hd - 1];
        }
    }
}

// One block of raw scores si[0..nj) of one query, the first nv allowed, into
// the running max m, sum l of exp(s - m) and unnormalised output o[hd]: o and
// l are rescaled to the new max (exp(-inf) = 0 on the first block) and si
// becomes exp(scale * si - m), 0 where masked, ready to multiply the values.
static inline void softmax_step(real* si, int nv, int nj, real scale, real* m, real* l, real* o,
                                int hd) {
    real mb = *m;
#pragma omp simd reduction(max : mb)
    for (int j = 0; j < nv; j++) {
        si[j] *= scale;
        mb = si[j] > mb ? si[j] : mb;
    }
    if (mb > *m) {
        const real corr = (real)exp(*m - mb);
        *l *= corr;
        for (int c = 0; c < hd; c++) o[c] *= corr;
        *m = mb;
    }
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < nv; j++) {
        si[j] = vexp(si[j] - mb);
        sum += si[j];
    }
    *l += sum;
    for (int j = nv; j < nj; j++) si[j] = 0;
}

// Recomputes a block's probabilities and score gradients from the raw scores
// p[nq, ld] and dp = dout . v in ds[nq, ld]: p = exp(scale p - lse_t) and
// ds = scale p (dp - D_t) for the first nv(i) = clamp(i + shift, 0, nj) keys of
// row i (shift = nj for blocks with no mask), 0 after.
static inline void probs(real* p, real* ds, int nq, int nj, int shift, real scale, const real* lse,
                         const real* D) {
    for (int i = 0; i < nq; i++) {
        real *pi = p + i * DP_BK, *di = ds + i * DP_BK;
        int nv = i + shift < nj ? i + shift : nj;
        nv = nv > 0 ? nv : 0;
        const real lt = lse[i], Dt = D[i];
#pragma omp simd
        for (int j = 0; j < nv; j++) {
            pi[j] = vexp(scale * pi[j] - lt);
            di[j] = scale * pi[j] * (di[j] - Dt);
        }
        for (int j = nv; j < nj; j++) pi[j] = 0, di[j] = 0;
    }
}

void dispatch_forward(real* out, real* lse, const real* q, const real* kl, const real* vl,
                      const real* ki, const real* vi, const int32_t* pad, int B, int L, int d,
                      int H, int k, int C) {
    ON_CUDA(dispatch_forward, out, lse, q, kl, vl, ki, vi, pad, B, L, d, H, k, C);
    // out[B,L,d], lse[B,H,L], q, kl, vl [B,L,d], ki, vi [B,nc,k,d], pad[B]
    const int hd = d / H, nc = (L + C - 1) / C;
    const real scale = (real)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int c = 0; c < nc; c++) {
                // the chunk is c0..c1-1, its items t1..c1-1
                const int c0 = c * C, c1 = imin(c0 + C, L);
                const int t1 = pad[b] > c0 ? imin(pad[b], c1) : c0;
                const ptrdiff_t row = (ptrdiff_t)b * L * d + h * hd;
                const real *Q = q + row, *K = kl + row, *V = vl + row;
                const ptrdiff_t irow = ((ptrdiff_t)b * nc + c) * k * d + h * hd;
                const real *KI = ki + irow, *VI = vi + irow;
                real* O = out + row;
                real* ls = lse + ((ptrdiff_t)b * H + h) * L;
                real s[DP_BQ * DP_BK], m[DP_BQ], l[DP_BQ], qr[DP_BQ * hd], kt[hd * DP_BK];
                for (int t = c0; t < t1; t++) {
                    memset(O + (ptrdiff_t)t * d, 0, sizeof(real) * hd);
                    ls[t] = 0;
                }
                for (int t0 = t1; t0 < c1; t0 += DP_BQ) {
                    const int nq = imin(c1 - t0, DP_BQ);
                    real* Ob = O + (ptrdiff_t)t0 * d;
                    for (int i = 0; i < nq; i++) {
                        memset(Ob + (ptrdiff_t)i * d, 0, sizeof(real) * hd);
                        m[i] = -INFINITY, l[i] = 0;
                    }
                    // the chunk's interests, seen by every query of the chunk
                    for (int e0 = 0; e0 < k; e0 += DP_BK) {
                        const int ne = imin(k - e0, DP_BK);
                        pack_t(kt, DP_BK, KI + (ptrdiff_t)e0 * d, d, ne, hd);
                        smm(0, nq, ne, hd, Q + (ptrdiff_t)t0 * d, d, 1, kt, DP_BK, s, DP_BK);
                        for (int i = 0; i < nq; i++)
                            softmax_step(s + i * DP_BK, ne, ne, scale, m + i, l + i,
                                         Ob + (ptrdiff_t)i * d, hd);
                        smm(1, nq, hd, ne, s, DP_BK, 1, VI + (ptrdiff_t)e0 * d, d, Ob, d);
                    }
                    // the local keys t1..t, rotated
                    rope(qr, hd, 1, Q + (ptrdiff_t)t0 * d, d, nq, t0, hd, 0, 0);
                    for (int j0 = t1; j0 < t0 + nq; j0 += DP_BK) {
                        const int nj = imin(t0 + nq - j0, DP_BK);
                        rope(kt, 1, DP_BK, K + (ptrdiff_t)j0 * d, d, nj, j0, hd, 0, 0);
                        smm(0, nq, nj, hd, qr, hd, 1, kt, DP_BK, s, DP_BK);
                        for (int i = 0; i < nq; i++) {
                            // keys j0 + j <= t0 + i are allowed
                            int nv = imin(t0 + i - j0 + 1, nj);
                            nv = nv > 0 ? nv : 0;
                            softmax_step(s + i * DP_BK, nv, nj, scale, m + i, l + i,
                                         Ob + (ptrdiff_t)i * d, hd);
                        }
                        smm(1, nq, hd, nj, s, DP_BK, 1, V + (ptrdiff_t)j0 * d, d, Ob, d);
                    }
                    for (int i = 0; i < nq; i++) {
                        const real inv = 1 / l[i];
                        for (int e = 0; e < hd; e++) Ob[(ptrdiff_t)i * d + e] *= inv;
                        ls[t0 + i] = m[i] + (real)log(l[i]);
                    }
                }
            }
        }
    }
}

void dispatch_backward(real* dq, real* dkl, real* dvl, real* dki, real* dvi, const real* dout,
                       const real* out, const real* lse, const real* q, const real* kl,
                       const real* vl, const real* ki, const real* vi, const int32_t* pad, int B,
                       int L, int d, int H, int k, int C) {
    ON_CUDA(dispatch_backward, dq, dkl, dvl, dki, dvi, dout, out, lse, q, kl, vl, ki, vi, pad, B, L,
            d, H, k, C);
    // dq, dkl, dvl, dout, out [B,L,d], dki, dvi [B,nc,k,d], lse[B,H,L]; the rest as forward.
    // Per block: P = exp(s - lse), dS = scale P (dout V^T - D); dV += P^T dout,
    // dK += dS^T Q, dQ += dS K, with Q and K rotated for the local keys and
    // their gradients rotated back.
    const int hd = d / H, nc = (L + C - 1) / C;
    const real scale = (real)(1.0 / sqrt((double)hd));
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int c = 0; c < nc; c++) {
                const int c0 = c * C, c1 = imin(c0 + C, L);
                const int t1 = pad[b] > c0 ? imin(pad[b], c1) : c0;
                const ptrdiff_t row = (ptrdiff_t)b * L * d + h * hd;
                const real *Q = q + row, *K = kl + row, *V = vl + row;
                const real *G = dout + row, *O = out + row;
                real* dQ = dq ? dq + row : NULL;
                real* dK = dkl ? dkl + row : NULL;
                real* dV = dvl ? dvl + row : NULL;
                const ptrdiff_t irow = ((ptrdiff_t)b * nc + c) * k * d + h * hd;
                const real *KI = ki + irow, *VI = vi + irow;
                real* dKI = dki ? dki + irow : NULL;
                real* dVI = dvi ? dvi + irow : NULL;
                const real* ls = lse + ((ptrdiff_t)b * H + h) * L;
                real p[DP_BQ * DP_BK], ds[DP_BQ * DP_BK], D[DP_BQ];
                real qr[DP_BQ * hd], dqr[DP_BQ * hd], kr[DP_BK * hd], dkr[DP_BK * hd];
                real kt[hd * DP_BK], vt[hd * DP_BK];
                for (int t0 = t1; t0 < c1; t0 += DP_BQ) {
                    const int nq = imin(c1 - t0, DP_BQ);
                    const real *Qb = Q + (ptrdiff_t)t0 * d, *Gb = G + (ptrdiff_t)t0 * d;
                    for (int i = 0; i < nq; i++)
                        D[i] = dot(Gb + (ptrdiff_t)i * d, O + (ptrdiff_t)(t0 + i) * d, hd);
                    for (int e0 = 0; e0 < k; e0 += DP_BK) {
                        const int ne = imin(k - e0, DP_BK);
                        const ptrdiff_t eo = (ptrdiff_t)e0 * d;
                        pack_t(kt, DP_BK, KI + eo, d, ne, hd);
                        pack_t(vt, DP_BK, VI + eo, d, ne, hd);
                        smm(0, nq, ne, hd, Qb, d, 1, kt, DP_BK, p, DP_BK);
                        smm(0, nq, ne, hd, Gb, d, 1, vt, DP_BK, ds, DP_BK);
                        probs(p, ds, nq, ne, ne, scale, ls + t0, D);
                        if (dVI) smm(1, ne, hd, nq, p, 1, DP_BK, Gb, d, dVI + eo, d);
                        if (dKI) smm(1, ne, hd, nq, ds, 1, DP_BK, Qb, d, dKI + eo, d);
                        if (dQ)
                            smm(1, nq, hd, ne, ds, DP_BK, 1, KI + eo, d, dQ + (ptrdiff_t)t0 * d, d);
                    }
                    rope(qr, hd, 1, Qb, d, nq, t0, hd, 0, 0);
                    memset(dqr, 0, sizeof(real) * nq * hd);
                    for (int j0 = t1; j0 < t0 + nq; j0 += DP_BK) {
                        const int nj = imin(t0 + nq - j0, DP_BK);
                        const ptrdiff_t jo = (ptrdiff_t)j0 * d;
                        rope(kr, hd, 1, K + jo, d, nj, j0, hd, 0, 0);
                        pack_t(kt, DP_BK, kr, hd, nj, hd);
                        pack_t(vt, DP_BK, V + jo, d, nj, hd);
                        smm(0, nq, nj, hd, qr, hd, 1, kt, DP_BK, p, DP_BK);
                        smm(0, nq, nj, hd, Gb, d, 1, vt, DP_BK, ds, DP_BK);
                        // keys j0 + j <= t0 + i are allowed
                        probs(p, ds, nq, nj, t0 - j0 + 1, scale, ls + t0, D);
                        if (dV) smm(1, nj, hd, nq, p, 1, DP_BK, Gb, d, dV + jo, d);
                        if (dK) {
                            smm(0, nj, hd, nq, ds, 1, DP_BK, qr, hd, dkr, hd);
                            rope(dK + jo, d, 1, dkr, hd, nj, j0, hd, 1, 1);
                        }
                        if (dQ) smm(1, nq, hd, nj, ds, DP_BK, 1, kr, hd, dqr, hd);
                    }
                    if (dQ) rope(dQ + (ptrdiff_t)t0 * d, d, 1, dqr, hd, nq, t0, hd, 1, 1);
                }
            }
        }
    }
}
