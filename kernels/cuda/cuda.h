// cuda.h (private to kernels/): the CUDA backend, a shared library
// (libelastic_cuda.so, built from kernels/cuda/*.cu with cuBLAS) that
// kernels/cpu/device.c loads with dlopen only when --device cuda is chosen, so
// that a CPU run neither loads nor maps the CUDA libraries. Its one export,
// elastic_cuda_ops, returns the table below; each kernel entry mirrors the
// kernels.h function of the same name, on device pointers.
#ifndef ELASTIC_CUDA_H
#define ELASTIC_CUDA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int (*init)(int local_rank, char* name, size_t name_len, char* err);
    void (*set_fatal)(void (*fatal)(const char* msg));
    void (*set_tf32)(int on);
    void* (*alloc)(size_t bytes);
    void (*free)(void* p);
    void (*zero)(void* p, size_t bytes);
    void (*to_device)(void* dst, const void* src, size_t bytes);
    void (*to_host)(void* dst, const void* src, size_t bytes);
    void (*copy)(void* dst, const void* src, size_t bytes);
    void (*sync)(void);
    void (*residual_forward)(float* out, const float* a, const float* b, int64_t n);
    void (*residual_backward)(float* da, float* db, const float* dout, int64_t n);
    void (*gelu_forward)(float* out, const float* inp, int64_t n);
    void (*gelu_backward)(float* dinp, const float* inp, const float* dout, int64_t n);
    void (*silu_forward)(float* out, const float* inp, int64_t n);
    void (*silu_backward)(float* dinp, const float* inp, const float* dout, int64_t n);
    void (*mul_forward)(float* out, const float* a, const float* b, int64_t n);
    void (*mul_backward)(float* da, float* db, const float* a, const float* b, const float* dout,
                         int64_t n);
    void (*dropout_forward)(float* out, const float* inp, float p, uint64_t seed, int64_t first,
                            int64_t n);
    void (*dropout_backward)(float* dinp, const float* dout, float p, uint64_t seed, int64_t first,
                             int64_t n);
    void (*adamw_update)(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                         float beta1, float beta2, float eps, float weight_decay, int64_t t);
    void (*layernorm_forward)(float* out, float* mean, float* rstd, const float* inp,
                              const float* w, const float* b, int R, int d);
    void (*layernorm_backward)(float* dinp, float* dw, float* db, const float* dout,
                               const float* inp, const float* w, const float* mean,
                               const float* rstd, int R, int d);
    void (*matmul_forward)(float* out, const float* inp, const float* w, const float* bias, int R,
                           int IC, int OC);
    void (*matmul_backward)(float* dinp, float* dw, float* dbias, const float* dout,
                            const float* inp, const float* w, int R, int IC, int OC);
    void (*embedding_forward)(float* out, const int32_t* inp, const float* wte, const float* wpe,
                              int B, int L, int d);
    void (*embedding_backward)(float* dwte, float* dwpe, const float* dout, const int32_t* inp,
                               int B, int L, int d);
    void (*rows_gather)(float* out, const float* in, const int32_t* rows, int R, int d);
    void (*rows_scatter)(float* out, const float* in, const int32_t* rows, int R, int d);
    double (*sum_squares)(const float* x, int64_t n);
    double (*crossentropy_tied)(float* dh, float* dwte, const float* h, const float* wte,
                                const int32_t* targets, int R, int d, int V, float scale,
                                float* scratch, int rb);
    void (*attention_forward)(float* out, float* att, const float* qkv, const int32_t* pad, int B,
                              int L, int d, int H);
    void (*attention_backward)(float* dqkv, float* datt, const float* dout, const float* qkv,
                               const float* att, const int32_t* pad, int B, int L, int d, int H);
    void (*elu1_forward)(float* out, const float* inp, int64_t n);
    void (*elu1_backward)(float* dinp, const float* inp, const float* dout, int64_t n);
    void (*rope_forward)(float* out, const float* inp, int B, int L, int d);
    void (*rope_backward)(float* dinp, const float* dout, int B, int L, int d);
    void (*conv_causal_forward)(float* out, const float* inp, const float* w, const float* bias,
                                const int32_t* pad, int B, int L, int d, int K);
    void (*conv_causal_backward)(float* dinp, float* dw, float* dbias, const float* dout,
                                 const float* inp, const float* w, const int32_t* pad, int B, int L,
                                 int d, int K);
    void (*linear_attention_forward)(float* out, float* den, const float* qr, const float* kr,
                                     const float* qf, const float* kf, const float* v,
                                     const int32_t* pad, int B, int L, int d, int H, int C);
    void (*linear_attention_backward)(float* dqr, float* dkr, float* dqf, float* dkf, float* dv,
                                      const float* dout, const float* out, const float* den,
                                      const float* qr, const float* kr, const float* qf,
                                      const float* kf, const float* v, const int32_t* pad, int B,
                                      int L, int d, int H, int C);
    void (*attention_fused_forward)(float* out, float* lse, const float* qkv, const int32_t* pad,
                                    int B, int L, int d, int H);
    void (*attention_fused_backward)(float* dqkv, const float* dout, const float* out,
                                     const float* lse, const float* qkv, const int32_t* pad, int B,
                                     int L, int d, int H);
    void (*interest_aggregate_forward)(float* P, float* lse, const float* qe, const float* kh,
                                       const float* vh, const float* u, const float* pb,
                                       const int32_t* pad, int B, int L, int d, int H, int k,
                                       int C);
    void (*interest_aggregate_backward)(float* dqe, float* dkh, float* dvh, float* du, float* dpb,
                                        const float* dP, const float* P, const float* lse,
                                        const float* qe, const float* kh, const float* vh,
                                        const float* u, const float* pb, const int32_t* pad, int B,
                                        int L, int d, int H, int k, int C);
    void (*dispatch_forward)(float* out, float* lse, const float* q, const float* kl,
                             const float* vl, const float* ki, const float* vi, const int32_t* pad,
                             int B, int L, int d, int H, int k, int C);
    void (*dispatch_backward)(float* dq, float* dkl, float* dvl, float* dki, float* dvi,
                              const float* dout, const float* out, const float* lse, const float* q,
                              const float* kl, const float* vl, const float* ki, const float* vi,
                              const int32_t* pad, int B, int L, int d, int H, int k, int C);
    void (*pkm_select)(int32_t* idx, float* w, const float* q, const float* K, int R, int Hm,
                       int dk, int n, int kk);
    void (*pkm_read)(float* out, const int32_t* row, const float* w, const float* V, int R, int Hm,
                     int kk, int d);
    void (*pkm_backward)(float* dq, float* dK, float* dV_rows, const float* dout,
                         const int32_t* idx, const int32_t* row, const float* w, const float* q,
                         const float* K, const float* V, int R, int Hm, int dk, int n, int kk,
                         int d);
    void (*adam_sparse_update)(float* table, float* m, float* v, const int32_t* rows,
                               const float* grads, int64_t nrows, int d, float lr, float beta1,
                               float beta2, float eps, int64_t t);
} cuda_ops;

#ifdef __cplusplus
extern "C" {
#endif
const cuda_ops* elastic_cuda_ops(void);
#ifdef __cplusplus
}
#endif

#endif
