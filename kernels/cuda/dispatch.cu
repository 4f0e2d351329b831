// dispatch.cu: ELASTIC's dispatch attention (kernels.h, step 3), a direct
// first version: one block per query row for the forward and dq, one per local
// key for dkl and dvl, one per interest for dki and dvi; the scores recomputed
// in each (lse and D_t = dout_t . out_t kept), RoPE per head in double. No
// atomics; O(L (C + k) hd) work in simple loops.
#include <math.h>

#include "common.cuh"

#define HD_MAX 256
#define SLOTS 1088  // interests + local keys of one query: k + C <= 1088

// y = R(pos) x for one head's hd values (sign -1: the inverse rotation)
__device__ void rope_row(float* y, const float* x, int pos, int hd, double sign) {
    for (int i = 0; i < hd / 2; i++) {
        const double a = (double)pos * pow(10000.0, -2.0 * i / hd);
        const double cs = cos(a), sn = sign * sin(a), x0 = x[2 * i], x1 = x[2 * i + 1];
        y[2 * i] = (float)(x0 * cs - x1 * sn);
        y[2 * i + 1] = (float)(x0 * sn + x1 * cs);
    }
    if (hd & 1) y[hd - 1] = x[hd - 1];
}

// the query's start of items in its chunk: max(cC, pad[b])
__device__ __forceinline__ int chunk_first(int t, int C, int p0) {
    const int c0 = t / C * C;
    return p0 > c0 ? p0 : c0;
}

// element i of R(pos) x (x one head's hd values)
__device__ __forceinline__ float rope_elem(const float* x, int i, int pos, int hd, double sign) {
    if ((hd & 1) && i == hd - 1) return x[i];
    const int p = i / 2;
    const double a = (double)pos * pow(10000.0, -2.0 * p / hd);
    const double cs = cos(a), sn = sign * sin(a), x0 = x[2 * p], x1 = x[2 * p + 1];
    return (float)(i & 1 ? x0 * sn + x1 * cs : x0 * cs - x1 * sn);
}

__global__ void k_dp_forward(float* out, float* lse, const float* q, const float* kl,
                             const float* vl, const float* ki, const float* vi, const int32_t* pad,
                             int L, int d, int H, int k, int C, float scale) {
    const int t = blockIdx.x, b = blockIdx.y, h = blockIdx.z, hd = d / H, nc = (L + C - 1) / C;
    const int p0 = pad[b] < L ? pad[b] : L, c = t / C;
    const int64_t row = ((int64_t)b * L + t) * d + h * hd;
    float* ls = lse + ((int64_t)b * H + h) * L + t;
    if (t < p0) {
        for (int i = threadIdx.x; i < hd; i += blockDim.x) out[row + i] = 0;
        if (threadIdx.x == 0) *ls = 0;
        return;
    }
    const int t1 = chunk_first(t, C, p0), n = k + (t - t1 + 1);  // interests, then local keys
    __shared__ float qs[HD_MAX], qr[HD_MAX], s[SLOTS], sh[32];
    for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = q[row + i];
    __syncthreads();
    if (threadIdx.x == 0) rope_row(qr, qs, t, hd, 1.0);
    __syncthreads();
    const int64_t irow = ((int64_t)b * nc + c) * k * d + h * hd;
    float mx = -INFINITY;
    for (int x = threadIdx.x; x < n; x += blockDim.x) {
        float v = 0;
        if (x < k) {
            for (int i = 0; i < hd; i++) v += qs[i] * ki[irow + (int64_t)x * d + i];
        } else {
            const int j = t1 + x - k;
            float kr[HD_MAX];
            rope_row(kr, kl + ((int64_t)b * L + j) * d + h * hd, j, hd, 1.0);
            for (int i = 0; i < hd; i++) v += qr[i] * kr[i];
        }
        s[x] = v * scale;
        mx = fmaxf(mx, s[x]);
    }
    mx = block_max(mx, sh);
    float sum = 0;
    for (int x = threadIdx.x; x < n; x += blockDim.x) sum += expf(s[x] - mx);
    sum = block_sum(sum, sh);
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float o = 0;
        for (int x = 0; x < n; x++) {
            const float p = expf(s[x] - mx);
            o += p * (x < k ? vi[irow + (int64_t)x * d + i]
                            : vl[((int64_t)b * L + t1 + x - k) * d + h * hd + i]);
        }
        out[row + i] = o / sum;
    }
    if (threadIdx.x == 0) *ls = mx + logf(sum);
}

