// aggregate.cu: ELASTIC's interest aggregation (kernels.h, step 1) in O(L):
// forward, each chunk's own softmax state (max, sum, weighted sum) in
// parallel, then per (row, expert, head) a running merge over the chunks in
// order, the prior first, that writes each chunk's P and lse before taking
// in the chunk's own positions. Backward, per (row, expert, head), suffix
// sums over the chunks, scaled by exp(lse_c - lse_c') <= 1 (lse grows with c):
//   T_c = G_c + exp(lse_c - lse_{c+1}) T_{c+1},  U_c = D_c + ... U_{c+1},
// D_c = G_c . P_c, so that position j of chunk cj, with weight
// w = exp(s_j - lse_{cj+1}) <= 1, gets dv_j = w T_{cj+1} and
// ds_j = w (T_{cj+1} . v_j - U_{cj+1}), and the prior du = w0 T_0,
// dpb = w0 (T_0 . u - U_0) (summed as one suffix of G_c . (u - P_c)),
// w0 = exp(pb - lse_0). The shared gradients (dqe,
// du, dpb) are summed over rows and chunks in a fixed order. No atomics. (The
// first version summed every earlier position for every chunk: O(L^2 / C),
// 49.8 ms an ELASTIC step at batch 8 x 4096 on the H200 against 10.1 for
// its compiled PyTorch peer.)
#include <math.h>

#include "common.cuh"

#define HD_MAX 256
#define TILE 1024

// st[row, h] = (m, l, a[hd]) of chunk c's own positions j in [max(cC, pad),
// min((c+1)C, L)): m = max s_j, l = sum exp(s_j - m), a = sum exp(s_j - m)
// vh_j; an empty chunk gives (-inf, 0, 0). Block (c, b, e x h).
__global__ void k_ag_chunk_state(float* st, const float* qe, const float* kh, const float* vh,
                                 const int32_t* pad, int L, int d, int H, int k, int C,
                                 float scale) {
    const int c = blockIdx.x, b = blockIdx.y, e = blockIdx.z / H, h = blockIdx.z % H;
    const int hd = d / H, nc = gridDim.x, p0 = pad[b] < L ? pad[b] : L;
    const int jlo = c * C > p0 ? c * C : p0, jhi = (c + 1) * C < L ? (c + 1) * C : L;
    __shared__ float q[HD_MAX], s[TILE], sh[32];
    for (int i = threadIdx.x; i < hd; i += blockDim.x) q[i] = qe[(int64_t)e * d + h * hd + i];
    __syncthreads();
    float m = -INFINITY, l = 0, acc[HD_MAX / 32];
    for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++) acc[x] = 0;
    for (int j0 = jlo; j0 < jhi; j0 += TILE) {
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
    float* o = st + ((((int64_t)b * nc + c) * k + e) * H + h) * (2 + hd);
    if (threadIdx.x == 0) o[0] = m, o[1] = l;
    for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++) o[2 + i] = acc[x];
}

// The serial chains over the chunks below read the chunks' rows from shared
// memory, STAGE chunks staged at a time by load_rows (8 loads a thread in
// flight), not from global memory: a load's wait a chunk held them (nc in a
// row).
#define STAGE 32

// Block (b, e x h): the running state from the prior (pb, 1, u) through the
// chunks: chunk c's P and lse, then chunk c's own state merged in; the
// chunks' states staged STAGE at a time
__global__ void k_ag_prefix(float* P, float* lse, const float* st, const float* u, const float* pb,
                            int nc, int d, int H, int k) {
    __shared__ float so[STAGE * (2 + HD_MAX)];
    const int b = blockIdx.x, e = blockIdx.y / H, h = blockIdx.y % H, hd = d / H, w = 2 + hd;
    float m = pb[e * H + h], l = 1, acc[HD_MAX / 32];
    for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++)
        acc[x] = u[(int64_t)e * d + h * hd + i];
    for (int c0 = 0; c0 < nc; c0 += STAGE) {
        const int n = nc - c0 < STAGE ? nc - c0 : STAGE;
        __syncthreads();  // the last stage's readers are done
        load_rows(so, st + ((((int64_t)b * nc) * k + e) * H + h) * w, c0, n, n, w, w,
                  (int64_t)k * H * w, 0);
        __syncthreads();
        for (int cc = 0; cc < n; cc++) {
            const int64_t row = ((int64_t)b * nc + c0 + cc) * k + e;
            for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++)
                P[row * d + h * hd + i] = acc[x] / l;
            if (threadIdx.x == 0) lse[row * H + h] = m + logf(l);
            const float* o = so + cc * w;
            if (o[1] > 0) {
                const float mn = fmaxf(m, o[0]), f = expf(m - mn), g = expf(o[0] - mn);
                l = l * f + o[1] * g;
                for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++)
                    acc[x] = acc[x] * f + o[2 + i] * g;
                m = mn;
            }
        }
    }
}

