// device.c: the backend of the process (device.h): host memory on the CPU;
// on CUDA, the backend library libelastic_cuda.so, loaded with dlopen when
// first chosen (a CPU run never loads the CUDA libraries). It is looked for
// at $ELASTIC_CUDA_LIB, beside the program, then where this build put it.
#include "device.h"

#include <dlfcn.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "on_cuda.h"

#ifndef ELASTIC_CUDA_LIB
#define ELASTIC_CUDA_LIB ""  // the build's copy (the Makefile passes its path)
#endif

const cuda_ops* g_cuda;           // read by ON_CUDA in every kernel
static const cuda_ops* g_loaded;  // kept once loaded, while the device is the CPU
static char g_name[256] = "cpu";
static void (*g_fatal)(const char* msg);
static device_precision g_precision = PRECISION_TF32;

#ifndef KERNELS_F64
// Loads the backend; NULL with err saying where it looked and why.
static const cuda_ops* load_cuda(char* err) {
    char beside[4096] = "", why[1024] = "";
    ssize_t n = readlink("/proc/self/exe", beside, sizeof beside - 32);
    if (n > 0) {
        beside[n] = 0;
        snprintf(beside + strlen(dirname(beside)), 32, "/libelastic_cuda.so");
    }
    const char* env = getenv("ELASTIC_CUDA_LIB");
    const char* tries[] = {env, beside, ELASTIC_CUDA_LIB};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        if (!tries[i] || !tries[i][0] || access(tries[i], R_OK)) continue;
        void* h = dlopen(tries[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(why, sizeof why, "%s", dlerror());
            continue;
        }
        const cuda_ops* (*get)(void) = (const cuda_ops* (*)(void))dlsym(h, "elastic_cuda_ops");
        if (get) return get();
        snprintf(why, sizeof why, "%s has no elastic_cuda_ops", tries[i]);
    }
    snprintf(err, 512,
             "--device cuda: cannot load the CUDA backend libelastic_cuda.so (looked at "
             "$ELASTIC_CUDA_LIB, %s, %s)%s%s; it is built by make where nvcc is found",
             beside[0] ? beside : "beside the program",
             ELASTIC_CUDA_LIB[0] ? ELASTIC_CUDA_LIB : "-", why[0] ? ": " : "", why);
    return NULL;
}
#endif

int device_init(const char* name, int local_rank, char* err) {
    if (!strcmp(name, "cpu")) {
        g_cuda = NULL;
        snprintf(g_name, sizeof g_name, "cpu");
        return 0;
    }
    if (strcmp(name, "cuda")) {
        snprintf(err, 512, "unknown --device '%s' (want cpu or cuda)", name);
        return -1;
    }
#ifdef KERNELS_F64
    snprintf(err, 512, "--device cuda: the double-precision kernels run on the CPU only");
    return -1;
#else
    if (!g_loaded && !(g_loaded = load_cuda(err))) return -1;
    if (g_fatal) g_loaded->set_fatal(g_fatal);
    if (g_loaded->init(local_rank, g_name, sizeof g_name, err)) return -1;
    g_loaded->set_precision((int)g_precision);
    g_cuda = g_loaded;
    return 0;
#endif
}

static void die_device(const char* msg) __attribute__((noreturn));
static void die_device(const char* msg) {
    if (g_fatal) g_fatal(msg);
    fprintf(stderr, "elastic: error: %s\n", msg);
    exit(1);
}

void device_missing(const char* kernel) {
    char msg[256];
    snprintf(msg, sizeof msg,
             "--device cuda: the kernel %s has no CUDA version yet (run this model with --device "
             "cpu)",
             kernel);
    die_device(msg);
}

// While a graph is recorded (dev_graph_begin), nothing may allocate, free or
// wait, and no host memory may be copied: the replay would not do it again.
static int g_recording;
static void not_recording(const char* call) {
    if (!g_recording) return;
    char msg[256];
    snprintf(msg, sizeof msg, "internal error: %s while a graph is recorded", call);
    die_device(msg);
}

device_kind device_current(void) { return g_cuda ? DEVICE_CUDA : DEVICE_CPU; }

const char* device_name(char* buf, size_t n) {
    snprintf(buf, n, "%s", g_name);
    return buf;
}

void device_set_fatal(void (*fatal)(const char* msg)) {
    g_fatal = fatal;
    if (g_loaded) g_loaded->set_fatal(fatal);
}

void device_set_precision(device_precision p) {
    g_precision = p;
    if (g_cuda) g_cuda->set_precision((int)p);
}

// live allocations and their sizes, for dev_peak_bytes (a model makes a few
// dozen; past the table's end they are allocated but not counted)
#define DEV_TRACK 4096
static struct {
    void* p;
    size_t bytes;
} g_live[DEV_TRACK];
static size_t g_now, g_peak;

