// linear_attention.cu: RecGRELA's causal linear attention (kernels.h), a
// first, direct version: per query row the sums over its keys j in
// [pad[b], t] (O(L^2 hd), the same quantities the CPU's chunked form
// computes, summed in another order); per key row the sums over its queries.
// One block per row, so no atomics. The chunked state-carrying form, linear
// in L, replaces it once this one has been checked on a GPU.
#include <math.h>

#include "common.cuh"

#define LA_EPS 1e-6f
#define HD_MAX 256

// block (t, b*H + h): out_t = (sum_j (qr_t.kr_j) v_j) / (qf_t . sum_j kf_j + eps)
__global__ void k_la_forward(float* out, float* den, const float* qr, const float* kr,
                             const float* qf, const float* kf, const float* v, const int32_t* pad,
                             int L, int d, int H) {
    const int t = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H;
    const int p0 = pad[b] < L ? pad[b] : L;
    const int64_t row = ((int64_t)b * L + t) * d + h * hd;
    float* dn = den + ((int64_t)b * H + h) * L + t;
    if (t < p0) {
        for (int c = threadIdx.x; c < hd; c += blockDim.x) out[row + c] = 0;
        if (threadIdx.x == 0) *dn = 0;
        return;
    }
    __shared__ float q[HD_MAX], a[1024], sh[32];
    for (int c = threadIdx.x; c < hd; c += blockDim.x) q[c] = qr[row + c];
    __syncthreads();
    // the normaliser: qf_t . z_t
    float part = 0;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float z = 0;
        for (int j = p0; j <= t; j++) z += kf[((int64_t)b * L + j) * d + h * hd + c];
        part += qf[row + c] * z;
    }
    const float D = block_sum(part, sh) + LA_EPS;
    if (threadIdx.x == 0) *dn = D;
    // the numerator, keys in tiles of 1024 scores
    float acc[HD_MAX / 32] = {0};  // thread's columns c = threadIdx.x + 32 k (blockDim 32..)
    for (int j0 = p0; j0 <= t; j0 += 1024) {
        const int nj = t - j0 + 1 < 1024 ? t - j0 + 1 : 1024;
        for (int jj = threadIdx.x; jj < nj; jj += blockDim.x) {
            const float* k = kr + ((int64_t)b * L + j0 + jj) * d + h * hd;
            float s = 0;
            for (int c = 0; c < hd; c++) s += q[c] * k[c];
            a[jj] = s;
        }
        __syncthreads();
        for (int c = threadIdx.x, x = 0; c < hd; c += blockDim.x, x++)
            for (int jj = 0; jj < nj; jj++)
                acc[x] += a[jj] * v[((int64_t)b * L + j0 + jj) * d + h * hd + c];
        __syncthreads();
    }
    for (int c = threadIdx.x, x = 0; c < hd; c += blockDim.x, x++) out[row + c] = acc[x] / D;
}

// block (t, b*H + h): g_t = dout_t / den_t, Dt = -(dout_t . out_t) / den_t into
// scratch; dqr_t += sum_j (g_t.v_j) kr_j; dqf_t += Dt z_t
__global__ void k_la_backward_q(float* dqr, float* dqf, float* gs, float* Ds, const float* dout,
                                const float* out, const float* den, const float* kr,
                                const float* kf, const float* v, const int32_t* pad, int L, int d,
                                int H) {
    const int t = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H;
    const int p0 = pad[b] < L ? pad[b] : L;
    const int64_t row = ((int64_t)b * L + t) * d + h * hd;
    float* Dt = Ds + ((int64_t)b * H + h) * L + t;
    if (t < p0) {
        for (int c = threadIdx.x; c < hd; c += blockDim.x) gs[row + c] = 0;
        if (threadIdx.x == 0) *Dt = 0;
        return;
    }
    __shared__ float g[HD_MAX], sh[32];
    const float dn = den[((int64_t)b * H + h) * L + t];
    float part = 0;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        g[c] = dout[row + c] / dn;
        gs[row + c] = g[c];
        part += dout[row + c] * out[row + c];
    }
    const float D = -block_sum(part, sh) / dn;  // block_sum synchronises: g is complete
    if (threadIdx.x == 0) *Dt = D;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float sq = 0, z = 0;
        for (int j = p0; j <= t; j++) {
            const int64_t r = ((int64_t)b * L + j) * d + h * hd;
            float gv = 0;
            for (int e = 0; e < hd; e++) gv += g[e] * v[r + e];
            sq += gv * kr[r + c];
            z += kf[r + c];
        }
        dqr[row + c] += sq;
        dqf[row + c] += D * z;
    }
}

