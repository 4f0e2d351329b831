// loss.cu: the tied cross-entropy over every item (kernels.h), rb rows at a
// time: logits by cuBLAS into scratch[rb, N], then per row (one block) the
// max, the sum of exponentials and the loss; with gradients, scratch becomes
// scale * (softmax - onehot) and two more products give dh and dwte. Rows
// with target 0 count nothing and get no gradient. The rows' losses are summed
// on the device in a fixed order (the same bits every run), into the caller's
// device double (crossentropy_tied_into: no wait) or read back.
//
// The row kernel is memory-bound: a row that fits in shared memory is read
// from global memory once and written once (k_ce_rows_shared); a longer one
// is read twice, a running max and sum then the gradient (k_ce_rows_online).
// Both move the row as float4 between its unaligned head and tail.
//
// Unless the precision is fp32, a row that fits in shared memory takes the
// half path (crossentropy_half): the logits block in IEEE half (the item
// table and the rows converted to half, products on the tensor cores with
// fp32 sums), the row kernel reading halves and writing softmax - onehot as
// halves, the gradient products scaling it (alpha = scale) into fp32 dh and
// dwte. Half keeps TF32's 10 mantissa bits, so the inputs are rounded as
// TF32 would round them; the block's bytes, which bound the loss (20 a logit
// in fp32: written, read and written, read twice), halve, and the block
// holds twice the rows.
#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define CE_THREADS 512

// The floats of a row before its first 16-byte boundary (the rest is float4s
// then a tail of under 4).
__device__ __forceinline__ int row_head(const float* row, int N) {
    const int h = (int)((16 - ((uintptr_t)row & 15)) & 15) / 4;
    return h < N ? h : N;
}

// The block's threads over row[N]: one(j) for each float j of the unaligned
// head and tail, four(i) for each float4 i of the aligned middle (floats h +
// 4i .. h + 4i + 3), in the threads' strides.
template <class One, class Four>
__device__ __forceinline__ void row_walk(const float* row, int N, One one, Four four) {
    const int h = row_head(row, N), nv = (N - h) / 4;
    for (int j = threadIdx.x; j < h; j += blockDim.x) one(j);
#pragma unroll 4
    for (int i = threadIdx.x; i < nv; i += blockDim.x) four(i);
    for (int j = h + 4 * nv + threadIdx.x; j < N; j += blockDim.x) one(j);
}

