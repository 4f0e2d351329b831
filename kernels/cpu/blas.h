// blas.h (private to kernels/cpu): gemm, the row-major BLAS matrix product at
// the precision of real: C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C.
// Never call it inside an OpenMP parallel region: OpenBLAS runs its own threads.
#ifndef ELASTIC_CPU_BLAS_H
#define ELASTIC_CPU_BLAS_H

#include <cblas.h>

#include "kernels.h"

static inline void gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K,
                        real alpha, const real* A, int lda, const real* B, int ldb, real beta,
                        real* C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef KERNELS_F64
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

#endif
