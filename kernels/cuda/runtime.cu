// runtime.cu: the CUDA backend's device, stream, cuBLAS handle and memory.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>

#include "common.cuh"

static void (*g_fatal)(const char* msg);
static cudaStream_t g_stream;
static cublasHandle_t g_blas;
static int g_ready;
// Bumped whenever what a recorded graph holds fixed changes: the backend's own
// buffers moving (its scratch, the bf16 copies) or the products' precision.
static unsigned long g_epoch;
// the device bytes the backend holds for itself (cuBLAS's workspace, the
// scratch, the bf16 operand copies), for dev_peak_bytes
static size_t g_own_bytes;

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
        // cuBLAS's workspace, ours: left to cuBLAS, each recorded graph would
        // get a new one (32 MiB: what cuBLAS takes on Hopper by default)
        void* ws = NULL;
        const size_t ws_bytes = (size_t)32 << 20;
        cudaCheck(cudaMalloc(&ws, ws_bytes));
        g_own_bytes += ws_bytes;
        cublasCheck(cublasSetWorkspace(g_blas, ws, ws_bytes));
        cublasCheck(cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH));
        g_ready = 1;
    }
    return 0;
}

// The matrix products' arithmetic (device.h's device_precision: 0 fp32, 1
// TF32, 2 bf16), fp32 accumulation always. fp32 and TF32 take the fp32
// matrices as they are (TF32: cuBLAS rounds the tensor cores' inputs). bf16
// converts both operands to bf16 copies first: given fp32 inputs and
// CUBLAS_COMPUTE_32F_FAST_16BF, cuBLAS on an H200 ran at TF32's speed with
// TF32's error, not bf16's.
static int g_precision = 1;
static cublasComputeType_t g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;

extern "C" void cuda_set_precision(int p) {
    if (p != g_precision) g_epoch++;
    g_precision = p;
    g_compute = p == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

int cuda_precision(void) { return g_precision; }

// dst[rows, cols] (leading dimension ldd) = src[rows, cols] (ld) rounded to
// bf16, column-major: threadIdx.x along a column, threadIdx.y across them
__global__ void k_to_bf16(__nv_bfloat16* dst, int ldd, const float* src, int ld, int rows,
                          int cols) {
    for (int c = blockIdx.y * blockDim.y + threadIdx.y; c < cols; c += gridDim.y * blockDim.y)
        for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += gridDim.x * blockDim.x)
            dst[(int64_t)c * ldd + r] = __float2bfloat16(src[(int64_t)c * ld + r]);
}

// The bf16 copy of one operand of a product (which 0 or 1: A or B), in this
// file's own buffer (grown as needed), its leading dimension into *ldd: rows
// rounded up to 8, each column 16-byte aligned for the tensor cores.
static const __nv_bfloat16* bf16_copy(int which, const float* src, int ld, int rows, int cols,
                                      int* ldd) {
    static __nv_bfloat16* buf[2];
    static size_t cap[2];
    *ldd = rows < 1 ? 8 : (rows + 7) / 8 * 8;
    const size_t n = (size_t)*ldd * (cols < 1 ? 1 : cols);
    if (cap[which] < n) {
        if (buf[which]) cudaCheck(cudaFree(buf[which]));
        cudaCheck(cudaMalloc(&buf[which], n * sizeof(__nv_bfloat16)));
        g_epoch++;
        g_own_bytes += (n - cap[which]) * sizeof(__nv_bfloat16);
        cap[which] = n;
    }
    if (rows > 0 && cols > 0) {
        const int tx = rows >= 256 ? 256 : (rows + 31) / 32 * 32, ty = 256 / tx;
        const int64_t gy = ((int64_t)cols + ty - 1) / ty;
        const dim3 grid(blocks_for(rows, tx), (unsigned)(gy > 65535 ? 65535 : gy)), block(tx, ty);
        k_to_bf16<<<grid, block, 0, g_stream>>>(buf[which], *ldd, src, ld, rows, cols);
        launchCheck();
    }
    return buf[which];
}

void cuda_gemm_strided(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                       const float* A, int lda, long long sa, const float* B, int ldb, long long sb,
                       float beta, float* C, int ldc, long long sc, int batch) {
    const cublasComputeType_t ct =
        g_precision == 0 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    cublasCheck(cublasGemmStridedBatchedEx(g_blas, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, sa,
                                           B, CUDA_R_32F, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc,
                                           batch, ct, CUBLAS_GEMM_DEFAULT));
}

