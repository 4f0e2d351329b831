// common.cuh (private to kernels/cuda): the check macros of the CUDA backend
// and what its kernels share: one cudaCheck for the runtime, one cublasCheck
// for cuBLAS, launch checking, grid sizes, the stream and the cuBLAS handle.
#ifndef ELASTIC_CUDA_COMMON_CUH
#define ELASTIC_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda.h"

// the entry points, one per cuda_ops field (defined across kernels/cuda/*.cu)
extern "C" {
#define CUDA_OP(ret, name, params) ret cuda_##name params;
#include "ops.h"
#undef CUDA_OP
}

// Reports a failed call (what, where, the library's reason) and stops.
[[noreturn]] void cuda_fail(const char* file, int line, const char* call, const char* why);

#define cudaCheck(call)                                                                      \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) cuda_fail(__FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
    } while (0)

#define cublasCheck(call)                                                    \
    do {                                                                     \
        cublasStatus_t s_ = (call);                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                     \
            cuda_fail(__FILE__, __LINE__, #call, cublasGetStatusString(s_)); \
    } while (0)

// after every launch: the launch's own error (a bad configuration)
#define launchCheck() cudaCheck(cudaGetLastError())

cudaStream_t cuda_stream(void);
// A device buffer of at least bytes, shared by every kernel that needs
// scratch for one call (the stream runs the calls in order; a larger request
// frees and reallocates, which waits for the device).
void* cuda_scratch(size_t bytes);
cublasHandle_t cuda_blas(void);
// C[m,n] = op(A) op(B) + beta C, column-major fp32, in the precision set by
// cuda_set_precision: every matrix product of the backend goes through it.
void cuda_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A,
               int lda, const float* B, int ldb, float beta, float* C, int ldc);

static inline unsigned blocks_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

// the splitmix64 generator of kernels.h, bit for bit (kernels/cpu/rng.h)
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ uint64_t rng_bits(uint64_t base, uint64_t counter) {
    return mix64(base + (counter + 1) * 0x9E3779B97F4A7C15ull);
}
static inline uint64_t host_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The first position of sequence b that is not padding (pad[b] clamped to [0, L]).
__device__ __forceinline__ int first_position(const int32_t* pad, int b, int L) {
    return pad[b] < 0 ? 0 : pad[b] < L ? pad[b] : L;
}

// Lets kernel k take `bytes` of dynamic shared memory (over the 48 KB default).
static inline void allow_shared(const void* k, size_t bytes) {
    if (bytes > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Reductions over a block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result.
__device__ __forceinline__ float block_max(float v, float* sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < blockDim.x / 32 ? sh[threadIdx.x] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (threadIdx.x == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_sum(float v, float* sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < blockDim.x / 32 ? sh[threadIdx.x] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

// Register tiles of a shared-memory product: acc[r][q] = sum over x < K of
// A(i0 + r, x) B(x, c0 + q), A(i, x) = A[i ars + x acs], B(x, c) = B[x brs +
// c bcs]. Each A and B value read from shared memory serves MC (MR) products
// instead of one: the loops over single outputs were bound by shared-memory
// reads, two per multiply-add. Rows past n and columns past m read row n - 1
// and column m - 1 (their sums are not kept); the sum over x runs in order,
// as a single output's loop would.
template <int MR, int MC>
__device__ __forceinline__ void tile_mm(float (&acc)[MR][MC], const float* A, int ars, int acs,
                                        const float* Bm, int brs, int bcs, int i0, int c0, int n,
                                        int m, int K) {
    int ia[MR], cb[MC];
#pragma unroll
    for (int r = 0; r < MR; r++) ia[r] = (i0 + r < n ? i0 + r : n - 1) * ars;
#pragma unroll
    for (int q = 0; q < MC; q++) cb[q] = (c0 + q < m ? c0 + q : m - 1) * bcs;
    for (int x = 0; x < K; x++) {
        float a[MR], bv[MC];
#pragma unroll
        for (int r = 0; r < MR; r++) a[r] = A[ia[r] + x * acs];
#pragma unroll
        for (int q = 0; q < MC; q++) bv[q] = Bm[x * brs + cb[q]];
#pragma unroll
        for (int r = 0; r < MR; r++)
#pragma unroll
            for (int q = 0; q < MC; q++) acc[r][q] += a[r] * bv[q];
    }
}

// Micro-tile t of an n x m output in MR x MC tiles: its first row and column;
// tiles_of gives how many there are.
static __host__ __device__ __forceinline__ int tiles_of(int n, int m, int MR, int MC) {
    return ((n + MR - 1) / MR) * ((m + MC - 1) / MC);
}
__device__ __forceinline__ void tile_at(int t, int m, int MR, int MC, int* i0, int* c0) {
    const int across = (m + MC - 1) / MC;
    *i0 = t / across * MR, *c0 = t % across * MC;
}

// One key tile into the running softmax of nq query rows (FlashAttention-2's
// inner step, shared by the fused attention and ELASTIC's dispatch): sS[nq][SP]
// holds the tile's scaled scores (-inf where masked) and becomes their
// probabilities; each row's max sM and sum sL are updated and its output
// sO[nq][hp] rescaled (sC: the factors), then sO += P sV (sV [nk][hp]). `per`
// threads share a row (a power of two, lanes of one warp): thread me's row is
// threadIdx.x / per, part its place in the row. Every thread of the block
// calls it (it holds barriers).
__device__ __forceinline__ void softmax_tile(float* sS, int SP, float* sM, float* sL, float* sC,
                                             float* sO, const float* sV, int nq, int nk, int hd,
                                             int hp, int me, int part, int per) {
    // row me's new max and sum, `per` threads a row (lanes of one warp)
    float mx = -INFINITY, sum = 0;
    if (me < nq)
        for (int j = part; j < nk; j += per) mx = fmaxf(mx, sS[me * SP + j]);
    for (int o = per / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float mold = me < nq ? sM[me] : -INFINITY, mnew = fmaxf(mold, mx);
    if (me < nq)
        for (int j = part; j < nk; j += per) {
            const float p = mnew == -INFINITY ? 0.0f : expf(sS[me * SP + j] - mnew);
            sS[me * SP + j] = p;
            sum += p;
        }
    for (int o = per / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    __syncthreads();  // every thread has read sM before it changes
    if (me < nq && part == 0) {
        const float corr = mold == -INFINITY ? 0.0f : expf(mold - mnew);
        sC[me] = corr, sL[me] = sL[me] * corr + sum, sM[me] = mnew;
    }
    __syncthreads();
    // sO = sO sC + P sV, in 4 x 2 register tiles
    for (int t = threadIdx.x; t < tiles_of(nq, hd, 4, 2); t += blockDim.x) {
        int i0, c0;
        tile_at(t, hd, 4, 2, &i0, &c0);
        float a[4][2];
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int q = 0; q < 2; q++)
                a[r][q] = i0 + r < nq && c0 + q < hd ? sO[(i0 + r) * hp + c0 + q] * sC[i0 + r] : 0;
        tile_mm<4, 2>(a, sS, SP, 1, sV, hp, 1, i0, c0, nq, hd, nk);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int q = 0; q < 2; q++)
                if (i0 + r < nq && c0 + q < hd) sO[(i0 + r) * hp + c0 + q] = a[r][q];
    }
    __syncthreads();
}

#endif
