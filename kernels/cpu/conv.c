// conv.c: RecGRELA's causal depthwise convolution (the local rank-augmentation
// branch) and the elementwise SiLU and product that go with it.
#include <stdint.h>

#include "kernels.h"
#include "on_cuda.h"
#include "vmath.h"

// channels per block in the weight-gradient sums: each thread owns whole blocks,
// so dw and dbias need no atomics and their sums do not depend on the thread count
#define CONV_CB 16

void conv_causal_forward(real* out, const real* inp, const real* w, const real* bias,
                         const int32_t* pad, int B, int L, int d, int K) {
    ON_CUDA(conv_causal_forward, out, inp, w, bias, pad, B, L, d, K);
    // out[B,L,d], inp[B,L,d], w[d,K], bias[d]
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++) {
            real* o = out + ((int64_t)b * L + t) * d;
            for (int c = 0; c < d; c++) o[c] = bias[c];
            // taps reaching before pad[b] read padding: they are left out, not zeros in
            for (int i = 0; i < K && t - i >= pad[b]; i++) {
                const real* x = inp + ((int64_t)b * L + t - i) * d;
                for (int c = 0; c < d; c++) o[c] += w[(int64_t)c * K + i] * x[c];
            }
        }
}

void conv_causal_backward(real* dinp, real* dw, real* dbias, const real* dout, const real* inp,
                          const real* w, const int32_t* pad, int B, int L, int d, int K) {
    ON_CUDA(conv_causal_backward, dinp, dw, dbias, dout, inp, w, pad, B, L, d, K);
    // dinp[B,L,d], dw[d,K], dbias[d], dout[B,L,d], inp[B,L,d], w[d,K]
    if (dinp) {
        // dinp[b,s] = sum_i w[:,i] * dout[b,s+i]; padding inputs are never read
#pragma omp parallel for collapse(2)
        for (int b = 0; b < B; b++)
            for (int s = 0; s < L; s++) {
                if (s < pad[b]) continue;
                real* dx = dinp + ((int64_t)b * L + s) * d;
                for (int i = 0; i < K && s + i < L; i++) {
                    const real* g = dout + ((int64_t)b * L + s + i) * d;
                    for (int c = 0; c < d; c++) dx[c] += w[(int64_t)c * K + i] * g[c];
                }
            }
    }
    if (!dw && !dbias) return;
    int nblk = (d + CONV_CB - 1) / CONV_CB;
#pragma omp parallel for
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * CONV_CB, cn = d - c0 < CONV_CB ? d - c0 : CONV_CB;
        real acc[CONV_CB];
        // dbias sums dout over every position: a padding output is the bias alone
        if (dbias) {
            for (int c = 0; c < cn; c++) acc[c] = 0;
            for (int64_t r = 0; r < (int64_t)B * L; r++)
                for (int c = 0; c < cn; c++) acc[c] += dout[r * d + c0 + c];
            for (int c = 0; c < cn; c++) dbias[c0 + c] += acc[c];
        }
        if (dw)
            for (int i = 0; i < K; i++) {
                for (int c = 0; c < cn; c++) acc[c] = 0;
                for (int b = 0; b < B; b++) {
                    for (int t = pad[b] + i; t < L; t++) {
                        const real* g = dout + ((int64_t)b * L + t) * d + c0;
                        const real* x = inp + ((int64_t)b * L + t - i) * d + c0;
                        for (int c = 0; c < cn; c++) acc[c] += g[c] * x[c];
                    }
                }
                for (int c = 0; c < cn; c++) dw[(int64_t)(c0 + c) * K + i] += acc[c];
            }
    }
}

// silu(x) = x * sigmoid(x) = x / (1 + exp(-x)); exp overflowing to inf gives -0, the limit
void silu_forward(real* out, const real* inp, int64_t n) {
    ON_CUDA(silu_forward, out, inp, n);
    // out[n], inp[n]; out may alias inp
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) out[i] = inp[i] / (1 + vexp(-inp[i]));
}

void silu_backward(real* dinp, const real* inp, const real* dout, int64_t n) {
    ON_CUDA(silu_backward, dinp, inp, dout, n);
    // dinp[n], inp[n], dout[n]
    // d/dx = s + x s (1 - s) with s = sigmoid(x)
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        real x = inp[i];
        real s = 1 / (1 + vexp(-x));
        dinp[i] += dout[i] * s * (1 + x * (1 - s));
    }
}

void mul_forward(real* out, const real* a, const real* b, int64_t n) {
    ON_CUDA(mul_forward, out, a, b, n);
    // out[n], a[n], b[n]; out may alias a or b
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void mul_backward(real* da, real* db, const real* a, const real* b, const real* dout, int64_t n) {
    ON_CUDA(mul_backward, da, db, a, b, dout, n);
    // da[n], db[n], a[n], b[n], dout[n]
    if (da)
#pragma omp parallel for simd
        for (int64_t i = 0; i < n; i++) da[i] += b[i] * dout[i];
    if (db)
#pragma omp parallel for simd
        for (int64_t i = 0; i < n; i++) db[i] += a[i] * dout[i];
}
