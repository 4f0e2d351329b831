// layernorm.c: LayerNorm over the last dim as torch.nn.LayerNorm (eps 1e-5,
// biased variance), out = (inp - mean) * rstd * w + b.
#include <math.h>

#include "kernels.h"
#include "on_cuda.h"

#define LN_EPS 1e-5

void layernorm_forward(real* out, real* mean, real* rstd, const real* inp, const real* w,
                       const real* b, int R, int d) {
    ON_CUDA(layernorm_forward, out, mean, rstd, inp, w, b, R, d);
    // out[R,d], mean[R], rstd[R], inp[R,d], w[d], b[d]
#pragma omp parallel for
    for (int r = 0; r < R; r++) {
        const real* x = inp + (int64_t)r * d;
        real* o = out + (int64_t)r * d;
        real m = 0;
        for (int c = 0; c < d; c++) m += x[c];
        m /= d;
        // two passes: the variance of shifted values does not cancel
        real v = 0;
        for (int c = 0; c < d; c++) v += (x[c] - m) * (x[c] - m);
        v /= d;
        real s = (real)1 / (real)sqrt(v + (real)LN_EPS);
        for (int c = 0; c < d; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        mean[r] = m;
        rstd[r] = s;
    }
}

void layernorm_backward(real* dinp, real* dw, real* db, const real* dout, const real* inp,
                        const real* w, const real* mean, const real* rstd, int R, int d) {
    ON_CUDA(layernorm_backward, dinp, dw, db, dout, inp, w, mean, rstd, R, d);
    // dinp[R,d], dw[d], db[d], dout[R,d], inp[R,d], w[d], mean[R], rstd[R]
    if (dinp) {
#pragma omp parallel for
        for (int r = 0; r < R; r++) {
            const real* x = inp + (int64_t)r * d;
            const real* g = dout + (int64_t)r * d;
            real* dx = dinp + (int64_t)r * d;
            real m = mean[r], s = rstd[r];
            // dnorm = w * dout; dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
            real mdn = 0, mdnn = 0;
            for (int c = 0; c < d; c++) {
                real dn = w[c] * g[c];
                mdn += dn;
                mdnn += dn * (x[c] - m) * s;
            }
            mdn /= d;
            mdnn /= d;
            for (int c = 0; c < d; c++) dx[c] += s * (w[c] * g[c] - mdn - (x[c] - m) * s * mdnn);
        }
    }
    // dw, db sum over rows; serial keeps them race-free and R*d is small
    if (dw || db) {
        for (int r = 0; r < R; r++) {
            const real* x = inp + (int64_t)r * d;
            const real* g = dout + (int64_t)r * d;
            real m = mean[r], s = rstd[r];
            if (dw)
                for (int c = 0; c < d; c++) dw[c] += g[c] * (x[c] - m) * s;
            if (db)
                for (int c = 0; c < d; c++) db[c] += g[c];
        }
    }
}
