// util.c: fatal errors, checked allocation, clocks, memory readings.
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static const comm* g_comm;

void util_set_comm(const comm* c) { g_comm = c; }

void die(const char* fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (g_comm && g_comm->world > 1)
        fprintf(stderr, "elastic: error (rank %d of %d): %s\n", g_comm->rank, g_comm->world, msg);
    else
        fprintf(stderr, "elastic: error: %s\n", msg);
    comm_abort(g_comm, 1);
}

void die_message(const char* msg) { die("%s", msg); }

void* xmalloc(size_t bytes, const char* what) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void* xcalloc(size_t n, size_t size, const char* what) {
    void* p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return ru.ru_maxrss / 1024.0;  // Linux reports KiB
}

const char* fmt_duration(double s, char* buf) {
    if (s < 0 || s > 1e8) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, 16, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(buf, 16, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, 16, "%lds", t);
    return buf;
}
