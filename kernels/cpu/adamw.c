// adamw.c: AdamW as torch.optim.AdamW: decoupled weight decay, then Adam with
// bias correction (wd = 0 is Adam). t is the 1-based step.
#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "on_cuda.h"

void adamw_update(real* params, const real* grads, real* m, real* v, int64_t n, real lr, real beta1,
                  real beta2, real eps, real weight_decay, int64_t t) {
    ON_CUDA(adamw_update, params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t);
    // params[n], grads[n], m[n], v[n]
    // p -= lr wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    // p -= lr mhat / (sqrt(vhat) + eps), mhat = m / (1-b1^t), vhat = v / (1-b2^t)
    const real decay = 1 - lr * weight_decay;
    const real bc1 = (real)(1.0 - pow((double)beta1, (double)t));
    const real bc2 = (real)(1.0 - pow((double)beta2, (double)t));
    const real step = lr / bc1, rbc2 = (real)(1.0 / sqrt((double)bc2));
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        real g = grads[i];
        real mi = beta1 * m[i] + (1 - beta1) * g;
        real vi = beta2 * v[i] + (1 - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = params[i] * decay - step * mi / (sqrt(vi) * rbc2 + eps);
    }
}
