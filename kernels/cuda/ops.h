// ops.h (private to kernels/cuda and kernels/cpu/device.c): the CUDA
// backend's entry points, one CUDA_OP(return type, name, (parameters)) each,
// in the order of the table. Included three times with CUDA_OP defined: the
// table's fields (cuda.h), the declarations of the functions cuda_NAME that
// kernels/cuda/*.cu define (common.cuh), and the table (ops.cu). Each kernel
// entry mirrors the kernels.h function of the same name, on device pointers.
// No include guard: it is meant to be included more than once.
CUDA_OP(int, init, (int local_rank, char* name, size_t name_len, char* err))
CUDA_OP(void, set_fatal, (void (*fatal)(const char* msg)))
CUDA_OP(void, set_precision, (int p))
CUDA_OP(void*, alloc, (size_t bytes))
CUDA_OP(void, free, (void* p))
CUDA_OP(void*, host_alloc, (size_t bytes))
CUDA_OP(void, host_free, (void* p))
CUDA_OP(void, zero, (void* p, size_t bytes))
CUDA_OP(void, to_device, (void* dst, const void* src, size_t bytes))
CUDA_OP(void, to_host, (void* dst, const void* src, size_t bytes))
CUDA_OP(void, copy, (void* dst, const void* src, size_t bytes))
CUDA_OP(void, sync, (void))
CUDA_OP(size_t, own_bytes, (void))
CUDA_OP(int, graph_begin, (void))
CUDA_OP(void*, graph_end, (void))
CUDA_OP(int, graph_launch, (void* graph))
CUDA_OP(void, graph_free, (void* graph))
CUDA_OP(int, prof_event, (void))
CUDA_OP(double, prof_seconds, (int a, int b))
CUDA_OP(void, prof_events_reset, (void))
CUDA_OP(void, profile_marks, (int on))
CUDA_OP(int, profile_mark_lines, (const char** names, double* seconds, long* calls, int max))
CUDA_OP(void, residual_forward, (float* out, const float* a, const float* b, int64_t n))
CUDA_OP(void, residual_backward, (float* da, float* db, const float* dout, int64_t n))
CUDA_OP(void, gelu_forward, (float* out, const float* inp, int64_t n))
CUDA_OP(void, gelu_backward, (float* dinp, const float* inp, const float* dout, int64_t n))
CUDA_OP(void, silu_forward, (float* out, const float* inp, int64_t n))
CUDA_OP(void, silu_backward, (float* dinp, const float* inp, const float* dout, int64_t n))
CUDA_OP(void, mul_forward, (float* out, const float* a, const float* b, int64_t n))
CUDA_OP(void, mul_backward,
        (float* da, float* db, const float* a, const float* b, const float* dout, int64_t n))
CUDA_OP(void, dropout_forward,
        (float* out, const float* inp, float p, uint64_t seed, int64_t first, int64_t n))
CUDA_OP(void, dropout_backward,
        (float* dinp, const float* dout, float p, uint64_t seed, int64_t first, int64_t n))
CUDA_OP(void, adamw_update,
        (float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1,
         float beta2, float eps, float weight_decay, int64_t t))
CUDA_OP(void, layernorm_forward,
        (float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
         int R, int d))
CUDA_OP(void, layernorm_backward,
        (float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
         const float* mean, const float* rstd, int R, int d))
CUDA_OP(void, matmul_forward,
        (float* out, const float* inp, const float* w, const float* bias, int R, int IC, int OC))
CUDA_OP(void, matmul_backward,
        (float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
         int R, int IC, int OC))
CUDA_OP(void, embedding_forward,
        (float* out, const int32_t* inp, const float* wte, const float* wpe, int B, int L, int d))
CUDA_OP(void, embedding_backward,
        (float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B, int L, int d))
CUDA_OP(void, rows_gather, (float* out, const float* in, const int32_t* rows, int R, int d))
CUDA_OP(void, rows_scatter, (float* out, const float* in, const int32_t* rows, int R, int d))
CUDA_OP(double, sum_squares, (const float* x, int64_t n))
CUDA_OP(void, sum_squares_into, (double* out, const float* x, int64_t n))
CUDA_OP(int64_t, ids_group,
        (int32_t * uniq, int32_t* row, int32_t* perm, int32_t* first, int64_t* counts,
         const int32_t* ids, int64_t n, int64_t rows, int P, uint64_t* work))
CUDA_OP(void, rows_sum_runs,
        (float* out, const float* rows, const float* w, int group, const int32_t* perm,
         const int32_t* first, int64_t u, int d))
CUDA_OP(int64_t, ids_local,
        (int32_t * at, const int32_t* ids, int64_t n, int64_t rows, int P, int rank))
CUDA_OP(void, rows_mark, (uint8_t * marks, const int32_t* rows, int64_t n))
CUDA_OP(double, crossentropy_tied,
        (float* dh, float* dwte, const float* h, const float* wte, const int32_t* targets, int R,
         int d, int V, float scale, float* scratch, int rb))
