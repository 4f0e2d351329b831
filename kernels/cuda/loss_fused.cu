// loss_fused.cu: the tied cross-entropy without a logits block
// (ELASTIC_CE=fused, for gpu_check to time against loss.cu's half blocks,
// which write every logit once and read or write it four more times). The
// logits are products of 16 x 16 x 16 half tiles on the tensor cores (the rows
// and the item table converted to half, as loss.cu's half path does; fp32
// sums) made where they are used and never stored:
//   1. per row, the log-sum-exp over the items (a running max and sum) and
//      the target's logit: each block owns 128 rows (16 or 32 a warp, held as
//      fragments) and walks a share of the item table in tiles of 64 items;
//      the shares' running sums are merged per row afterwards, in share order;
//   2. dh: the same walk, the logits made again, G = softmax - onehot (halves,
//      unscaled as in loss.cu) times the tile of items, summed in fp32
//      fragments; a share's sums go to a part buffer, added up in share order
//      and scaled into dh;
//   3. the item table's gradient: the roles swapped (each block owns 128
//      items and walks a share of the rows, their log-sum-exps and targets
//      beside each tile), G transposed times the tile of rows.
// No atomics: every sum has a fixed order (the same bits every run). A block
// owns 128 rows or items; the other side is cut into shares, as many as
// leave the blocks' last wave fullest by the occupancy calculator (shares_for)
// and as the caller's room for logits blocks holds part sums of (at most
// 16). Heads of d in {16, 32, 64, 128} columns; other widths, or the fp32
// precision, take loss.cu's paths.
#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define FT 128  // rows (or items) a block owns
#define FC 64   // the other side's tile: items (or rows) a step

// A block's shape and shared memory for width D and MW 16-row tiles a warp
// (FT / (16 MW) warps): the other side's tiles (two, each [FC][LDT] halves),
// each warp's logits [16 MW][LDS] floats, its G [16 MW][LDP] halves (the
// gradient kernels), the tiles' rows' log-sum-exps and targets (two each, the
// item table's gradient). Every part a multiple of 32 bytes.
template <int D, int MW>
struct fused_layout {
    static constexpr int RW = 16 * MW, W = FT / RW, threads = 32 * W;
    static constexpr int LDT = D + 8, LDS = (D > FC ? D : FC) + 4, LDP = FC + 8;
    static constexpr size_t tiles = (size_t)2 * FC * LDT * sizeof(__half);
    static constexpr size_t logits = (size_t)W * RW * LDS * sizeof(float);
    static constexpr size_t g = (size_t)W * RW * LDP * sizeof(__half);
    static constexpr size_t side = (size_t)2 * FC * (sizeof(float) + sizeof(int32_t));
    // uint4s (8 halves) of a tile each thread loads
    static constexpr int vecs = (FC * D / 8 + threads - 1) / threads;
};

using frag_a =
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major>;
using frag_acc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;

// Rows [r0, r0 + FC) of X[., D] (halves, padded with zero rows) into v,
// then (tile_store) into a tile of shared memory: loads before stores, so a
// tile's loads overlap the step before.
template <int D, int MW>
__device__ __forceinline__ void tile_load(uint4 (&v)[fused_layout<D, MW>::vecs], const __half* X,
                                          int64_t r0) {
    using Lt = fused_layout<D, MW>;
    constexpr int n = FC * D / 8, per = D / 8;
#pragma unroll
    for (int u = 0; u < Lt::vecs; u++) {
        const int e = threadIdx.x + u * Lt::threads;
        if (e < n) v[u] = ((const uint4*)(X + (r0 + e / per) * D))[e % per];
    }
}
template <int D, int MW>
__device__ __forceinline__ void tile_store(__half* t, const uint4 (&v)[fused_layout<D, MW>::vecs]) {
    using Lt = fused_layout<D, MW>;
    constexpr int n = FC * D / 8, per = D / 8;
#pragma unroll
    for (int u = 0; u < Lt::vecs; u++) {
        const int e = threadIdx.x + u * Lt::threads;
        if (e < n) ((uint4*)(t + (e / per) * Lt::LDT))[e % per] = v[u];
    }
}

