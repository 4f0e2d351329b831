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

// ---- the fused form (kernels.h: never L x L; lse[B,H,L] kept, D_t = dout_t .
// out_t): the same per-row blocks, the scores recomputed instead of stored.
// A first version, O(L^2 hd) in simple loops like the one above, that holds
// the fused kernel's interface and memory; tiling comes after a GPU has run it.

// scores of query t against keys [p0, t] in tiles of 1024, online softmax
__global__ void k_fa_forward(float* out, float* lse, const float* qkv, const int32_t* pad, int L,
                             int d, int H, float scale) {
    const int t = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H, C3 = 3 * d;
    const int p0 = pad[b] < L ? pad[b] : L;
    float* O = out + ((int64_t)b * L + t) * d + h * hd;
    float* ls = lse + ((int64_t)b * H + h) * L + t;
    if (t < p0) {
        for (int c = threadIdx.x; c < hd; c += blockDim.x) O[c] = 0;
        if (threadIdx.x == 0) *ls = 0;
        return;
    }
    __shared__ float q[HD_MAX], s[1024], sh[32];
    const float* Q = qkv + ((int64_t)b * L + t) * C3 + h * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) q[c] = Q[c];
    __syncthreads();
    float m = -INFINITY, l = 0, acc[HD_MAX / 32] = {0};  // columns c = threadIdx.x + 32 x
    for (int j0 = p0; j0 <= t; j0 += 1024) {
        const int nj = t - j0 + 1 < 1024 ? t - j0 + 1 : 1024;
        float mx = -INFINITY;
        for (int jj = threadIdx.x; jj < nj; jj += blockDim.x) {
            const float* K = qkv + ((int64_t)b * L + j0 + jj) * C3 + d + h * hd;
            float x = 0;
            for (int c = 0; c < hd; c++) x += q[c] * K[c];
            s[jj] = x * scale;
            mx = fmaxf(mx, s[jj]);
        }
        mx = block_max(mx, sh);
        const float mn = fmaxf(m, mx), corr = expf(m - mn);
        float sum = 0;
        for (int jj = threadIdx.x; jj < nj; jj += blockDim.x) sum += expf(s[jj] - mn);
        sum = block_sum(sum, sh);
        l = l * corr + sum;
        for (int c = threadIdx.x, x = 0; c < hd; c += blockDim.x, x++) {
            float a = acc[x] * corr;
            for (int jj = 0; jj < nj; jj++)
                a += expf(s[jj] - mn) * qkv[((int64_t)b * L + j0 + jj) * C3 + 2 * d + h * hd + c];
            acc[x] = a;
        }
        m = mn;
        __syncthreads();
    }
    for (int c = threadIdx.x, x = 0; c < hd; c += blockDim.x, x++) O[c] = acc[x] / l;
    if (threadIdx.x == 0) *ls = m + logf(l);
}

// per query row: D_t into scratch, dq_t += scale sum_j p_j (dp_j - D_t) k_j
__global__ void k_fa_backward_q(float* dqkv, float* Ds, const float* dout, const float* out,
                                const float* lse, const float* qkv, const int32_t* pad, int L,
                                int d, int H, float scale) {
    const int t = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H, C3 = 3 * d;
    const int p0 = pad[b] < L ? pad[b] : L;
    float* Dt = Ds + ((int64_t)b * H + h) * L + t;
    if (t < p0) {
        if (threadIdx.x == 0) *Dt = 0;
        return;
    }
    __shared__ float q[HD_MAX], g[HD_MAX], sh[32];
    const int64_t row = ((int64_t)b * L + t);
    float part = 0;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        q[c] = qkv[row * C3 + h * hd + c];
        g[c] = dout[row * d + h * hd + c];
        part += g[c] * out[row * d + h * hd + c];
    }
    const float D = block_sum(part, sh), ls = lse[((int64_t)b * H + h) * L + t];
    if (threadIdx.x == 0) *Dt = D;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float a = 0;
        for (int j = p0; j <= t; j++) {
            const float* K = qkv + ((int64_t)b * L + j) * C3 + d + h * hd;
            const float* V = K + d;
            float sj = 0, dp = 0;
            for (int e = 0; e < hd; e++) sj += q[e] * K[e], dp += g[e] * V[e];
            a += scale * expf(sj * scale - ls) * (dp - D) * K[c];
        }
        dqkv[row * C3 + h * hd + c] += a;
    }
}

// per key row j: dk_j += sum_{t>=j} ds_tj q_t, dv_j += sum_{t>=j} p_tj dout_t
__global__ void k_fa_backward_kv(float* dqkv, const float* Ds, const float* dout, const float* lse,
                                 const float* qkv, const int32_t* pad, int L, int d, int H,
                                 float scale) {
    const int j = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H, C3 = 3 * d;
    const int p0 = pad[b] < L ? pad[b] : L;
    if (j < p0) return;
    __shared__ float k[HD_MAX], v[HD_MAX];
    const int64_t rj = (int64_t)b * L + j;
    for (int c = threadIdx.x; c < hd; c += blockDim.x)
        k[c] = qkv[rj * C3 + d + h * hd + c], v[c] = qkv[rj * C3 + 2 * d + h * hd + c];
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float sk = 0, sv = 0;
        for (int t = j; t < L; t++) {
            const int64_t rt = (int64_t)b * L + t;
            const float* Q = qkv + rt * C3 + h * hd;
            const float* G = dout + rt * d + h * hd;
            float st = 0, dp = 0;
            for (int e = 0; e < hd; e++) st += Q[e] * k[e], dp += G[e] * v[e];
            const int64_t hl = ((int64_t)b * H + h) * L + t;
            const float p = expf(st * scale - lse[hl]);
            sk += scale * p * (dp - Ds[hl]) * Q[c];
            sv += p * G[c];
        }
        dqkv[rj * C3 + d + h * hd + c] += sk;
        dqkv[rj * C3 + 2 * d + h * hd + c] += sv;
    }
}

extern "C" void cuda_attention_fused_forward(float* out, float* lse, const float* qkv,
                                             const int32_t* pad, int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_fused", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    k_fa_forward<<<dim3(L, B * H), 32, 0, cuda_stream()>>>(out, lse, qkv, pad, L, d, H, scale);
    launchCheck();
}

extern "C" void cuda_attention_fused_backward(float* dqkv, const float* dout, const float* out,
                                              const float* lse, const float* qkv,
                                              const int32_t* pad, int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_fused", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    float* Ds = (float*)cuda_scratch((size_t)B * H * L * sizeof(float));  // D_t [B,H,L]
    k_fa_backward_q<<<dim3(L, B * H), 64, 0, cuda_stream()>>>(dqkv, Ds, dout, out, lse, qkv, pad, L,
                                                              d, H, scale);
    launchCheck();
    k_fa_backward_kv<<<dim3(L, B * H), 64, 0, cuda_stream()>>>(dqkv, Ds, dout, lse, qkv, pad, L, d,
                                                               H, scale);
    launchCheck();
}