// per query row: D_t, and dq_t = sum_e ds_e ki_e + R(t)^T sum_j ds_j R(j) kl_j
__global__ void k_dp_backward_q(float* dq, float* Ds, const float* dout, const float* out,
                                const float* lse, const float* q, const float* kl, const float* vl,
                                const float* ki, const float* vi, const int32_t* pad, int L, int d,
                                int H, int k, int C, float scale) {
    const int t = blockIdx.x, b = blockIdx.y, h = blockIdx.z, hd = d / H, nc = (L + C - 1) / C;
    const int p0 = pad[b] < L ? pad[b] : L, c = t / C;
    const int64_t row = ((int64_t)b * L + t) * d + h * hd, hl = ((int64_t)b * H + h) * L + t;
    if (t < p0) {
        if (threadIdx.x == 0) Ds[hl] = 0;
        return;
    }
    const int t1 = chunk_first(t, C, p0), n = k + (t - t1 + 1);
    __shared__ float qs[HD_MAX], qr[HD_MAX], g[HD_MAX], lp[HD_MAX], s[SLOTS], sh[32];
    float part = 0;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        qs[i] = q[row + i], g[i] = dout[row + i];
        part += g[i] * out[row + i];
    }
    const float D = block_sum(part, sh), lt = lse[hl];
    if (threadIdx.x == 0) Ds[hl] = D, rope_row(qr, qs, t, hd, 1.0);
    __syncthreads();
    const int64_t irow = ((int64_t)b * nc + c) * k * d + h * hd;
    for (int x = threadIdx.x; x < n; x += blockDim.x) {
        float v = 0, dp = 0;
        if (x < k) {
            for (int i = 0; i < hd; i++) {
                v += qs[i] * ki[irow + (int64_t)x * d + i];
                dp += g[i] * vi[irow + (int64_t)x * d + i];
            }
        } else {
            const int64_t rj = ((int64_t)b * L + t1 + x - k) * d + h * hd;
            float kr[HD_MAX];
            rope_row(kr, kl + rj, t1 + x - k, hd, 1.0);
            for (int i = 0; i < hd; i++) v += qr[i] * kr[i], dp += g[i] * vl[rj + i];
        }
        s[x] = scale * expf(v * scale - lt) * (dp - D);  // ds
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float a = 0, l = 0;
        for (int x = 0; x < k; x++) a += s[x] * ki[irow + (int64_t)x * d + i];
        for (int x = k; x < n; x++) {
            const int j = t1 + x - k;
            l += s[x] * rope_elem(kl + ((int64_t)b * L + j) * d + h * hd, i, j, hd, 1.0);
        }
        dq[row + i] += a;
        lp[i] = l;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) dq[row + i] += rope_elem(lp, i, t, hd, -1.0);
}

