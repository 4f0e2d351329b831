// cuda_runtime.h of the CUDA emulator (tests/cuda_emu): runs the backend's
// kernels (kernels/cuda/*.cu, rewritten by tests/cuda_emu/emu.sh so each
// launch k<<<grid, block, shared, stream>>>(args) reads emu_launch(k, grid,
// block, shared, stream, args)) on the CPU, so a machine without a GPU checks
// their indexing, masking and synchronisation against the CPU kernels. Every
// CUDA thread of a block is a coroutine on one OS thread; the
// scheduler runs each until it finishes or reaches __syncthreads or a warp
// shuffle, and releases a barrier once every live thread of the block (or
// warp) waits at it: a barrier that some threads of a block never reach is
// reported as a deadlock, not hidden. Device memory is host memory, filled
// with NaN when allocated, and dynamic shared memory is NaN-filled for every
// block, so reading what nothing wrote shows. Every pointer a kernel, a copy
// or cuBLAS is given must lie in memory cudaMalloc gave (and a copy's host
// side outside it): a host array passed to a kernel stops the run by name. What it cannot show:
// races between blocks (they run one after another), most races inside a block (it runs the
// threads in index order, each to its next barrier or shuffle), speed, and the GPU's floating point
// (its exp differs in the last bits; cuBLAS's TF32 runs as FP32, mma.h's wmma rounds to TF32).
// CUDA_EMU_ORDER=reverse runs a block's threads in the opposite order, last index first: a
// thread that reads what a higher-indexed thread writes without a barrier between then reads
// NaN (shared memory starts so) or a stale value, and the tests see it (make test runs the
// CUDA tests both ways; a warp reading another's rows before a barrier passed in index order).
#ifndef ELASTIC_CUDA_EMU_RUNTIME_H
#define ELASTIC_CUDA_EMU_RUNTIME_H

#include <setjmp.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

// 16-byte aligned as on the GPU: a float4 access through a misaligned pointer
// may fault here too (the compiler's aligned moves)
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline void* emu_dynamic_shared;

// ---- the scheduler of one block's threads. Each thread index has a worker:
// a coroutine on its own stack, started once with makecontext and switched
// with _setjmp/_longjmp afterwards (no system call per switch).
namespace emu {
enum { READY, AT_BLOCK, AT_WARP, DONE };
struct worker {
    jmp_buf jb;
    ucontext_t uc;
    int state;
};
inline std::vector<worker*> workers;
inline jmp_buf sched;
inline ucontext_t boot;
inline int cur, booting;
inline const std::function<void()>* body;
inline const bool reverse_order = [] {
    const char* e = getenv("CUDA_EMU_ORDER");
    return e && !strcmp(e, "reverse");
}();
constexpr size_t STACK = 64 * 1024;

[[noreturn]] inline void worker_main() {
    const int me = booting;
    for (;;) {
        if (!_setjmp(workers[me]->jb)) _longjmp(sched, 1);  // idle until given a thread
        (*body)();
        workers[me]->state = DONE;
    }
}

inline void wait(int kind) {
    workers[cur]->state = kind;
    if (!_setjmp(workers[cur]->jb)) _longjmp(sched, 1);
}

inline void run_block(const std::function<void()>& f, int n) {
    body = &f;
    while ((int)workers.size() < n) {  // a new worker runs up to its idle point
        worker* w = new worker();
        getcontext(&w->uc);
        w->uc.uc_stack.ss_sp = malloc(STACK);
        w->uc.uc_stack.ss_size = STACK;
        w->uc.uc_link = nullptr;
        makecontext(&w->uc, (void (*)())worker_main, 0);
        booting = (int)workers.size();
        workers.push_back(w);
        if (!_setjmp(sched)) swapcontext(&boot, &w->uc);
    }
    for (int i = 0; i < n; i++) workers[i]->state = READY;
    for (;;) {
        for (int k = 0; k < n; k++) {
            const int i = reverse_order ? n - 1 - k : k;
            if (workers[i]->state == READY) {
                cur = i;
                threadIdx = dim3(i % blockDim.x, (i / blockDim.x) % blockDim.y,
                                 i / (blockDim.x * blockDim.y));
                if (!_setjmp(sched)) _longjmp(workers[i]->jb, 1);
            }
        }
        int live = 0, at_block = 0, released = 0;
        for (int i = 0; i < n; i++)
            live += workers[i]->state != DONE, at_block += workers[i]->state == AT_BLOCK;
        if (!live) return;
        for (int w = 0; w * 32 < n; w++) {  // a warp whose live threads all wait at a shuffle
            int wl = 0, wa = 0;
            for (int i = w * 32; i < n && i < w * 32 + 32; i++)
                wl += workers[i]->state != DONE, wa += workers[i]->state == AT_WARP;
            if (wa && wa == wl) {
                for (int i = w * 32; i < n && i < w * 32 + 32; i++) workers[i]->state = READY;
                released = 1;
            }
        }
        if (!released && at_block == live) {
            for (int i = 0; i < n; i++)
                if (workers[i]->state == AT_BLOCK) workers[i]->state = READY;
            released = 1;
        }
        if (!released) {
            fprintf(stderr,
                    "cuda_emu: deadlock in block (%u,%u,%u): %d of %d live threads at "
                    "__syncthreads, the rest at a warp shuffle some of their warp never reaches\n",
                    blockIdx.x, blockIdx.y, blockIdx.z, at_block, live);
            abort();
        }
    }
}
}  // namespace emu

