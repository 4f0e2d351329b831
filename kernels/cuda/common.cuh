// common.cuh (private to kernels/cuda): the check macros of the CUDA backend
// and what its kernels share: one cudaCheck for the runtime, one cublasCheck
// for cuBLAS, launch checking, grid sizes, the stream and the cuBLAS handle.
#ifndef ELASTIC_CUDA_COMMON_CUH
#define ELASTIC_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <stdint.h>

#include <type_traits>

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
// bytes rounded up to 256: the alignment of CUB's storage and of the arrays
// carved after it from one scratch buffer
static inline size_t align256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }
// The bits a radix sort needs for keys in [0, count): at least 1, at most 32.
static inline int key_bits(uint64_t count) {
    int bits = 1;
    while (bits < 32 && ((uint64_t)1 << bits) < count) bits++;
    return bits;
}
// C[m,n] = op(A) op(B) + beta C, column-major fp32, in the precision set by
// cuda_set_precision: every matrix product of the backend goes through it.
void cuda_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A,
               int lda, const float* B, int ldb, float beta, float* C, int ldc);
// C_i = alpha op(A_i) op(B_i) + beta C_i for i < batch, X_i = X + i * sx:
// fp32, or TF32 in the other precisions (bf16's operand copies are not made
// for these: the plain attention's [L, L] blocks).
void cuda_gemm_strided(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                       const float* A, int lda, long long sa, const float* B, int ldb, long long sb,
                       float beta, float* C, int ldc, long long sc, int batch);
// The precision cuda_set_precision set (0 fp32, 1 TF32, 2 bf16): kernels of
// their own that may use the tensor cores (in TF32) do so unless it is fp32.
int cuda_precision(void);
// src[n] as IEEE halves into dst[n_pad], zeros after n (loss.cu; the two
// losses' copies of the rows and the item table).
void cuda_to_half(__half* dst, const float* src, int64_t n, int64_t n_pad);
// The tied cross-entropy without a logits block (loss_fused.cu), under
// ELASTIC_CE=fused: the rows' losses (R doubles in the scratch), or NULL when
// it does not take the call (then loss.cu's paths do). room: the caller's
// room for logits blocks (room_floats), where its part sums go.
const double* cuda_crossentropy_fused(float* dh, float* dwte, const float* h, const float* wte,
                                      const int32_t* targets, int R, int d, int V, float scale,
                                      float* room, size_t room_floats);
// The parts of one call, timed while per-call profiling is on (device.h's
// device_profile): cuda_mark_begin() at the call's start, cuda_mark(name)
// after each part adds the GPU's time since the last mark to name's line (timing
// events on the stream, read at the report; nothing when profiling is off).
void cuda_mark_begin(void);
void cuda_mark(const char* name);

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
// The CUDA call is made only when a kernel needs more than it was allowed
// (the first launch of a shape, which for a recorded forward is its eager
// warm-up: no runtime call but the launches in a recording).
static inline void allow_shared(const void* k, size_t bytes) {
    if (bytes <= 48 * 1024) return;
    static const void* kernel[32];  // this file's kernels, and what each may take
    static size_t allowed[32];
    int i = 0;
    while (i < 32 && kernel[i] && kernel[i] != k) i++;
    if (i < 32 && kernel[i] == k && allowed[i] >= bytes) return;
    cudaCheck(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    if (i < 32) kernel[i] = k, allowed[i] = bytes;
}

// Reductions over a warp (every lane takes part and gets the result).
__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
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

// Rows r0 .. r0 + n - 1 of a matrix with leading dimension ld, columns col ..
// col + w - 1, into a shared tile s of T rows w wide with leading dimension sp
// (rows n .. T - 1 zero). A thread issues its loads 8 at a time before storing
// them: one load and its store a loop turn made every load wait for the last
// (a global load's latency each, with the caller's barrier behind it). Every
// thread of the block calls it.
__device__ __forceinline__ void load_rows(float* __restrict__ s, const float* __restrict__ m,
                                          int64_t r0, int n, int T, int w, int sp, int64_t ld,
                                          int col) {
    constexpr int U = 8;
    const int total = T * w;
    for (int e0 = threadIdx.x; e0 < total; e0 += U * blockDim.x) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * blockDim.x, i = e / w;
            v[u] = e < total && i < n ? m[(r0 + i) * ld + col + e % w] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * blockDim.x;
            if (e < total) s[e / w * sp + e % w] = v[u];
        }
    }
}

