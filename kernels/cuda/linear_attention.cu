// linear_attention.cu: RecGRELA's causal linear attention (kernels.h), linear
// in L. Positions are cut into chunks of LC (counted from 0; keys before
// pad[b] are masked to zero rows). Forward, per (b,h):
//   1. each chunk's sums      dS_c = sum_{j in c, j>=p0} kr_j v_j^T,  dz_c = sum kf_j
//   2. an exclusive scan over the chunks: S_c, z_c = the sums of the chunks before c
//   3. per chunk, query t:    num_t = qr_t S_c + sum_{j in c, p0<=j<=t} (qr_t.kr_j) v_j
//                             den_t = qf_t . (z_c + sum_{j in c, p0<=j<=t} kf_j) + 1e-6
// Backward, with g_t = dout_t / den_t and D_t = -(dout_t . out_t) / den_t (both
// 0 for padding queries): the same forward state, and a reverse one (an
// exclusive scan from the end) R_c = sum over later chunks of qr_t g_t^T,
// w_c = sum D_t qf_t; then per chunk
//   dqr_t += S_c g_t + sum_{j<=t} (g_t.v_j) kr_j        dqf_t += D_t z_t
//   dkr_j += R_c v_j + sum_{t>=j} (g_t.v_j) qr_t        dkf_j += w_c + sum_{t>=j} D_t qf_t
//   dv_j  += R_c^T kr_j + sum_{t>=j} (qr_t.kr_j) g_t    (keys j >= p0 only)
// One block per (chunk, b*H+h), so B*H*L/LC blocks and no atomics. The same
// function as the CPU's chunked form, summed in another order. Shared rows are
// padded to hd + 1 floats, so the threads of a warp walking a column of them
// (or of the states S and R, staged there in backward) hit 32 banks, not one:
// the first version's [LC][hd] rows put a warp's reads of the a_ij products
// in one bank for hd = 32 (not yet timed on a GPU).
#include <math.h>

#include "common.cuh"

#define LC 32  // positions per chunk
#define LA_EPS 1e-6f
#define HD_MAX 256
#define THREADS 256

// block (c, b*H+h): st[(bh*nc + c)*SZ + ...] = sum_{j in c, j>=p0} a_j bm_j^T
// (hd x hd, row index a's component) and sum (s ? s_j : 1) u_j (hd), SZ = hd^2 + hd
__global__ void k_la_sums(float* st, const float* a, const float* bm, const float* u,
                          const float* s, const int32_t* pad, int L, int d, int H, int nc) {
    const int c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H;
    const int p0 = first_position(pad, b, L);
    const int j0 = c * LC > p0 ? c * LC : p0, j1 = c * LC + LC < L ? c * LC + LC : L;
    float* o = st + ((int64_t)bh * nc + c) * (hd * hd + hd);
    const int64_t base = (int64_t)b * L * d + h * hd;
    for (int e = threadIdx.x; e < hd * hd; e += blockDim.x) {
        const int r = e / hd, col = e % hd;
        float acc = 0;
        for (int j = j0; j < j1; j++)
            acc += a[base + (int64_t)j * d + r] * bm[base + (int64_t)j * d + col];
        o[e] = acc;
    }
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float acc = 0;
        for (int j = j0; j < j1; j++)
            acc += (s ? s[(int64_t)bh * L + j] : 1.0f) * u[base + (int64_t)j * d + e];
        o[hd * hd + e] = acc;
    }
}

// per (b,h) and element of the state: the exclusive scan over the nc chunks,
// from the first (reverse 0) or from the last (reverse 1); the chunks' values
// loaded 8 at a time before their sums (a load's wait a chunk otherwise: nc of
// them in a row, 128 at L = 4096)
__global__ void k_la_scan(float* st, int64_t n, int nc, int SZ, int reverse) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float* p = st + (i / SZ) * (int64_t)nc * SZ + i % SZ;
        float run = 0;
        for (int k0 = 0; k0 < nc; k0 += 8) {
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const int c = reverse ? nc - 1 - (k0 + u) : k0 + u;
                x[u] = k0 + u < nc ? p[(int64_t)c * SZ] : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < 8; u++) {
                if (k0 + u >= nc) break;
                const int c = reverse ? nc - 1 - (k0 + u) : k0 + u;
                p[(int64_t)c * SZ] = run;
                run += x[u];
            }
        }
    }
}