void* dev_alloc(size_t bytes) {
    not_recording("dev_alloc");
    void* p = g_cuda ? g_cuda->alloc(bytes) : malloc(bytes ? bytes : 1);
    for (int i = 0; p && i < DEV_TRACK; i++)
        if (!g_live[i].p) {
            g_live[i].p = p, g_live[i].bytes = bytes;
            g_now += bytes;
            if (g_now > g_peak) g_peak = g_now;
            break;
        }
    return p;
}

void dev_free(void* p) {
    if (!p) return;
    not_recording("dev_free");
    for (int i = 0; i < DEV_TRACK; i++)
        if (g_live[i].p == p) {
            g_now -= g_live[i].bytes;
            g_live[i].p = NULL;
            break;
        }
    if (g_cuda)
        g_cuda->free(p);
    else
        free(p);
}

// with the CUDA backend's own buffers (cuBLAS's workspace, its scratch, which
// only grow), as torch.cuda.max_memory_allocated counts a peer's
size_t dev_peak_bytes(void) {
    return g_peak + (g_cuda ? g_cuda->own_bytes() : 0);
}

void dev_zero(void* p, size_t bytes) {
    if (g_cuda) {
        const double t_ = g_prof ? prof_begin() : 0;
        g_cuda->zero(p, bytes);
        if (g_prof) prof_end("zero", t_);
    } else
        memset(p, 0, bytes);
}

void dev_to_device(void* dst, const void* src, size_t bytes) {
    not_recording("dev_to_device");
    if (g_cuda) {
        const double t_ = g_prof ? prof_begin() : 0;
        g_cuda->to_device(dst, src, bytes);
        if (g_prof) prof_end("copy to device", t_);
    } else
        memcpy(dst, src, bytes);
}

void dev_to_host(void* dst, const void* src, size_t bytes) {
    not_recording("dev_to_host");
    if (g_cuda) {
        const double t_ = g_prof ? prof_begin() : 0;
        g_cuda->to_host(dst, src, bytes);
        if (g_prof) prof_end("copy to host", t_);
    } else
        memcpy(dst, src, bytes);
}

void dev_copy(void* dst, const void* src, size_t bytes) {
    if (g_cuda) {
        const double t_ = g_prof ? prof_begin() : 0;
        g_cuda->copy(dst, src, bytes);
        if (g_prof) prof_end("copy on device", t_);
    } else
        memmove(dst, src, bytes);
}

const void* dev_host_view(const void* src, size_t bytes, void* host_buf) {
    if (!g_cuda) return src;
    g_cuda->to_host(host_buf, src, bytes);
    return host_buf;
}

void* dev_host_staging(size_t bytes, int* failed) {
    *failed = 0;
    if (!g_cuda) return NULL;
    void* p = malloc(bytes ? bytes : 1);
    *failed = !p;
    return p;
}

int g_prof;
#define PROF_LINES 96
double g_prof_flops;
static struct {
    const char* name;
    long calls;
    double s, flops;
} g_lines[PROF_LINES];

// A call's time is the GPU's between two timing events recorded on the stream
// around it (nothing waits: the steps run as they do unprofiled); the pairs
// are read after one wait, when PROF_PAIRS are pending or at the report.
#define PROF_PAIRS 8192
static struct { int line, a, b; } g_pend[PROF_PAIRS];
static int g_npend;

static void prof_resolve(void) {
    g_cuda->sync();
    for (int i = 0; i < g_npend; i++)
        g_lines[g_pend[i].line].s += g_cuda->prof_seconds(g_pend[i].a, g_pend[i].b);
    g_npend = 0;
    g_cuda->prof_events_reset();
}

double prof_begin(void) { return (double)g_cuda->prof_event(); }

void prof_end(const char* name, double ev0) {
    int i = 0;
    while (i < PROF_LINES && g_lines[i].name && strcmp(g_lines[i].name, name)) i++;
    if (i == PROF_LINES) return;  // the table full: a further call is not timed
    g_lines[i].name = name;
    g_lines[i].calls++;
    g_lines[i].flops += g_prof_flops;
    g_prof_flops = 0;
    const int ev1 = g_cuda->prof_event();
    g_pend[g_npend].line = i, g_pend[g_npend].a = (int)ev0, g_pend[g_npend++].b = ev1;
    if (g_npend == PROF_PAIRS) prof_resolve();
}

void device_profile(int on) {
    g_prof = on && g_cuda;
    if (!on) memset(g_lines, 0, sizeof g_lines), g_npend = 0;
    if (g_cuda) g_cuda->profile_marks(g_prof), g_cuda->prof_events_reset();
}

static int by_time(const void* a, const void* b) {
    const double x = ((const typeof(g_lines[0])*)a)->s, y = ((const typeof(g_lines[0])*)b)->s;
    return (x < y) - (x > y);
}

