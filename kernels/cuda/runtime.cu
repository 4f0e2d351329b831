// runtime.cu: the CUDA backend's device, stream, cuBLAS handle and memory.
#include <stdio.h>
#include <stdlib.h>

#include "common.cuh"

static void (*g_fatal)(const char* msg);
static cudaStream_t g_stream;
static cublasHandle_t g_blas;
static int g_ready;

void cuda_fail(const char* file, int line, const char* call, const char* why) {
    char msg[1024];
    snprintf(msg, sizeof msg, "CUDA: %s failed at %s:%d: %s", call, file, line, why);
    if (g_fatal) g_fatal(msg);
    fprintf(stderr, "elastic: error: %s\n", msg);
    exit(1);
}

extern "C" void cuda_set_fatal(void (*fatal)(const char* msg)) { g_fatal = fatal; }

extern "C" int cuda_init(int local_rank, char* name, size_t name_len, char* err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(err, 512, "--device cuda: no usable CUDA GPU here (%s)",
                 e == cudaErrorInsufficientDriver
                     ? "no NVIDIA driver, or one older than this build's CUDA"
                 : e != cudaSuccess ? cudaGetErrorString(e)
                                    : "no device visible");
        return -1;
    }
    const int dev = local_rank % n;
    cudaCheck(cudaSetDevice(dev));
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, dev));
    snprintf(name, name_len, "cuda:%d (%s, %.0f GiB, sm_%d%d)", dev, p.name,
             p.totalGlobalMem / 1073741824.0, p.major, p.minor);
    if (!g_ready) {
        cudaCheck(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
        cublasCheck(cublasCreate(&g_blas));
        cublasCheck(cublasSetStream(g_blas, g_stream));
        cublasCheck(cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH));
        g_ready = 1;
    }
    return 0;
}

// The matrix products' arithmetic (device.h's device_precision: 0 fp32, 1
// TF32, 2 bf16): fp32 storage always, the tensor cores' inputs rounded to
// TF32 or bf16, fp32 accumulation (cuBLAS's 32F_FAST compute types).
static cublasComputeType_t g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;

extern "C" void cuda_set_precision(int p) {
    g_compute = p == 2   ? CUBLAS_COMPUTE_32F_FAST_16BF
                : p == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32
                         : CUBLAS_COMPUTE_32F;
}

void cuda_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A,
               int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    const float one = 1;
    cublasCheck(cublasGemmEx(g_blas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
                             &beta, C, CUDA_R_32F, ldc, g_compute, CUBLAS_GEMM_DEFAULT));
}

cudaStream_t cuda_stream(void) { return g_stream; }

void* cuda_scratch(size_t bytes) {
    static void* p;
    static size_t cap;
    if (cap < bytes) {
        if (p) cudaCheck(cudaFree(p));
        cudaCheck(cudaMalloc(&p, bytes));
        cap = bytes;
    }
    return p;
}
cublasHandle_t cuda_blas(void) { return g_blas; }

extern "C" void* cuda_alloc(size_t bytes) {
    void* p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError();  // out of memory is the caller's to report
        return NULL;
    }
    return p;
}

extern "C" void cuda_free(void* p) {
    if (p) cudaCheck(cudaFree(p));
}

// page-locked host memory: host-to-device copies from it run asynchronously
extern "C" void* cuda_host_alloc(size_t bytes) {
    void* p = NULL;
    return cudaMallocHost(&p, bytes ? bytes : 1) == cudaSuccess ? p : NULL;
}

extern "C" void cuda_host_free(void* p) {
    if (p) cudaCheck(cudaFreeHost(p));
}

extern "C" void cuda_zero(void* p, size_t bytes) {
    cudaCheck(cudaMemsetAsync(p, 0, bytes, g_stream));
}

// From pageable host memory the call returns once the source is staged (the
// caller may reuse it at once) and the copy runs in stream order: no wait for
// the device here. (Pinned, double-buffered batches would overlap it too.)
extern "C" void cuda_to_device(void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g_stream));
}

extern "C" void cuda_to_host(void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g_stream));
    cudaCheck(cudaStreamSynchronize(g_stream));
}

extern "C" void cuda_copy(void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_stream));
}

extern "C" void cuda_sync(void) { cudaCheck(cudaStreamSynchronize(g_stream)); }