// s[j] = exp(s[j] - mx) for the row's N floats in shared memory; returns
// their sum to every thread (block_sum's barriers make s visible too)
__device__ __forceinline__ float exp_sum(float* s, int N, float mx, float* sh) {
    float sum = 0;
    for (int j = threadIdx.x; j < N; j += blockDim.x) {
        const float e = expf(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    return block_sum(sum, sh);
}

// A target-0 row: no loss, and with grad a zero gradient.
__device__ void ce_row_zero(float* row, double* loss, int N, int grad) {
    if (grad) {
        float4* row4 = (float4*)(row + row_head(row, N));
        row_walk(
            row, N, [&](int j) { row[j] = 0; }, [&](int i) { row4[i] = make_float4(0, 0, 0, 0); });
    }
    if (threadIdx.x == 0) *loss = 0;
}

// row i of z[n, N] through shared memory (N + 3 floats): its loss into
// loss[i]; with grad, z becomes the gradient
__global__ void k_ce_rows_shared(float* z, const int32_t* targets, double* loss, int N, float scale,
                                 int grad) {
    extern __shared__ float sm[];
    __shared__ float sh[32];
    float* row = z + (int64_t)blockIdx.x * N;
    const int tg = targets[blockIdx.x];
    if (tg == 0) {
        ce_row_zero(row, loss + blockIdx.x, N, grad);
        return;
    }
    const int h = row_head(row, N);
    // s[j] holds row[j], s + h 16-byte aligned as row + h is
    float* s = sm + ((((uintptr_t)row - (uintptr_t)sm) >> 2) & 3);
    float4 *row4 = (float4*)(row + h), *s4 = (float4*)(s + h);
    float mx = -INFINITY;
    row_walk(
        row, N, [&](int j) { mx = fmaxf(mx, s[j] = row[j]); },
        [&](int i) {
            const float4 v = row4[i];
            s4[i] = v;
            mx = fmaxf(mx, fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
        });
    mx = block_max(mx, sh);  // its barriers make s whole for every thread
    const float sum = exp_sum(s, N, mx, sh);
    // the target's logit from global memory: s[tg - 1] is its exponential now
    if (threadIdx.x == 0) loss[blockIdx.x] = (double)mx + log((double)sum) - (double)row[tg - 1];
    if (!grad) return;
    __syncthreads();  // thread 0 read row[tg - 1] before the row is overwritten
    const float f = scale / sum;
    row_walk(
        row, N, [&](int j) { row[j] = s[j] * f; },
        [&](int i) {
            const float4 e = s4[i];
            row4[i] = make_float4(e.x * f, e.y * f, e.z * f, e.w * f);
        });
    __syncthreads();
    if (threadIdx.x == 0) row[tg - 1] -= scale;
}

// x into a running max m and sum s of exp(. - m)
__device__ __forceinline__ void online(float x, float& m, float& s) {
    if (x > m) {
        s = s * expf(m - x) + 1;
        m = x;
    } else {
        s += expf(x - m);
    }
}

// The same for a row too long for shared memory: one read for the max and the
// sum (running), one read and write for the gradient.
__global__ void k_ce_rows_online(float* z, const int32_t* targets, double* loss, int N, float scale,
                                 int grad) {
    __shared__ float sh[32];
    float* row = z + (int64_t)blockIdx.x * N;
    const int tg = targets[blockIdx.x];
    if (tg == 0) {
        ce_row_zero(row, loss + blockIdx.x, N, grad);
        return;
    }
    float4* row4 = (float4*)(row + row_head(row, N));
    float m = -INFINITY, s = 0;
    row_walk(
        row, N, [&](int j) { online(row[j], m, s); },
        [&](int i) {
            const float4 v = row4[i];
            online(v.x, m, s), online(v.y, m, s), online(v.z, m, s), online(v.w, m, s);
        });
    const float mx = block_max(m, sh);
    const float sum = block_sum(m == -INFINITY ? 0.0f : s * expf(m - mx), sh);
    if (threadIdx.x == 0) loss[blockIdx.x] = (double)mx + log((double)sum) - (double)row[tg - 1];
    if (!grad) return;
    __syncthreads();  // thread 0 read row[tg - 1] before the row is overwritten
    const float f = scale / sum;
    row_walk(
        row, N, [&](int j) { row[j] = expf(row[j] - mx) * f; },
        [&](int i) {
            const float4 v = row4[i];
            row4[i] = make_float4(expf(v.x - mx) * f, expf(v.y - mx) * f, expf(v.z - mx) * f,
                                  expf(v.w - mx) * f);
        });
    __syncthreads();
    if (threadIdx.x == 0) row[tg - 1] -= scale;
}

__global__ void k_ce_total(double* out, const double* loss, int R);

// ---- the half path
// src[n] as halves into dst[n_pad], zeros after n
__global__ void k_to_half(__half* dst, const float* src, int64_t n, int64_t n_pad) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_pad;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2half(i < n ? src[i] : 0.0f);
}

// A target-0 row of halves (16-byte aligned): no loss, and with grad a zero
// gradient.
__device__ void ce_row_half_zero(__half* row, double* loss, int N, int grad) {
    const int nv = N / 8;
    for (int i = threadIdx.x; grad && i < nv; i += blockDim.x)
        ((uint4*)row)[i] = make_uint4(0, 0, 0, 0);
    for (int j = 8 * nv + threadIdx.x; grad && j < N; j += blockDim.x) row[j] = __float2half(0.0f);
    if (threadIdx.x == 0) *loss = 0;
}

// row i of z[n, ld] (halves, ld a multiple of 8) through shared memory as
// floats: its loss into loss[i]; with grad, z becomes softmax - onehot
// (unscaled: scale would push most probabilities under half's range)
__global__ void k_ce_rows_half(__half* z, int ld, const int32_t* targets, double* loss, int N,
                               int grad) {
    extern __shared__ __align__(16) float sm[];
    __shared__ float sh[32];
    __half* row = z + (int64_t)blockIdx.x * ld;
    uint4* row8 = (uint4*)row;  // 8 halves each
    float4* s4 = (float4*)sm;
    const int tg = targets[blockIdx.x], nv = N / 8;
    if (tg == 0) {
        ce_row_half_zero(row, loss + blockIdx.x, N, grad);
        return;
    }
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        const uint4 v = row8[i];
        const __half* hv = (const __half*)&v;
        float x[8];
#pragma unroll
        for (int e = 0; e < 8; e++) x[e] = __half2float(hv[e]), mx = fmaxf(mx, x[e]);
        s4[2 * i] = make_float4(x[0], x[1], x[2], x[3]);
        s4[2 * i + 1] = make_float4(x[4], x[5], x[6], x[7]);
    }
    for (int j = 8 * nv + threadIdx.x; j < N; j += blockDim.x)
        mx = fmaxf(mx, sm[j] = __half2float(row[j]));
    mx = block_max(mx, sh);  // its barriers make sm whole for every thread
    const float sum = exp_sum(sm, N, mx, sh);
    if (threadIdx.x == 0)
        loss[blockIdx.x] = (double)mx + log((double)sum) - (double)__half2float(row[tg - 1]);
    if (!grad) return;
    __syncthreads();  // thread 0 read row[tg - 1] before the row is overwritten
    const float f = 1.0f / sum;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        const float4 a = s4[2 * i], b = s4[2 * i + 1];
        uint4 v;
        __half* hv = (__half*)&v;
        hv[0] = __float2half(a.x * f), hv[1] = __float2half(a.y * f);
        hv[2] = __float2half(a.z * f), hv[3] = __float2half(a.w * f);
        hv[4] = __float2half(b.x * f), hv[5] = __float2half(b.y * f);
        hv[6] = __float2half(b.z * f), hv[7] = __float2half(b.w * f);
        row8[i] = v;
    }
    for (int j = 8 * nv + threadIdx.x; j < N; j += blockDim.x) row[j] = __float2half(sm[j] * f);
    __syncthreads();
    if (threadIdx.x == 0) row[tg - 1] = __float2half(sm[tg - 1] * f - 1.0f);
}

