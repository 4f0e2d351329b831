// cublas_v2.h of the CUDA emulator (tests/cuda_emu/cuda_runtime.h): the few
// cuBLAS calls the backend makes, the GEMMs as a plain column-major loop. A
// fast compute type rounds each fp32 input to what the tensor cores take
// (TF32: 10 mantissa bits), so a precision's error shows as on the GPU; the
// sums stay in fp32. CUBLAS_COMPUTE_32F_FAST_16BF only allows bf16, and an
// H200's cuBLAS ran TF32 for it (TF32's error and speed): so does this. A
// real bf16 product takes bf16 inputs (CUDA_R_16BF, cuda_bf16.h); half inputs
// (CUDA_R_16F, cuda_fp16.h) may write a half C too.
#ifndef ELASTIC_CUDA_EMU_CUBLAS_H
#define ELASTIC_CUDA_EMU_CUBLAS_H

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

typedef int cublasStatus_t;
typedef void* cublasHandle_t;
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType;
typedef enum {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;
enum { CUBLAS_GEMM_DEFAULT = -1 };

namespace emu {
// x with its mantissa rounded to `bits` bits, to nearest, ties to even
inline float round_mantissa(float x, int bits) {
    uint32_t u;
    memcpy(&u, &x, 4);
    const int drop = 23 - bits;
    const uint32_t half = 1u << (drop - 1), odd = (u >> drop) & 1;
    u = (u + half - 1 + odd) & ~((1u << drop) - 1);
    memcpy(&x, &u, 4);
    return x;
}
}  // namespace emu

inline const char* cublasGetStatusString(cublasStatus_t s) {
    return s ? "emulated error" : "success";
}
inline cublasStatus_t cublasCreate(cublasHandle_t* h) { return *h = nullptr, 0; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, int) { return 0; }
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t, void* ws, size_t) {
    emu::need_device(ws, "cublasSetWorkspace", 1);
    return 0;
}

// C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, column-major
inline cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m,
                                  int n, int k, const float* alpha, const float* A, int lda,
                                  const float* B, int ldb, const float* beta, float* C, int ldc) {
    emu::need_device(A, "cublasSgemm", 1), emu::need_device(B, "cublasSgemm", 2);
    emu::need_device(C, "cublasSgemm", 3);
    const float al = *alpha, be = *beta;  // read when called, as cuBLAS reads host scalars
    emu::queue([=] {
        const double t0 = emu::census_on ? emu::now_ns() : 0;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float s = 0;
                for (int p = 0; p < k; p++)
                    s += (ta == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda]) *
                         (tb == CUBLAS_OP_N ? B[p + (size_t)j * ldb] : B[j + (size_t)p * ldb]);
                float* c = &C[i + (size_t)j * ldc];
                *c = al * s + (be == 0 ? 0 : be * *c);  // beta 0: C is not read
            }
        if (emu::census_on) emu::census_add("cublasSgemm", 0, 0, 0, emu::now_ns() - t0);
    });
    return 0;
}

// C = alpha op(A) op(B) + beta C, C fp32, A and B fp32, bf16 or half (both
// the same; half A and B may write a half C), fp32 inputs rounded as the
// compute type's tensor cores take them
inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void* alpha, const void* A,
                                   cudaDataType at, int lda, const void* B, cudaDataType bt,
                                   int ldb, const void* beta, void* C, cudaDataType ct, int ldc,
                                   cublasComputeType_t compute, int) {
    if (at != bt || (at != CUDA_R_32F && at != CUDA_R_16BF && at != CUDA_R_16F)) return 1;
    if (ct != CUDA_R_32F && !(ct == CUDA_R_16F && at == CUDA_R_16F)) return 1;
    // bf16 and half inputs go with CUBLAS_COMPUTE_32F (cuBLAS's table of combinations)
    if (at != CUDA_R_32F && compute != CUBLAS_COMPUTE_32F) return 1;
    emu::need_device(A, "cublasGemmEx", 1), emu::need_device(B, "cublasGemmEx", 2);
    emu::need_device(C, "cublasGemmEx", 3);
    const int bits =
        compute == CUBLAS_COMPUTE_32F_FAST_16BF || compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? 10
                                                                                           : 23;
    const float al = *(const float*)alpha, be = *(const float*)beta;
    emu::queue([=] {
        const double t0 = emu::census_on ? emu::now_ns() : 0;
        // element i of an input, rounded as the compute type takes it
        auto el = [=](const void* M, size_t i) {
            if (at == CUDA_R_16BF) return __bfloat162float(((const __nv_bfloat16*)M)[i]);
            if (at == CUDA_R_16F) return __half2float(((const __half*)M)[i]);
            const float x = ((const float*)M)[i];
            return bits < 23 ? emu::round_mantissa(x, bits) : x;
        };
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float s = 0;
                for (int p = 0; p < k; p++)
                    s += el(A, ta == CUBLAS_OP_N ? i + (size_t)p * lda : p + (size_t)i * lda) *
                         el(B, tb == CUBLAS_OP_N ? p + (size_t)j * ldb : j + (size_t)p * ldb);
                const size_t o = i + (size_t)j * ldc;
                if (ct == CUDA_R_16F) {
                    __half* h = (__half*)C;
                    h[o] = __float2half(al * s + (be == 0 ? 0 : be * __half2float(h[o])));
                } else {
                    float* c = (float*)C;
                    c[o] = al * s + (be == 0 ? 0 : be * c[o]);  // beta 0: C is not read
                }
            }
        // the census: a product's loop time as a kernel's work, no chain (an
        // overestimate of a tensor-core product's share)
        if (emu::census_on) emu::census_add("cublasGemmEx", 0, 0, 0, emu::now_ns() - t0);
    });
    return 0;
}

// the same product for i < batch on A + i sa, B + i sb, C + i sc (elements)
inline cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t hd, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
    const void* alpha, const void* A, cudaDataType at, int lda, long long sa, const void* B,
    cudaDataType bt, int ldb, long long sb, const void* beta, void* C, cudaDataType ct, int ldc,
    long long sc, int batch, cublasComputeType_t compute, int algo) {
    if (at != CUDA_R_32F || bt != CUDA_R_32F || ct != CUDA_R_32F || batch < 0) return 1;
    for (int i = 0; i < batch; i++) {
        const cublasStatus_t r = cublasGemmEx(hd, ta, tb, m, n, k, alpha, (const float*)A + i * sa,
                                              at, lda, (const float*)B + i * sb, bt, ldb, beta,
                                              (float*)C + i * sc, ct, ldc, compute, algo);
        if (r) return r;
    }
    return 0;
}

#endif
