// attention_fused.cu: causal multi-head softmax attention with left padding,
// fused (kernels.h: never L x L; lse[B,H,L] kept for backward), in tiles as
// FlashAttention-2 does it. Queries and keys come in tiles of T rows (64; 32
// for heads wider than 64 columns); a block holds its tiles, the T x T scores
// and its accumulator in shared memory.
//   forward   block (query tile, b*H+h): the key tiles up to the diagonal, an
//             online softmax per row (running max m, sum l), out = O / l,
//             lse = m + log l
//   backward  D_t = dout_t . out_t; then block (key tile, b*H+h) runs over the
//             query tiles from the diagonal on: p = exp(s scale - lse),
//             dv += p^T dout, ds = p (dout v^T - D), dk += scale ds^T q; and
//             block (query tile, b*H+h) over the key tiles: dq += scale ds k
// Every output has one block, so no atomics and a fixed summation order. Each
// kernel comes in two forms (its template argument TC), the same steps with
// the tile products made differently:
//   CUDA cores  FP32 register tiles (common.cuh's tile_mm: each thread 4 x 4
//               scores or 4 x 2 outputs, each shared-memory read serving
//               several multiply-adds; one output a thread ran at 3.8 and 2.9
//               TFLOP/s forward and backward on the H200), over the tile's
//               nq x nk part; rows padded by 1 float (no bank conflicts)
//   tensor      unless the precision is fp32, for heads of a multiple of 16
//   cores       columns: TF32 wmma products (common.cuh's tc_mm) over whole
//               T x T tiles (rows past the sequence are zero, their scores
//               masked), rows padded by 4 floats as wmma's alignment asks,
//               the score scale folded into ds
// Keys j of query t are p0 <= j <= t (p0 = pad[b]); a padding query (t < p0)
// outputs 0 with lse 0 and gets no gradient, a padding key none either.
#include <math.h>

#include "common.cuh"

#define HD_MAX 256
#define THREADS 256

using nvcuda::wmma::col_major;
using nvcuda::wmma::row_major;

// the tile size for heads of hd columns; a form's row padding; and the shared
// floats of each kernel (tiles [T][hd + pad], scores [T][T + pad]; with pad
// 4 every buffer stays 32-byte aligned)
static int tile_rows(int hd) { return hd <= 64 ? 64 : 32; }
static __host__ __device__ constexpr int row_pad(bool tc) { return tc ? 4 : 1; }
static size_t forward_floats(int T, int hd, bool tc) {
    const int p = row_pad(tc);
    return (size_t)4 * T * (hd + p) + (size_t)T * (T + p) + 3 * T;
}
static size_t dkv_floats(int T, int hd, bool tc) {
    const int p = row_pad(tc);
    return (size_t)6 * T * (hd + p) + (size_t)2 * T * (T + p) + 2 * T;
}
static size_t dq_floats(int T, int hd, bool tc) {  // the tensor cores keep Q K^T apart
    const int p = row_pad(tc);
    return (size_t)5 * T * (hd + p) + (size_t)(tc ? 2 : 1) * T * (T + p) + 2 * T;
}

// rows r0.. of a [B*L, ld] matrix's column slice at col, into a [T][hp] tile
// (rows past n zero). A thread issues its loads 8 at a time before storing
// them: one load and its store an iteration made every load wait for the last
// (a global load's latency each, with the tile's barrier behind it).
__device__ __forceinline__ void load_tile(float* __restrict__ s, const float* __restrict__ m,
                                          int64_t r0, int n, int T, int hd, int hp, int64_t ld,
                                          int col) {
    constexpr int U = 8;
    const int total = T * hd;
    for (int e0 = threadIdx.x; e0 < total; e0 += U * blockDim.x) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * blockDim.x, i = e / hd;
            v[u] = e < total && i < n ? m[(r0 + i) * ld + col + e % hd] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int e = e0 + u * blockDim.x;
            if (e < total) s[e / hd * hp + e % hd] = v[u];
        }
    }
}

