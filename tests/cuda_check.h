// cuda_check.h: what the CUDA parity tests share (static, for inclusion by
// one test file each, after cmocka.h): the GPU found or the reason why not,
// switching backends, random inputs, device copies, relative errors, CHECK.
// Defines: why, have_gpu, cuda_tests_begin, on, need_gpu, randn, up, rel_err, CHECK.
#ifndef ELASTIC_TESTS_CUDA_CHECK_H
#define ELASTIC_TESTS_CUDA_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "kernels.h"

static char why[512];
static int have_gpu;

// A test program's start: [PATTERN] (argv[1]) runs only the tests whose names
// match (jobs/gpu_check.sh runs each in its own process); the GPU found, and
// named, or why not.
static void cuda_tests_begin(int argc, char** argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    have_gpu = device_init("cuda", 0, why) == 0;
    char name[256];
    if (have_gpu) printf("# device %s\n", device_name(name, sizeof name));
}

static void on(const char* dev) {
    char err[512];
    assert_int_equal(device_init(dev, 0, err), 0);
}

// Skips without a GPU; else makes CUDA the current device (a test before may
// have left the CPU current, and buffers made then would be host memory).
static void need_gpu(void) {
    if (!have_gpu) {
        printf("# skipped: %s\n", why);
        skip();
    }
    on("cuda");
}

static inline float* randn(size_t n, uint64_t seed, float scale) {
    float* x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)(2 * rng_uniform(seed, i) - 1);
    return x;
}

// A host array's copy on the device.
static inline float* up(const float* h, size_t n) {
    float* d = dev_alloc(n * sizeof *d);
    assert_non_null(d);
    dev_to_device(d, h, n * sizeof *d);
    return d;
}

// max |a - b| / (max |b| + tiny) over n, with the device array brought back.
static inline double rel_err(const float* dev, const float* ref, size_t n) {
    float* h = malloc(n * sizeof *h);
    dev_to_host(h, dev, n * sizeof *h);
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)h[i] - ref[i]));
        den = fmax(den, fabs((double)ref[i]));
    }
    free(h);
    return num / den;
}

#define CHECK(name, dev, ref, n, tol)                                          \
    do {                                                                       \
        const double e_ = rel_err(dev, ref, n);                                \
        printf("# %-28s relative error %.2e (bound %.0e)\n", name, e_, (tol)); \
        assert_true(e_ <= (tol));                                              \
    } while (0)

#endif
