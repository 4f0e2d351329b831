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
// kernel comes in two forms:
//   CUDA cores  FP32 register tiles (common.cuh's tile_mm: each thread 4 x 4
//               scores or 4 x 2 outputs, each shared-memory read serving
//               several multiply-adds; one output a thread ran at 3.8 and 2.9
//               TFLOP/s forward and backward on the H200), the block's 256
//               threads over the tile's nq x nk part; rows padded by 1 float
//               (no bank conflicts)
//   tensor      unless the precision is fp32, for heads of a multiple of 16
//   cores       columns: TF32 wmma products (common.cuh's tc_mm), 4 warps
//               a block, each owning 16 of its 64 rows (queries; keys for
//               dk and dv): a warp makes its rows' scores, probabilities and
//               products in its own shared memory with no block barrier;
//               the block shares only the loop's tiles (two barriers a tile).
//               Rows past the sequence are zero, their scores masked; rows
//               padded by 4 floats as wmma's alignment asks; the score scale
//               folded into ds. (The first tensor-core form spread every tile
//               product and elementwise step over the block's 8 warps with a
//               barrier between each, 7 a tile: 9 TFLOP/s at L = 4096 on the
//               H200, 2% of TF32's peak.)
// Keys j of query t are p0 <= j <= t (p0 = pad[b]); a padding query (t < p0)
// outputs 0 with lse 0 and gets no gradient, a padding key none either.
//   order       a query tile's work grows with its index, a key tile's
//               shrinks: the blocks, which start in index order, take the
//               tiles longest first across all heads (tile_order), so that
//               the last wave is short tiles, not one head's longest.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define HD_MAX 256
#define THREADS 256

using nvcuda::wmma::col_major;
using nvcuda::wmma::row_major;

// Block (x, y) of a grid (tiles, B*H) takes tile *tile of head row *bh: the
// k-th block to start (k = y * tiles + x) the k / (B*H)-th longest tile of
// head row k mod (B*H). A query tile (queries = 1) is the longer the higher
// its index, a key tile the shorter.
__device__ __forceinline__ void tile_order(int queries, int* tile, int* bh) {
    const int k = blockIdx.y * gridDim.x + blockIdx.x, n = k / gridDim.y;
    *bh = k % gridDim.y;
    *tile = queries ? gridDim.x - 1 - n : n;
}

// the CUDA cores' tile size for heads of hd columns, and the shared floats of
// each of their kernels (tiles [T][hd + 1], scores [T][T + 1])
static int tile_rows(int hd) { return hd <= 64 ? 64 : 32; }
static size_t forward_floats(int T, int hd) {
    return (size_t)4 * T * (hd + 1) + (size_t)T * (T + 1) + 3 * T;
}
static size_t dkv_floats(int T, int hd) {
    return (size_t)6 * T * (hd + 1) + (size_t)2 * T * (T + 1) + 2 * T;
}
static size_t dq_floats(int T, int hd) {
    return (size_t)5 * T * (hd + 1) + (size_t)T * (T + 1) + 2 * T;
}

