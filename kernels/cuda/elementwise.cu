// elementwise.cu: residual, GELU (tanh), SiLU, product, dropout and AdamW, as
// kernels.h defines them; one grid-stride loop each. Dropout draws the CPU's
// bits (the same counter-based generator), so masks agree across backends.
#include <math.h>

#include "common.cuh"

#define GRID(n) blocks_for(n, 256), 256, 0, cuda_stream()
#define FOR_N                                                               \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; \
         i += (int64_t)gridDim.x * blockDim.x)

__global__ void k_residual_forward(float* out, const float* a, const float* b, int64_t n) {
    FOR_N out[i] = a[i] + b[i];
}
__global__ void k_residual_backward(float* da, float* db, const float* dout, int64_t n) {
    FOR_N {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}
extern "C" void cuda_residual_forward(float* out, const float* a, const float* b, int64_t n) {
    if (n <= 0) return;
    k_residual_forward<<<GRID(n)>>>(out, a, b, n);
    launchCheck();
}
extern "C" void cuda_residual_backward(float* da, float* db, const float* dout, int64_t n) {
    if (n <= 0) return;
    k_residual_backward<<<GRID(n)>>>(da, db, dout, n);
    launchCheck();
}

#define GELU_C 0.7978845608028654f
#define GELU_A 0.044715f
__global__ void k_gelu_forward(float* out, const float* inp, int64_t n) {
    FOR_N {
        const float x = inp[i], u = GELU_C * (x + GELU_A * x * x * x);
        out[i] = x / (1.0f + expf(-2.0f * u));
    }
}
__global__ void k_gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
    FOR_N {
        const float x = inp[i], u = GELU_C * (x + GELU_A * x * x * x);
        const float du = GELU_C * (1.0f + 3.0f * GELU_A * x * x);
        const float s = 1.0f / (1.0f + expf(-2.0f * u));
        dinp[i] += dout[i] * (s + 2.0f * x * s * (1.0f - s) * du);
    }
}
extern "C" void cuda_gelu_forward(float* out, const float* inp, int64_t n) {
    if (n <= 0) return;
    k_gelu_forward<<<GRID(n)>>>(out, inp, n);
    launchCheck();
}
extern "C" void cuda_gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
    if (n <= 0) return;
    k_gelu_backward<<<GRID(n)>>>(dinp, inp, dout, n);
    launchCheck();
}

__global__ void k_silu_forward(float* out, const float* inp, int64_t n) {
    FOR_N out[i] = inp[i] / (1.0f + expf(-inp[i]));
}
__global__ void k_silu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
    FOR_N {
        const float s = 1.0f / (1.0f + expf(-inp[i]));
        dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
    }
}
extern "C" void cuda_silu_forward(float* out, const float* inp, int64_t n) {
    if (n <= 0) return;
    k_silu_forward<<<GRID(n)>>>(out, inp, n);
    launchCheck();
}
extern "C" void cuda_silu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
    if (n <= 0) return;
    k_silu_backward<<<GRID(n)>>>(dinp, inp, dout, n);
    launchCheck();
}

__global__ void k_mul_forward(float* out, const float* a, const float* b, int64_t n) {
    FOR_N out[i] = a[i] * b[i];
}
__global__ void k_mul_backward(float* da, float* db, const float* a, const float* b,
                               const float* dout, int64_t n) {
    FOR_N {
        if (da) da[i] += dout[i] * b[i];
        if (db) db[i] += dout[i] * a[i];
    }
}
extern "C" void cuda_mul_forward(float* out, const float* a, const float* b, int64_t n) {
    if (n <= 0) return;
    k_mul_forward<<<GRID(n)>>>(out, a, b, n);
    launchCheck();
}
extern "C" void cuda_mul_backward(float* da, float* db, const float* a, const float* b,
                                  const float* dout, int64_t n) {
    if (n <= 0) return;
    k_mul_backward<<<GRID(n)>>>(da, db, a, b, dout, n);
    launchCheck();
}

// element i kept iff (bits >> 11) >= thr, thr = ceil(p 2^53) (kernels/cpu/rng.h)
static uint64_t threshold(float p) {
    if (p <= 0) return 0;
    if (p >= 1) return 1ull << 53;
    return (uint64_t)ceil((double)p * 9007199254740992.0);
}
__global__ void k_dropout_forward(float* out, const float* inp, uint64_t base, uint64_t thr,
                                  float scale, int64_t first, int64_t n) {
    FOR_N {
        const int keep = (rng_bits(base, (uint64_t)(first + i)) >> 11) >= thr;
        out[i] = keep ? inp[i] * scale : 0.0f;
    }
}
__global__ void k_dropout_backward(float* dinp, const float* dout, uint64_t base, uint64_t thr,
                                   float scale, int64_t first, int64_t n) {
    FOR_N {
        const int keep = (rng_bits(base, (uint64_t)(first + i)) >> 11) >= thr;
        dinp[i] += keep ? dout[i] * scale : 0.0f;
    }
}
extern "C" void cuda_dropout_forward(float* out, const float* inp, float p, uint64_t seed,
                                     int64_t first, int64_t n) {
    if (n <= 0) return;
    if (p <= 0) {
        if (out != inp) cuda_copy(out, inp, (size_t)n * sizeof(float));
        return;
    }
    const float scale = p < 1 ? 1.0f / (1.0f - p) : 0.0f;
    k_dropout_forward<<<GRID(n)>>>(out, inp, host_mix64(seed), threshold(p), scale, first, n);
    launchCheck();
}
extern "C" void cuda_dropout_backward(float* dinp, const float* dout, float p, uint64_t seed,
                                      int64_t first, int64_t n) {
    if (n <= 0) return;
    if (p <= 0) {
        cuda_residual_backward(dinp, NULL, dout, n);
        return;
    }
    const float scale = p < 1 ? 1.0f / (1.0f - p) : 0.0f;
    k_dropout_backward<<<GRID(n)>>>(dinp, dout, host_mix64(seed), threshold(p), scale, first, n);
    launchCheck();
}

__global__ void k_adamw(float* params, const float* grads, float* m, float* v, int64_t n,
                        float decay, float beta1, float beta2, float step, float rbc2, float eps) {
    FOR_N {
        const float g = grads[i];
        const float mi = beta1 * m[i] + (1 - beta1) * g;
        const float vi = beta2 * v[i] + (1 - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = params[i] * decay - step * mi / (sqrtf(vi) * rbc2 + eps);
    }
}
extern "C" void cuda_adamw_update(float* params, const float* grads, float* m, float* v, int64_t n,
                                  float lr, float beta1, float beta2, float eps, float weight_decay,
                                  int64_t t) {
    if (n <= 0) return;
    // the bias corrections in double on the host, as the CPU kernel
    const float decay = 1 - lr * weight_decay;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    const float step = lr / bc1, rbc2 = (float)(1.0 / sqrt((double)bc2));
    k_adamw<<<GRID(n)>>>(params, grads, m, v, n, decay, beta1, beta2, step, rbc2, eps);
    launchCheck();
}