// dynamic shared memory over 48 KB a kernel may take (cudaFuncSetAttribute)
namespace emu {
inline std::map<const void*, int> shared_allowed;
}

// ---- device memory: the live cudaMalloc blocks, to tell device from host
namespace emu {
inline std::map<uintptr_t, size_t> blocks;
inline bool on_device(const void* p) {
    const auto u = (uintptr_t)p;
    auto it = blocks.upper_bound(u);
    if (it == blocks.begin()) return false;
    --it;
    return u >= it->first && u < it->first + (it->second ? it->second : 1);
}
inline void need_device(const void* p, const char* what, int i) {
    if (p && !on_device(p)) {
        fprintf(stderr, "cuda_emu: %s: argument %d (%p) is not device memory\n", what, i, p);
        abort();
    }
}
template <class T>
void check_arg(const T& a, const char* what, int i) {
    if constexpr (std::is_pointer_v<T>) need_device((const void*)a, what, i);
}
}  // namespace emu

template <class... P, class... A>
void emu_launch(void (*k)(P...), const char* name, dim3 g, dim3 b, size_t shared, void* stream,
                A&&... args) {
    (void)stream;
    gridDim = g, blockDim = b;
    const int n = (int)(b.x * b.y * b.z);
    if (n < 1 || n > 1024 || g.y > 65535 || g.z > 65535) {
        fprintf(stderr, "cuda_emu: %s: bad launch configuration (grid %u,%u,%u block %u,%u,%u)\n",
                name, g.x, g.y, g.z, b.x, b.y, b.z);
        abort();
    }
    if (shared > 48 * 1024 && (int)shared > emu::shared_allowed[(const void*)k]) {
        fprintf(stderr,
                "cuda_emu: a launch asks %zu bytes of dynamic shared memory, over 48 KB "
                "without cudaFuncSetAttribute\n",
                shared);
        abort();
    }
    {
        int i = 0;
        (emu::check_arg(static_cast<P>(args), name, i++), ...);
    }
    // 128-byte aligned, as a GPU's shared memory is (wmma needs 32)
    std::vector<float> dyn(shared / sizeof(float) + 1 + 32);
    emu_dynamic_shared = (void*)(((uintptr_t)dyn.data() + 127) & ~(uintptr_t)127);
    const std::function<void()> f = [&] { k(args...); };
    for (unsigned z = 0; z < g.z; z++)
        for (unsigned y = 0; y < g.y; y++)
            for (unsigned x = 0; x < g.x; x++) {
                blockIdx = dim3(x, y, z);
                for (auto& v : dyn) v = NAN;
                emu::run_block(f, n);
            }
}

