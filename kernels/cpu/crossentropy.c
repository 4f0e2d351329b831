// crossentropy.c: softmax cross-entropy over every item, with the tied item
// table wte[1:] as the output layer (class c is item c+1; row 0, padding, is
// never a class). Logits of rb rows at a time live in scratch[rb, V-1].
#include <math.h>
#include <stdint.h>

#include "blas.h"
#include "kernels.h"
#include "on_cuda.h"
#include "vmath.h"

double crossentropy_tied(real* dh, real* dwte, const real* h, const real* wte,
                         const int32_t* targets, int R, int d, int V, real scale, real* scratch,
                         int rb) {
    // dh[R,d], dwte[V,d], h[R,d], wte[V,d], targets[R], scratch[rb, V-1]
    double loss = 0;
    PROF_FLOPS(6.0 * R * d * (V - 1));  // the logits, dh and dwte products
    ON_CUDA_VALUE(crossentropy_tied, loss, dh, dwte, h, wte, targets, R, d, V, scale, scratch, rb);
    const int N = V - 1;
    const real* items = wte + d;
    real* ditems = dwte ? dwte + d : NULL;
    const int grad = dh != NULL || dwte != NULL;
    int r0 = 0;
    while (r0 < R) {
        // a block starts at a scored row and ends at one: ignored rows at the
        // ends (left padding) cost no gemm work
        if (targets[r0] == 0) {
            r0++;
            continue;
        }
        int n = R - r0 < rb ? R - r0 : rb;
        while (targets[r0 + n - 1] == 0) n--;
        const real* hb = h + (int64_t)r0 * d;
        gemm(CblasNoTrans, CblasTrans, n, N, d, 1, hb, d, items, d, 0, scratch, N);
        double blk = 0;
#pragma omp parallel for reduction(+ : blk) schedule(static)
        for (int i = 0; i < n; i++) {
            real* z = scratch + (int64_t)i * N;
            int tg = targets[r0 + i];
            if (tg == 0) {
                if (grad)
                    for (int j = 0; j < N; j++) z[j] = 0;
                continue;
            }
            real mx = z[0];
#pragma omp simd reduction(max : mx)
            for (int j = 1; j < N; j++) mx = z[j] > mx ? z[j] : mx;
            real zt = z[tg - 1];
            // the row keeps exp(z - max), so the gradient pass needs no second exp
            real sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < N; j++) {
                z[j] = vexp(z[j] - mx);
                sum += z[j];
            }
            // cppcheck-suppress invalidFunctionArg ; sum >= 1, the max term
            blk += (double)mx + log((double)sum) - (double)zt;
            if (grad) {
                // dloss/dlogits = scale * (softmax - onehot(target))
                real f = scale / sum;
                for (int j = 0; j < N; j++) z[j] *= f;
                z[tg - 1] -= scale;
            }
        }
        loss += blk;
        if (dh)
            gemm(CblasNoTrans, CblasNoTrans, n, d, N, 1, scratch, N, items, d, 1,
                 dh + (int64_t)r0 * d, d);
        if (ditems) gemm(CblasTrans, CblasNoTrans, N, d, n, 1, scratch, N, hb, d, 1, ditems, d);
        r0 += n;
    }
    return loss;
}

void crossentropy_tied_into(double* loss, real* dh, real* dwte, const real* h, const real* wte,
                            const int32_t* targets, int R, int d, int V, real scale, real* scratch,
                            int rb) {
    PROF_FLOPS(6.0 * R * d * (V - 1));
    ON_CUDA(crossentropy_tied_into, loss, dh, dwte, h, wte, targets, R, d, V, scale, scratch, rb);
    *loss = crossentropy_tied(dh, dwte, h, wte, targets, R, d, V, scale, scratch, rb);
}
