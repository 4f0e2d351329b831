// dispatch.cu: ELASTIC's dispatch attention (kernels.h, DESIGN §3 step 3) in
// tiles, as attention_fused.cu does it (FlashAttention-2 on the CUDA cores in
// FP32) but inside each chunk: query t of chunk c sees the chunk's k interests
// (scores with q as given) and the local keys max(cC, pad[b])..t (RoPE scores).
// A tile is T rows: 64 for heads up to 64 columns, 32 up to HD_MAX, or the least
// power of two >= C (at least MIN_T) for a smaller chunk. A chunk has
// ceil(C/T) query tiles; its keys are ceil(k/T) interest tiles, then its local
// tiles (aligned to the chunk, so the diagonal tile holds the causal mask).
//   rope      a table [L][hd/2] of the (cos, sin) of pos * 10000^(-2i/hd): one
//             double cos and sin per (position, pair) per call, kept as float in
//             the call's scratch; every rotation is a float multiply from it
//   forward   block (query tile of chunk c, b*H+h): the interest tiles with q
//             as loaded, then q rotated in place and the local key tiles up to
//             the diagonal, rotated as they load; an online softmax per row
//             (running max m, sum l), out = O / l, lse = m + log l
//   backward  block (c, b*H+h) owns the chunk: D_t = dout_t . out_t and lse of
//             its rows into shared memory; then for each key tile, over the
//             query tiles that see it, p = exp(s scale - lse) and ds = p (dout
//             v^T - D): dv += p^T dout and dk += scale ds^T q stay in shared
//             memory and are written once at the tile's end (local ones rotated
//             back by R(j)^T); dq += scale ds k goes straight into dq's rows of
//             the chunk, which no other block touches (R(t)^T on the local part)
// Every output has one block and a fixed summation order: no atomics, the same
// bits every run. A padding query (t < pad[b]) outputs 0 with lse 0 and gets no
// gradient; a padding key none either. NULL gradients are skipped.
// Roads: one. Every C and k the config allows (C <= 1024, k <= 64) and every head
// width up to HD_MAX take these kernels: the shared memory is bounded by T, not
// by C (but the backward's 2 floats a chunk row), e.g. forward / backward 50 /
// 83 KiB a block at hd 32, C 64; 82 / 131 KiB at hd 64; at most 133 / 209 KiB
// (hd 256, C 1024). A wider head stops with an error, as the first version did.
#include <math.h>

#include "common.cuh"

#define HD_MAX 256  // six [32][257] tiles and two [32][33] fit an H100's 227 KB a block
#define THREADS 256
#define MIN_T 8  // THREADS / T threads share a row's softmax shuffles: at most a warp

// the tile rows for heads of hd columns and chunks of C, and the shared floats
// of each kernel (tiles [T][hd + 1], padded so a column walk has no bank
// conflicts; scores [T][T + 1]; the backward's D and lse for the whole chunk)
static int tile_rows(int hd, int C) {
    int T = hd <= 64 ? 64 : 32;
    while (T > MIN_T && T / 2 >= C) T /= 2;
    return T;
}
static size_t forward_floats(int T, int hd) {
    return (size_t)4 * T * (hd + 1) + (size_t)T * (T + 1) + 3 * T;
}
static size_t backward_floats(int T, int hd, int C) {
    return (size_t)6 * T * (hd + 1) + (size_t)2 * T * (T + 1) + (size_t)2 * ((C + T - 1) / T) * T;
}

static __device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// rope[pos][i] = (cos, sin) of pos * 10000^(-2i/hd), i < hd/2: double, then float
__global__ void k_dp_rope(float* rope, int L, int hd) {
    const int np = hd / 2;
    const int64_t n = (int64_t)L * np, step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += step) {
        const int pos = (int)(e / np), i = (int)(e % np);
        const double a = (double)pos * pow(10000.0, -2.0 * i / hd);
        rope[2 * e] = (float)cos(a), rope[2 * e + 1] = (float)sin(a);
    }
}

// y[0..1] = R (x0, x1) by the table entry cs = (cos, sin); sg = -1: R^T
static __device__ __forceinline__ void rotate(float* y, float x0, float x1, const float* cs,
                                              float sg) {
    const float c = cs[0], s = sg * cs[1];
    y[0] = x0 * c - x1 * s;
    y[1] = x0 * s + x1 * c;
}