void cuda_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A,
               int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    const float one = 1;
    if (g_precision == 2) {  // A is m x k stored (k x m transposed), B k x n (n x k)
        int la, lb;
        const __nv_bfloat16* a =
            bf16_copy(0, A, lda, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, &la);
        const __nv_bfloat16* b =
            bf16_copy(1, B, ldb, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, &lb);
        cublasCheck(cublasGemmEx(g_blas, ta, tb, m, n, k, &one, a, CUDA_R_16BF, la, b, CUDA_R_16BF,
                                 lb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
        return;
    }
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
        g_own_bytes += bytes - cap;
        cap = bytes;
        g_epoch++;
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

extern "C" size_t cuda_own_bytes(void) { return g_own_bytes; }

extern "C" void cuda_sync(void) { cudaCheck(cudaStreamSynchronize(g_stream)); }

// Graphs (device.h's dev_graph_*): the compute stream captured, nothing run,
// then instantiated; a graph launches only in the epoch it was recorded in.
struct cuda_graph {
    cudaGraphExec_t exec;
    unsigned long epoch;
};

extern "C" int cuda_graph_begin(void) {
    cudaCheck(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeGlobal));
    return 1;
}

extern "C" void* cuda_graph_end(void) {
    cudaGraph_t g;
    cudaCheck(cudaStreamEndCapture(g_stream, &g));
    cuda_graph* r = (cuda_graph*)malloc(sizeof *r);
    if (!r) cuda_fail(__FILE__, __LINE__, "graph", "out of host memory");
    cudaCheck(cudaGraphInstantiate(&r->exec, g, 0));
    cudaCheck(cudaGraphDestroy(g));
    r->epoch = g_epoch;
    return r;
}

extern "C" int cuda_graph_launch(void* graph) {
    const cuda_graph* r = (const cuda_graph*)graph;
    if (r->epoch != g_epoch) return -1;
    cudaCheck(cudaGraphLaunch(r->exec, g_stream));
    return 0;
}

extern "C" void cuda_graph_free(void* graph) {
    if (!graph) return;
    cudaCheck(cudaGraphExecDestroy(((cuda_graph*)graph)->exec));
    free(graph);
}

// Per-call profiling by timing events on the stream (device.h's
// device_profile): nothing waits while the steps run; the pairs of events
// are read after one wait at the end. cuda_prof_event records the next event
// of a pool (grown as needed) and returns its index; cuda_prof_seconds is the
// time between two recorded ones (after a wait); cuda_prof_events_reset lets
// the pool's events be recorded again.
static cudaEvent_t* g_ev;
static int g_nev, g_capev;

extern "C" int cuda_prof_event(void) {
    if (g_nev == g_capev) {
        const int cap = g_capev ? 2 * g_capev : 1024;
        cudaEvent_t* ev = (cudaEvent_t*)realloc(g_ev, (size_t)cap * sizeof *ev);
        if (!ev) cuda_fail(__FILE__, __LINE__, "profile", "out of host memory for events");
        for (int i = g_capev; i < cap; i++) cudaCheck(cudaEventCreate(&ev[i]));
        g_ev = ev, g_capev = cap;
    }
    cudaCheck(cudaEventRecord(g_ev[g_nev], g_stream));
    return g_nev++;
}

extern "C" double cuda_prof_seconds(int a, int b) {
    float ms = 0;
    cudaCheck(cudaEventElapsedTime(&ms, g_ev[a], g_ev[b]));
    return 1e-3 * ms;
}

// Marks inside calls while profiling (common.cuh): a line per name, its time
// and count, from event pairs read (and cleared) by device_profile_report
#define MARKS 32
#define MARK_PAIRS 4096
static int g_marking, g_mark_ev;
static struct {
    const char* name;
    double s;
    long n;
} g_marks[MARKS];
static struct { int line, a, b; } g_mark_pend[MARK_PAIRS];
static int g_nmark_pend;

static void marks_resolve(void) {
    cudaCheck(cudaStreamSynchronize(g_stream));
    for (int i = 0; i < g_nmark_pend; i++)
        g_marks[g_mark_pend[i].line].s += cuda_prof_seconds(g_mark_pend[i].a, g_mark_pend[i].b);
    g_nmark_pend = 0;
}

void cuda_mark_begin(void) {
    if (g_marking) g_mark_ev = cuda_prof_event();
}

void cuda_mark(const char* name) {
    if (!g_marking) return;
    const int ev = cuda_prof_event();
    int i = 0;
    while (i < MARKS && g_marks[i].name && strcmp(g_marks[i].name, name)) i++;
    if (i < MARKS) {  // (the table full: a further name is not timed)
        g_marks[i].name = name, g_marks[i].n++;
        if (g_nmark_pend == MARK_PAIRS) marks_resolve();
        g_mark_pend[g_nmark_pend].line = i, g_mark_pend[g_nmark_pend].a = g_mark_ev;
        g_mark_pend[g_nmark_pend++].b = ev;
    }
    g_mark_ev = ev;
}

// the marks' pending pairs read first: their events are the pool's too
extern "C" void cuda_prof_events_reset(void) {
    marks_resolve();
    g_nev = 0;
}

extern "C" void cuda_profile_marks(int on) {
    g_marking = on;
    g_nmark_pend = 0;
    memset(g_marks, 0, sizeof g_marks);
}

extern "C" int cuda_profile_mark_lines(const char** names, double* seconds, long* calls, int max) {
    marks_resolve();
    int n = 0;
    for (int i = 0; i < MARKS && n < max && g_marks[i].name; i++, n++)
        names[n] = g_marks[i].name, seconds[n] = g_marks[i].s, calls[n] = g_marks[i].n;
    return n;
}