__global__ void k_flash_forward(float* out, float* lse, const float* qkv, const int32_t* pad, int L,
                                int d, int H, float scale, int T) {
    extern __shared__ __align__(128) float sm[];
    int bh, tile;
    tile_order(1, &tile, &bh);
    const int b = bh / H, h = bh % H, hd = d / H, hp = hd + 1, SP = T + 1;
    const int p0 = first_position(pad, b, L), t0 = tile * T;
    const int nq = L - t0 < T ? L - t0 : T, C3 = 3 * d;
    float *sQ = sm, *sK = sQ + T * hp, *sV = sK + T * hp, *sO = sV + T * hp, *sS = sO + T * hp;
    float *sM = sS + T * SP, *sL = sM + T, *sC = sL + T;
    const int64_t r0 = (int64_t)b * L + t0;
    load_rows(sQ, qkv, r0, nq, T, hd, hp, C3, h * hd);
    for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sO[e] = 0;
    for (int i = threadIdx.x; i < T; i += blockDim.x) sM[i] = -INFINITY, sL[i] = 0;
    const int per = blockDim.x / T, me = threadIdx.x / per, part = threadIdx.x % per;
    for (int j0 = p0 / T * T; j0 < t0 + nq && p0 < t0 + nq; j0 += T) {
        const int nk = L - j0 < T ? L - j0 : T;
        __syncthreads();  // the last tile's readers are done
        load_rows(sK, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, d + h * hd);
        load_rows(sV, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, 2 * d + h * hd);
        __syncthreads();
        const auto allowed = [&](int i, int j) { return j0 + j >= p0 && j0 + j <= t0 + i; };
        scores_tile(sS, SP, sQ, sK, nq, nk, hd, hp, scale, allowed);
        __syncthreads();
        softmax_tile(sS, SP, sM, sL, sC, sO, sV, nq, nk, hd, hp, me, part, per);
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
__global__ void k_flash_dkv(float* dqkv, const float* Ds, const float* dout, const float* lse,
                            const float* qkv, const int32_t* pad, int L, int d, int H, float scale,
                            int T) {
    extern __shared__ __align__(128) float sm[];
    int bh, tile;
    tile_order(0, &tile, &bh);
    const int b = bh / H, h = bh % H, hd = d / H, hp = hd + 1, SP = T + 1;
    const int p0 = first_position(pad, b, L), j0 = tile * T;
    const int nk = L - j0 < T ? L - j0 : T, C3 = 3 * d;
    if (j0 + nk <= p0) return;  // padding keys only
    float *sK = sm, *sV = sK + T * hp, *sQ = sV + T * hp, *sdO = sQ + T * hp, *sdK = sdO + T * hp;
    float *sdV = sdK + T * hp, *sP = sdV + T * hp, *sdS = sP + T * SP, *sLse = sdS + T * SP;
    float* sD = sLse + T;
    load_rows(sK, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, d + h * hd);
    load_rows(sV, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, 2 * d + h * hd);
    for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sdK[e] = 0, sdV[e] = 0;
    for (int t0 = j0; t0 < L; t0 += T) {
        const int nq = L - t0 < T ? L - t0 : T;
        __syncthreads();  // the last tile's readers are done
        load_rows(sQ, qkv, (int64_t)b * L + t0, nq, T, hd, hp, C3, h * hd);
        load_rows(sdO, dout, (int64_t)b * L + t0, nq, T, hd, hp, d, h * hd);
        for (int i = threadIdx.x; i < nq; i += blockDim.x)
            sLse[i] = lse[(int64_t)bh * L + t0 + i], sD[i] = Ds[(int64_t)bh * L + t0 + i];
        __syncthreads();
        probabilities_tile(sP, sdS, SP, sQ, sdO, sK, sV, sLse, sD, nq, nk, hd, hp, scale,
                           [&](int i, int j) { return j0 + j >= p0 && j0 + j <= t0 + i; });
        __syncthreads();
        key_grads_tile(sdV, sdK, sP, sdS, SP, sdO, sQ, nq, nk, hd, hp, scale);
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
__global__ void k_flash_dq(float* dqkv, const float* Ds, const float* dout, const float* lse,
                           const float* qkv, const int32_t* pad, int L, int d, int H, float scale,
                           int T) {
    extern __shared__ __align__(128) float sm[];
    int bh, tile;
    tile_order(1, &tile, &bh);
    const int b = bh / H, h = bh % H, hd = d / H, hp = hd + 1, SP = T + 1;
    const int p0 = first_position(pad, b, L), t0 = tile * T;
    const int nq = L - t0 < T ? L - t0 : T, C3 = 3 * d;
    if (t0 + nq <= p0) return;  // padding queries only
    float *sQ = sm, *sdO = sQ + T * hp, *sK = sdO + T * hp, *sV = sK + T * hp, *sdQ = sV + T * hp;
    float *sdS = sdQ + T * hp, *sLse = sdS + T * SP, *sD = sLse + T;
    load_rows(sQ, qkv, (int64_t)b * L + t0, nq, T, hd, hp, C3, h * hd);
    load_rows(sdO, dout, (int64_t)b * L + t0, nq, T, hd, hp, d, h * hd);
    for (int i = threadIdx.x; i < nq; i += blockDim.x)
        sLse[i] = lse[(int64_t)bh * L + t0 + i], sD[i] = Ds[(int64_t)bh * L + t0 + i];
    for (int e = threadIdx.x; e < T * hp; e += blockDim.x) sdQ[e] = 0;
    for (int j0 = p0 / T * T; j0 < t0 + nq; j0 += T) {
        const int nk = L - j0 < T ? L - j0 : T;
        __syncthreads();  // the last tile's readers are done
        load_rows(sK, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, d + h * hd);
        load_rows(sV, qkv, (int64_t)b * L + j0, nk, T, hd, hp, C3, 2 * d + h * hd);
        __syncthreads();
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
                    if (i0 + r < nq && c0 + q < hd) sdQ[(i0 + r) * hp + c0 + q] += scale * g[r][q];
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nq * hd; e += blockDim.x) {
        const int i = e / hd, c = e % hd;
        if (t0 + i >= p0) dqkv[((int64_t)b * L + t0 + i) * C3 + h * hd + c] += sdQ[i * hp + c];
    }
}

// ---- the tensor-core form: 4 warps a block, a warp owning 16 of its 64 rows
#define TC_WARPS 4
#define TC_ROWS (16 * TC_WARPS)

// the width of the loop's tiles for heads of hd columns, and each kernel's
// shared floats: the block's tiles [rows][hd + 4], then each warp's own
// The tensor-core kernels' loop tile (the other side's rows a step: keys in
// the forward and dq, queries in dk/dv): 64 for heads up to 64 columns, 32
// for wider; ELASTIC_ATTN_TILE=32 takes 32 for every head (less shared
// memory: at heads of 32, 63 KB a dk/dv block rather than 88.5, three
// blocks an SM rather than two), for jobs/gpu_check.sh to time both.
static int tc_tile(int hd) {
    const char* e = getenv("ELASTIC_ATTN_TILE");
    if (e && !strcmp(e, "32")) return 32;
    return hd <= 64 ? 64 : 32;
}
static size_t tc_forward_floats(int hd, int TK) {  // Q; K, V; a warp's S and O
    return (size_t)(TC_ROWS + 2 * TK) * (hd + 4) + (size_t)TC_WARPS * 16 * ((TK + 4) + (hd + 4));
}
static size_t tc_dkv_floats(int hd, int TQ) {  // K, V; Q, dO, lse, D; a warp's P, dS, dK, dV
    return (size_t)(2 * TC_ROWS + 2 * TQ) * (hd + 4) + 2 * (size_t)TQ +
           (size_t)TC_WARPS * 32 * ((TQ + 4) + (hd + 4));
}
static size_t tc_dq_floats(int hd, int TK) {  // Q, dO; K, V; a warp's S, dS, dQ
    return (size_t)(2 * TC_ROWS + 2 * TK) * (hd + 4) +
           (size_t)TC_WARPS * 16 * (2 * (TK + 4) + (hd + 4));
}

// where a thread of a tensor-core kernel is: block (row tile, b*H+h) (in
// tile_order's order: queries 1 for query tiles) with
// first row x0, a head of hd columns in rows of hp floats, loop tiles of TT
// rows in score rows of SP; the warp, and the lane's row r of the warp's 16
// and its half (even or odd columns); the row's first item p0
struct tc_place {
    int bh, b, h, hd, hp, SP, warp, lane, r, half, p0, x0;
};
__device__ __forceinline__ tc_place tc_place_of(const int32_t* pad, int L, int d, int H, int TT,
                                                int queries) {
    tc_place P;
    int tile;
    tile_order(queries, &tile, &P.bh);
    P.b = P.bh / H, P.h = P.bh % H, P.hd = d / H, P.hp = P.hd + 4;
    P.SP = TT + 4, P.warp = threadIdx.x / 32, P.lane = threadIdx.x % 32, P.r = P.lane >> 1;
    P.half = P.lane & 1, P.p0 = first_position(pad, P.b, L), P.x0 = tile * TC_ROWS;
    return P;
}

// block (query tile, b*H+h), warp w: queries t0 + 16w.. against the key tiles
// up to the diagonal: S = Q_w K^T into the warp's sS, the online softmax a
// lane pair a row (the even columns one lane's, the odd the other's: the 16
// rows' lanes then meet in shared memory two to a bank), O_w = O_w corr + P V
// in the warp's sO
__global__ void k_flash_forward_tc(float* out, float* lse, const float* qkv, const int32_t* pad,
                                   int L, int d, int H, float scale, int TK) {
    extern __shared__ __align__(128) float sm[];
    const tc_place P = tc_place_of(pad, L, d, H, TK, 1);
    const int bh = P.bh, b = P.b, h = P.h, hd = P.hd, hp = P.hp, SP = P.SP, warp = P.warp;
    const int r = P.r, half = P.half, lane = P.lane, p0 = P.p0, C3 = 3 * d, t0 = P.x0;
    const int nq = L - t0 < TC_ROWS ? L - t0 : TC_ROWS, tw = t0 + 16 * warp, t = tw + r;
    float *sQ = sm, *sK = sQ + TC_ROWS * hp, *sV = sK + TK * hp;
    float *sS = sV + TK * hp + warp * 16 * (SP + hp), *sO = sS + 16 * SP;
    load_rows(sQ, qkv, (int64_t)b * L + t0, nq, TC_ROWS, hd, hp, C3, h * hd);
    for (int e = lane; e < 16 * hp; e += 32) sO[e] = 0;
    float m = -INFINITY, l = 0;  // row r's running max and sum (both lanes of the pair)
    for (int j0 = p0 / TK * TK; j0 < t0 + nq && p0 < t0 + nq; j0 += TK) {
        const int nk = L - j0 < TK ? L - j0 : TK;
        __syncthreads();  // the last tile's readers are done
        load_rows(sK, qkv, (int64_t)b * L + j0, nk, TK, hd, hp, C3, d + h * hd);
        load_rows(sV, qkv, (int64_t)b * L + j0, nk, TK, hd, hp, C3, 2 * d + h * hd);
        __syncthreads();
        if (tw >= L || j0 > tw + 15) continue;  // no rows, or every key after them
        tc_mm<row_major, col_major>(sS, SP, sQ + 16 * warp * hp, hp, sK, hp, 16, TK, hd, false);
        __syncwarp();
        float* srow = sS + r * SP;
        float mx = -INFINITY;
        for (int j = half; j < TK; j += 2) {
            const bool ok = t < L && j < nk && j0 + j >= p0 && j0 + j <= t;
            srow[j] = ok ? srow[j] * scale : -INFINITY;
            mx = fmaxf(mx, srow[j]);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float mnew = fmaxf(m, mx);
        float sum = 0;
        for (int j = half; j < TK; j += 2) {
            const float p = mnew == -INFINITY ? 0.0f : expf(srow[j] - mnew);
            srow[j] = p;
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        const float corr = m == -INFINITY ? 0.0f : expf(m - mnew);
        l = l * corr + sum, m = mnew;
        for (int c = half; c < hd; c += 2) sO[r * hp + c] *= corr;
        __syncwarp();
        tc_mm<row_major, row_major>(sO, hp, sS, SP, sV, hp, 16, hd, TK, true);  // O += P V
        __syncwarp();
    }
    if (t >= L) return;
    const int64_t o = ((int64_t)b * L + t) * d + h * hd;
    for (int c = half; c < hd; c += 2) out[o + c] = t >= p0 ? sO[r * hp + c] / l : 0.0f;
    if (!half) lse[(int64_t)bh * L + t] = t >= p0 ? m + logf(l) : 0.0f;
}

// block (key tile, b*H+h), warp w: keys j0 + 16w.. against the query tiles
// from the diagonal on: S^T = K_w Q^T and dP^T = V_w dO^T into the warp's
// sP and sdS, p and ds a lane pair a key row, dV_w += P^T dO, dK_w += dS^T Q
__global__ void k_flash_dkv_tc(float* dqkv, const float* Ds, const float* dout, const float* lse,
                               const float* qkv, const int32_t* pad, int L, int d, int H,
                               float scale, int TQ) {
    extern __shared__ __align__(128) float sm[];
    const tc_place P = tc_place_of(pad, L, d, H, TQ, 0);
    const int bh = P.bh, b = P.b, h = P.h, hd = P.hd, hp = P.hp, SP = P.SP, warp = P.warp;
    const int r = P.r, half = P.half, lane = P.lane, p0 = P.p0, C3 = 3 * d, j0 = P.x0;
    const int nk = L - j0 < TC_ROWS ? L - j0 : TC_ROWS, jw = j0 + 16 * warp, j = jw + r;
    if (j0 + nk <= p0) return;  // padding keys only
    float *sK = sm, *sV = sK + TC_ROWS * hp, *sQ = sV + TC_ROWS * hp, *sdO = sQ + TQ * hp;
    float *sLse = sdO + TQ * hp, *sD = sLse + TQ;
    float *sP = sD + TQ + warp * 32 * (SP + hp), *sdS = sP + 16 * SP, *sdK = sdS + 16 * SP,
          *sdV = sdK + 16 * hp;
    load_rows(sK, qkv, (int64_t)b * L + j0, nk, TC_ROWS, hd, hp, C3, d + h * hd);
    load_rows(sV, qkv, (int64_t)b * L + j0, nk, TC_ROWS, hd, hp, C3, 2 * d + h * hd);
    for (int e = lane; e < 16 * hp; e += 32) sdK[e] = 0, sdV[e] = 0;
    for (int t0 = j0; t0 < L; t0 += TQ) {
        const int nq = L - t0 < TQ ? L - t0 : TQ;
        __syncthreads();  // the last tile's readers are done
        load_rows(sQ, qkv, (int64_t)b * L + t0, nq, TQ, hd, hp, C3, h * hd);
        load_rows(sdO, dout, (int64_t)b * L + t0, nq, TQ, hd, hp, d, h * hd);
        for (int i = threadIdx.x; i < nq; i += blockDim.x)
            sLse[i] = lse[(int64_t)bh * L + t0 + i], sD[i] = Ds[(int64_t)bh * L + t0 + i];
        __syncthreads();
        // no keys, only padding keys, or every key after the tile's queries
        if (jw >= L || jw + 15 < p0 || jw > t0 + nq - 1) continue;
        tc_mm<row_major, col_major>(sP, SP, sK + 16 * warp * hp, hp, sQ, hp, 16, TQ, hd, false);
        tc_mm<row_major, col_major>(sdS, SP, sV + 16 * warp * hp, hp, sdO, hp, 16, TQ, hd, false);
        __syncwarp();
        const bool key = j < L && j >= p0;
        for (int q = half; q < TQ; q += 2) {
            float p = 0, ds = 0;
            if (key && q < nq && j <= t0 + q) {
                p = expf(sP[r * SP + q] * scale - sLse[q]);
                ds = p * (sdS[r * SP + q] - sD[q]) * scale;
            }
            sP[r * SP + q] = p, sdS[r * SP + q] = ds;
        }
        __syncwarp();
        tc_mm<row_major, row_major>(sdV, hp, sP, SP, sdO, hp, 16, hd, TQ, true);  // dV += P^T dO
        tc_mm<row_major, row_major>(sdK, hp, sdS, SP, sQ, hp, 16, hd, TQ, true);  // dK += dS^T Q
        __syncwarp();
    }
    if (j >= L || j < p0) return;
    const int64_t o = ((int64_t)b * L + j) * C3 + h * hd;
    for (int c = half; c < hd; c += 2)
        dqkv[o + d + c] += sdK[r * hp + c], dqkv[o + 2 * d + c] += sdV[r * hp + c];
}

// block (query tile, b*H+h), warp w: queries t0 + 16w.. against the key tiles
// up to the diagonal: S = Q_w K^T and dP = dO_w V^T into the warp's sS and
// sdS, ds a lane pair a row, dQ_w += dS K
__global__ void k_flash_dq_tc(float* dqkv, const float* Ds, const float* dout, const float* lse,
                              const float* qkv, const int32_t* pad, int L, int d, int H,
                              float scale, int TK) {
    extern __shared__ __align__(128) float sm[];
    const tc_place P = tc_place_of(pad, L, d, H, TK, 1);
    const int bh = P.bh, b = P.b, h = P.h, hd = P.hd, hp = P.hp, SP = P.SP, warp = P.warp;
    const int r = P.r, half = P.half, lane = P.lane, p0 = P.p0, C3 = 3 * d, t0 = P.x0;
    const int nq = L - t0 < TC_ROWS ? L - t0 : TC_ROWS, tw = t0 + 16 * warp, t = tw + r;
    if (t0 + nq <= p0) return;  // padding queries only
    float *sQ = sm, *sdO = sQ + TC_ROWS * hp, *sK = sdO + TC_ROWS * hp, *sV = sK + TK * hp;
    float *sS = sV + TK * hp + warp * 16 * (2 * SP + hp), *sdS = sS + 16 * SP, *sdQ = sdS + 16 * SP;
    load_rows(sQ, qkv, (int64_t)b * L + t0, nq, TC_ROWS, hd, hp, C3, h * hd);
    load_rows(sdO, dout, (int64_t)b * L + t0, nq, TC_ROWS, hd, hp, d, h * hd);
    for (int e = lane; e < 16 * hp; e += 32) sdQ[e] = 0;
    // row t's lse and D, in the lanes of its pair
    const float lt = t < L ? lse[(int64_t)bh * L + t] : 0.0f,
                Dt = t < L ? Ds[(int64_t)bh * L + t] : 0.0f;
    for (int j0 = p0 / TK * TK; j0 < t0 + nq; j0 += TK) {
        const int nk = L - j0 < TK ? L - j0 : TK;
        __syncthreads();  // the last tile's readers are done
        load_rows(sK, qkv, (int64_t)b * L + j0, nk, TK, hd, hp, C3, d + h * hd);
        load_rows(sV, qkv, (int64_t)b * L + j0, nk, TK, hd, hp, C3, 2 * d + h * hd);
        __syncthreads();
        // no rows, only padding rows, or every key after them
        if (tw >= L || tw + 15 < p0 || j0 > tw + 15) continue;
        tc_mm<row_major, col_major>(sS, SP, sQ + 16 * warp * hp, hp, sK, hp, 16, TK, hd, false);
        tc_mm<row_major, col_major>(sdS, SP, sdO + 16 * warp * hp, hp, sV, hp, 16, TK, hd, false);
        __syncwarp();
        for (int jj = half; jj < TK; jj += 2) {
            float ds = 0;
            if (t < L && t >= p0 && jj < nk && j0 + jj >= p0 && j0 + jj <= t) {
                const float p = expf(sS[r * SP + jj] * scale - lt);
                ds = p * (sdS[r * SP + jj] - Dt) * scale;
            }
            sdS[r * SP + jj] = ds;
        }
        __syncwarp();
        tc_mm<row_major, row_major>(sdQ, hp, sdS, SP, sK, hp, 16, hd, TK, true);  // dQ += dS K
        __syncwarp();
    }
    if (t >= L || t < p0) return;
    const int64_t o = ((int64_t)b * L + t) * C3 + h * hd;
    for (int c = half; c < hd; c += 2) dqkv[o + c] += sdQ[r * hp + c];
}

// the tensor cores for heads of hd columns, in this precision
static bool use_tc(int hd) { return cuda_precision() != 0 && hd % 16 == 0; }

extern "C" void cuda_attention_fused_forward(float* out, float* lse, const float* qkv,
                                             const int32_t* pad, int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H;
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_fused", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)hd));
    if (use_tc(hd)) {
        const int TK = tc_tile(hd);
        const size_t sh = tc_forward_floats(hd, TK) * sizeof(float);
        allow_shared((const void*)k_flash_forward_tc, sh);
        const dim3 grid((L + TC_ROWS - 1) / TC_ROWS, B * H);
        k_flash_forward_tc<<<grid, 32 * TC_WARPS, sh, cuda_stream()>>>(out, lse, qkv, pad, L, d, H,
                                                                       scale, TK);
        launchCheck();
        return;
    }
    const int T = tile_rows(hd);
    const size_t sh = forward_floats(T, hd) * sizeof(float);
    allow_shared((const void*)k_flash_forward, sh);
    const dim3 grid((L + T - 1) / T, B * H);
    k_flash_forward<<<grid, THREADS, sh, cuda_stream()>>>(out, lse, qkv, pad, L, d, H, scale, T);
    launchCheck();
}

extern "C" void cuda_attention_fused_backward(float* dqkv, const float* dout, const float* out,
                                              const float* lse, const float* qkv,
                                              const int32_t* pad, int B, int L, int d, int H) {
    if (B <= 0 || L <= 0) return;
    const int hd = d / H;
    if (hd > HD_MAX) cuda_fail(__FILE__, __LINE__, "attention_fused", "head width over 256");
    const float scale = (float)(1.0 / sqrt((double)hd));
    float* Ds = (float*)cuda_scratch((size_t)B * H * L * sizeof(float));  // D_t [B,H,L]
    const int64_t rows = (int64_t)B * H * L;
    cuda_mark_begin();
    k_flash_D<<<blocks_for(rows * 32, 256), 256, 0, cuda_stream()>>>(Ds, dout, out, pad, B, L, d,
                                                                     H);
    launchCheck();
    if (use_tc(hd)) {
        const int TT = tc_tile(hd);
        const dim3 grid((L + TC_ROWS - 1) / TC_ROWS, B * H);
        const size_t skv = tc_dkv_floats(hd, TT) * sizeof(float),
                     sq = tc_dq_floats(hd, TT) * sizeof(float);
        allow_shared((const void*)k_flash_dkv_tc, skv);
        allow_shared((const void*)k_flash_dq_tc, sq);
        cuda_mark("attention backward: D");
        k_flash_dkv_tc<<<grid, 32 * TC_WARPS, skv, cuda_stream()>>>(dqkv, Ds, dout, lse, qkv, pad,
                                                                    L, d, H, scale, TT);
        launchCheck();
        cuda_mark("attention backward: dk dv");
        k_flash_dq_tc<<<grid, 32 * TC_WARPS, sq, cuda_stream()>>>(dqkv, Ds, dout, lse, qkv, pad, L,
                                                                  d, H, scale, TT);
        launchCheck();
        cuda_mark("attention backward: dq");
        return;
    }
    const int T = tile_rows(hd);
    const dim3 grid((L + T - 1) / T, B * H);
    const size_t skv = dkv_floats(T, hd) * sizeof(float), sq = dq_floats(T, hd) * sizeof(float);
    allow_shared((const void*)k_flash_dkv, skv);
    allow_shared((const void*)k_flash_dq, sq);
    k_flash_dkv<<<grid, THREADS, skv, cuda_stream()>>>(dqkv, Ds, dout, lse, qkv, pad, L, d, H,
                                                       scale, T);
    launchCheck();
    k_flash_dq<<<grid, THREADS, sq, cuda_stream()>>>(dqkv, Ds, dout, lse, qkv, pad, L, d, H, scale,
                                                     T);
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