// rows r0.. (n of them, the rest of the T zero) of a [*, d] matrix's head slice
// at col into a [T][hp] tile, a pair of columns a thread (e -> row e / nph, pair
// e % nph); with a rope table, row i's pairs rotated by R(pos0 + i) (an odd last
// column as it is). A thread issues the loads of 4 pairs before it stores any
// (common.cuh's load_rows says why).
static __device__ __forceinline__ void load_tile(float* __restrict__ s, const float* __restrict__ m,
                                                 int64_t r0, int n, int T, int hd, int hp, int d,
                                                 int col, const float* __restrict__ rope,
                                                 int pos0) {
    constexpr int U = 4;
    const int np = hd / 2, nph = (hd + 1) / 2, total = T * nph;
    for (int e0 = threadIdx.x; e0 < total; e0 += U * blockDim.x) {
        float a[U], b[U], cs[U][2];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * blockDim.x, i = e / nph, x = 2 * (e % nph);
            const bool in = e < total && i < n, pair = x + 1 < hd;
            const float* v = m + (r0 + i) * d + col + x;
            a[u] = in ? v[0] : 0.0f;
            b[u] = in && pair ? v[1] : 0.0f;
            cs[u][0] = 1.0f, cs[u][1] = 0.0f;
            if (in && pair && rope) {
                const float* c = rope + 2 * ((int64_t)(pos0 + i) * np + x / 2);
                cs[u][0] = c[0], cs[u][1] = c[1];
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * blockDim.x, i = e / nph, x = 2 * (e % nph);
            if (e >= total) break;
            float* y = s + i * hp + x;
            if (x + 1 == hd)
                y[0] = a[u];
            else if (rope)
                rotate(y, a[u], b[u], cs[u], 1.0f);
            else
                y[0] = a[u], y[1] = b[u];
        }
    }
}

__global__ void k_dp_forward(float* out, float* lse, const float* q, const float* kl,
                             const float* vl, const float* ki, const float* vi, const float* rope,
                             const int32_t* pad, int L, int d, int H, int k, int C, int T,
                             float scale) {
    extern __shared__ float sm[];
    const int bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H, hp = hd + 1, SP = T + 1;
    const int np = hd / 2, nph = (hd + 1) / 2, tpc = (C + T - 1) / T, nc = (L + C - 1) / C;
    const int c = blockIdx.x / tpc, qt = blockIdx.x % tpc, c0 = c * C, c1 = imin(c0 + C, L);
    const int t0 = c0 + qt * T, nq = imin(c1 - t0, T), p0 = first_position(pad, b, L);
    if (nq <= 0) return;  // the short last chunk has fewer query tiles
    const int64_t r0 = (int64_t)b * L + t0;
    float* ls = lse + (int64_t)bh * L + t0;
    if (t0 + nq <= p0) {  // padding queries only
        for (int e = threadIdx.x; e < nq * hd; e += blockDim.x)
            out[(r0 + e / hd) * d + h * hd + e % hd] = 0;
        for (int i = threadIdx.x; i < nq; i += blockDim.x) ls[i] = 0;
        return;
    }
    float *sQ = sm, *sK = sQ + T * hp, *sV = sK + T * hp, *sO = sV + T * hp, *sS = sO + T * hp;
    float *sM = sS + T * SP, *sL = sM + T, *sC = sL + T;
    load_tile(sQ, q, r0, nq, T, hd, hp, d, h * hd, NULL, 0);
    for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sO[e] = 0;
    for (int i = threadIdx.x; i < T; i += blockDim.x) sM[i] = -INFINITY, sL[i] = 0;
    // key tiles: nit of interests, then the local ones lt0..qt (lt0 holds the first item)
    const int nit = (k + T - 1) / T, lt0 = ((p0 > c0 ? p0 : c0) - c0) / T;
    const int64_t irow = ((int64_t)b * nc + c) * k;
    const int per = blockDim.x / T, me = threadIdx.x / per, part = threadIdx.x % per;
    for (int x = 0; x < nit + qt - lt0 + 1; x++) {
        const bool interest = x < nit;
        const int j0 = interest ? x * T : c0 + (lt0 + x - nit) * T;  // first expert or position
        const int nk = imin((interest ? k : c1) - j0, T);
        if (interest) {
            load_tile(sK, ki, irow + j0, nk, T, hd, hp, d, h * hd, NULL, 0);
            load_tile(sV, vi, irow + j0, nk, T, hd, hp, d, h * hd, NULL, 0);
        } else {
            load_tile(sK, kl, (int64_t)b * L + j0, nk, T, hd, hp, d, h * hd, rope, j0);
            load_tile(sV, vl, (int64_t)b * L + j0, nk, T, hd, hp, d, h * hd, NULL, 0);
        }
        if (x == nit)  // q rotated in place: each thread its own pairs of load_tile
            for (int e = threadIdx.x; e < nq * nph; e += blockDim.x) {
                const int i = e / nph, y = 2 * (e % nph);
                float* p = sQ + i * hp + y;
                if (y + 1 < hd)
                    rotate(p, p[0], p[1], rope + 2 * ((int64_t)(t0 + i) * np + y / 2), 1);
            }
        __syncthreads();
        scores_tile(sS, SP, sQ, sK, nq, nk, hd, hp, scale, [&](int i, int j) {
            return t0 + i >= p0 && (interest || (j0 + j >= p0 && j0 + j <= t0 + i));
        });
        __syncthreads();
        softmax_tile(sS, SP, sM, sL, sC, sO, sV, nq, nk, hd, hp, me, part, per);
    }
    for (int e = threadIdx.x; e < nq * hd; e += blockDim.x) {
        const int i = e / hd, cc = e % hd;
        out[(r0 + i) * d + h * hd + cc] = t0 + i >= p0 ? sO[i * hp + cc] / sL[i] : 0.0f;
    }
    for (int i = threadIdx.x; i < nq; i += blockDim.x)
        ls[i] = t0 + i >= p0 ? sM[i] + logf(sL[i]) : 0.0f;
}

