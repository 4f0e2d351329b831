// loss.cu: the tied cross-entropy over every item (kernels.h), rb rows at a
// time: logits by cuBLAS into scratch[rb, N], then per row (one block) the
// max, the sum of exponentials and the loss; with gradients, scratch becomes
// scale * (softmax - onehot) and two more products give dh and dwte. Rows
// with target 0 count nothing and get no gradient. The loss is summed on the
// host in row order (the same bits every run).
#include <math.h>

#include "common.cuh"

// row i of z[n, N]: its loss into loss[i]; with grad, z becomes the gradient
__global__ void k_ce_rows(float* z, const int32_t* targets, double* loss, int N, float scale,
                          int grad) {
    __shared__ float sh[32];
    float* row = z + (int64_t)blockIdx.x * N;
    const int tg = targets[blockIdx.x];
    if (tg == 0) {
        if (grad)
            for (int j = threadIdx.x; j < N; j += blockDim.x) row[j] = 0;
        if (threadIdx.x == 0) loss[blockIdx.x] = 0;
        return;
    }
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < N; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, sh);
    const float zt = row[tg - 1];
    float s = 0;
    for (int j = threadIdx.x; j < N; j += blockDim.x) {
        const float e = expf(row[j] - mx);
        if (grad) row[j] = e;
        s += e;
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) loss[blockIdx.x] = (double)mx + log((double)s) - (double)zt;
    if (grad) {
        const float f = scale / s;
        for (int j = threadIdx.x; j < N; j += blockDim.x) row[j] *= f;
        __syncthreads();
        if (threadIdx.x == 0) row[tg - 1] -= scale;
    }
}

extern "C" double cuda_crossentropy_tied(float* dh, float* dwte, const float* h, const float* wte,
                                         const int32_t* targets, int R, int d, int V, float scale,
                                         float* scratch, int rb) {
    if (R <= 0) return 0;
    double* loss = (double*)cuda_scratch((size_t)R * sizeof(double));  // per row
    const int N = V - 1, grad = dh != NULL || dwte != NULL;
    const float* items = wte + d;
    float* ditems = dwte ? dwte + d : NULL;
    for (int r0 = 0; r0 < R; r0 += rb) {
        const int n = R - r0 < rb ? R - r0 : rb;
        const float* hb = h + (int64_t)r0 * d;
        // scratch^T[N,n] = items[N,d] hb^T[d,n]
        cuda_gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, n, d, items, d, hb, d, 0, scratch, N);
        k_ce_rows<<<n, 256, 0, cuda_stream()>>>(scratch, targets + r0, loss + r0, N, scale, grad);
        launchCheck();
        // dh^T[d,n] += items^T[d,N] scratch^T[N,n]
        if (dh)
            cuda_gemm(CUBLAS_OP_N, CUBLAS_OP_N, d, n, N, items, d, scratch, N, 1,
                      dh + (int64_t)r0 * d, d);
        // ditems^T[d,N] += hb^T[d,n] scratch[n,N]
        if (ditems) cuda_gemm(CUBLAS_OP_N, CUBLAS_OP_T, d, N, n, hb, d, scratch, N, 1, ditems, d);
    }
    double* host = (double*)malloc((size_t)R * sizeof(double));
    if (!host) cuda_fail(__FILE__, __LINE__, "malloc", "out of memory for the row losses");
    cudaCheck(cudaMemcpyAsync(host, loss, (size_t)R * sizeof(double), cudaMemcpyDeviceToHost,
                              cuda_stream()));
    cudaCheck(cudaStreamSynchronize(cuda_stream()));
    double total = 0;
    for (int i = 0; i < R; i++) total += host[i];
    free(host);
    return total;
}