// block (c, b*H+h): the chunk's outputs and denominators from its state
__global__ void k_la_out(float* out, float* den, const float* st, const float* qr, const float* kr,
                         const float* qf, const float* kf, const float* v, const int32_t* pad,
                         int L, int d, int H, int nc) {
    extern __shared__ float sm[];
    const int c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H,
              hp = hd + 1;  // shared rows padded: a column walk hits 32 banks
    const int p0 = first_position(pad, b, L), t0 = c * LC, n = L - t0 < LC ? L - t0 : LC;
    float *sq = sm, *sk = sq + LC * hp, *sv = sk + LC * hp, *sz = sv + LC * hp;
    float *sa = sz + LC * hp, *sden = sa + LC * LC;
    const float *S = st + ((int64_t)bh * nc + c) * (hd * hd + hd), *z = S + hd * hd;
    const int64_t base = ((int64_t)b * L + t0) * d + h * hd;
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        const int i = e / hd, col = e % hd;
        const int64_t g = base + (int64_t)i * d + col;
        const bool key = t0 + i >= p0;
        sq[i * hp + col] = qr[g];
        sk[i * hp + col] = key ? kr[g] : 0.0f;
        sv[i * hp + col] = key ? v[g] : 0.0f;
        sz[i * hp + col] = key ? kf[g] : 0.0f;
    }
    __syncthreads();
    // z_t = z_c + the chunk's running sum of kf, in place
    for (int col = threadIdx.x; col < hd; col += blockDim.x) {
        float run = z[col];
        for (int i = 0; i < n; i++) {
            run += sz[i * hp + col];
            sz[i * hp + col] = run;
        }
    }
    // a_ij = qr_i . kr_j for j <= i (masked keys are zero rows)
    for (int e = threadIdx.x; e < n * n; e += blockDim.x) {
        const int i = e / n, j = e % n;
        float s = 0;
        if (j <= i)
            for (int x = 0; x < hd; x++) s += sq[i * hp + x] * sk[j * hp + x];
        sa[i * LC + j] = s;
    }
    __syncthreads();
    // den_i = qf_i . z_i + eps, a warp per row; 0 for a padding query
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    for (int i = warp; i < n; i += nw) {
        float part = 0;
        for (int x = lane; x < hd; x += 32) part += qf[base + (int64_t)i * d + x] * sz[i * hp + x];
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
        const float D = t0 + i >= p0 ? part + LA_EPS : 0.0f;
        if (lane == 0) sden[i] = D, den[(int64_t)bh * L + t0 + i] = D;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        const int i = e / hd, col = e % hd;
        float num = 0;
        if (t0 + i >= p0) {
            for (int x = 0; x < hd; x++) num += sq[i * hp + x] * S[x * hd + col];
            for (int j = 0; j <= i; j++) num += sa[i * LC + j] * sv[j * hp + col];
            num /= sden[i];
        }
        out[base + (int64_t)i * d + col] = num;
    }
}

// a warp per row (b,h,t): g_t = dout_t / den_t, D_t = -(dout_t . out_t) / den_t,
// both 0 for a padding query
__global__ void k_la_grad(float* gs, float* Ds, const float* dout, const float* out,
                          const float* den, const int32_t* pad, int B, int L, int d, int H) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;  // (b*H+h)*L + t
    const int lane = threadIdx.x % 32, hd = d / H;
    if (w >= (int64_t)B * H * L) return;
    const int t = (int)(w % L), bh = (int)(w / L), b = bh / H, h = bh % H;
    const bool q = t >= first_position(pad, b, L);
    const int64_t r = ((int64_t)b * L + t) * d + h * hd;
    const float dn = den[w];
    float part = 0;
    for (int x = lane; x < hd; x += 32) part += dout[r + x] * out[r + x];
    for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
    for (int x = lane; x < hd; x += 32) gs[r + x] = q ? dout[r + x] / dn : 0.0f;
    if (lane == 0) Ds[w] = q ? -part / dn : 0.0f;
}

