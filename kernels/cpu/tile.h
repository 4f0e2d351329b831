// tile.h (private to kernels/cpu): smm, the small matrix product of the
// attention kernels, C[M,N] = A[M,K] @ B[K,N] (acc = 0) or C += A @ B (acc = 1),
// register-tiled with GCC vector extensions. It runs inside OpenMP tasks,
// where BLAS may not be called. Element (i,k) of A is A[i*ars + k*acs], so A
// may be a transposed view; rows of B are contiguous, B(k,j) = B[k*ldb + j];
// C(i,j) = C[i*ldc + j]. Also pack_t, the transpose that turns K or V rows
// into such a B.
#ifndef ELASTIC_CPU_TILE_H
#define ELASTIC_CPU_TILE_H

#include <stddef.h>

#include "kernels.h"

// one vector register: 16 floats with AVX-512, 8 with AVX, 4 otherwise
#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define VL ((int)(VBYTES / sizeof(real)))
typedef real vreal __attribute__((vector_size(VBYTES), aligned(sizeof(real)), may_alias));

static inline vreal vload(const real* p) { return *(const vreal*)p; }
static inline void vstore(real* p, vreal v) { *(vreal*)p = v; }

// 4 rows x 2 vectors of C in 8 accumulators, one broadcast of A per FMA pair
static inline void tile_4x2(int acc, int K, const real* const* a, ptrdiff_t acs, const real* B,
                            ptrdiff_t ldb, real* const* c) {
    vreal c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
    for (int k = 0; k < K; k++) {
        vreal b0 = vload(B + k * ldb), b1 = vload(B + k * ldb + VL);
        real a0 = a[0][k * acs], a1 = a[1][k * acs], a2 = a[2][k * acs], a3 = a[3][k * acs];
        c00 += a0 * b0, c01 += a0 * b1;
        c10 += a1 * b0, c11 += a1 * b1;
        c20 += a2 * b0, c21 += a2 * b1;
        c30 += a3 * b0, c31 += a3 * b1;
    }
    if (acc) {
        c00 += vload(c[0]), c01 += vload(c[0] + VL), c10 += vload(c[1]), c11 += vload(c[1] + VL);
        c20 += vload(c[2]), c21 += vload(c[2] + VL), c30 += vload(c[3]), c31 += vload(c[3] + VL);
    }
    vstore(c[0], c00), vstore(c[0] + VL, c01), vstore(c[1], c10), vstore(c[1] + VL, c11);
    vstore(c[2], c20), vstore(c[2] + VL, c21), vstore(c[3], c30), vstore(c[3] + VL, c31);
}

static inline void tile_4x1(int acc, int K, const real* const* a, ptrdiff_t acs, const real* B,
                            ptrdiff_t ldb, real* const* c) {
    vreal c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
    for (int k = 0; k < K; k++) {
        vreal b0 = vload(B + k * ldb);
        c0 += a[0][k * acs] * b0, c1 += a[1][k * acs] * b0;
        c2 += a[2][k * acs] * b0, c3 += a[3][k * acs] * b0;
    }
    if (acc) c0 += vload(c[0]), c1 += vload(c[1]), c2 += vload(c[2]), c3 += vload(c[3]);
    vstore(c[0], c0), vstore(c[1], c1), vstore(c[2], c2), vstore(c[3], c3);
}

// the last n < VL columns, one dot product each
static inline void tile_4xr(int acc, int K, int n, const real* const* a, ptrdiff_t acs,
                            const real* B, ptrdiff_t ldb, real* const* c) {
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < n; j++) {
            real s = 0;
            for (int k = 0; k < K; k++) s += a[r][k * acs] * B[k * ldb + j];
            c[r][j] = acc ? c[r][j] + s : s;
        }
}

static inline void smm(int acc, int M, int N, int K, const real* A, ptrdiff_t ars, ptrdiff_t acs,
                       const real* B, ptrdiff_t ldb, real* C, ptrdiff_t ldc) {
    // rows past M (the last tile of 1..3 rows) re-read row 0 of the tile and
    // write into `spare`, so every tile runs the vector code
    real spare[2 * VBYTES / sizeof(real)] = {0};
    for (int i = 0; i < M; i += 4) {
        const real* a[4];
        real* c[4];
        for (int r = 0; r < 4; r++) a[r] = A + (ptrdiff_t)(i + (i + r < M ? r : 0)) * ars;
        int j = 0;
        for (; j + 2 * VL <= N; j += 2 * VL) {
            for (int r = 0; r < 4; r++) c[r] = i + r < M ? C + (ptrdiff_t)(i + r) * ldc + j : spare;
            tile_4x2(acc, K, a, acs, B + j, ldb, c);
        }
        for (; j + VL <= N; j += VL) {
            for (int r = 0; r < 4; r++) c[r] = i + r < M ? C + (ptrdiff_t)(i + r) * ldc + j : spare;
            tile_4x1(acc, K, a, acs, B + j, ldb, c);
        }
        if (j < N) {
            for (int r = 0; r < 4; r++) c[r] = i + r < M ? C + (ptrdiff_t)(i + r) * ldc + j : spare;
            tile_4xr(acc, K, N - j, a, acs, B + j, ldb, c);
        }
    }
}

// T[c*ldt + j] = X[j*ldx + c] for j < n, c < hd: n rows of width hd become columns
static inline void pack_t(real* T, ptrdiff_t ldt, const real* X, ptrdiff_t ldx, int n, int hd) {
    for (int j = 0; j < n; j++)
        for (int c = 0; c < hd; c++) T[(ptrdiff_t)c * ldt + j] = X[(ptrdiff_t)j * ldx + c];
}

#endif