// The same row in registers (ELASTIC_CE_ROWS=registers, for gpu_check to
// time against k_ce_rows_half, which stores each load to shared memory before
// the next): CE_REG_THREADS threads, each loading its V vectors of 8 halves
// (vector threadIdx.x + k * blockDim.x) at once and keeping their
// exponentials in registers; the tail past the last whole vector (under 8
// halves) one a thread. Rows of up to CE_REG_THREADS * 8 * CE_REG_VMAX halves.
#define CE_REG_THREADS 256
#define CE_REG_VMAX 12
template <int V>
__global__ void k_ce_rows_half_reg(__half* z, int ld, const int32_t* targets, double* loss, int N,
                                   int grad) {
    __shared__ float sh[32];
    __half* row = z + (int64_t)blockIdx.x * ld;
    uint4* row8 = (uint4*)row;  // 8 halves each
    const int tg = targets[blockIdx.x], nv = N / 8, jt = 8 * nv + threadIdx.x;
    if (tg == 0) {
        ce_row_half_zero(row, loss + blockIdx.x, N, grad);
        return;
    }
    uint4 v[V];
#pragma unroll
    for (int k = 0; k < V; k++) {
        const int i = threadIdx.x + k * CE_REG_THREADS;
        v[k] = i < nv ? row8[i] : make_uint4(0, 0, 0, 0);
    }
    const float xt = jt < N ? __half2float(row[jt]) : -INFINITY, ztg = __half2float(row[tg - 1]);
    float x[8 * V], mx = xt;
#pragma unroll
    for (int k = 0; k < V; k++) {
        const __half* hv = (const __half*)&v[k];
        const bool in = threadIdx.x + k * CE_REG_THREADS < nv;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            x[8 * k + e] = in ? __half2float(hv[e]) : -INFINITY;
            mx = fmaxf(mx, x[8 * k + e]);
        }
    }
    mx = block_max(mx, sh);
    float sum = 0;
