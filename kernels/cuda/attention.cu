// attention.cu: causal multi-head softmax attention with left padding,
// materialised (kernels.h: att[B,H,L,L] keeps the probabilities), as
// PyTorch's plain SASRec computes it: the score and value products by cuBLAS,
// strided over the batch, one call a head (fp32, or TF32 on the tensor cores
// in the other precisions), and a warp a row for the softmax and its
// gradient. The products compute every (query, key) pair, the causal upper
// triangle too (a row kernel then writes its zeros): at L = 4096 they take a
// fraction of the time the rows' bytes do (each [L, L] block is written and
// read a few times, about 1 GB a layer at batch 8 with 2 heads), which the
// memory's bandwidth sets; the fused kernel (attention_fused.cu) moves
// none of them. (The first version: a block a query row with scalar loops,
// 92 ms a step against the fused kernel's 17 at 8 x 4096 on the H200.)
//
// Row-major [L, L] blocks are column-major [L, L] blocks transposed, so with
// Q, K, V, dO a head's [L, hd] columns of qkv or dout (rows 3d or d apart):
//   att^T = scale K Q^T,  out^T = V^T att^T,  datt^T = V dO^T (dP, then dS),
//   dV^T += dO^T att,  dQ^T += K^T dS^T,  dK^T += Q^T dS
// each a column-major product over the batch (stride L rows of qkv, H L^2 of
// att), one call a head.
#include <math.h>

#include "common.cuh"

#define HD_MAX 256

// Row (b, h, t) of att, a warp a row: the keys p0..t's scores made
// probabilities, every other entry 0 (all of a padding query's row)
__global__ void k_att_softmax(float* att, const int32_t* pad, int H, int L, int64_t rows) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;  // (b*H+h)*L + t
    const int lane = threadIdx.x % 32;
    if (w >= rows) return;
    const int t = (int)(w % L), b = (int)(w / L / H), p0 = first_position(pad, b, L);
    float* A = att + w * L;
    const int lo = p0, hi = t < p0 ? p0 - 1 : t;  // the row's keys [lo, hi]
    float mx = -INFINITY;
    for (int j = lo + lane; j <= hi; j += 32) mx = fmaxf(mx, A[j]);
    mx = warp_max(mx);
    float sum = 0;
    for (int j = lo + lane; j <= hi; j += 32) {
        const float e = expf(A[j] - mx);
        A[j] = e;
        sum += e;
    }
    const float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < L; j += 32) A[j] = j >= lo && j <= hi ? A[j] * inv : 0.0f;
}

// Row (b, h, t) of datt, a warp a row: dP into dS = scale P (dP - sum P dP)
// on the row's keys, 0 elsewhere
__global__ void k_att_softmax_backward(float* datt, const float* att, const int32_t* pad, int H,
                                       int L, int64_t rows, float scale) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= rows) return;
    const int t = (int)(w % L), b = (int)(w / L / H), p0 = first_position(pad, b, L);
    float* dS = datt + w * L;
    const float* P = att + w * L;
    const int lo = p0, hi = t < p0 ? p0 - 1 : t;
    float D = 0;
    for (int j = lo + lane; j <= hi; j += 32) D += P[j] * dS[j];
    D = warp_sum(D);
    for (int j = lane; j < L; j += 32)
        dS[j] = j >= lo && j <= hi ? scale * P[j] * (dS[j] - D) : 0.0f;
}

static void check_head(int hd, const char* what) {
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, what, "head width over 256");
}

extern "C" void cuda_attention_forward(float* out, float* att, const float* qkv, const int32_t* pad,
                                       int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, C3 = 3 * d;
    check_head(hd, "attention_forward");
    const float scale = (float)(1.0 / sqrt((double)hd));
    const long long sq = (long long)L * C3, sa = (long long)H * L * L;
    for (int h = 0; h < H; h++)  // att^T = scale K Q^T
        cuda_gemm_strided(CUBLAS_OP_T, CUBLAS_OP_N, L, L, hd, scale, qkv + d + h * hd, C3, sq,
                          qkv + h * hd, C3, sq, 0, att + (size_t)h * L * L, L, sa, B);
    const int64_t rows = (int64_t)B * H * L;
    k_att_softmax<<<blocks_for(rows * 32, 256), 256, 0, cuda_stream()>>>(att, pad, H, L, rows);
    launchCheck();
    for (int h = 0; h < H; h++)  // out^T = V^T att^T
        cuda_gemm_strided(CUBLAS_OP_N, CUBLAS_OP_N, hd, L, L, 1, qkv + 2 * d + h * hd, C3, sq,
                          att + (size_t)h * L * L, L, sa, 0, out + h * hd, d, (long long)L * d, B);
}

extern "C" void cuda_attention_backward(float* dqkv, float* datt, const float* dout,
                                        const float* qkv, const float* att, const int32_t* pad,
                                        int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, C3 = 3 * d;
    check_head(hd, "attention_backward");
    const float scale = (float)(1.0 / sqrt((double)hd));
    const long long sq = (long long)L * C3, so = (long long)L * d, sa = (long long)H * L * L;
    cuda_mark_begin();
    for (int h = 0; h < H; h++) {
        const size_t a = (size_t)h * L * L;
        // datt^T = V dO^T (dP), dV^T += dO^T att
        cuda_gemm_strided(CUBLAS_OP_T, CUBLAS_OP_N, L, L, hd, 1, qkv + 2 * d + h * hd, C3, sq,
                          dout + h * hd, d, so, 0, datt + a, L, sa, B);
        cuda_gemm_strided(CUBLAS_OP_N, CUBLAS_OP_T, hd, L, L, 1, dout + h * hd, d, so, att + a, L,
                          sa, 1, dqkv + 2 * d + h * hd, C3, sq, B);
    }
    cuda_mark("attention backward: dP, dv");
    const int64_t rows = (int64_t)B * H * L;
    k_att_softmax_backward<<<blocks_for(rows * 32, 256), 256, 0, cuda_stream()>>>(datt, att, pad, H,
                                                                                  L, rows, scale);
    launchCheck();
    cuda_mark("attention backward: dS");
    for (int h = 0; h < H; h++) {
        const size_t a = (size_t)h * L * L;
        // dQ^T += K^T dS^T, dK^T += Q^T dS
        cuda_gemm_strided(CUBLAS_OP_N, CUBLAS_OP_N, hd, L, L, 1, qkv + d + h * hd, C3, sq, datt + a,
                          L, sa, 1, dqkv + h * hd, C3, sq, B);
        cuda_gemm_strided(CUBLAS_OP_N, CUBLAS_OP_T, hd, L, L, 1, qkv + h * hd, C3, sq, datt + a, L,
                          sa, 1, dqkv + d + h * hd, C3, sq, B);
    }
    cuda_mark("attention backward: dq, dk");
}
