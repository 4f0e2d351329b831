// aggregate.cu: ELASTIC's interest aggregation (kernels.h, step 1), a direct
// first version: one block per (chunk, row, expert x head) sums the chunk's
// earlier positions with an online softmax (O(L^2) over a row's chunks, not
// the CPU's O(L) running state); backward sums per chunk into scratch, per
// position over the later chunks, and reduces the shared gradients (dqe, du,
// dpb) over rows and chunks in a fixed order. No atomics.
#include <math.h>

#include "common.cuh"

#define HD_MAX 256
#define TILE 1024

// P[b,c,e] (head h's slice) and lse[b,c,e,h]
__global__ void k_ag_forward(float* P, float* lse, const float* qe, const float* kh,
                             const float* vh, const float* u, const float* pb, const int32_t* pad,
                             int L, int d, int H, int k, int C, float scale) {
    const int c = blockIdx.x, b = blockIdx.y, e = blockIdx.z / H, h = blockIdx.z % H;
    const int hd = d / H, nc = gridDim.x, p0 = pad[b] < L ? pad[b] : L;
    const int jhi = c * C < L ? c * C : L;  // strictly earlier chunks
    __shared__ float q[HD_MAX], s[TILE], sh[32];
    for (int i = threadIdx.x; i < hd; i += blockDim.x) q[i] = qe[(int64_t)e * d + h * hd + i];
    __syncthreads();
    float m = pb[e * H + h], l = 1, acc[HD_MAX / 32];
    for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++)
        acc[x] = u[(int64_t)e * d + h * hd + i];
    for (int j0 = p0; j0 < jhi; j0 += TILE) {
        const int nj = jhi - j0 < TILE ? jhi - j0 : TILE;
        float mx = -INFINITY;
        for (int jj = threadIdx.x; jj < nj; jj += blockDim.x) {
            const float* K = kh + ((int64_t)b * L + j0 + jj) * d + h * hd;
            float x = 0;
            for (int i = 0; i < hd; i++) x += q[i] * K[i];
            s[jj] = x * scale;
            mx = fmaxf(mx, s[jj]);
        }
        mx = block_max(mx, sh);
        const float mn = fmaxf(m, mx), corr = expf(m - mn);
        float sum = 0;
        for (int jj = threadIdx.x; jj < nj; jj += blockDim.x) sum += expf(s[jj] - mn);
        l = l * corr + block_sum(sum, sh);
        for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++) {
            float a = acc[x] * corr;
            for (int jj = 0; jj < nj; jj++)
                a += expf(s[jj] - mn) * vh[((int64_t)b * L + j0 + jj) * d + h * hd + i];
            acc[x] = a;
        }
        m = mn;
        __syncthreads();
    }
    const int64_t row = ((int64_t)b * nc + c) * k + e;
    for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++)
        P[row * d + h * hd + i] = acc[x] / l;
    if (threadIdx.x == 0) lse[row * H + h] = m + logf(l);
}

// per (chunk, row, expert x head): D = G.P, and the chunk's parts of du, dpb, dqe
__global__ void k_ag_backward_chunk(float* Dc, float* du_p, float* dpb_p, float* dqe_p,
                                    const float* dP, const float* P, const float* lse,
                                    const float* qe, const float* kh, const float* vh,
                                    const float* u, const float* pb, const int32_t* pad, int L,
                                    int d, int H, int k, int C, float scale) {
    const int c = blockIdx.x, b = blockIdx.y, e = blockIdx.z / H, h = blockIdx.z % H;
    const int hd = d / H, nc = gridDim.x, p0 = pad[b] < L ? pad[b] : L;
    const int jhi = c * C < L ? c * C : L;
    const int64_t row = ((int64_t)b * nc + c) * k + e;
    const float* G = dP + row * d + h * hd;
    const float* Pc = P + row * d + h * hd;
    const float lc = lse[row * H + h];
    __shared__ float g[HD_MAX], q[HD_MAX], sh[32];
    float dpart = 0, upart = 0;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        g[i] = G[i];
        q[i] = qe[(int64_t)e * d + h * hd + i];
        dpart += G[i] * Pc[i];
        upart += G[i] * (u[(int64_t)e * d + h * hd + i] - Pc[i]);
    }
    const float D = block_sum(dpart, sh), gu = block_sum(upart, sh);
    const float w0 = expf(pb[e * H + h] - lc);
    if (threadIdx.x == 0) Dc[row * H + h] = D, dpb_p[row * H + h] = w0 * gu;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        du_p[row * d + h * hd + i] = w0 * g[i];
        float a = 0;
        for (int j = p0; j < jhi; j++) {
            const float* K = kh + ((int64_t)b * L + j) * d + h * hd;
            const float* V = vh + ((int64_t)b * L + j) * d + h * hd;
            float sj = 0, gv = 0;
            for (int x = 0; x < hd; x++) sj += q[x] * K[x], gv += g[x] * V[x];
            a += scale * expf(sj * scale - lc) * (gv - D) * K[i];
        }
        dqe_p[row * d + h * hd + i] = a;
    }
}