// S[16 MW][FC] (row-major, LDS) = a[16 MW][D] T^T, T a tile [FC][LDT]: the
// warp's logits for one tile (each of T's fragments loaded once for the MW
// row tiles).
template <int D, int MW>
__device__ __forceinline__ void logits_tile(float* S, const frag_a (&a)[MW][D / 16],
                                            const __half* T) {
    using namespace nvcuda;
    using Lt = fused_layout<D, MW>;
#pragma unroll
    for (int n = 0; n < FC / 16; n++) {
        frag_acc acc[MW];
#pragma unroll
        for (int m = 0; m < MW; m++) wmma::fill_fragment(acc[m], 0.0f);
#pragma unroll
        for (int k = 0; k < D / 16; k++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
            wmma::load_matrix_sync(b, T + 16 * n * Lt::LDT + 16 * k, Lt::LDT);
#pragma unroll
            for (int m = 0; m < MW; m++) wmma::mma_sync(acc[m], a[m][k], b, acc[m]);
        }
#pragma unroll
        for (int m = 0; m < MW; m++)
            wmma::store_matrix_sync(S + 16 * m * Lt::LDS + 16 * n, acc[m], Lt::LDS,
                                    wmma::mem_row_major);
    }
}

// The warp's 16 MW rows (or items) of X[., D] from row r0, as fragments.
template <int D, int MW>
__device__ __forceinline__ void own_rows(frag_a (&a)[MW][D / 16], const __half* X, int64_t r0) {
#pragma unroll
    for (int m = 0; m < MW; m++)
#pragma unroll
        for (int k = 0; k < D / 16; k++)
            nvcuda::wmma::load_matrix_sync(a[m][k], X + (r0 + 16 * m) * D + 16 * k, D);
}

// Pass 1: per row, the running max and sum of exp over this block's share of
// the items (tiles [t0, t1)) into pm, ps [share][Rp]; the target's logit into
// zt[row] (one share holds it). Two lanes a row, 16 rows at a time.
template <int D, int MW>
__global__ void __launch_bounds__(fused_layout<D, MW>::threads)
    k_cef_lse(const __half* h, const __half* items, const int32_t* targets, int R, int N, int Rp,
              int per, int nt, float* pm, float* ps, float* zt) {
    using Lt = fused_layout<D, MW>;
    extern __shared__ __align__(128) float sm[];
    __half* tiles = (__half*)sm;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, hf = lane & 1;
    float* S = (float*)((char*)sm + Lt::tiles) + w * Lt::RW * Lt::LDS;
    const int row0 = blockIdx.x * FT + w * Lt::RW;
    const int t0 = blockIdx.y * per, t1 = t0 + per < nt ? t0 + per : nt;
    frag_a a[MW][D / 16];
    own_rows<D, MW>(a, h, row0);
    int tg[MW];
    float m[MW], s[MW];
#pragma unroll
    for (int q = 0; q < MW; q++) {
        const int r = row0 + 16 * q + (lane >> 1);
        tg[q] = r < R ? targets[r] : 0, m[q] = -INFINITY, s[q] = 0;
    }
    uint4 v[Lt::vecs];
    tile_load<D, MW>(v, items, (int64_t)t0 * FC);
    tile_store<D, MW>(tiles, v);
    __syncthreads();
    for (int t = t0; t < t1; t++) {
        if (t + 1 < t1) tile_load<D, MW>(v, items, (int64_t)(t + 1) * FC);
        logits_tile<D, MW>(S, a, tiles + (t - t0) % 2 * FC * Lt::LDT);
        __syncwarp();
#pragma unroll
        for (int q = 0; q < MW; q++) {
            // this lane's half of row 16 q + lane / 2: columns hf, hf + 2, ...
            // below lim (the items left); the target's column read once
            const int i = 16 * q + (lane >> 1), lim = N - t * FC, ct = tg[q] - 1 - t * FC;
            const float* sr = S + i * Lt::LDS;
            float tm = -INFINITY;
#pragma unroll 8
            for (int k = 0; k < FC / 2; k++)
                if (hf + 2 * k < lim) tm = fmaxf(tm, sr[hf + 2 * k]);
            if (ct >= 0 && ct < FC && (ct & 1) == hf) zt[row0 + i] = sr[ct];
            if (tm > m[q]) s[q] *= __expf(m[q] - tm), m[q] = tm;
            if (m[q] > -INFINITY) {
#pragma unroll 8
                for (int k = 0; k < FC / 2; k++)
                    if (hf + 2 * k < lim) s[q] += __expf(sr[hf + 2 * k] - m[q]);
            }
        }
        __syncwarp();
        if (t + 1 < t1) tile_store<D, MW>(tiles + (t + 1 - t0) % 2 * FC * Lt::LDT, v);
        __syncthreads();
    }
#pragma unroll
    for (int q = 0; q < MW; q++) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m[q], 1);
        const float s2 = __shfl_xor_sync(0xffffffffu, s[q], 1);
        const float mm = fmaxf(m[q], m2);
        const int64_t at = (int64_t)blockIdx.y * Rp + row0 + 16 * q + (lane >> 1);
        if (hf == 0) {
            pm[at] = mm;
            ps[at] = mm == -INFINITY ? 0.0f : s[q] * __expf(m[q] - mm) + s2 * __expf(m2 - mm);
        }
    }
}