// Tensor-core tile products: C[M][N] = A[M][K] B[K][N] (+ C when accumulate),
// TF32 inputs, FP32 sums, every 16 x 16 tile of C by the calling warp (M, N
// multiples of 16, K of 8). LA and LB are nvcuda::wmma::row_major (A(i, x) = A[i lda + x],
// B(x, j) = B[x ldb + j]) or col_major (A(i, x) = A[x lda + i], B(x, j) = B[j
// ldb + x]); C is row-major. Pointers 32-byte aligned, leading dimensions
// multiples of 4 floats (wmma's rules). Every lane of the warp calls it; no
// barrier (the warp's own loads and stores are ordered; other warps' need
// one).
template <class LA, class LB>
__device__ __forceinline__ void tc_mm(float* C, int ldc, const float* A, int lda, const float* B,
                                      int ldb, int M, int N, int K, bool accumulate) {
    using namespace nvcuda;
    const int tn = N / 16;
    for (int t = 0; t < (M / 16) * tn; t++) {
        const int i0 = t / tn * 16, j0 = t % tn * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
        if (accumulate)
            wmma::load_matrix_sync(acc, C + (size_t)i0 * ldc + j0, ldc, wmma::mem_row_major);
        else
            wmma::fill_fragment(acc, 0.0f);
        for (int k0 = 0; k0 < K; k0 += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> b;
            wmma::load_matrix_sync(a,
                                   std::is_same<LA, wmma::row_major>::value
                                       ? A + (size_t)i0 * lda + k0
                                       : A + (size_t)k0 * lda + i0,
                                   lda);
            wmma::load_matrix_sync(b,
                                   std::is_same<LB, wmma::row_major>::value
                                       ? B + (size_t)k0 * ldb + j0
                                       : B + (size_t)j0 * ldb + k0,
                                   ldb);
            for (int e = 0; e < a.num_elements; e++) a.x[e] = wmma::__float_to_tf32(a.x[e]);
            for (int e = 0; e < b.num_elements; e++) b.x[e] = wmma::__float_to_tf32(b.x[e]);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(C + (size_t)i0 * ldc + j0, acc, ldc, wmma::mem_row_major);
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

// The tile steps the fused attention and ELASTIC's dispatch share (their
// masks differ: allowed(i, j) says whether query row i of the tile may see key
// row j), in register tiles. Every thread of the block calls them.
// sS[i][j] = q_i . k_j * scale, or -inf where not allowed
template <class Allowed>
__device__ __forceinline__ void scores_tile(float* sS, int SP, const float* sQ, const float* sK,
                                            int nq, int nk, int hd, int hp, float scale,
                                            Allowed allowed) {
    for (int e = threadIdx.x; e < tiles_of(nq, nk, 4, 4); e += blockDim.x) {
        int i0, j0;
        tile_at(e, nk, 4, 4, &i0, &j0);
        float a[4][4] = {};
        tile_mm<4, 4>(a, sQ, hp, 1, sK, 1, hp, i0, j0, nq, nk, hd);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int i = i0 + r, j = j0 + q;
                if (i < nq && j < nk) sS[i * SP + j] = allowed(i, j) ? a[r][q] * scale : -INFINITY;
            }
    }
}

// p = exp(q_i . k_j scale - lse_i) and ds = p (dout_i . v_j - D_i) into sP
// (may be NULL) and sdS; 0 where not allowed
template <class Allowed>
__device__ __forceinline__ void probabilities_tile(float* sP, float* sdS, int SP, const float* sQ,
                                                   const float* sdO, const float* sK,
                                                   const float* sV, const float* sLse,
                                                   const float* sD, int nq, int nk, int hd, int hp,
                                                   float scale, Allowed allowed) {
    for (int e = threadIdx.x; e < tiles_of(nq, nk, 4, 4); e += blockDim.x) {
        int i0, j0;
        tile_at(e, nk, 4, 4, &i0, &j0);
        float qk[4][4] = {}, ov[4][4] = {};
        tile_mm<4, 4>(qk, sQ, hp, 1, sK, 1, hp, i0, j0, nq, nk, hd);
        tile_mm<4, 4>(ov, sdO, hp, 1, sV, 1, hp, i0, j0, nq, nk, hd);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int i = i0 + r, j = j0 + q;
                if (i >= nq || j >= nk) continue;
                float p = 0, ds = 0;
                if (allowed(i, j)) {
                    p = expf(qk[r][q] * scale - sLse[i]);
                    ds = p * (ov[r][q] - sD[i]);
                }
                if (sP) sP[i * SP + j] = p;
                sdS[i * SP + j] = ds;
            }
    }
}

// The key tile's gradients: sdV += P^T dO, sdK += scale dS^T Q ([nk][hp])
__device__ __forceinline__ void key_grads_tile(float* sdV, float* sdK, const float* sP,
                                               const float* sdS, int SP, const float* sdO,
                                               const float* sQ, int nq, int nk, int hd, int hp,
                                               float scale) {
    for (int e = threadIdx.x; e < tiles_of(nk, hd, 4, 2); e += blockDim.x) {
        int j0, c0;
        tile_at(e, hd, 4, 2, &j0, &c0);
        float gv[4][2] = {}, gk[4][2] = {};
        tile_mm<4, 2>(gv, sP, 1, SP, sdO, hp, 1, j0, c0, nk, hd, nq);
        tile_mm<4, 2>(gk, sdS, 1, SP, sQ, hp, 1, j0, c0, nk, hd, nq);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int q = 0; q < 2; q++)
                if (j0 + r < nk && c0 + q < hd) {
                    sdV[(j0 + r) * hp + c0 + q] += gv[r][q];
                    sdK[(j0 + r) * hp + c0 + q] += scale * gk[r][q];
                }
    }
}

// One key tile into the running softmax of nq query rows (FlashAttention-2's
// inner step, shared by the fused attention and ELASTIC's dispatch): sS[nq][SP]
// holds the tile's scaled scores (-inf where masked) and becomes their
// probabilities; each row's max sM and sum sL are updated and its output
// sO[nq][hp] rescaled (sC: the factors), then sO += P sV (sV [nk][hp]). `per`
// threads share a row (a power of two, lanes of one warp): thread me's row is
// threadIdx.x / per, part its place in the row. Every thread of the block
// calls it (it holds barriers). softmax_rows is its first half: the
// probabilities, the rows' statistics and the factors sC.
__device__ __forceinline__ void softmax_rows(float* sS, int SP, float* sM, float* sL, float* sC,
                                             int nq, int nk, int me, int part, int per) {
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
}

__device__ __forceinline__ void softmax_tile(float* sS, int SP, float* sM, float* sL, float* sC,
                                             float* sO, const float* sV, int nq, int nk, int hd,
                                             int hp, int me, int part, int per) {
    softmax_rows(sS, SP, sM, sL, sC, nq, nk, me, part, per);
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