#pragma unroll
    for (int q = 0; q < 8 * V; q++) sum += x[q] = expf(x[q] - mx);  // -inf: 0
    const float et = expf(xt - mx);
    sum = block_sum(sum + et, sh);
    if (threadIdx.x == 0) loss[blockIdx.x] = (double)mx + log((double)sum) - (double)ztg;
    if (!grad) return;
    const float f = 1.0f / sum;
#pragma unroll
    for (int k = 0; k < V; k++) {
        const int i = threadIdx.x + k * CE_REG_THREADS;
        if (i >= nv) continue;
        uint4 o;
        __half* ho = (__half*)&o;
#pragma unroll
        for (int e = 0; e < 8; e++)
            ho[e] = __float2half(8 * i + e == tg - 1 ? x[8 * k + e] * f - 1.0f : x[8 * k + e] * f);
        row8[i] = o;
    }
    if (jt < N) row[jt] = __float2half(jt == tg - 1 ? et * f - 1.0f : et * f);
}

// k_ce_rows_half_reg<V> over n rows
template <int V>
static void ce_rows_reg(__half* z, int ld, const int32_t* targets, double* loss, int n, int N,
                        int grad) {
    const auto kernel = k_ce_rows_half_reg<V>;
    kernel<<<n, CE_REG_THREADS, 0, cuda_stream()>>>(z, ld, targets, loss, N, grad);
    launchCheck();
}

// k_ce_rows_half_reg for rows of N halves, if ELASTIC_CE_ROWS=registers and a
// row fits; else 0 (the shared-memory kernel's turn)
static int ce_rows_registers(__half* z, int ld, const int32_t* targets, double* loss, int n, int N,
                             int grad) {
    const char* e = getenv("ELASTIC_CE_ROWS");
    if (!e || strcmp(e, "registers")) return 0;
    const int need = (N / 8 + CE_REG_THREADS - 1) / CE_REG_THREADS;
    if (need <= 2)
        ce_rows_reg<2>(z, ld, targets, loss, n, N, grad);
    else if (need <= 4)
        ce_rows_reg<4>(z, ld, targets, loss, n, N, grad);
    else if (need <= 6)
        ce_rows_reg<6>(z, ld, targets, loss, n, N, grad);
    else if (need <= 8)
        ce_rows_reg<8>(z, ld, targets, loss, n, N, grad);
    else if (need <= 10)
        ce_rows_reg<10>(z, ld, targets, loss, n, N, grad);
    else if (need <= CE_REG_VMAX)
        ce_rows_reg<CE_REG_VMAX>(z, ld, targets, loss, n, N, grad);
    else
        return 0;
    return 1;
}