// The shares merged in order: lse[r] (0 for a target-0 row) and the row's
// loss (the half path's formula).
__global__ void k_cef_lse_merge(float* lse, double* loss, const float* pm, const float* ps,
                                const float* zt, const int32_t* targets, int R, int Rp,
                                int shares) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < R; r += gridDim.x * blockDim.x) {
        if (targets[r] == 0) {
            lse[r] = 0, loss[r] = 0;
            continue;
        }
        float m = -INFINITY, s = 0;
        for (int q = 0; q < shares; q++) m = fmaxf(m, pm[(int64_t)q * Rp + r]);
        for (int q = 0; q < shares; q++) {
            const float mq = pm[(int64_t)q * Rp + r];
            if (mq > -INFINITY) s += ps[(int64_t)q * Rp + r] * __expf(mq - m);
        }
        lse[r] = m + logf(s);
        loss[r] = (double)m + log((double)s) - (double)zt[r];
    }
}

// Passes 2 and 3: the warp's 16 MW own rows (OWN_ROWS: rows of h, the tiles
// items; else items, the tiles rows) times G over its block's share of
// tiles [t0, t1), into part[share][own][D]. G = softmax - onehot of the
// (row, item) pair, 0 for padding rows, target-0 rows and padding items.
template <int D, int MW, bool OWN_ROWS>
__global__ void __launch_bounds__(fused_layout<D, MW>::threads)
    k_cef_grad(const __half* own, const __half* other, const int32_t* targets, const float* lse,
               int R, int N, int per, int nt, int64_t own_pad, float* part) {
    using namespace nvcuda;
    using Lt = fused_layout<D, MW>;
    extern __shared__ __align__(128) float sm[];
    __half* tiles = (__half*)sm;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, hf = lane & 1;
    float* S = (float*)((char*)sm + Lt::tiles) + w * Lt::RW * Lt::LDS;
    __half* G = (__half*)((char*)sm + Lt::tiles + Lt::logits) + w * Lt::RW * Lt::LDP;
    float* side_lse = (float*)((char*)sm + Lt::tiles + Lt::logits + Lt::g);  // [2][FC]
    int32_t* side_tg = (int32_t*)(side_lse + 2 * FC);                        // [2][FC]
    const int row0 = blockIdx.x * FT + w * Lt::RW;
    const int t0 = blockIdx.y * per, t1 = t0 + per < nt ? t0 + per : nt;
    frag_a a[MW][D / 16];
    own_rows<D, MW>(a, own, row0);
    int tg[MW];
    float lo[MW];  // OWN_ROWS: this lane's rows' targets and log-sum-exps
#pragma unroll
    for (int q = 0; q < MW; q++) {
        const int o = row0 + 16 * q + (lane >> 1);
        tg[q] = OWN_ROWS && o < R ? targets[o] : 0, lo[q] = OWN_ROWS && o < R ? lse[o] : 0;
    }
    frag_acc acc[MW][D / 16];
#pragma unroll
    for (int q = 0; q < MW; q++)
#pragma unroll
        for (int n = 0; n < D / 16; n++) wmma::fill_fragment(acc[q][n], 0.0f);
    uint4 v[Lt::vecs];
    float sl = 0;  // the next tile's row's lse and target (thread e < FC: row e)
    int st = 0;
    auto side_load = [&](int t) {
        const int rr = t * FC + threadIdx.x;
        if (!OWN_ROWS && threadIdx.x < FC) sl = rr < R ? lse[rr] : 0, st = rr < R ? targets[rr] : 0;
    };
    auto side_store = [&](int b) {
        if (!OWN_ROWS && threadIdx.x < FC)
            side_lse[b * FC + threadIdx.x] = sl, side_tg[b * FC + threadIdx.x] = st;
    };
    static_assert(Lt::threads >= FC, "a thread for each row of a tile's side arrays");
    tile_load<D, MW>(v, other, (int64_t)t0 * FC);
    side_load(t0);
    tile_store<D, MW>(tiles, v);
    side_store(0);
    __syncthreads();
    for (int t = t0; t < t1; t++) {
        const int b = (t - t0) % 2;
        const __half* T = tiles + b * FC * Lt::LDT;
        if (t + 1 < t1) tile_load<D, MW>(v, other, (int64_t)(t + 1) * FC), side_load(t + 1);
        logits_tile<D, MW>(S, a, T);
        __syncwarp();
#pragma unroll
        for (int q = 0; q < MW; q++) {
            const int i = 16 * q + (lane >> 1), o = row0 + i;  // o: the own row or item
            const float* sr = S + i * Lt::LDS;
            __half* gr = G + i * Lt::LDP;
            if (OWN_ROWS) {
                // the items left below lim; the target's column after the loop
                const int lim = tg[q] != 0 ? N - t * FC : 0, ct = tg[q] - 1 - t * FC;
#pragma unroll 8
                for (int k = 0; k < FC / 2; k++) {
                    const int c = hf + 2 * k;
                    gr[c] = __float2half(c < lim ? __expf(sr[c] - lo[q]) : 0.0f);
                }
                if (ct >= 0 && ct < FC && (ct & 1) == hf)
                    gr[ct] = __float2half(__expf(sr[ct] - lo[q]) - 1.0f);
            } else {
#pragma unroll 8
                for (int k = 0; k < FC / 2; k++) {
                    const int c = hf + 2 * k, tx = side_tg[b * FC + c];  // the row's target
                    float g = 0;
                    if (o < N && tx != 0)
                        g = __expf(sr[c] - side_lse[b * FC + c]) - (o == tx - 1 ? 1.0f : 0.0f);
                    gr[c] = __float2half(g);
                }
            }
        }
        __syncwarp();
        // acc[16 MW][D] += G[16 MW][FC] T[FC][D], each of T's fragments loaded once
#pragma unroll
        for (int k = 0; k < FC / 16; k++) {
            frag_a ga[MW];
#pragma unroll
            for (int q = 0; q < MW; q++)
                wmma::load_matrix_sync(ga[q], G + 16 * q * Lt::LDP + 16 * k, Lt::LDP);
#pragma unroll
            for (int n = 0; n < D / 16; n++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> tb;
                wmma::load_matrix_sync(tb, T + 16 * k * Lt::LDT + 16 * n, Lt::LDT);
#pragma unroll
                for (int q = 0; q < MW; q++) wmma::mma_sync(acc[q][n], ga[q], tb, acc[q][n]);
            }
        }
        __syncwarp();
        if (t + 1 < t1) {
            tile_store<D, MW>(tiles + (1 - b) * FC * Lt::LDT, v);
            side_store(1 - b);
        }
        __syncthreads();
    }
    // the warp's sums through its logits room to part, coalesced
#pragma unroll
    for (int q = 0; q < MW; q++)
#pragma unroll
        for (int n = 0; n < D / 16; n++)
            wmma::store_matrix_sync(S + 16 * q * Lt::LDS + 16 * n, acc[q][n], Lt::LDS,
                                    wmma::mem_row_major);
    __syncwarp();
    float* out = part + ((int64_t)blockIdx.y * own_pad + row0) * D;
    for (int e = lane; e < Lt::RW * D; e += 32) out[e] = S[e / D * Lt::LDS + e % D];
}