// per (position, row, head): dvh_j and dkh_j over the experts and later chunks
__global__ void k_ag_backward_pos(float* dkh, float* dvh, const float* Dc, const float* dP,
                                  const float* lse, const float* qe, const float* kh,
                                  const float* vh, const int32_t* pad, int L, int d, int H, int k,
                                  int C, int nc, float scale) {
    const int j = blockIdx.x, b = blockIdx.y, h = blockIdx.z, hd = d / H;
    const int p0 = pad[b] < L ? pad[b] : L;
    if (j < p0) return;
    const int cj = j / C;
    const int64_t rj = ((int64_t)b * L + j) * d + h * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float av = 0, ak = 0;
        for (int e = 0; e < k; e++) {
            const float* Q = qe + (int64_t)e * d + h * hd;
            float sj = 0;
            for (int x = 0; x < hd; x++) sj += Q[x] * kh[rj + x];
            for (int c = cj + 1; c < nc; c++) {
                const int64_t row = ((int64_t)b * nc + c) * k + e;
                const float* G = dP + row * d + h * hd;
                const float w = expf(sj * scale - lse[row * H + h]);
                float gv = 0;
                for (int x = 0; x < hd; x++) gv += G[x] * vh[rj + x];
                av += w * G[i];
                ak += scale * w * (gv - Dc[row * H + h]) * Q[i];
            }
        }
        if (dvh) dvh[rj + i] += av;
        if (dkh) dkh[rj + i] += ak;
    }
}

// out[e, col] += sum over rows b and chunks c of part[b, c, e, col], in order
__global__ void k_ag_reduce(float* out, const float* part, int B, int nc, int k, int width) {
    const int64_t n = (int64_t)k * width;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float s = 0;
        for (int64_t bc = 0; bc < (int64_t)B * nc; bc++) s += part[bc * n + i];
        out[i] += s;
    }
}

extern "C" void cuda_interest_aggregate_forward(float* P, float* lse, const float* qe,
                                                const float* kh, const float* vh, const float* u,
                                                const float* pb, const int32_t* pad, int B, int L,
                                                int d, int H, int k, int C) {
    const int nc = (L + C - 1) / C;
    if (B <= 0 || nc <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "interest_aggregate", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    k_ag_forward<<<dim3(nc, B, k * H), 32, 0, cuda_stream()>>>(P, lse, qe, kh, vh, u, pb, pad, L, d,
                                                               H, k, C, scale);
    launchCheck();
}

extern "C" void cuda_interest_aggregate_backward(float* dqe, float* dkh, float* dvh, float* du,
                                                 float* dpb, const float* dP, const float* P,
                                                 const float* lse, const float* qe, const float* kh,
                                                 const float* vh, const float* u, const float* pb,
                                                 const int32_t* pad, int B, int L, int d, int H,
                                                 int k, int C) {
    const int nc = (L + C - 1) / C;
    if (B <= 0 || nc <= 0) return;
    if (d / H > HD_MAX) cuda_fail(__FILE__, __LINE__, "interest_aggregate", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)(d / H)));
    // scratch: D [B,nc,k,H], dpb parts [B,nc,k,H], du and dqe parts [B,nc,k,d]
    const size_t rows = (size_t)B * nc * k;
    float* scratch = (float*)cuda_scratch((2 * rows * H + 2 * rows * d) * sizeof(float));
    float *Dc = scratch, *dpb_p = Dc + rows * H, *du_p = dpb_p + rows * H, *dqe_p = du_p + rows * d;
    k_ag_backward_chunk<<<dim3(nc, B, k * H), 32, 0, cuda_stream()>>>(
        Dc, du_p, dpb_p, dqe_p, dP, P, lse, qe, kh, vh, u, pb, pad, L, d, H, k, C, scale);
    launchCheck();
    if (dkh || dvh) {
        k_ag_backward_pos<<<dim3(L, B, H), 32, 0, cuda_stream()>>>(
            dkh, dvh, Dc, dP, lse, qe, kh, vh, pad, L, d, H, k, C, nc, scale);
        launchCheck();
    }
    if (dqe) {
        k_ag_reduce<<<blocks_for((int64_t)k * d, 128), 128, 0, cuda_stream()>>>(dqe, dqe_p, B, nc,
                                                                                k, d);
        launchCheck();
    }
    if (du) {
        k_ag_reduce<<<blocks_for((int64_t)k * d, 128), 128, 0, cuda_stream()>>>(du, du_p, B, nc, k,
                                                                                d);
        launchCheck();
    }
    if (dpb) {
        k_ag_reduce<<<blocks_for((int64_t)k * H, 128), 128, 0, cuda_stream()>>>(dpb, dpb_p, B, nc,
                                                                                k, H);
        launchCheck();
    }
}
