// embedding.c: token + position embedding, out[B,L,d] = wte[inp[b,t]] + wpe[t].
#include <stdint.h>

#include "kernels.h"
#include "on_cuda.h"

void embedding_forward(real* out, const int32_t* inp, const real* wte, const real* wpe, int B,
                       int L, int d) {
    ON_CUDA(embedding_forward, out, inp, wte, wpe, B, L, d);
    // out[B,L,d], inp[B,L], wte[V,d], wpe[L,d]
#pragma omp parallel for
    for (int64_t bt = 0; bt < (int64_t)B * L; bt++) {
        real* o = out + bt * d;
        const real* e = wte + (int64_t)inp[bt] * d;
        if (wpe) {
            const real* p = wpe + (bt % L) * d;
            for (int c = 0; c < d; c++) o[c] = e[c] + p[c];
        } else {  // models without absolute positions
            for (int c = 0; c < d; c++) o[c] = e[c];
        }
    }
}

void embedding_backward(real* dwte, real* dwpe, const real* dout, const int32_t* inp, int B, int L,
                        int d) {
    ON_CUDA(embedding_backward, dwte, dwpe, dout, inp, B, L, d);
    // dwte[V,d], dwpe[L,d], dout[B,L,d], inp[B,L]
    // serial: ids repeat across rows, and B*L*d adds are cheap next to the matmuls
    if (dwte) {
        for (int64_t bt = 0; bt < (int64_t)B * L; bt++) {
            real* g = dwte + (int64_t)inp[bt] * d;
            const real* o = dout + bt * d;
            for (int c = 0; c < d; c++) g[c] += o[c];
        }
    }
    if (dwpe) {
#pragma omp parallel for
        for (int t = 0; t < L; t++) {
            real* g = dwpe + (int64_t)t * d;
            for (int b = 0; b < B; b++) {
                const real* o = dout + ((int64_t)b * L + t) * d;
                for (int c = 0; c < d; c++) g[c] += o[c];
            }
        }
    }
}