// out[e] += scale * (the shares' sums of e, in share order), e < n
__global__ void k_cef_part_sum(float* out, const float* part, int64_t n, int64_t stride, int shares,
                               float scale) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        float a = 0;
        for (int q = 0; q < shares; q++) a += part[q * stride + e];
        out[e] += scale * a;
    }
}

static int sm_count(void) {
    static int n = 0;
    if (!n) {
        int dev = 0;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    }
    return n;
}

// Blocks of kernel k (threads and shared bytes a block) an SM holds, asked
// once per kernel.
static int per_sm(const void* k, int threads, size_t shared) {
    static const void* kernel[16];
    static int count[16];
    int i = 0;
    while (i < 16 && kernel[i] && kernel[i] != k) i++;
    if (i < 16 && kernel[i] == k) return count[i];
    int n = 0;
    cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, threads, shared));
    n = n > 0 ? n : 1;
    if (i < 16) kernel[i] = k, count[i] = n;
    return n;
}

// Shares of the other side's nt tiles for `blocks` owning blocks of kernel k:
// the count whose waves of blocks are fullest (a wave as long as a whole
// share; the last share may have fewer tiles), at most most (each share's
// sums are a part buffer of the owned side), the fewer on a tie. *per: tiles
// a share, every share at least one.
static int shares_for(const void* k, int threads, size_t shared, int blocks, int nt, int most,
                      int* per) {
    const double slots = (double)per_sm(k, threads, shared) * sm_count();
    int best = 1;
    double best_eff = 0;
    for (int s = 1; s <= most && s <= nt; s++) {
        const int p = (nt + s - 1) / s, used = (nt + p - 1) / p;
        if (used != s) continue;  // the same as a smaller count
        // the work in tiles over the time of the waves (a wave as long as a whole share)
        const double waves = ceil((double)blocks * s / slots);
        const double eff = (double)blocks * nt / (waves * slots * p);
        if (eff > best_eff + 1e-3) best = s, best_eff = eff;
    }
    *per = (nt + best - 1) / best;
    return best;
}