// block (j, b*H + h): dkr_j += sum_{t>=j} (g_t.v_j) qr_t, dv_j += sum_{t>=j}
// (qr_t.kr_j) g_t, dkf_j += sum_{t>=j} Dt qf_t
__global__ void k_la_backward_kv(float* dkr, float* dkf, float* dv, const float* gs,
                                 const float* Ds, const float* qr, const float* kr, const float* qf,
                                 const float* v, const int32_t* pad, int L, int d, int H) {
    const int j = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H, hd = d / H;
    const int p0 = pad[b] < L ? pad[b] : L;
    if (j < p0) return;
    const int64_t row = ((int64_t)b * L + j) * d + h * hd;
    __shared__ float vj[HD_MAX], kj[HD_MAX];
    for (int c = threadIdx.x; c < hd; c += blockDim.x) vj[c] = v[row + c], kj[c] = kr[row + c];
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float skr = 0, sv = 0, skf = 0;
        for (int t = j; t < L; t++) {
            const int64_t r = ((int64_t)b * L + t) * d + h * hd;
            float gv = 0, qk = 0;
            for (int e = 0; e < hd; e++) gv += gs[r + e] * vj[e], qk += qr[r + e] * kj[e];
            skr += gv * qr[r + c];
            sv += qk * gs[r + c];
            skf += Ds[((int64_t)b * H + h) * L + t] * qf[r + c];
        }
        dkr[row + c] += skr;
        dv[row + c] += sv;
        dkf[row + c] += skf;
    }
}

extern "C" void cuda_linear_attention_forward(float* out, float* den, const float* qr,
                                              const float* kr, const float* qf, const float* kf,
                                              const float* v, const int32_t* pad, int B, int L,
                                              int d, int H, int C) {
    if (B <= 0 || L <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "linear_attention", "head width over 256");
    k_la_forward<<<dim3(L, B * H), 32, 0, cuda_stream()>>>(out, den, qr, kr, qf, kf, v, pad, L, d,
                                                           H);
    launchCheck();
}

extern "C" void cuda_linear_attention_backward(float* dqr, float* dkr, float* dqf, float* dkf,
                                               float* dv, const float* dout, const float* out,
                                               const float* den, const float* qr, const float* kr,
                                               const float* qf, const float* kf, const float* v,
                                               const int32_t* pad, int B, int L, int d, int H,
                                               int C) {
    if (B <= 0 || L <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "linear_attention", "head width over 256");
    // g [B,L,d] and D [B,H,L]
    float* scratch = (float*)cuda_scratch(((size_t)B * L * d + (size_t)B * H * L) * sizeof(float));
    float *gs = scratch, *Ds = scratch + (size_t)B * L * d;
    k_la_backward_q<<<dim3(L, B * H), 64, 0, cuda_stream()>>>(dqr, dqf, gs, Ds, dout, out, den, kr,
                                                              kf, v, pad, L, d, H);
    launchCheck();
    k_la_backward_kv<<<dim3(L, B * H), 64, 0, cuda_stream()>>>(dkr, dkf, dv, gs, Ds, qr, kr, qf, v,
                                                               pad, L, d, H);
    launchCheck();
}