inline void __syncthreads() { emu::wait(emu::AT_BLOCK); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    emu::wait(emu::AT_WARP);
}

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    (void)mask;
    static T slot[1024];
    const int t = emu::cur;
    slot[t] = v;
    emu::wait(emu::AT_WARP);
    const T r = slot[t ^ lane_mask];
    emu::wait(emu::AT_WARP);
    return r;
}

// one OS thread: a plain add is atomic
template <typename T>
inline T atomicAdd(T* p, T v) {
    static_assert(
        std::is_same_v<T, float> || std::is_same_v<T, int> || std::is_same_v<T, unsigned long long>,
        "atomicAdd of float, int or unsigned long long");
    const T old = *p;
    *p = v + old;
    return old;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// the round-to-nearest arithmetic intrinsics: one rounding each, as on a GPU
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }

// ---- the runtime API the backend calls
typedef int cudaError_t;
typedef void* cudaStream_t;
enum {
    cudaSuccess = 0,
    cudaErrorInsufficientDriver = 35,
    cudaStreamNonBlocking = 1,
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8
};
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
};
inline const char* cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { return *n = 1, cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { return *d = 0, cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
    if (a != cudaDevAttrMaxSharedMemoryPerBlockOptin) return 1;
    return *v = 227 * 1024, cudaSuccess;  // an H100's, as cudaFuncSetAttribute allows
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    snprintf(p->name, sizeof p->name, "CPU emulation");
    p->totalGlobalMem = (size_t)1 << 30, p->major = 9, p->minor = 0;
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, int) {
    return *s = nullptr, cudaSuccess;
}
// Host waits for the device: synchronisations, and cudaFree (which waits on a
// GPU). With ELASTIC_EMU_WAITS set, their count is printed at exit
// ("cuda_emu: N host waits"): a test can ask what a training step waits for.
namespace emu {
inline long host_waits = 0;
inline struct wait_report {
    ~wait_report() {
        if (getenv("ELASTIC_EMU_WAITS")) fprintf(stderr, "cuda_emu: %ld host waits\n", host_waits);
    }
} wait_report_at_exit;
}  // namespace emu
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu::host_waits++, cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
// events: every call runs at once, in order, so an event is always reached
typedef void* cudaEvent_t;
enum { cudaEventDisableTiming = 2 };
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, int) {
    return *e = nullptr, cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return 2;
    memset(*p, 0xff, bytes);  // NaN: what nothing wrote shows
    emu::blocks[(uintptr_t)*p] = bytes;
    return cudaSuccess;
}
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
    return cudaMalloc((void**)p, bytes);
}
inline cudaError_t cudaFree(void* p) {
    if (!p) return cudaSuccess;
    emu::host_waits++;
    if (!emu::blocks.erase((uintptr_t)p)) return 1;  // not from cudaMalloc
    return free(p), cudaSuccess;
}
// page-locked host memory: plain host memory here (never taken for device memory)
inline cudaError_t cudaMallocHost(void** p, size_t bytes) {
    return (*p = malloc(bytes ? bytes : 1)) ? cudaSuccess : 2;
}
inline cudaError_t cudaFreeHost(void* p) { return free(p), cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
    if (n) emu::need_device(p, "cudaMemsetAsync", 1);
    return memset(p, v, n), cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k,
                                   cudaStream_t) {
    if (!n) return cudaSuccess;
    const bool dd = emu::on_device(d), sd = emu::on_device(s);
    if (dd != (k != cudaMemcpyDeviceToHost) || sd != (k != cudaMemcpyHostToDevice)) {
        fprintf(stderr, "cuda_emu: cudaMemcpyAsync kind %d from %s to %s memory\n", (int)k,
                sd ? "device" : "host", dd ? "device" : "host");
        abort();
    }
    return memmove(d, s, n), cudaSuccess;
}
inline cudaError_t cudaFuncSetAttribute(const void* k, int, int bytes) {
    if (bytes > 227 * 1024) return 1;  // an H100's most per block
    emu::shared_allowed[k] = bytes;
    return cudaSuccess;
}

#endif
