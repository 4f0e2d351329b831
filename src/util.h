// util.h: process-wide helpers for the programs. Defines: die, die_message, util_set_comm,
// xmalloc/xcalloc, now_sec, peak_rss_mb, fmt_duration.
// Every fatal error goes through die(): it prints "elastic: error: ..." with the
// rank and stops every rank (MPI_Abort under mpi), so nothing hangs.
#ifndef ELASTIC_UTIL_H
#define ELASTIC_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"

void util_set_comm(const comm* c);
void die(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
// die("%s", msg): a handler for libraries that report a fatal error as text.
void die_message(const char* msg) __attribute__((noreturn));

void* xmalloc(size_t bytes, const char* what);
void* xcalloc(size_t n, size_t size, const char* what);
double now_sec(void);
double peak_rss_mb(void);
// "1h02m", "3m05s", "12s" into buf[16]
const char* fmt_duration(double seconds, char* buf);

#endif