// Block (b, e x h): the suffix sums T (into T[row, h slice]) and U (into
// U[row, h]) from the last chunk down, and the prior's gradients into
// du_p[b, e, h slice] and dpb_p[b, e, h]. STAGE chunks at a time, a warp a
// chunk first stages what does not depend on the suffix (the G row, lse, and
// the dot products G_c . P_c and G_c . (u - P_c): each lane its columns, then
// the warp's shuffle tree, as block_sum summed them); then the serial suffix
// runs on shared memory (it waited on global loads and two block sums a
// chunk).
#define SUFFIX_THREADS 128
__global__ void k_ag_suffix(float* T, float* U, float* du_p, float* dpb_p, const float* dP,
                            const float* P, const float* lse, const float* u, const float* pb,
                            int nc, int d, int H, int k) {
    __shared__ float sG[STAGE * HD_MAX], sL[STAGE], sD[STAGE], sUp[STAGE];
    const int b = blockIdx.x, e = blockIdx.y / H, h = blockIdx.y % H, hd = d / H;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const float* ue = u + (int64_t)e * d + h * hd;
    // uu: U's suffix; gu: the same of G_c . (u - P_c), the prior's ds (one
    // sum of differences, not a difference of sums)
    float t[HD_MAX / 32], uu = 0, gu = 0, lnext = 0;
    for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++) t[x] = 0;
    for (int c1 = nc; c1 > 0; c1 -= STAGE) {
        const int c0 = c1 - STAGE > 0 ? c1 - STAGE : 0, n = c1 - c0;
        __syncthreads();  // the last stage's readers are done
        for (int cc = warp; cc < n; cc += warps) {
            const int64_t row = ((int64_t)b * nc + c0 + cc) * k + e;
            const float *G = dP + row * d + h * hd, *Pc = P + row * d + h * hd;
            float dpart = 0, upart = 0;
            for (int i = lane; i < hd; i += 32) {
                const float g = G[i];
                dpart += g * Pc[i];
                upart += g * (ue[i] - Pc[i]);
                sG[cc * hd + i] = g;
            }
            for (int o = 16; o > 0; o >>= 1) {
                dpart += __shfl_xor_sync(0xffffffffu, dpart, o);
                upart += __shfl_xor_sync(0xffffffffu, upart, o);
            }
            if (lane == 0) sD[cc] = dpart + 0.0f, sUp[cc] = upart + 0.0f, sL[cc] = lse[row * H + h];
        }
        __syncthreads();
        for (int cc = n - 1; cc >= 0; cc--) {
            const int c = c0 + cc;
            const int64_t row = ((int64_t)b * nc + c) * k + e;
            const float lc = sL[cc], f = c == nc - 1 ? 0.f : expf(lc - lnext);
            for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++) {
                t[x] = sG[cc * hd + i] + f * t[x];
                T[row * d + h * hd + i] = t[x];
            }
            uu = sD[cc] + f * uu;
            gu = sUp[cc] + f * gu;
            if (threadIdx.x == 0) U[row * H + h] = uu;
            lnext = lc;
        }
    }
    // c = 0 now: w0 = exp(pb - lse_0)
    const float w0 = expf(pb[e * H + h] - lnext);
    for (int i = threadIdx.x, x = 0; i < hd; i += blockDim.x, x++)
        du_p[((int64_t)b * k + e) * d + h * hd + i] = w0 * t[x];
    if (threadIdx.x == 0) dpb_p[((int64_t)b * k + e) * H + h] = w0 * gu;
}

