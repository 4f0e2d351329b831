// attention.cu: causal multi-head softmax attention with left padding,
// materialised (kernels.h: att[B,H,L,L] keeps the probabilities). One block
// per (query row, sequence and head) for the forward and dq, one per key row
// for dk and dv: every output is written by one block, so no atomics, and the
// sums run in a fixed order. A first version: O(L^2 hd) work with simple
// loops, not tiled (the fused kernel is where speed will come from).
#include <math.h>

#include "common.cuh"

#define HD_MAX 256

__global__ void k_att_forward(float* out, float* att, const float* qkv, const int32_t* pad, int L,
                              int d, int H, float scale) {
    const int t = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H, C3 = 3 * d;
    const int p0 = pad[b] < L ? pad[b] : L;
    float* A = att + (((int64_t)b * H + h) * L + t) * L;
    float* O = out + ((int64_t)b * L + t) * d + h * hd;
    if (t < p0) {
        for (int j = threadIdx.x; j < L; j += blockDim.x) A[j] = 0;
        for (int c = threadIdx.x; c < hd; c += blockDim.x) O[c] = 0;
        return;
    }
    __shared__ float q[HD_MAX], sh[32];
    const float* Q = qkv + ((int64_t)b * L + t) * C3 + h * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) q[c] = Q[c];
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        if (j < p0 || j > t) {
            A[j] = 0;
            continue;
        }
        const float* K = qkv + ((int64_t)b * L + j) * C3 + d + h * hd;
        float s = 0;
        for (int c = 0; c < hd; c++) s += q[c] * K[c];
        s *= scale;
        A[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, sh);
    float sum = 0;
    for (int j = p0 + threadIdx.x; j <= t; j += blockDim.x) {
        const float e = expf(A[j] - mx);
        A[j] = e;
        sum += e;
    }
    sum = block_sum(sum, sh);
    const float inv = 1.0f / sum;
    for (int j = p0 + threadIdx.x; j <= t; j += blockDim.x) A[j] *= inv;
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float o = 0;
        for (int j = p0; j <= t; j++)
            o += A[j] * qkv[((int64_t)b * L + j) * C3 + 2 * d + h * hd + c];
        O[c] = o;
    }
}

// per query row: dS (into datt) and dq
__global__ void k_att_backward_q(float* dqkv, float* datt, const float* dout, const float* qkv,
                                 const float* att, const int32_t* pad, int L, int d, int H,
                                 float scale) {
    const int t = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H, C3 = 3 * d;
    const int p0 = pad[b] < L ? pad[b] : L;
    const float* P = att + (((int64_t)b * H + h) * L + t) * L;
    float* dS = datt + (((int64_t)b * H + h) * L + t) * L;
    if (t < p0) {
        for (int j = threadIdx.x; j < L; j += blockDim.x) dS[j] = 0;
        return;
    }
    __shared__ float g[HD_MAX], sh[32];
    const float* G = dout + ((int64_t)b * L + t) * d + h * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) g[c] = G[c];
    __syncthreads();
    float D = 0;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        if (j < p0 || j > t) {
            dS[j] = 0;
            continue;
        }
        const float* V = qkv + ((int64_t)b * L + j) * C3 + 2 * d + h * hd;
        float dp = 0;
        for (int c = 0; c < hd; c++) dp += g[c] * V[c];
        dS[j] = dp;
        D += P[j] * dp;
    }
    D = block_sum(D, sh);
    for (int j = p0 + threadIdx.x; j <= t; j += blockDim.x) dS[j] = scale * P[j] * (dS[j] - D);
    __syncthreads();
    float* dQ = dqkv + ((int64_t)b * L + t) * C3 + h * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float s = 0;
        for (int j = p0; j <= t; j++) s += dS[j] * qkv[((int64_t)b * L + j) * C3 + d + h * hd + c];
        dQ[c] += s;
    }
}

// per key row j: dk = sum over queries t >= j of dS[t][j] q_t, dv of P[t][j] dout_t
__global__ void k_att_backward_kv(float* dqkv, const float* datt, const float* dout,
                                  const float* qkv, const float* att, const int32_t* pad, int L,
                                  int d, int H) {
    const int j = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H, C3 = 3 * d;
    const int p0 = pad[b] < L ? pad[b] : L;
    if (j < p0) return;
    const float* P = att + ((int64_t)b * H + h) * L * L;
    const float* dS = datt + ((int64_t)b * H + h) * L * L;
    float* dK = dqkv + ((int64_t)b * L + j) * C3 + d + h * hd;
    float* dV = dK + d;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float sk = 0, sv = 0;
        for (int t = j; t < L; t++) {
            sk += dS[(int64_t)t * L + j] * qkv[((int64_t)b * L + t) * C3 + h * hd + c];
            sv += P[(int64_t)t * L + j] * dout[((int64_t)b * L + t) * d + h * hd + c];
        }
        dK[c] += sk;
        dV[c] += sv;
    }
}

extern "C" void cuda_attention_forward(float* out, float* att, const float* qkv, const int32_t* pad,
                                       int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_forward", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    k_att_forward<<<dim3(L, B * H), 128, 0, cuda_stream()>>>(out, att, qkv, pad, L, d, H, scale);
    launchCheck();
}

extern "C" void cuda_attention_backward(float* dqkv, float* datt, const float* dout,
                                        const float* qkv, const float* att, const int32_t* pad,
                                        int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_backward", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    k_att_backward_q<<<dim3(L, B * H), 128, 0, cuda_stream()>>>(dqkv, datt, dout, qkv, att, pad, L,
                                                                d, H, scale);
    launchCheck();
    k_att_backward_kv<<<dim3(L, B * H), 64, 0, cuda_stream()>>>(dqkv, datt, dout, qkv, att, pad, L,
                                                                d, H);
    launchCheck();
}