template <int D, int MW>
static const double* fused(float* dh, float* ditems, const float* h, const float* items,
                           const int32_t* targets, int R, int N, float scale, float* room,
                           size_t room_floats) {
    using Lt = fused_layout<D, MW>;
    const int grad = dh != NULL || ditems != NULL;
    const int64_t Rp = (R + FT - 1) / FT * FT, Np = (N + FT - 1) / FT * FT;
    const size_t b1 = Lt::tiles + Lt::logits, b2 = b1 + Lt::g, b3 = b2 + Lt::side;
    const auto k1 = k_cef_lse<D, MW>;
    const auto k2 = k_cef_grad<D, MW, true>;
    const auto k3 = k_cef_grad<D, MW, false>;
    allow_shared((const void*)k1, b1), allow_shared((const void*)k2, b2);
    allow_shared((const void*)k3, b3);
    // the gradients' part buffers in the caller's room (the logits blocks'
    // room, unused here): as many shares as it holds, at most 16
    const int most_i = (int)(room_floats / (size_t)(Rp * D)),
              most_r = (int)(room_floats / (size_t)(Np * D));
    int per_l, per_i, per_r;  // tiles a share: the log-sum-exps', dh's, the item table's
    const int sh_l =
        shares_for((const void*)k1, Lt::threads, b1, (int)(Rp / FT), (int)(Np / FC), 16, &per_l);
    const int sh_i = shares_for((const void*)k2, Lt::threads, b2, (int)(Rp / FT), (int)(Np / FC),
                                most_i < 1    ? 1
                                : most_i > 16 ? 16
                                              : most_i,
                                &per_i);
    const int sh_r = shares_for((const void*)k3, Lt::threads, b3, (int)(Np / FT), (int)(Rp / FC),
                                most_r < 1    ? 1
                                : most_r > 16 ? 16
                                              : most_r,
                                &per_r);
    const int64_t part_n = grad ? (sh_i * Rp > sh_r * Np ? sh_i * Rp : sh_r * Np) * D : 0;
    const int own_part = part_n > (int64_t)room_floats;  // not even one share fits the room
    const size_t hb = align256(Rp * D * 2), ib = align256(Np * D * 2), rb = align256(Rp * 4),
                 lb = align256(R * sizeof(double)), pb = align256(sh_l * Rp * 4);
    char* s = (char*)cuda_scratch(hb + ib + 2 * rb + lb + 2 * pb + (own_part ? part_n * 4 : 0));
    __half *h16 = (__half*)s, *i16 = (__half*)(s + hb);
    float *zt = (float*)(s + hb + ib), *lse = (float*)(s + hb + ib + rb);
    double* loss = (double*)(s + hb + ib + 2 * rb);
    float *pm = (float*)(s + hb + ib + 2 * rb + lb), *ps = pm + pb / 4;
    float* part = own_part ? ps + pb / 4 : room;
    cuda_mark_begin();
    cuda_to_half(h16, h, (int64_t)R * D, Rp * D);
    cuda_to_half(i16, items, (int64_t)N * D, Np * D);
    cuda_mark("loss: to half");
    k1<<<dim3((unsigned)(Rp / FT), sh_l), Lt::threads, b1, cuda_stream()>>>(
        h16, i16, targets, R, N, (int)Rp, per_l, (int)(Np / FC), pm, ps, zt);
    launchCheck();
    k_cef_lse_merge<<<blocks_for(R, 256), 256, 0, cuda_stream()>>>(lse, loss, pm, ps, zt, targets,
                                                                   R, (int)Rp, sh_l);
    launchCheck();
    cuda_mark("loss: fused log-sum-exp");
    if (dh) {
        k2<<<dim3((unsigned)(Rp / FT), sh_i), Lt::threads, b2, cuda_stream()>>>(
            h16, i16, targets, lse, R, N, per_i, (int)(Np / FC), Rp, part);
        launchCheck();
        k_cef_part_sum<<<blocks_for((int64_t)R * D, 256), 256, 0, cuda_stream()>>>(
            dh, part, (int64_t)R * D, Rp * D, sh_i, scale);
        launchCheck();
        cuda_mark("loss: fused dh");
    }
    if (ditems) {
        k3<<<dim3((unsigned)(Np / FT), sh_r), Lt::threads, b3, cuda_stream()>>>(
            i16, h16, targets, lse, R, N, per_r, (int)(Rp / FC), Np, part);
        launchCheck();
        k_cef_part_sum<<<blocks_for((int64_t)N * D, 256), 256, 0, cuda_stream()>>>(
            ditems, part, (int64_t)N * D, Np * D, sh_r, scale);
        launchCheck();
        cuda_mark("loss: fused item table");
    }
    return loss;
}