__global__ void k_dp_backward(float* dq, float* dkl, float* dvl, float* dki, float* dvi,
                              const float* dout, const float* out, const float* lse, const float* q,
                              const float* kl, const float* vl, const float* ki, const float* vi,
                              const float* rope, const int32_t* pad, int L, int d, int H, int k,
                              int C, int T, float scale) {
    extern __shared__ float sm[];
    const int bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H, hp = hd + 1, SP = T + 1;
    const int np = hd / 2, nph = (hd + 1) / 2, c = blockIdx.x, nc = gridDim.x;
    const int c0 = c * C, c1 = imin(c0 + C, L), p0 = first_position(pad, b, L);
    const int jl = p0 > c0 ? p0 : c0;  // the chunk's first item
    if (jl >= c1) return;              // padding only: no gradient
    const int nt = (c1 - c0 + T - 1) / T, lt0 = (jl - c0) / T, nit = (k + T - 1) / T;
    float *sK = sm, *sV = sK + T * hp, *sQ = sV + T * hp, *sdO = sQ + T * hp, *sdK = sdO + T * hp;
    float *sdV = sdK + T * hp, *sP = sdV + T * hp, *sdS = sP + T * SP, *sLse = sdS + T * SP;
    float* sD = sLse + nt * T;
    const int64_t brow = (int64_t)b * L, irow = ((int64_t)b * nc + c) * k;
    // D_t and lse_t of the chunk's rows, a warp a row
    const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
    for (int t = c0 + threadIdx.x / 32; t < c1; t += warps) {
        const int64_t r = (brow + t) * d + h * hd;
        float part = 0;
        for (int x = lane; x < hd; x += 32) part += dout[r + x] * out[r + x];
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
        if (lane == 0) sD[t - c0] = part, sLse[t - c0] = lse[(int64_t)bh * L + t];
    }
    for (int x = 0; x < nit + nt - lt0; x++) {
        const bool interest = x < nit;
        const int kt = lt0 + x - nit;  // a local key tile
        const int j0 = interest ? x * T : c0 + kt * T, nk = imin((interest ? k : c1) - j0, T);
        float *gK = interest ? dki : dkl, *gV = interest ? dvi : dvl;
        if (!gK && !gV && !dq) continue;
        __syncthreads();  // the last key tile's readers are done
        if (interest) {
            load_tile(sK, ki, irow + j0, nk, T, hd, hp, d, h * hd, NULL, 0);
            load_tile(sV, vi, irow + j0, nk, T, hd, hp, d, h * hd, NULL, 0);
        } else {
            load_tile(sK, kl, brow + j0, nk, T, hd, hp, d, h * hd, rope, j0);
            load_tile(sV, vl, brow + j0, nk, T, hd, hp, d, h * hd, NULL, 0);
        }
        for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sdK[e] = 0, sdV[e] = 0;
        for (int qt = interest ? lt0 : kt; qt < nt; qt++) {
            const int t0 = c0 + qt * T, nq = imin(c1 - t0, T);
            __syncthreads();  // the last query tile's readers are done
            load_tile(sQ, q, brow + t0, nq, T, hd, hp, d, h * hd, interest ? NULL : rope, t0);
            load_tile(sdO, dout, brow + t0, nq, T, hd, hp, d, h * hd, NULL, 0);
            __syncthreads();
            probabilities_tile(sP, sdS, SP, sQ, sdO, sK, sV, sLse + (t0 - c0), sD + (t0 - c0), nq,
                               nk, hd, hp, scale, [&](int i, int j) {
                                   return t0 + i >= p0 &&
                                          (interest || (j0 + j >= p0 && j0 + j <= t0 + i));
                               });
            __syncthreads();
            key_grads_tile(sdV, sdK, sP, sdS, SP, sdO, sQ, nq, nk, hd, hp, scale);
            if (!dq) continue;
            // dq of rows t >= p0 (this block's alone), a pair of columns a thread
            for (int e = threadIdx.x; e < nq * nph; e += blockDim.x) {
                const int i = e / nph, y = 2 * (e % nph), t = t0 + i;
                if (t < p0) continue;
                float g[2] = {0, 0};
                for (int j = 0; j < nk; j++) {
                    g[0] += sdS[i * SP + j] * sK[j * hp + y];
                    if (y + 1 < hd) g[1] += sdS[i * SP + j] * sK[j * hp + y + 1];
                }
                g[0] *= scale, g[1] *= scale;
                if (!interest && y + 1 < hd)
                    rotate(g, g[0], g[1], rope + 2 * ((int64_t)t * np + y / 2), -1.0f);
                float* o = dq + (brow + t) * d + h * hd + y;
                o[0] += g[0];
                if (y + 1 < hd) o[1] += g[1];
            }
        }
        __syncthreads();
        // the tile's keys: interests as they are, local ones (items only) by R(j)^T
        for (int e = threadIdx.x; e < nk * nph; e += blockDim.x) {
            const int j = e / nph, y = 2 * (e % nph), w = y + 1 < hd ? 2 : 1;
            if (!interest && j0 + j < p0) continue;
            const int64_t r = (interest ? irow + j0 + j : brow + j0 + j) * d + h * hd + y;
            float g[2] = {sdK[j * hp + y], w == 2 ? sdK[j * hp + y + 1] : 0.0f};
            if (!interest && w == 2)
                rotate(g, g[0], g[1], rope + 2 * ((int64_t)(j0 + j) * np + y / 2), -1.0f);
            for (int z = 0; z < w; z++) {
                if (gK) gK[r + z] += g[z];
                if (gV) gV[r + z] += sdV[j * hp + y + z];
            }
        }
    }
}