// per local key j: the queries t >= j of its chunk; dvl_j += sum p dout_t,
// dkl_j += R(j)^T sum ds R(t) q_t
__global__ void k_dp_backward_kv(float* dkl, float* dvl, const float* Ds, const float* dout,
                                 const float* lse, const float* q, const float* kl, const float* vl,
                                 const int32_t* pad, int L, int d, int H, int C, float scale) {
    const int j = blockIdx.x, b = blockIdx.y, h = blockIdx.z, hd = d / H;
    const int p0 = pad[b] < L ? pad[b] : L;
    if (j < p0) return;
    const int c1 = (j / C + 1) * C < L ? (j / C + 1) * C : L, nt = c1 - j;
    const int64_t rj = ((int64_t)b * L + j) * d + h * hd;
    __shared__ float kr[HD_MAX], v[HD_MAX], pp[1024], dss[1024], kp[HD_MAX];
    for (int i = threadIdx.x; i < hd; i += blockDim.x) v[i] = vl[rj + i];
    if (threadIdx.x == 0) rope_row(kr, kl + rj, j, hd, 1.0);
    __syncthreads();
    for (int x = threadIdx.x; x < nt; x += blockDim.x) {
        const int t = j + x;
        const int64_t rt = ((int64_t)b * L + t) * d + h * hd, hl = ((int64_t)b * H + h) * L + t;
        float qrt[HD_MAX], sc = 0, dp = 0;
        rope_row(qrt, q + rt, t, hd, 1.0);
        for (int i = 0; i < hd; i++) sc += qrt[i] * kr[i], dp += dout[rt + i] * v[i];
        const float p = expf(sc * scale - lse[hl]);
        pp[x] = p;
        dss[x] = scale * p * (dp - Ds[hl]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float av = 0, ak = 0;
        for (int x = 0; x < nt; x++) {
            const int64_t rt = ((int64_t)b * L + j + x) * d + h * hd;
            av += pp[x] * dout[rt + i];
            ak += dss[x] * rope_elem(q + rt, i, j + x, hd, 1.0);
        }
        dvl[rj + i] += av;
        kp[i] = ak;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) dkl[rj + i] += rope_elem(kp, i, j, hd, -1.0);
}

// per interest (chunk c, row b, expert e, head h): the chunk's item queries
__global__ void k_dp_backward_interest(float* dki, float* dvi, const float* Ds, const float* dout,
                                       const float* lse, const float* q, const float* ki,
                                       const float* vi, const int32_t* pad, int L, int d, int H,
                                       int k, int C, float scale) {
    const int c = blockIdx.x, b = blockIdx.y, e = blockIdx.z / H, h = blockIdx.z % H;
    const int hd = d / H, nc = gridDim.x, p0 = pad[b] < L ? pad[b] : L;
    const int c0 = c * C, c1 = c0 + C < L ? c0 + C : L, t1 = p0 > c0 ? (p0 < c1 ? p0 : c1) : c0;
    const int nt = c1 - t1;
    const int64_t ie = (((int64_t)b * nc + c) * k + e) * d + h * hd;
    __shared__ float kv[HD_MAX], vv[HD_MAX], pp[1024], dss[1024];
    for (int i = threadIdx.x; i < hd; i += blockDim.x) kv[i] = ki[ie + i], vv[i] = vi[ie + i];
    __syncthreads();
    for (int x = threadIdx.x; x < nt; x += blockDim.x) {
        const int t = t1 + x;
        const int64_t rt = ((int64_t)b * L + t) * d + h * hd, hl = ((int64_t)b * H + h) * L + t;
        float sc = 0, dp = 0;
        for (int i = 0; i < hd; i++) sc += q[rt + i] * kv[i], dp += dout[rt + i] * vv[i];
        const float p = expf(sc * scale - lse[hl]);
        pp[x] = p;
        dss[x] = scale * p * (dp - Ds[hl]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float ak = 0, av = 0;
        for (int x = 0; x < nt; x++) {
            const int64_t rt = ((int64_t)b * L + t1 + x) * d + h * hd;
            ak += dss[x] * q[rt + i];
            av += pp[x] * dout[rt + i];
        }
        if (dki) dki[ie + i] += ak;
        if (dvi) dvi[ie + i] += av;
    }
}

static void check_sizes(int d, int H, int k, int C) {
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "dispatch", "head width over 256");
    if (C > 1024 || k + C > SLOTS)
        cuda_fail(__FILE__, __LINE__, "dispatch", "chunk over 1024 or experts + chunk over 1088");
}

extern "C" void cuda_dispatch_forward(float* out, float* lse, const float* q, const float* kl,
                                      const float* vl, const float* ki, const float* vi,
                                      const int32_t* pad, int B, int L, int d, int H, int k,
                                      int C) {
    if (B <= 0 || L <= 0) return;
    check_sizes(d, H, k, C);
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    k_dp_forward<<<dim3(L, B, H), 32, 0, cuda_stream()>>>(out, lse, q, kl, vl, ki, vi, pad, L, d, H,
                                                          k, C, scale);
    launchCheck();
}

extern "C" void cuda_dispatch_backward(float* dq, float* dkl, float* dvl, float* dki, float* dvi,
                                       const float* dout, const float* out, const float* lse,
                                       const float* q, const float* kl, const float* vl,
                                       const float* ki, const float* vi, const int32_t* pad, int B,
                                       int L, int d, int H, int k, int C) {
    if (B <= 0 || L <= 0) return;
    check_sizes(d, H, k, C);
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    const int nc = (L + C - 1) / C;
    float* Ds = (float*)cuda_scratch((size_t)B * H * L * sizeof(float));  // D_t [B,H,L]
    // dq is needed for D_t: the others read it
    float* dqq = dq;
    if (!dqq) cuda_fail(__FILE__, __LINE__, "dispatch_backward", "dq is required");
    k_dp_backward_q<<<dim3(L, B, H), 32, 0, cuda_stream()>>>(dqq, Ds, dout, out, lse, q, kl, vl, ki,
                                                             vi, pad, L, d, H, k, C, scale);
    launchCheck();
    if (dkl && dvl) {
        k_dp_backward_kv<<<dim3(L, B, H), 32, 0, cuda_stream()>>>(dkl, dvl, Ds, dout, lse, q, kl,
                                                                  vl, pad, L, d, H, C, scale);
        launchCheck();
    } else if (dkl || dvl) {
        cuda_fail(__FILE__, __LINE__, "dispatch_backward", "dkl and dvl go together");
    }
    if (dki || dvi) {
        k_dp_backward_interest<<<dim3(nc, B, k * H), 32, 0, cuda_stream()>>>(
            dki, dvi, Ds, dout, lse, q, ki, vi, pad, L, d, H, k, C, scale);
        launchCheck();
    }
}