// The rows' losses (device memory, R doubles, valid until the next scratch
// user), the gradients added into dh and dwte; NULL when this path does not
// take the call (not asked for, fp32, or a width it has no kernels for).
// ELASTIC_CE=fused: a warp holds 16 rows (8 warps a block); fused2: 32 (4
// warps, each fragment of the other side's tile loaded once for both row
// tiles: less shared-memory traffic a row, fewer warps), widths up to 64.
const double* cuda_crossentropy_fused(float* dh, float* dwte, const float* h, const float* wte,
                                      const int32_t* targets, int R, int d, int V, float scale,
                                      float* room, size_t room_floats) {
    const char* e = getenv("ELASTIC_CE");
    if (!e || (strcmp(e, "fused") && strcmp(e, "fused2")) || cuda_precision() == 0) return NULL;
    const int N = V - 1, two = !strcmp(e, "fused2");
    float* di = dwte ? dwte + d : NULL;
    const float* items = wte + d;
    switch (d) {
        case 16:
            return two ? fused<16, 2>(dh, di, h, items, targets, R, N, scale, room, room_floats)
                       : fused<16, 1>(dh, di, h, items, targets, R, N, scale, room, room_floats);
        case 32:
            return two ? fused<32, 2>(dh, di, h, items, targets, R, N, scale, room, room_floats)
                       : fused<32, 1>(dh, di, h, items, targets, R, N, scale, room, room_floats);
        case 64:
            return two ? fused<64, 2>(dh, di, h, items, targets, R, N, scale, room, room_floats)
                       : fused<64, 1>(dh, di, h, items, targets, R, N, scale, room, room_floats);
        case 128:
            return fused<128, 1>(dh, di, h, items, targets, R, N, scale, room, room_floats);
        default:
            return NULL;
    }
}
