// on_cuda.h (private to kernels/): the run-time dispatch of a kernel to the
// CUDA backend. A kernel starts with ON_CUDA(name, args...): on a process
// whose device is CUDA (device_init loaded libelastic_cuda.so), that
// backend's version runs instead, and the kernel returns. The
// double-precision build (the finite-difference tests) has no CUDA: ON_CUDA
// is empty there.
#ifndef ELASTIC_ON_CUDA_H
#define ELASTIC_ON_CUDA_H

#include "cuda/cuda.h"

extern const cuda_ops* g_cuda;  // NULL on the CPU

// Per-call timing on CUDA (device_profile): each call synchronises before and
// after and adds its time to its kernel's line. Off: one test per call.
extern int g_prof;
double prof_begin(void);
void prof_end(const char* name, double t0);
// The floating-point operations of the call about to run, counted into its
// line by prof_end (the report's GFLOP/s): set by a kernel before ON_CUDA.
extern double g_prof_flops;

// A kernel not yet ported stops the run with its name rather than read
// device memory on the host.
void device_missing(const char* kernel) __attribute__((noreturn));

#ifndef KERNELS_F64
#define ON_CUDA(name, ...)                               \
    do {                                                 \
        if (g_cuda) {                                    \
            const double t_ = g_prof ? prof_begin() : 0; \
            g_cuda->name(__VA_ARGS__);                   \
            if (g_prof) prof_end(#name, t_);             \
            return;                                      \
        }                                                \
    } while (0)
// the same for a kernel that returns a value (into var, then returned)
#define ON_CUDA_VALUE(name, var, ...)                    \
    do {                                                 \
        if (g_cuda) {                                    \
            const double t_ = g_prof ? prof_begin() : 0; \
            var = g_cuda->name(__VA_ARGS__);             \
            if (g_prof) prof_end(#name, t_);             \
            return var;                                  \
        }                                                \
    } while (0)
#define ON_CUDA_MISSING(name)              \
    do {                                   \
        if (g_cuda) device_missing(#name); \
    } while (0)
#define PROF_FLOPS(x)                   \
    do {                                \
        if (g_prof) g_prof_flops = (x); \
    } while (0)
#else
#define PROF_FLOPS(x) \
    do {              \
    } while (0)
#define ON_CUDA_MISSING(name) \
    do {                      \
    } while (0)
#define ON_CUDA(name, ...) \
    do {                   \
    } while (0)
#define ON_CUDA_VALUE(name, var, ...) \
    do {                              \
    } while (0)
#endif

#endif
