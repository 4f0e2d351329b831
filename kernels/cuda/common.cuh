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
int cuda_init(int local_rank, char* name, size_t name_len, char* err);
void cuda_set_fatal(void (*fatal)(const char* msg));
void cuda_set_tf32(int on);
void* cuda_alloc(size_t bytes);
void cuda_free(void* p);
void cuda_zero(void* p, size_t bytes);
void cuda_to_device(void* dst, const void* src, size_t bytes);
void cuda_to_host(void* dst, const void* src, size_t bytes);
void cuda_copy(void* dst, const void* src, size_t bytes);
void cuda_sync(void);
void cuda_residual_forward(float* out, const float* a, const float* b, int64_t n);
void cuda_residual_backward(float* da, float* db, const float* dout, int64_t n);
void cuda_gelu_forward(float* out, const float* inp, int64_t n);
void cuda_gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);
void cuda_silu_forward(float* out, const float* inp, int64_t n);
void cuda_silu_backward(float* dinp, const float* inp, const float* dout, int64_t n);
void cuda_mul_forward(float* out, const float* a, const float* b, int64_t n);
void cuda_mul_backward(float* da, float* db, const float* a, const float* b, const float* dout,
                       int64_t n);
void cuda_dropout_forward(float* out, const float* inp, float p, uint64_t seed, int64_t first,
                          int64_t n);
void cuda_dropout_backward(float* dinp, const float* dout, float p, uint64_t seed, int64_t first,
                           int64_t n);
void cuda_adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int64_t t);
void cuda_layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                            const float* b, int R, int d);
void cuda_layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                             const float* w, const float* mean, const float* rstd, int R, int d);
void cuda_matmul_forward(float* out, const float* inp, const float* w, const float* bias, int R,
                         int IC, int OC);
void cuda_matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                          const float* w, int R, int IC, int OC);
void cuda_embedding_forward(float* out, const int32_t* inp, const float* wte, const float* wpe,
                            int B, int L, int d);
void cuda_embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B,
                             int L, int d);
void cuda_rows_gather(float* out, const float* in, const int32_t* rows, int R, int d);
void cuda_rows_scatter(float* out, const float* in, const int32_t* rows, int R, int d);
double cuda_sum_squares(const float* x, int64_t n);
void cuda_pkm_select(int32_t* idx, float* w, const float* q, const float* K, int R, int Hm, int dk,
                     int n, int kk);
void cuda_pkm_read(float* out, const int32_t* row, const float* w, const float* V, int R, int Hm,
                   int kk, int d);
void cuda_pkm_backward(float* dq, float* dK, float* dV_rows, const float* dout, const int32_t* idx,
                       const int32_t* row, const float* w, const float* q, const float* K,
                       const float* V, int R, int Hm, int dk, int n, int kk, int d);
void cuda_adam_sparse_update(float* table, float* m, float* v, const int32_t* rows,
                             const float* grads, int64_t nrows, int d, float lr, float beta1,
                             float beta2, float eps, int64_t t);
void cuda_dispatch_forward(float* out, float* lse, const float* q, const float* kl, const float* vl,
                           const float* ki, const float* vi, const int32_t* pad, int B, int L,
                           int d, int H, int k, int C);
void cuda_dispatch_backward(float* dq, float* dkl, float* dvl, float* dki, float* dvi,
                            const float* dout, const float* out, const float* lse, const float* q,
                            const float* kl, const float* vl, const float* ki, const float* vi,
                            const int32_t* pad, int B, int L, int d, int H, int k, int C);
void cuda_interest_aggregate_forward(float* P, float* lse, const float* qe, const float* kh,
                                     const float* vh, const float* u, const float* pb,
                                     const int32_t* pad, int B, int L, int d, int H, int k, int C);
void cuda_interest_aggregate_backward(float* dqe, float* dkh, float* dvh, float* du, float* dpb,
                                      const float* dP, const float* P, const float* lse,
                                      const float* qe, const float* kh, const float* vh,
                                      const float* u, const float* pb, const int32_t* pad, int B,
                                      int L, int d, int H, int k, int C);
void cuda_attention_fused_forward(float* out, float* lse, const float* qkv, const int32_t* pad,
                                  int B, int L, int d, int H);
void cuda_attention_fused_backward(float* dqkv, const float* dout, const float* out,
                                   const float* lse, const float* qkv, const int32_t* pad, int B,
                                   int L, int d, int H);
void cuda_linear_attention_forward(float* out, float* den, const float* qr, const float* kr,
                                   const float* qf, const float* kf, const float* v,
                                   const int32_t* pad, int B, int L, int d, int H, int C);
void cuda_linear_attention_backward(float* dqr, float* dkr, float* dqf, float* dkf, float* dv,
                                    const float* dout, const float* out, const float* den,
                                    const float* qr, const float* kr, const float* qf,
                                    const float* kf, const float* v, const int32_t* pad, int B,
                                    int L, int d, int H, int C);
void cuda_elu1_forward(float* out, const float* inp, int64_t n);
void cuda_elu1_backward(float* dinp, const float* inp, const float* dout, int64_t n);
void cuda_rope_forward(float* out, const float* inp, int B, int L, int d);
void cuda_rope_backward(float* dinp, const float* dout, int B, int L, int d);
void cuda_conv_causal_forward(float* out, const float* inp, const float* w, const float* bias,
                              const int32_t* pad, int B, int L, int d, int K);
void cuda_conv_causal_backward(float* dinp, float* dw, float* dbias, const float* dout,
                               const float* inp, const float* w, const int32_t* pad, int B, int L,
                               int d, int K);
void cuda_attention_forward(float* out, float* att, const float* qkv, const int32_t* pad, int B,
                            int L, int d, int H);
void cuda_attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv,
                             const float* att, const int32_t* pad, int B, int L, int d, int H);
double cuda_crossentropy_tied(float* dh, float* dwte, const float* h, const float* wte,
                              const int32_t* targets, int R, int d, int V, float scale,
                              float* scratch, int rb);
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

#endif
