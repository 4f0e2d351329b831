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
// Stream capture records what would be queued and a launched graph runs the records (below);
// CUDA_EMU_CENSUS=1 prints each kernel's launches and a rough bound on its time at exit.
// CUDA_EMU_ORDER=reverse runs a block's threads in the opposite order, last index first: a
// thread that reads what a higher-indexed thread writes without a barrier between then reads
// NaN (shared memory starts so) or a stale value, and the tests see it (make test runs the
// CUDA tests both ways; a warp reading another's rows before a barrier passed in index order).
#ifndef ELASTIC_CUDA_EMU_RUNTIME_H
#define ELASTIC_CUDA_EMU_RUNTIME_H

#include <setjmp.h>
#include <time.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <algorithm>
#include <map>
#include <tuple>
#include <string>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(...)

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
// CUDA_EMU_CENSUS: each thread's running time in the block just run (ns)
inline const bool census_on = getenv("CUDA_EMU_CENSUS") != nullptr;
inline std::vector<double> thread_ns;
inline std::vector<long> resumes;  // and how often it ran: its switches' cost is taken off
inline double now_ns() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
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
    if (census_on) thread_ns.assign(n, 0), resumes.assign(n, 0);
    for (;;) {
        for (int k = 0; k < n; k++) {
            const int i = reverse_order ? n - 1 - k : k;
            if (workers[i]->state == READY) {
                cur = i;
                threadIdx = dim3(i % blockDim.x, (i / blockDim.x) % blockDim.y,
                                 i / (blockDim.x * blockDim.y));
                const double t0 = census_on ? now_ns() : 0;
                if (!_setjmp(sched)) _longjmp(workers[i]->jb, 1);
                if (census_on) thread_ns[i] += now_ns() - t0, resumes[i]++;
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

// ---- stream capture (CUDA graphs): while a capture is open, what would be
// queued (launches, memsets, device-to-device copies, cuBLAS products) is
// recorded, not run, and a launched graph runs the records in order, each
// with the arguments it was given. Whatever would wait for the device or
// allocate stops the run, as it ends a real capture with an error.
namespace emu {
inline std::vector<std::function<void()>>* capturing;
inline void queue(std::function<void()> op) {
    if (capturing)
        capturing->push_back(std::move(op));
    else
        op();
}
inline void not_while_capturing(const char* what) {
    if (capturing) {
        fprintf(stderr, "cuda_emu: %s while a stream capture is open (not allowed in a graph)\n",
                what);
        abort();
    }
}
}  // namespace emu

// ---- CUDA_EMU_CENSUS: at exit, each kernel's launches, blocks and threads,
// and two bounds on its time in emulated thread-nanoseconds: "chain", the
// waves of blocks an H100-sized GPU (132 SMs, 2,048 threads and 228 KB of
// dynamic shared memory an SM) would run times a block's longest thread,
// and "spread", all threads' time over the 16,896 lanes that issue at once.
// A kernel whose chain is far above its spread waits on serial work in too
// few threads (a small grid, a long loop). Units are the CPU's, not the GPU's:
// read the ratios between kernels, and chain against spread.
namespace emu {
struct census_row {
    long launches = 0;
    double blocks = 0, threads = 0, chain = 0, spread = 0;
};
inline std::map<std::string, census_row> census;
inline void census_add(const char* name, double blocks, int threads, double chain, double work) {
    census_row& r = census[name];
    r.launches++, r.blocks += blocks, r.threads += threads, r.chain += chain;
    r.spread += work / 16896;
}
// the time a thread's resume and yield take by themselves: a warp of threads
// that only wait at shuffles, timed once
inline double switch_ns() {
    static const double c = [] {
        blockDim = dim3(32);
        const std::function<void()> f = [] {
            for (int i = 0; i < 200; i++) wait(AT_WARP);
        };
        run_block(f, 32);
        double t = 0, r = 0;
        for (int i = 0; i < 32; i++) t += thread_ns[i], r += resumes[i];
        return t / r;
    }();
    return c;
}
inline struct census_report {
    ~census_report() {
        if (!census_on || census.empty()) return;
        std::vector<std::pair<double, std::string>> by;
        double total = 0;
        for (auto& [k, r] : census) {
            const double t = r.chain > r.spread ? r.chain : r.spread;
            by.push_back({t, k}), total += t;
        }
        std::sort(by.rbegin(), by.rend());
        fprintf(stderr,
                "cuda_emu census (emulated ms, less %.0f ns a thread switch; bound = the larger of "
                "chain and spread)\n",
                switch_ns());
        fprintf(stderr, "  %-32s %8s %10s %8s %10s %10s %7s\n", "kernel", "launches", "blocks",
                "threads", "chain", "spread", "share");
        for (auto& [t, k] : by) {
            const census_row& r = census[k];
            fprintf(stderr, "  %-32s %8ld %10.0f %8.0f %10.3f %10.3f %6.1f%%\n", k.c_str(),
                    r.launches, r.blocks / r.launches, r.threads / r.launches, r.chain / 1e6,
                    r.spread / 1e6, 100 * t / total);
        }
    }
} census_report_at_exit;
}  // namespace emu

// runs a launch: every block of the grid, one after another
template <class... P>
void emu_run_grid(void (*k)(P...), const char* name, dim3 g, dim3 b, size_t shared, P... args) {
    if (emu::census_on) emu::switch_ns();
    gridDim = g, blockDim = b;
    const int n = (int)(b.x * b.y * b.z);
    // 128-byte aligned, as a GPU's shared memory is (wmma needs 32)
    std::vector<float> dyn(shared / sizeof(float) + 1 + 32);
    emu_dynamic_shared = (void*)(((uintptr_t)dyn.data() + 127) & ~(uintptr_t)127);
    const std::function<void()> f = [&] { k(args...); };
    double longest = 0, work = 0;  // the census: the blocks' longest threads, summed; all
    for (unsigned z = 0; z < g.z; z++)
        for (unsigned y = 0; y < g.y; y++)
            for (unsigned x = 0; x < g.x; x++) {
                blockIdx = dim3(x, y, z);
                for (auto& v : dyn) v = NAN;
                emu::run_block(f, n);
                if (emu::census_on) {
                    double m = 0;
                    for (int i = 0; i < n; i++) {
                        double t = emu::thread_ns[i] - emu::resumes[i] * emu::switch_ns();
                        t = t > 0 ? t : 0;
                        m = t > m ? t : m, work += t;
                    }
                    longest += m;
                }
            }
    if (emu::census_on) {
        const double blocks = (double)g.x * g.y * g.z;
        int per_sm = 2048 / n;
        if (shared && (int)(228 * 1024 / shared) < per_sm) per_sm = (int)(228 * 1024 / shared);
        if (per_sm > 32) per_sm = 32;
        if (per_sm < 1) per_sm = 1;
        const double waves = std::ceil(blocks / (132.0 * per_sm));
        emu::census_add(name, blocks, n, waves * longest / blocks, work);
    }
}

// a launch, checked when it is made, run now or recorded (a capture)
template <class... P, class... A>
void emu_launch(void (*k)(P...), const char* name, dim3 g, dim3 b, size_t shared, void* stream,
                A&&... args) {
    (void)stream;
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
    // the kernel's parameters by value, as a launch copies them
    emu::queue([k, name, g, b, shared, as = std::make_tuple(static_cast<P>(args)...)] {
        std::apply([&](auto... a) { emu_run_grid(k, name, g, b, shared, a...); }, as);
    });
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
inline float __expf(float x) { return expf(x); }  // the GPU's is approximate (ex2.approx)
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
enum cudaDeviceAttr {
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};
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
    if (a == cudaDevAttrMultiProcessorCount) return *v = 132, cudaSuccess;  // an H100 SXM's
    if (a != cudaDevAttrMaxSharedMemoryPerBlockOptin) return 1;
    return *v = 227 * 1024, cudaSuccess;  // an H100's, as cudaFuncSetAttribute allows
}
// blocks an SM holds by shared memory alone (228 KB, 1 KB a block reserved),
// at most 2048 threads: the registers, which the emulator cannot count, left out
template <class K>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int threads, size_t shared) {
    const int by_shared = (int)(228 * 1024 / (shared + 1024)), by_threads = 2048 / threads;
    *n = by_shared < by_threads ? by_shared : by_threads;
    return cudaSuccess;
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
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
    emu::not_while_capturing("cudaStreamSynchronize");
    return emu::host_waits++, cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
// events: every call runs at once, in order, so an event is always reached;
// a timing event holds the host clock of its turn in the stream (ns)
struct emu_event {
    double t;
};
typedef emu_event* cudaEvent_t;
enum { cudaEventDefault = 0, cudaEventDisableTiming = 2 };
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, int) {
    return *e = new emu_event{0}, cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    emu::queue([e] { e->t = emu::now_ns(); });
    return cudaSuccess;
}
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    return *ms = (float)((b->t - a->t) / 1e6), cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { return delete e, cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    emu::not_while_capturing("cudaMalloc");
    // 256-byte aligned, as CUDA's allocations are
    *p = aligned_alloc(256, (bytes + 255) / 256 * 256 + (bytes ? 0 : 256));
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
    emu::not_while_capturing("cudaFree");
    emu::host_waits++;
    if (!emu::blocks.erase((uintptr_t)p)) return 1;  // not from cudaMalloc
    return free(p), cudaSuccess;
}
// page-locked host memory: plain host memory here (never taken for device memory)
inline cudaError_t cudaMallocHost(void** p, size_t bytes) {
    emu::not_while_capturing("cudaMallocHost");
    return (*p = malloc(bytes ? bytes : 1)) ? cudaSuccess : 2;
}
inline cudaError_t cudaFreeHost(void* p) {
    emu::not_while_capturing("cudaFreeHost");
    return free(p), cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
    if (n) emu::need_device(p, "cudaMemsetAsync", 1);
    emu::queue([=] { memset(p, v, n); });
    return cudaSuccess;
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
    // a copy from or to the host waits for it here (and in a graph would
    // copy the host buffer of the capture): the backend makes none in a capture
    if (k != cudaMemcpyDeviceToDevice) emu::not_while_capturing("a host copy");
    emu::queue([=] { memmove(d, s, n); });
    return cudaSuccess;
}
inline cudaError_t cudaFuncSetAttribute(const void* k, int, int bytes) {
    if (bytes > 227 * 1024) return 1;  // an H100's most per block
    emu::shared_allowed[k] = bytes;
    return cudaSuccess;
}

// graphs: a capture's records; an instantiated graph is a copy of them
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal = 0 };
typedef std::vector<std::function<void()>>* cudaGraph_t;
typedef std::vector<std::function<void()>>* cudaGraphExec_t;
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
    if (emu::capturing) return 1;  // one capture at a time
    emu::capturing = new std::vector<std::function<void()>>();
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
    if (!emu::capturing) return 1;
    *g = emu::capturing, emu::capturing = nullptr;
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
    *e = new std::vector<std::function<void()>>(*g);
    return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) { return delete g, cudaSuccess; }
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { return delete e, cudaSuccess; }
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
    emu::not_while_capturing("cudaGraphLaunch");
    for (auto& op : *e) op();
    return cudaSuccess;
}

#endif
