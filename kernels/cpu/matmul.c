// matmul.c: the linear layer through BLAS, out[R,OC] = inp[R,IC] @ w[OC,IC]^T + bias[OC].
#include <stdint.h>

#include "blas.h"
#include "kernels.h"
#include "on_cuda.h"

void matmul_forward(real* out, const real* inp, const real* w, const real* bias, int R, int IC,
                    int OC) {
    PROF_FLOPS(2.0 * R * IC * OC);
    ON_CUDA(matmul_forward, out, inp, w, bias, R, IC, OC);
    // out[R,OC], inp[R,IC], w[OC,IC], bias[OC] or NULL
    if (bias) {
        // bias rows first, then one gemm with beta = 1 adds the product
#pragma omp parallel for
        for (int r = 0; r < R; r++)
            for (int o = 0; o < OC; o++) out[(int64_t)r * OC + o] = bias[o];
    }
    gemm(CblasNoTrans, CblasTrans, R, OC, IC, 1, inp, IC, w, IC, bias ? 1 : 0, out, OC);
}

void matmul_backward(real* dinp, real* dw, real* dbias, const real* dout, const real* inp,
                     const real* w, int R, int IC, int OC) {
    PROF_FLOPS(4.0 * R * IC * OC);  // dinp and dw
    ON_CUDA(matmul_backward, dinp, dw, dbias, dout, inp, w, R, IC, OC);
    // dinp[R,IC], dw[OC,IC], dbias[OC], dout[R,OC], inp[R,IC], w[OC,IC]
    if (dinp) gemm(CblasNoTrans, CblasNoTrans, R, IC, OC, 1, dout, OC, w, IC, 1, dinp, IC);
    if (dw) gemm(CblasTrans, CblasNoTrans, OC, IC, R, 1, dout, OC, inp, IC, 1, dw, IC);
    if (dbias) {
        // column sums in chunks of 16 columns per task: race-free, rows read in order
#pragma omp parallel for
        for (int o0 = 0; o0 < OC; o0 += 16) {
            int n = OC - o0 < 16 ? OC - o0 : 16;
            real acc[16] = {0};
            for (int r = 0; r < R; r++) {
                const real* g = dout + (int64_t)r * OC + o0;
                for (int i = 0; i < n; i++) acc[i] += g[i];
            }
            for (int i = 0; i < n; i++) dbias[o0 + i] += acc[i];
        }
    }
}