// The probabilities of a tile on the tensor cores: sX holds Q K^T and becomes
// p = exp(s scale - lse) (when keep_p), sdS holds dO V^T and becomes ds = p
// (dout . v - D) scale, over the whole T x T tile; 0 where not allowed
__device__ __forceinline__ void tc_probabilities(float* sX, float* sdS, int SP, const float* sLse,
                                                 const float* sD, int nq, int nk, int T, int t0,
                                                 int j0, int p0, float scale, bool keep_p) {
    for (int e = threadIdx.x; e < T * T; e += blockDim.x) {
        const int i = e / T, j = e % T;
        float p = 0, ds = 0;
        if (i < nq && j < nk && j0 + j >= p0 && j0 + j <= t0 + i) {
            p = expf(sX[i * SP + j] * scale - sLse[i]);
            ds = p * (sdS[i * SP + j] - sD[i]) * scale;
        }
        if (keep_p) sX[i * SP + j] = p;
        sdS[i * SP + j] = ds;
    }
}

template <bool TC>
__global__ void k_flash_forward(float* out, float* lse, const float* qkv, const int32_t* pad, int L,
                                int d, int H, float scale, int T) {
    extern __shared__ __align__(128) float sm[];
    const int bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H, hp = hd + row_pad(TC),
              SP = T + row_pad(TC);
    const int p0 = first_position(pad, b, L), t0 = blockIdx.x * T;
    const int nq = L - t0 < T ? L - t0 : T, C3 = 3 * d;
    float *sQ = sm, *sK = sQ + T * hp, *sV = sK + T * hp, *sO = sV + T * hp, *sS = sO + T * hp;
    float *sM = sS + T * SP, *sL = sM + T, *sC = sL + T;
    const int64_t r0 = (int64_t)b * L + t0;
    load_tile(sQ, qkv, r0, nq, T, hd, hp, C3, h * hd);
    for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sO[e] = 0;
    for (int i = threadIdx.x; i < T; i += blockDim.x) sM[i] = -INFINITY, sL[i] = 0;
    const int per = blockDim.x / T, me = threadIdx.x / per, part = threadIdx.x % per;
    for (int j0 = p0 / T * T; j0 < t0 + nq && p0 < t0 + nq; j0 += T) {
        const int nk = L - j0 < T ? L - j0 : T;
        __syncthreads();  // the last tile's readers are done
        load_tile(sK, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, d + h * hd);
        load_tile(sV, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, 2 * d + h * hd);
        __syncthreads();
        const auto allowed = [&](int i, int j) { return j0 + j >= p0 && j0 + j <= t0 + i; };
        if constexpr (TC) {
            tc_mm<row_major, col_major>(sS, SP, sQ, hp, sK, hp, T, T, hd, false);  // Q K^T
            __syncthreads();
            for (int e = threadIdx.x; e < T * T; e += blockDim.x) {
                const int i = e / T, j = e % T;
                sS[i * SP + j] =
                    i < nq && j < nk && allowed(i, j) ? sS[i * SP + j] * scale : -INFINITY;
            }
            __syncthreads();
            softmax_rows(sS, SP, sM, sL, sC, T, T, me, part, per);
            for (int e = threadIdx.x; e < T * hd; e += blockDim.x)
                sO[e / hd * hp + e % hd] *= sC[e / hd];
            __syncthreads();
            tc_mm<row_major, row_major>(sO, hp, sS, SP, sV, hp, T, hd, T, true);  // O += P V
        } else {
            scores_tile(sS, SP, sQ, sK, nq, nk, hd, hp, scale, allowed);
            __syncthreads();
            softmax_tile(sS, SP, sM, sL, sC, sO, sV, nq, nk, hd, hp, me, part, per);
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nq * hd; e += blockDim.x) {
        const int i = e / hd, c = e % hd;
        out[(r0 + i) * d + h * hd + c] = t0 + i >= p0 ? sO[i * hp + c] / sL[i] : 0.0f;
    }
    for (int i = threadIdx.x; i < nq; i += blockDim.x)
        lse[(int64_t)bh * L + t0 + i] = t0 + i >= p0 ? sM[i] + logf(sL[i]) : 0.0f;
}

// a warp per row (b,h,t): D_t = dout_t . out_t (0 for a padding query)
__global__ void k_flash_D(float* Ds, const float* dout, const float* out, const int32_t* pad, int B,
                          int L, int d, int H) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;  // (b*H+h)*L + t
    const int lane = threadIdx.x % 32, hd = d / H;
    if (w >= (int64_t)B * H * L) return;
    const int t = (int)(w % L), bh = (int)(w / L), b = bh / H, h = bh % H;
    const int64_t r = ((int64_t)b * L + t) * d + h * hd;
    float part = 0;
    for (int x = lane; x < hd; x += 32) part += dout[r + x] * out[r + x];
    for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
    if (lane == 0) Ds[w] = t >= first_position(pad, b, L) ? part : 0.0f;
}