CUDA_OP(void, crossentropy_tied_into,
        (double* loss, float* dh, float* dwte, const float* h, const float* wte,
         const int32_t* targets, int R, int d, int V, float scale, float* scratch, int rb))
CUDA_OP(void, attention_forward,
        (float* out, float* att, const float* qkv, const int32_t* pad, int B, int L, int d, int H))
CUDA_OP(void, attention_backward,
        (float* dqkv, float* datt, const float* dout, const float* qkv, const float* att,
         const int32_t* pad, int B, int L, int d, int H))
CUDA_OP(void, elu1_forward, (float* out, const float* inp, int64_t n))
CUDA_OP(void, elu1_backward, (float* dinp, const float* inp, const float* dout, int64_t n))
CUDA_OP(void, rope_forward, (float* out, const float* inp, int B, int L, int d))
CUDA_OP(void, rope_backward, (float* dinp, const float* dout, int B, int L, int d))
CUDA_OP(void, conv_causal_forward,
        (float* out, const float* inp, const float* w, const float* bias, const int32_t* pad, int B,
         int L, int d, int K))
CUDA_OP(void, conv_causal_backward,
        (float* dinp, float* dw, float* dbias, const float* dout, const float* inp, const float* w,
         const int32_t* pad, int B, int L, int d, int K))
CUDA_OP(void, linear_attention_forward,
        (float* out, float* den, const float* qr, const float* kr, const float* qf, const float* kf,
         const float* v, const int32_t* pad, int B, int L, int d, int H, int C))
CUDA_OP(void, linear_attention_backward,
        (float* dqr, float* dkr, float* dqf, float* dkf, float* dv, const float* dout,
         const float* out, const float* den, const float* qr, const float* kr, const float* qf,
         const float* kf, const float* v, const int32_t* pad, int B, int L, int d, int H, int C))
CUDA_OP(void, attention_fused_forward,
        (float* out, float* lse, const float* qkv, const int32_t* pad, int B, int L, int d, int H))
CUDA_OP(void, attention_last,
        (float* out, const float* qkv, const int32_t* pad, int B, int L, int d, int H))
CUDA_OP(void, attention_fused_backward,
        (float* dqkv, const float* dout, const float* out, const float* lse, const float* qkv,
         const int32_t* pad, int B, int L, int d, int H))
CUDA_OP(void, interest_aggregate_forward,
        (float* P, float* lse, const float* qe, const float* kh, const float* vh, const float* u,
         const float* pb, const int32_t* pad, int B, int L, int d, int H, int k, int C))
CUDA_OP(void, interest_aggregate_backward,
        (float* dqe, float* dkh, float* dvh, float* du, float* dpb, const float* dP, const float* P,
         const float* lse, const float* qe, const float* kh, const float* vh, const float* u,
         const float* pb, const int32_t* pad, int B, int L, int d, int H, int k, int C))
CUDA_OP(void, dispatch_forward,
        (float* out, float* lse, const float* q, const float* kl, const float* vl, const float* ki,
         const float* vi, const int32_t* pad, int B, int L, int d, int H, int k, int C))
CUDA_OP(void, dispatch_backward,
        (float* dq, float* dkl, float* dvl, float* dki, float* dvi, const float* dout,
         const float* out, const float* lse, const float* q, const float* kl, const float* vl,
         const float* ki, const float* vi, const int32_t* pad, int B, int L, int d, int H, int k,
         int C))
CUDA_OP(void, pkm_select,
        (int32_t * idx, float* w, const float* q, const float* K, int R, int Hm, int dk, int n,
         int kk))
CUDA_OP(void, pkm_read,
        (float* out, const int32_t* row, const float* w, const float* V, int R, int Hm, int kk,
         int d))
CUDA_OP(void, pkm_backward,
        (float* dq, float* dK, float* dV_rows, const float* dout, const int32_t* idx,
         const int32_t* row, const float* w, const float* q, const float* K, const float* V, int R,
         int Hm, int dk, int n, int kk, int d))
CUDA_OP(void, adam_sparse_update,
        (float* table, float* m, float* v, const int32_t* rows, const float* grads, int64_t nrows,
         int d, float lr, float beta1, float beta2, float eps, int64_t t))
// NCCL (kernels/cuda/nccl.cu), for comm's nccl backend through device.h's
// dev_nccl_* calls: 0, or -1 with err[512].
CUDA_OP(int, nccl_unique_id, (void* id, size_t bytes, char* err))
CUDA_OP(int, nccl_start, (const void* id, int rank, int world, char* err))
CUDA_OP(int, nccl_allreduce, (float* buf, int64_t n, int mean, int side, char* err))
CUDA_OP(int, nccl_wait, (char* err))
CUDA_OP(int, nccl_alltoallv,
        (const void* send, const int64_t* send_counts, const int64_t* send_offsets, void* recv,
         const int64_t* recv_counts, const int64_t* recv_offsets, size_t elem, char* err))
CUDA_OP(void, nccl_stop, (void))