static void check_head(int hd) {
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, "dispatch", "head width over 256");
}

// the call's RoPE table [L][hd/2][2], in its scratch
static const float* rope_table(int L, int hd) {
    const int64_t n = (int64_t)L * (hd / 2);
    float* rope = (float*)cuda_scratch((size_t)(2 * n + 1) * sizeof(float));
    k_dp_rope<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(rope, L, hd);
    launchCheck();
    return rope;
}

extern "C" void cuda_dispatch_forward(float* out, float* lse, const float* q, const float* kl,
                                      const float* vl, const float* ki, const float* vi,
                                      const int32_t* pad, int B, int L, int d, int H, int k,
                                      int C) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, T = tile_rows(hd, C), nc = (L + C - 1) / C;
    check_head(hd);
    const float scale = (float)(1.0 / sqrt((double)hd));
    const float* rope = rope_table(L, hd);
    const size_t sh = forward_floats(T, hd) * sizeof(float);
    allow_shared((const void*)k_dp_forward, sh);
    const dim3 grid(nc * ((C + T - 1) / T), B * H);
    k_dp_forward<<<grid, THREADS, sh, cuda_stream()>>>(out, lse, q, kl, vl, ki, vi, rope, pad, L, d,
                                                       H, k, C, T, scale);
    launchCheck();
}

extern "C" void cuda_dispatch_backward(float* dq, float* dkl, float* dvl, float* dki, float* dvi,
                                       const float* dout, const float* out, const float* lse,
                                       const float* q, const float* kl, const float* vl,
                                       const float* ki, const float* vi, const int32_t* pad, int B,
                                       int L, int d, int H, int k, int C) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, T = tile_rows(hd, C), nc = (L + C - 1) / C;
    check_head(hd);
    const float scale = (float)(1.0 / sqrt((double)hd));
    const float* rope = rope_table(L, hd);
    const size_t sh = backward_floats(T, hd, C) * sizeof(float);
    allow_shared((const void*)k_dp_backward, sh);
    k_dp_backward<<<dim3(nc, B * H), THREADS, sh, cuda_stream()>>>(
        dq, dkl, dvl, dki, dvi, dout, out, lse, q, kl, vl, ki, vi, rope, pad, L, d, H, k, C, T,
        scale);
    launchCheck();
}