// Position j's weight w and ds for expert e (head h), from the next chunk's
// T and U; 0 where no later chunk reads j.
__device__ __forceinline__ void ag_position(float* w, float* ds, const float* qe, const float* Kj,
                                            const float* Vj, const float* T, const float* U,
                                            const float* lse, int b, int cj, int nc, int e, int h,
                                            int d, int H, int k, float scale) {
    const int hd = d / H;
    if (cj + 1 >= nc) {
        *w = 0, *ds = 0;
        return;
    }
    const int64_t row = ((int64_t)b * nc + cj + 1) * k + e;
    const float* Q = qe + (int64_t)e * d + h * hd;
    const float* Tr = T + row * d + h * hd;
    float sj = 0, tv = 0;
    for (int x = 0; x < hd; x++) sj += Q[x] * Kj[x], tv += Tr[x] * Vj[x];
    *w = expf(sj * scale - lse[row * H + h]);
    *ds = *w * (tv - U[row * H + h]);
}

// Block (position j, row b, head h): dvh_j += sum_e w T, dkh_j += scale sum_e
// ds qe[e]; a thread an expert computes w and ds into shared memory [2][k],
// then a thread a column sums them in expert order (every thread computed
// every expert's two dot products before: hd times the work)
__global__ void k_ag_backward_pos(float* dkh, float* dvh, const float* T, const float* U,
                                  const float* lse, const float* qe, const float* kh,
                                  const float* vh, const int32_t* pad, int L, int d, int H, int k,
                                  int C, int nc, float scale) {
    extern __shared__ float sw[];  // w [k], then ds [k]
    const int j = blockIdx.x, b = blockIdx.y, h = blockIdx.z, hd = d / H;
    const int p0 = pad[b] < L ? pad[b] : L, cj = j / C;
    if (j < p0 || cj + 1 >= nc) return;
    const int64_t rj = ((int64_t)b * L + j) * d + h * hd;
    for (int e = threadIdx.x; e < k; e += blockDim.x)
        ag_position(sw + e, sw + k + e, qe, kh + rj, vh + rj, T, U, lse, b, cj, nc, e, h, d, H, k,
                    scale);
    __syncthreads();
    const int64_t row0 = ((int64_t)b * nc + cj + 1) * k;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float av = 0, ak = 0;
        for (int e = 0; e < k; e++) {
            av += sw[e] * T[(row0 + e) * d + h * hd + i];
            ak += scale * sw[k + e] * qe[(int64_t)e * d + h * hd + i];
        }
        if (dvh) dvh[rj + i] += av;
        if (dkh) dkh[rj + i] += ak;
    }
}

// Block (chunk c, row b, e x h): dqe_p[b, c, e, h slice] = scale sum over
// chunk c's positions j of ds_j kh_j; a thread a position computes ds into
// shared memory (DQE_ROUND positions a round), then a thread a column sums
// them in position order (every thread computed every position's dot
// products before)
#define DQE_THREADS 64
#define DQE_ROUND 1024
__global__ void k_ag_backward_dqe(float* dqe_p, const float* T, const float* U, const float* lse,
                                  const float* qe, const float* kh, const float* vh,
                                  const int32_t* pad, int L, int d, int H, int k, int C,
                                  float scale) {
    __shared__ float sds[DQE_ROUND];
    const int c = blockIdx.x, b = blockIdx.y, e = blockIdx.z / H, h = blockIdx.z % H;
    const int hd = d / H, nc = gridDim.x, p0 = pad[b] < L ? pad[b] : L;
    const int jlo = c * C > p0 ? c * C : p0, jhi = (c + 1) * C < L ? (c + 1) * C : L;
    float* out = dqe_p + (((int64_t)b * nc + c) * k + e) * d + h * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) out[i] = 0;
    for (int j0 = jlo; j0 < jhi; j0 += DQE_ROUND) {
        const int nj = jhi - j0 < DQE_ROUND ? jhi - j0 : DQE_ROUND;
        __syncthreads();  // the last round's readers are done
        for (int jj = threadIdx.x; jj < nj; jj += blockDim.x) {
            const int64_t rj = ((int64_t)b * L + j0 + jj) * d + h * hd;
            float w;
            ag_position(&w, sds + jj, qe, kh + rj, vh + rj, T, U, lse, b, c, nc, e, h, d, H, k,
                        scale);
        }
        __syncthreads();
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            float a = out[i];
            for (int jj = 0; jj < nj; jj++)
                a += scale * sds[jj] * kh[((int64_t)b * L + j0 + jj) * d + h * hd + i];
            out[i] = a;
        }
    }
}

