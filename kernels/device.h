// device.h: the process's compute backend and the memory its kernels touch
// (DESIGN §1). Kernels run on the CPU or on one CUDA GPU, chosen once at
// start (--device); buffers the kernels read or write are allocated, zeroed
// and copied through these calls, so that callers never branch on the
// backend. Defines: device_kind, device_init, device_current, device_name,
// device_set_fatal, device_precision, device_set_precision, dev_alloc, dev_free, dev_zero,
// dev_to_device, dev_to_host, dev_copy, dev_sync, dev_host_alloc, dev_host_free, dev_host_view,
// dev_host_staging, dev_peak_bytes, dev_graph, dev_graph_begin, dev_graph_end,
// dev_graph_launch, dev_graph_free, DEV_NCCL_ID_BYTES, dev_nccl_unique_id,
// dev_nccl_start, dev_nccl_allreduce, dev_nccl_wait, dev_nccl_alltoallv,
// dev_nccl_stop.
// A CUDA failure is fatal: the message (the call, where, CUDA's reason) goes
// to the handler set by device_set_fatal (default: stderr, exit 1).
#ifndef ELASTIC_DEVICE_H
#define ELASTIC_DEVICE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } device_kind;

// "cpu" or "cuda" (GPU local_rank mod the GPUs visible). 0, or -1 with err[512]
// saying why (a build without CUDA, no driver, no GPU). May be called again to
// switch (the tests compare the backends in one process).
int device_init(const char* name, int local_rank, char* err);
device_kind device_current(void);
// "cpu" or "cuda:N (NVIDIA H100 ...)" into buf[n].
const char* device_name(char* buf, size_t n);
void device_set_fatal(void (*fatal)(const char* msg));
// The arithmetic of the GPU's matrix products: full fp32, or fp32 numbers
// whose products the tensor cores take in TF32 or in bf16 (fp32 storage,
// weights and accumulation: mixed precision's master weights are the
// weights). The CPU computes in fp32 whatever is set.
typedef enum { PRECISION_FP32 = 0, PRECISION_TF32 = 1, PRECISION_BF16 = 2 } device_precision;
void device_set_precision(device_precision p);

// Memory on the current backend (host memory on the CPU). dev_alloc returns
// NULL when out of memory; dev_zero, the copies and dev_sync are fatal on
// failure. Copies between host and device are synchronous.
void* dev_alloc(size_t bytes);
void dev_free(void* p);
void dev_zero(void* p, size_t bytes);
void dev_to_device(void* dst, const void* host_src, size_t bytes);
void dev_to_host(void* host_dst, const void* src, size_t bytes);
void dev_copy(void* dst, const void* src, size_t bytes);
void dev_sync(void);
// Host memory the device copies from asynchronously (page-locked on CUDA;
// malloc on the CPU): for buffers copied to the device every step. NULL when
// out of memory.
void* dev_host_alloc(size_t bytes);
void dev_host_free(void* p);
// src's bytes readable on the host: src itself on the CPU, else copied into
// host_buf (which must hold them) and host_buf returned.
const void* dev_host_view(const void* src, size_t bytes, void* host_buf);
// A host buffer of bytes for dev_host_view, malloc'ed (free it), or NULL on
// the CPU, which needs none. NULL with *failed set when out of memory.
void* dev_host_staging(size_t bytes, int* failed);
// The most bytes held through dev_alloc at once since the start (the GPU's
// memory for the model, its optimizer and buffers), plus on CUDA what the
// backend holds for itself (cuBLAS's workspace, the kernels' scratch and
// bf16 operand copies: they only grow, so the sum bounds the peak from
// above); the CUDA context and NCCL's buffers not included.
size_t dev_peak_bytes(void);

// Per-call timing on CUDA (elastic_bench --profile): while on, every kernel and
// copy is bracketed by two timing events on the stream (nothing waits) and
// adds the GPU's time between them to its line; the report (which waits once
// to read them) prints the lines by time, per step over `steps`, beside the
// wall time `wall_s` they were measured in (the rest: the GPU idle between
// calls, waiting for the host or a synchronisation). Off resets.
void device_profile(int on);
void device_profile_report(FILE* f, int steps, double wall_s);

// Graphs (CUDA graphs): a sequence of backend calls recorded once and
// queued again as a whole, without the host's cost per call. dev_graph_begin
// returns 1 and from then on records what the kernels and dev_zero/dev_copy
// queue, running none of it, until dev_graph_end returns the recording; it
// returns 0 where nothing can be recorded (the CPU, per-call profiling,
// CUDA_LAUNCH_BLOCKING=1 or ELASTIC_CUDA_GRAPHS=0 in the environment): run
// the calls as usual. While
// recording, nothing may allocate, free, wait or copy host memory (each is a
// fatal error). dev_graph_launch queues the recorded work again, on the same
// buffers with the same arguments, and returns 0; or -1, queuing nothing,
// when the backend's own scratch moved or the precision changed since the
// recording (record again), or while profiling (run the calls).
typedef struct dev_graph dev_graph;
int dev_graph_begin(void);
dev_graph* dev_graph_end(void);
int dev_graph_launch(dev_graph* g);
void dev_graph_free(dev_graph* g);

// NCCL on the CUDA backend, for comm's nccl backend (comm/ calls these; on
// the CPU each is an error). 0, or -1 with err[512] naming the call.
// Rank 0 makes the unique id (DEV_NCCL_ID_BYTES), comm broadcasts it, every
// rank starts its communicator with it. All-reduces are in place over floats
// in device memory, summed or averaged (mean); `side` runs one on a side
// stream, after what the compute stream has queued, and dev_nccl_wait makes
// the compute stream wait for every such one so far. dev_nccl_alltoallv is
// comm_alltoallv on device buffers (counts and offsets on the host).
#define DEV_NCCL_ID_BYTES 128
int dev_nccl_unique_id(void* id, size_t bytes, char* err);
int dev_nccl_start(const void* id, int rank, int world, char* err);
int dev_nccl_allreduce(float* buf, int64_t n, int mean, int side, char* err);
int dev_nccl_wait(char* err);
int dev_nccl_alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_offsets,
                       void* recv, const int64_t* recv_counts, const int64_t* recv_offsets,
                       size_t elem, char* err);
void dev_nccl_stop(void);

#endif