void cuda_to_half(__half* dst, const float* src, int64_t n, int64_t n_pad) {
    if (n_pad <= 0) return;
    k_to_half<<<blocks_for(n_pad, 256), 256, 0, cuda_stream()>>>(dst, src, n, n_pad);
    launchCheck();
}
// C = alpha op(A) op(B) + beta C with half A and B, fp32 sums, C of type ct
static void gemm_half(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                      const __half* A, int lda, const __half* B, int ldb, float beta, void* C,
                      cudaDataType ct, int ldc) {
    cublasCheck(cublasGemmEx(cuda_blas(), ta, tb, m, n, k, &alpha, A, CUDA_R_16F, lda, B,
                             CUDA_R_16F, ldb, &beta, C, ct, ldc, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
}

// The loss in half logits blocks (see the top); 0, or -1 when the caller's
// scratch cannot hold one row of halves (then fp32 it is).
static int crossentropy_half(double* total, float* dh, float* dwte, const float* h,
                             const float* wte, const int32_t* targets, int R, int d, int V,
                             float scale, float* scratch, int rb) {
    const int N = V - 1, Np = (N + 7) / 8 * 8, grad = dh != NULL || dwte != NULL;
    // the rows of halves the scratch of rb x N floats holds
    const int64_t fit = (int64_t)rb * N * (int64_t)sizeof(float) / ((int64_t)Np * sizeof(__half));
    if (fit < 1) return -1;
    const int rows = fit < R ? (int)fit : R;
    const size_t lb = align256((size_t)R * sizeof(double)), ib = align256((size_t)N * d * 2),
                 hb = align256((size_t)rows * d * 2);
    char* s = (char*)cuda_scratch(lb + ib + hb);
    double* loss = (double*)s;  // per row
    __half *items = (__half*)(s + lb), *h16 = (__half*)(s + lb + ib), *z = (__half*)scratch;
    float* ditems = dwte ? dwte + d : NULL;
    cuda_mark_begin();
    cuda_to_half(items, wte + d, (int64_t)N * d, (int64_t)N * d);
    const size_t sbytes = (size_t)N * sizeof(float);
    allow_shared((const void*)k_ce_rows_half, sbytes);
    for (int r0 = 0; r0 < R; r0 += rows) {
        const int n = R - r0 < rows ? R - r0 : rows;
        cuda_to_half(h16, h + (int64_t)r0 * d, (int64_t)n * d, (int64_t)n * d);
        cuda_mark("loss: to half");
        // z^T[N,n] = items[N,d] h16^T[d,n], halves with leading dimension Np
        gemm_half(CUBLAS_OP_T, CUBLAS_OP_N, N, n, d, 1, items, d, h16, d, 0, z, CUDA_R_16F, Np);
        cuda_mark("loss: logits product");
        if (!ce_rows_registers(z, Np, targets + r0, loss + r0, n, N, grad)) {
            k_ce_rows_half<<<n, CE_THREADS, sbytes, cuda_stream()>>>(z, Np, targets + r0, loss + r0,
                                                                     N, grad);
            launchCheck();
        }
        cuda_mark("loss: softmax rows");
        // dh^T[d,n] += scale items^T[d,N] z^T[N,n]
        if (dh)
            gemm_half(CUBLAS_OP_N, CUBLAS_OP_N, d, n, N, scale, items, d, z, Np, 1,
                      dh + (int64_t)r0 * d, CUDA_R_32F, d);
        cuda_mark("loss: dh product");
        // ditems^T[d,N] += scale h16^T[d,n] z[n,N]
        if (ditems)
            gemm_half(CUBLAS_OP_N, CUBLAS_OP_T, d, N, n, scale, h16, d, z, Np, 1, ditems,
                      CUDA_R_32F, d);
        cuda_mark("loss: item table product");
    }
    k_ce_total<<<1, 256, 0, cuda_stream()>>>(total, loss, R);
    launchCheck();
    return 0;
}

// The most dynamic shared memory a block of this device may take.
static size_t shared_optin(void) {
    static int bytes = -1;
    if (bytes < 0) {
        int dev = 0;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    return (size_t)bytes;
}

// out[0] = the sum of loss[0..R), one block: each thread a fixed stride of
// rows in order, then a fixed tree (the same bits every run)
__global__ void k_ce_total(double* out, const double* loss, int R) {
    __shared__ double s[256];
    double a = 0;
    for (int i = threadIdx.x; i < R; i += blockDim.x) a += loss[i];
    s[threadIdx.x] = a;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = s[0];
}

extern "C" void cuda_crossentropy_tied_into(double* total, float* dh, float* dwte, const float* h,
                                            const float* wte, const int32_t* targets, int R, int d,
                                            int V, float scale, float* scratch, int rb) {
    if (R <= 0) {
        cudaCheck(cudaMemsetAsync(total, 0, sizeof(double), cuda_stream()));
        return;
    }
    if (const double* rows = cuda_crossentropy_fused(dh, dwte, h, wte, targets, R, d, V, scale,
                                                     scratch, (size_t)rb * (V - 1))) {
        k_ce_total<<<1, 256, 0, cuda_stream()>>>(total, rows, R);
        launchCheck();
        return;
    }
    const int N = V - 1, grad = dh != NULL || dwte != NULL;
    if (cuda_precision() != 0 && (size_t)N * sizeof(float) + 1024 <= shared_optin() &&
        crossentropy_half(total, dh, dwte, h, wte, targets, R, d, V, scale, scratch, rb) == 0)
        return;
    double* loss = (double*)cuda_scratch((size_t)R * sizeof(double));  // per row
    const float* items = wte + d;
    float* ditems = dwte ? dwte + d : NULL;
    // the row in shared memory, +3 floats to keep its float4s aligned; the
    // kernel's own 128 bytes of reductions and some slack beside it
    const size_t sbytes = ((size_t)N + 3) * sizeof(float);
    const int fits = sbytes + 1024 <= shared_optin();
    if (fits) allow_shared((const void*)k_ce_rows_shared, sbytes);
    cuda_mark_begin();
    for (int r0 = 0; r0 < R; r0 += rb) {
        const int n = R - r0 < rb ? R - r0 : rb;
        const float* hb = h + (int64_t)r0 * d;
        // scratch^T[N,n] = items[N,d] hb^T[d,n]
        cuda_gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, n, d, items, d, hb, d, 0, scratch, N);
        cuda_mark("loss: logits product");
        if (fits)
            k_ce_rows_shared<<<n, CE_THREADS, sbytes, cuda_stream()>>>(scratch, targets + r0,
                                                                       loss + r0, N, scale, grad);
        else
            k_ce_rows_online<<<n, CE_THREADS, 0, cuda_stream()>>>(scratch, targets + r0, loss + r0,
                                                                  N, scale, grad);
        launchCheck();
        cuda_mark("loss: softmax rows");
        // dh^T[d,n] += items^T[d,N] scratch^T[N,n]
        if (dh)
            cuda_gemm(CUBLAS_OP_N, CUBLAS_OP_N, d, n, N, items, d, scratch, N, 1,
                      dh + (int64_t)r0 * d, d);
        cuda_mark("loss: dh product");
        // ditems^T[d,N] += hb^T[d,n] scratch[n,N]
        if (ditems) cuda_gemm(CUBLAS_OP_N, CUBLAS_OP_T, d, N, n, hb, d, scratch, N, 1, ditems, d);
        cuda_mark("loss: item table product");
    }
    k_ce_total<<<1, 256, 0, cuda_stream()>>>(total, loss, R);
    launchCheck();
}

// The loss returned: summed on the device, then read (a wait).
extern "C" double cuda_crossentropy_tied(float* dh, float* dwte, const float* h, const float* wte,
                                         const int32_t* targets, int R, int d, int V, float scale,
                                         float* scratch, int rb) {
    static double* total;
    if (!total) cudaCheck(cudaMalloc(&total, sizeof(double)));
    cuda_crossentropy_tied_into(total, dh, dwte, h, wte, targets, R, d, V, scale, scratch, rb);
    double host = 0;
    cudaCheck(cudaMemcpyAsync(&host, total, sizeof host, cudaMemcpyDeviceToHost, cuda_stream()));
    cudaCheck(cudaStreamSynchronize(cuda_stream()));
    return host;
}