// block (c, b*H+h): the chunk's rows' gradients, as queries and as keys
__global__ void k_la_back(float* dqr, float* dkr, float* dqf, float* dkf, float* dv,
                          const float* stf, const float* stb, const float* gs, const float* Ds,
                          const float* qr, const float* kr, const float* qf, const float* kf,
                          const float* v, const int32_t* pad, int L, int d, int H, int nc) {
    extern __shared__ float sm[];
    const int c = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H,
              hp = hd + 1;  // shared rows padded: a column walk hits 32 banks
    const int p0 = first_position(pad, b, L), t0 = c * LC, n = L - t0 < LC ? L - t0 : LC;
    float *sq = sm, *sk = sq + LC * hp, *sv = sk + LC * hp, *sg = sv + LC * hp;
    float *sqf = sg + LC * hp, *sz = sqf + LC * hp, *sa = sz + LC * hp, *sG = sa + LC * LC;
    float *sD = sG + LC * LC, *sS = sD + LC, *sR = sS + hd * hp;  // S, R [hd][hp]
    const int64_t SZ = (int64_t)hd * hd + hd;
    const float *S = stf + ((int64_t)bh * nc + c) * SZ, *z = S + hd * hd;
    const float *R = stb + ((int64_t)bh * nc + c) * SZ, *wr = R + hd * hd;
    for (int e = threadIdx.x; e < hd * hd; e += blockDim.x)  // read along rows by column below
        sS[e / hd * hp + e % hd] = S[e], sR[e / hd * hp + e % hd] = R[e];
    const int64_t base = ((int64_t)b * L + t0) * d + h * hd;
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        const int i = e / hd, col = e % hd;
        const int64_t g = base + (int64_t)i * d + col;
        const bool key = t0 + i >= p0;
        sq[i * hp + col] = qr[g];
        sg[i * hp + col] = gs[g];
        sqf[i * hp + col] = qf[g];
        sk[i * hp + col] = key ? kr[g] : 0.0f;
        sv[i * hp + col] = key ? v[g] : 0.0f;
        sz[i * hp + col] = key ? kf[g] : 0.0f;
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) sD[i] = Ds[(int64_t)bh * L + t0 + i];
    __syncthreads();
    for (int col = threadIdx.x; col < hd; col += blockDim.x) {  // z_t, in place
        float run = z[col];
        for (int i = 0; i < n; i++) {
            run += sz[i * hp + col];
            sz[i * hp + col] = run;
        }
    }
    // a_ij = qr_i . kr_j and G_ij = g_i . v_j, for j <= i
    for (int e = threadIdx.x; e < n * n; e += blockDim.x) {
        const int i = e / n, j = e % n;
        float s = 0, gv = 0;
        if (j <= i)
            for (int x = 0; x < hd; x++)
                s += sq[i * hp + x] * sk[j * hp + x], gv += sg[i * hp + x] * sv[j * hp + x];
        sa[i * LC + j] = s;
        sG[i * LC + j] = gv;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        const int i = e / hd, col = e % hd;
        const int64_t row = base + (int64_t)i * d + col;
        // as a query (a padding query's g and D are 0: it adds nothing)
        float q1 = 0;
        for (int x = 0; x < hd; x++) q1 += sS[col * hp + x] * sg[i * hp + x];
        for (int j = 0; j <= i; j++) q1 += sG[i * LC + j] * sk[j * hp + col];
        dqr[row] += q1;
        dqf[row] += sD[i] * sz[i * hp + col];
        if (t0 + i < p0) continue;
        // as a key
        float k1 = 0, v1 = 0, f1 = wr[col];
        for (int x = 0; x < hd; x++)
            k1 += sR[col * hp + x] * sv[i * hp + x], v1 += sR[x * hp + col] * sk[i * hp + x];
        for (int t = i; t < n; t++) {
            k1 += sG[t * LC + i] * sq[t * hp + col];
            v1 += sa[t * LC + i] * sg[t * hp + col];
            f1 += sD[t] * sqf[t * hp + col];
        }
        dkr[row] += k1;
        dv[row] += v1;
        dkf[row] += f1;
    }
}

