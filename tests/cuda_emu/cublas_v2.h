// cublas_v2.h of the CUDA emulator (tests/cuda_emu/cuda_runtime.h): the few
// cuBLAS calls the backend makes, cublasSgemm as a plain column-major loop
// (TF32 math runs as FP32).
#ifndef ELASTIC_CUDA_EMU_CUBLAS_H
#define ELASTIC_CUDA_EMU_CUBLAS_H

#include "cuda_runtime.h"

typedef int cublasStatus_t;
typedef void* cublasHandle_t;
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };

inline const char* cublasGetStatusString(cublasStatus_t s) {
    return s ? "emulated error" : "success";
}
inline cublasStatus_t cublasCreate(cublasHandle_t* h) { return *h = nullptr, 0; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, int) { return 0; }

// C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, column-major
inline cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m,
                                  int n, int k, const float* alpha, const float* A, int lda,
                                  const float* B, int ldb, const float* beta, float* C, int ldc) {
    emu::need_device(A, "cublasSgemm", 1), emu::need_device(B, "cublasSgemm", 2);
    emu::need_device(C, "cublasSgemm", 3);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0;
            for (int p = 0; p < k; p++)
                s += (ta == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda]) *
                     (tb == CUBLAS_OP_N ? B[p + (size_t)j * ldb] : B[j + (size_t)p * ldb]);
            float* c = &C[i + (size_t)j * ldc];
            *c = *alpha * s + (*beta == 0 ? 0 : *beta * *c);  // beta 0: C is not read
        }
    return 0;
}

#endif