void device_profile_report(FILE* f, int steps, double wall_s) {
    if (g_cuda) prof_resolve();
    int n = 0;
    double sum = 0;
    while (n < PROF_LINES && g_lines[n].name) sum += g_lines[n++].s;
    qsort(g_lines, (size_t)n, sizeof g_lines[0], by_time);
    fprintf(f, "  %-28s %8s %10s %7s %10s\n", "call", "per step", "ms/step", "share", "GFLOP/s");
    for (int i = 0; i < n; i++) {
        char rate[32] = "";
        if (g_lines[i].flops > 0 && g_lines[i].s > 0)
            snprintf(rate, sizeof rate, "%10.4g", g_lines[i].flops / g_lines[i].s * 1e-9);
        fprintf(f, "  %-28s %8.1f %10.3f %6.1f%% %s\n", g_lines[i].name,
                (double)g_lines[i].calls / steps, 1e3 * g_lines[i].s / steps,
                100 * g_lines[i].s / wall_s, rate);
    }
    fprintf(f, "  %-28s %8s %10.3f %6.1f%%\n", "(the GPU between calls)", "",
            1e3 * (wall_s - sum) / steps, 100 * (wall_s - sum) / wall_s);
    // the parts some calls time of themselves (inside the lines above)
    const char* names[32];
    double secs[32];
    long calls[32];
    const int m = g_cuda ? g_cuda->profile_mark_lines(names, secs, calls, 32) : 0;
    if (m) fprintf(f, "  of which, inside the calls above:\n");
    for (int i = 0; i < m; i++)
        fprintf(f, "    %-38s %8.1f %10.3f %6.1f%%\n", names[i], (double)calls[i] / steps,
                1e3 * secs[i] / steps, 100 * secs[i] / wall_s);
}

void* dev_host_alloc(size_t bytes) {
    not_recording("dev_host_alloc");
    return g_cuda ? g_cuda->host_alloc(bytes) : malloc(bytes ? bytes : 1);
}

void dev_host_free(void* p) {
    not_recording("dev_host_free");
    if (g_cuda)
        g_cuda->host_free(p);
    else
        free(p);
}

void dev_sync(void) {
    not_recording("dev_sync");
    if (g_cuda) g_cuda->sync();
}

// ---- graphs: on CUDA, unless profiling or CUDA_LAUNCH_BLOCKING=1 (every
// call waits, which a capture forbids) or ELASTIC_CUDA_GRAPHS=0
static int env_is(const char* name, const char* value) {
    const char* e = getenv(name);
    return e && !strcmp(e, value);
}

int dev_graph_begin(void) {
    if (!g_cuda || g_prof || env_is("ELASTIC_CUDA_GRAPHS", "0") ||
        env_is("CUDA_LAUNCH_BLOCKING", "1"))
        return 0;
    if (g_recording) die_device("internal error: a graph recorded inside another");
    g_recording = g_cuda->graph_begin();
    return g_recording;
}

dev_graph* dev_graph_end(void) {
    if (!g_recording) die_device("internal error: dev_graph_end without dev_graph_begin");
    g_recording = 0;
    return g_cuda->graph_end();
}

int dev_graph_launch(dev_graph* g) {
    not_recording("dev_graph_launch");
    if (!g_cuda || g_prof) return -1;  // profiling times each call: run them
    return g_cuda->graph_launch(g);
}

void dev_graph_free(dev_graph* g) {
    if (g && g_cuda) g_cuda->graph_free(g);
}

// ---- NCCL, on the CUDA backend only
static int need_cuda(char* err) {
    if (g_cuda) return 0;
    snprintf(err, 512, "--comm nccl needs --device cuda (NCCL moves GPU memory)");
    return -1;
}

int dev_nccl_unique_id(void* id, size_t bytes, char* err) {
    return need_cuda(err) ? -1 : g_cuda->nccl_unique_id(id, bytes, err);
}

int dev_nccl_start(const void* id, int rank, int world, char* err) {
    return need_cuda(err) ? -1 : g_cuda->nccl_start(id, rank, world, err);
}

int dev_nccl_allreduce(float* buf, int64_t n, int mean, int side, char* err) {
    return need_cuda(err) ? -1 : g_cuda->nccl_allreduce(buf, n, mean, side, err);
}

int dev_nccl_wait(char* err) { return need_cuda(err) ? -1 : g_cuda->nccl_wait(err); }

int dev_nccl_alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                       void* recv, const int64_t* recv_counts, const int64_t* recv_offsets,
                       size_t elem, char* err) {
    return need_cuda(err) ? -1
                          : g_cuda->nccl_alltoallv(send, send_counts, send_offsets, recv,
                                                   recv_counts, recv_offsets, elem, err);
}

void dev_nccl_stop(void) {
    if (g_cuda) g_cuda->nccl_stop();
}