// block (key tile, b*H+h): dk and dv of its keys
template <bool TC>
__global__ void k_flash_dkv(float* dqkv, const float* Ds, const float* dout, const float* lse,
                            const float* qkv, const int32_t* pad, int L, int d, int H, float scale,
                            int T) {
    extern __shared__ __align__(128) float sm[];
    const int bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H, hp = hd + row_pad(TC),
              SP = T + row_pad(TC);
    const int p0 = first_position(pad, b, L), j0 = blockIdx.x * T;
    const int nk = L - j0 < T ? L - j0 : T, C3 = 3 * d;
    if (j0 + nk <= p0) return;  // padding keys only
    float *sK = sm, *sV = sK + T * hp, *sQ = sV + T * hp, *sdO = sQ + T * hp, *sdK = sdO + T * hp;
    float *sdV = sdK + T * hp, *sP = sdV + T * hp, *sdS = sP + T * SP, *sLse = sdS + T * SP;
    float* sD = sLse + T;
    load_tile(sK, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, d + h * hd);
    load_tile(sV, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, 2 * d + h * hd);
    for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sdK[e] = 0, sdV[e] = 0;
    for (int t0 = j0; t0 < L; t0 += T) {
        const int nq = L - t0 < T ? L - t0 : T;
        __syncthreads();  // the last tile's readers are done
        load_tile(sQ, qkv, (int64_t)b * L + t0, nq, T, hd, hp, C3, h * hd);
        load_tile(sdO, dout, (int64_t)b * L + t0, nq, T, hd, hp, d, h * hd);
        for (int i = threadIdx.x; i < nq; i += blockDim.x)
            sLse[i] = lse[(int64_t)bh * L + t0 + i], sD[i] = Ds[(int64_t)bh * L + t0 + i];
        __syncthreads();
        if constexpr (TC) {
            tc_mm<row_major, col_major>(sP, SP, sQ, hp, sK, hp, T, T, hd, false);    // Q K^T
            tc_mm<row_major, col_major>(sdS, SP, sdO, hp, sV, hp, T, T, hd, false);  // dO V^T
            __syncthreads();
            tc_probabilities(sP, sdS, SP, sLse, sD, nq, nk, T, t0, j0, p0, scale, true);
            __syncthreads();
            tc_mm<col_major, row_major>(sdV, hp, sP, SP, sdO, hp, T, hd, T, true);  // dV += P^T dO
            tc_mm<col_major, row_major>(sdK, hp, sdS, SP, sQ, hp, T, hd, T, true);  // dK += dS^T Q
        } else {
            probabilities_tile(sP, sdS, SP, sQ, sdO, sK, sV, sLse, sD, nq, nk, hd, hp, scale,
                               [&](int i, int j) { return j0 + j >= p0 && j0 + j <= t0 + i; });
            __syncthreads();
            key_grads_tile(sdV, sdK, sP, sdS, SP, sdO, sQ, nq, nk, hd, hp, scale);
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nk * hd; e += blockDim.x) {
        const int j = e / hd, c = e % hd;
        if (j0 + j < p0) continue;
        const int64_t r = ((int64_t)b * L + j0 + j) * C3 + h * hd + c;
        dqkv[r + d] += sdK[j * hp + c];
        dqkv[r + 2 * d] += sdV[j * hp + c];
    }
}

// block (query tile, b*H+h): dq of its queries
template <bool TC>
__global__ void k_flash_dq(float* dqkv, const float* Ds, const float* dout, const float* lse,
                           const float* qkv, const int32_t* pad, int L, int d, int H, float scale,
                           int T) {
    extern __shared__ __align__(128) float sm[];
    const int bh = blockIdx.y, b = bh / H, h = bh % H, hd = d / H, hp = hd + row_pad(TC),
              SP = T + row_pad(TC);
    const int p0 = first_position(pad, b, L), t0 = blockIdx.x * T;
    const int nq = L - t0 < T ? L - t0 : T, C3 = 3 * d;
    if (t0 + nq <= p0) return;  // padding queries only
    float *sQ = sm, *sdO = sQ + T * hp, *sK = sdO + T * hp, *sV = sK + T * hp, *sdQ = sV + T * hp;
    float *sdS = sdQ + T * hp, *sX = sdS + T * SP, *sLse = sX + (TC ? T * SP : 0), *sD = sLse + T;
    load_tile(sQ, qkv, (int64_t)b * L + t0, nq, T, hd, hp, C3, h * hd);
    load_tile(sdO, dout, (int64_t)b * L + t0, nq, T, hd, hp, d, h * hd);
    for (int i = threadIdx.x; i < nq; i += blockDim.x)
        sLse[i] = lse[(int64_t)bh * L + t0 + i], sD[i] = Ds[(int64_t)bh * L + t0 + i];
    for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sdQ[e] = 0;
    for (int j0 = p0 / T * T; j0 < t0 + nq; j0 += T) {
        const int nk = L - j0 < T ? L - j0 : T;
        __syncthreads();  // the last tile's readers are done
        load_tile(sK, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, d + h * hd);
        load_tile(sV, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, 2 * d + h * hd);
        __syncthreads();
        if constexpr (TC) {
            tc_mm<row_major, col_major>(sX, SP, sQ, hp, sK, hp, T, T, hd, false);    // Q K^T
            tc_mm<row_major, col_major>(sdS, SP, sdO, hp, sV, hp, T, T, hd, false);  // dO V^T
            __syncthreads();
            tc_probabilities(sX, sdS, SP, sLse, sD, nq, nk, T, t0, j0, p0, scale, false);
            __syncthreads();
            tc_mm<row_major, row_major>(sdQ, hp, sdS, SP, sK, hp, T, hd, T, true);  // dQ += dS K
        } else {
            probabilities_tile(NULL, sdS, SP, sQ, sdO, sK, sV, sLse, sD, nq, nk, hd, hp, scale,
                               [&](int i, int j) { return j0 + j >= p0 && j0 + j <= t0 + i; });
            __syncthreads();
            // dq += scale dS K, in 4 x 2 register tiles
            for (int e = threadIdx.x; e < tiles_of(nq, hd, 4, 2); e += blockDim.x) {
                int i0, c0;
                tile_at(e, hd, 4, 2, &i0, &c0);
                float g[4][2] = {};
                tile_mm<4, 2>(g, sdS, SP, 1, sK, hp, 1, i0, c0, nq, hd, nk);
#pragma unroll
                for (int r = 0; r < 4; r++)
#pragma unroll
                    for (int q = 0; q < 2; q++)
                        if (i0 + r < nq && c0 + q < hd)
                            sdQ[(i0 + r) * hp + c0 + q] += scale * g[r][q];
            }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nq * hd; e += blockDim.x) {
        const int i = e / hd, c = e % hd;
        if (t0 + i >= p0) dqkv[((int64_t)b * L + t0 + i) * C3 + h * hd + c] += sdQ[i * hp + c];
    }
}

// the tensor cores for heads of hd columns, in this precision
static bool use_tc(int hd) { return cuda_precision() != 0 && hd % 16 == 0; }

extern "C" void cuda_attention_fused_forward(float* out, float* lse, const float* qkv,
                                             const int32_t* pad, int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, T = tile_rows(hd);
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_fused", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)hd));
    const bool tc = use_tc(hd);
    const dim3 grid((L + T - 1) / T, B * H);
    const size_t sh = forward_floats(T, hd, tc) * sizeof(float);
    const auto k = tc ? k_flash_forward<true> : k_flash_forward<false>;
    allow_shared((const void*)k, sh);
    k<<<grid, THREADS, sh, cuda_stream()>>>(out, lse, qkv, pad, L, d, H, scale, T);
    launchCheck();
}

extern "C" void cuda_attention_fused_backward(float* dqkv, const float* dout, const float* out,
                                              const float* lse, const float* qkv,
                                              const int32_t* pad, int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H, T = tile_rows(hd);
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_fused", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)hd));
    float* Ds = (float*)cuda_scratch((size_t)B * H * L * sizeof(float));  // D_t [B,H,L]
    const int64_t rows = (int64_t)B * H * L;
    k_flash_D<<<blocks_for(rows * 32, 256), 256, 0, cuda_stream()>>>(Ds, dout, out, pad, B, L, d,
                                                                     H);
    launchCheck();
    const bool tc = use_tc(hd);
    const dim3 grid((L + T - 1) / T, B * H);
    const size_t skv = dkv_floats(T, hd, tc) * sizeof(float),
                 sq = dq_floats(T, hd, tc) * sizeof(float);
    const auto kv = tc ? k_flash_dkv<true> : k_flash_dkv<false>;
    const auto kq = tc ? k_flash_dq<true> : k_flash_dq<false>;
    allow_shared((const void*)kv, skv);
    allow_shared((const void*)kq, sq);
    kv<<<grid, THREADS, skv, cuda_stream()>>>(dqkv, Ds, dout, lse, qkv, pad, L, d, H, scale, T);
    launchCheck();
    kq<<<grid, THREADS, sq, cuda_stream()>>>(dqkv, Ds, dout, lse, qkv, pad, L, d, H, scale, T);
    launchCheck();
}

// block b*H+h: the attention of query L-1 (kernels.h's attention_last): the
// scores into wts[bh][L] with their max, then the exponentials and their sum,
// then each warp sums the weighted values of every warps-th key into part,
// which the block adds up
__global__ void k_attention_last(float* out, float* wts, const float* qkv, const int32_t* pad,
                                 int L, int d, int H, float scale) {
    extern __shared__ float sm[];  // q [hd], then part [warps][hd]
    __shared__ float sh[32];
    const int bh = blockIdx.x, b = bh / H, h = bh % H, hd = d / H, C3 = 3 * d;
    const int p0 = first_position(pad, b, L), warp = threadIdx.x / 32, lane = threadIdx.x % 32,
              warps = blockDim.x / 32;
    float* o = out + (int64_t)b * d + h * hd;
    if (p0 >= L) {  // all padding: nothing to attend to
        for (int c = threadIdx.x; c < hd; c += blockDim.x) o[c] = 0;
        return;
    }
    const float* row = qkv + (int64_t)b * L * C3 + h * hd;
    float *sq = sm, *part = sm + hd, *w = wts + (int64_t)bh * L;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) sq[c] = row[(int64_t)(L - 1) * C3 + c];
    __syncthreads();
    float mx = -INFINITY;
    for (int j = p0 + threadIdx.x; j < L; j += blockDim.x) {
        float s = 0;
        for (int c = 0; c < hd; c++) s += sq[c] * row[(int64_t)j * C3 + d + c];
        w[j] = s * scale;
        mx = fmaxf(mx, s * scale);
    }
    mx = block_max(mx, sh);
    float sum = 0;
    for (int j = p0 + threadIdx.x; j < L; j += blockDim.x) {
        const float e = expf(w[j] - mx);
        w[j] = e;
        sum += e;
    }
    sum = block_sum(sum, sh);  // its barriers make w visible to the block
    for (int c = lane; c < hd; c += 32) {
        float a = 0;
        for (int j = p0 + warp; j < L; j += warps) a += w[j] * row[(int64_t)j * C3 + 2 * d + c];
        part[warp * hd + c] = a;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float a = 0;
        for (int k = 0; k < warps; k++) a += part[k * hd + c];
        o[c] = a / sum;
    }
}

extern "C" void cuda_attention_last(float* out, const float* qkv, const int32_t* pad, int B, int L,
                                    int d, int H) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H;
    const float scale = (float)(1.0 / sqrt((double)hd));
    float* wts = (float*)cuda_scratch((size_t)B * H * L * sizeof(float));
    const size_t sh = (size_t)(1 + THREADS / 32) * hd * sizeof(float);
    allow_shared((const void*)k_attention_last, sh);
    k_attention_last<<<B * H, THREADS, sh, cuda_stream()>>>(out, wts, qkv, pad, L, d, H, scale);
    launchCheck();
}