extern "C" void cuda_linear_attention_forward(float* out, float* den, const float* qr,
                                              const float* kr, const float* qf, const float* kf,
                                              const float* v, const int32_t* pad, int B, int L,
                                              int d, int H, int C) {
    (void)C;  // the CPU's chunk; the result is the same function
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, nc = (L + LC - 1) / LC, SZ = hd * hd + hd;
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, "linear_attention", "head width over 256");
    float* st = (float*)cuda_scratch((size_t)B * H * nc * SZ * sizeof(float));
    const dim3 grid(nc, B * H);
    k_la_sums<<<grid, THREADS, 0, cuda_stream()>>>(st, kr, v, kf, NULL, pad, L, d, H, nc);
    launchCheck();
    const int64_t n = (int64_t)B * H * SZ;
    k_la_scan<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(st, n, nc, SZ, 0);
    launchCheck();
    const size_t sh = ((size_t)4 * LC * (hd + 1) + LC * LC + LC) * sizeof(float);
    allow_shared((const void*)k_la_out, sh);
    k_la_out<<<grid, THREADS, sh, cuda_stream()>>>(out, den, st, qr, kr, qf, kf, v, pad, L, d, H,
                                                   nc);
    launchCheck();
}

extern "C" void cuda_linear_attention_backward(float* dqr, float* dkr, float* dqf, float* dkf,
                                               float* dv, const float* dout, const float* out,
                                               const float* den, const float* qr, const float* kr,
                                               const float* qf, const float* kf, const float* v,
                                               const int32_t* pad, int B, int L, int d, int H,
                                               int C) {
    (void)C;
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, nc = (L + LC - 1) / LC, SZ = hd * hd + hd;
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, "linear_attention", "head width over 256");
    // the forward and reverse states [B*H, nc, SZ], g [B,L,d] and D [B,H,L]
    const size_t nst = (size_t)B * H * nc * SZ;
    float* stf =
        (float*)cuda_scratch((2 * nst + (size_t)B * L * d + (size_t)B * H * L) * sizeof(float));
    float *stb = stf + nst, *gs = stb + nst, *Ds = gs + (size_t)B * L * d;
    const int64_t rows = (int64_t)B * H * L;
    cuda_mark_begin();
    k_la_grad<<<blocks_for(rows * 32, 256), 256, 0, cuda_stream()>>>(gs, Ds, dout, out, den, pad, B,
                                                                     L, d, H);
    launchCheck();
    cuda_mark("linear attention backward: gates");
    const dim3 grid(nc, B * H);
    k_la_sums<<<grid, THREADS, 0, cuda_stream()>>>(stf, kr, v, kf, NULL, pad, L, d, H, nc);
    launchCheck();
    k_la_sums<<<grid, THREADS, 0, cuda_stream()>>>(stb, qr, gs, qf, Ds, pad, L, d, H, nc);
    launchCheck();
    cuda_mark("linear attention backward: chunk sums");
    const int64_t n = (int64_t)B * H * SZ;
    k_la_scan<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(stf, n, nc, SZ, 0);
    launchCheck();
    k_la_scan<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(stb, n, nc, SZ, 1);
    launchCheck();
    cuda_mark("linear attention backward: scans");
    const size_t sh =
        ((size_t)6 * LC * (hd + 1) + 2 * LC * LC + LC + (size_t)2 * hd * (hd + 1)) * sizeof(float);
    allow_shared((const void*)k_la_back, sh);
    k_la_back<<<grid, THREADS, sh, cuda_stream()>>>(dqr, dkr, dqf, dkf, dv, stf, stb, gs, Ds, qr,
                                                    kr, qf, kf, v, pad, L, d, H, nc);
    launchCheck();
    cuda_mark("linear attention backward: chunks");
}