// out[e, col] += sum over rows b and chunks c of part[b, c, e, col], in order
// (unrolled: the loads of 8 parts issued before their adds)
__global__ void k_ag_reduce(float* out, const float* part, int B, int nc, int k, int width) {
    const int64_t n = (int64_t)k * width;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float s = 0;
#pragma unroll 8
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
    // scratch: the chunks' own states [B, nc, k, H, 2 + hd]
    const size_t rows = (size_t)B * nc * k;
    float* st = (float*)cuda_scratch(rows * (2 * H + d) * sizeof(float));
    k_ag_chunk_state<<<dim3(nc, B, k * H), 32, 0, cuda_stream()>>>(st, qe, kh, vh, pad, L, d, H, k,
                                                                   C, scale);
    launchCheck();
    k_ag_prefix<<<dim3(B, k * H), 32, 0, cuda_stream()>>>(P, lse, st, u, pb, nc, d, H, k);
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
    // scratch: T [B,nc,k,d], U [B,nc,k,H], dqe parts [B,nc,k,d], du parts
    // [B,k,d], dpb parts [B,k,H]
    const size_t rows = (size_t)B * nc * k, bk = (size_t)B * k;
    float* scratch =
        (float*)cuda_scratch((2 * rows * d + rows * H + bk * d + bk * H) * sizeof(float));
    float *T = scratch, *U = T + rows * d, *dqe_p = U + rows * H, *du_p = dqe_p + rows * d,
          *dpb_p = du_p + bk * d;
    cuda_mark_begin();
    k_ag_suffix<<<dim3(B, k * H), SUFFIX_THREADS, 0, cuda_stream()>>>(T, U, du_p, dpb_p, dP, P, lse,
                                                                      u, pb, nc, d, H, k);
    launchCheck();
    cuda_mark("aggregation backward: suffix");
    if (dkh || dvh) {
        const size_t sh = (size_t)2 * k * sizeof(float);
        allow_shared((const void*)k_ag_backward_pos, sh);
        k_ag_backward_pos<<<dim3(L, B, H), 32, sh, cuda_stream()>>>(dkh, dvh, T, U, lse, qe, kh, vh,
                                                                    pad, L, d, H, k, C, nc, scale);
        launchCheck();
        cuda_mark("aggregation backward: positions");
    }
    if (dqe) {
        k_ag_backward_dqe<<<dim3(nc, B, k * H), DQE_THREADS, 0, cuda_stream()>>>(
            dqe_p, T, U, lse, qe, kh, vh, pad, L, d, H, k, C, scale);
        launchCheck();
        cuda_mark("aggregation backward: queries");
        k_ag_reduce<<<blocks_for((int64_t)k * d, 128), 128, 0, cuda_stream()>>>(dqe, dqe_p, B, nc,
                                                                                k, d);
        launchCheck();
    }
    if (du) {
        k_ag_reduce<<<blocks_for((int64_t)k * d, 128), 128, 0, cuda_stream()>>>(du, du_p, B, 1, k,
                                                                                d);
        launchCheck();
    }
    if (dpb) {
        k_ag_reduce<<<blocks_for((int64_t)k * H, 128), 128, 0, cuda_stream()>>>(dpb, dpb_p, B, 1, k,
                                                                                H);
        launchCheck();
    }
}
