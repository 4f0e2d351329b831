// pkm.cu: the product-key memory (kernels.h, step 2) and the sparse row-wise
// Adam: selection scores every sub-key of both halves in parallel (the
// sub-keys staged in shared memory for a block of queries), then a warp per
// half takes its top kk by kk rounds of a warp argmax (the order of
// the CPU's sorted lists: score, then the lower index; one thread kept both
// lists and the pairs before, 0.35 ms a layer on the H200 at R = 4096), and
// one warp the top kk of the kk x kk pair sums the same way; the read is one
// block per query; backward computes dq and the value rows per lookup, then
// the sub-key gradient as matrix products: the score gradients laid out
// dense, [rows, n] per head and half (zero where a row used no sub-key), times
// the queries' halves (the first version sorted the lookups by sub-key with
// CUB and summed each sub-key's run in one block: 1.3 to 2.3 ms a layer on
// the H200 at R = 32768, the longest runs the slowest; PyTorch's peer does
// the dense product too).
#include <math.h>

#include "common.cuh"

#define KK_MAX 64
#define N_MAX 8192  // sub-keys per half held in shared memory
#define DK_MAX 256

__device__ __forceinline__ int ahead(float s, int i, float t, int j) {
    return s > t || (s == t && i < j);
}

// The top kk of m candidates v[e] (index key(e)) by one warp, best first
// (the higher value, then the lower index), into out_v and out_i: kk rounds
// in which every lane offers its best remaining candidate, the warp keeps the
// best offer and takes it out of v (-inf). Every lane of the warp calls it.
template <class Key>
__device__ __forceinline__ void warp_top(float* v, int m, int kk, Key key, float* out_v,
                                         int* out_i) {
    const int lane = threadIdx.x % 32;
    for (int k = 0; k < kk; k++) {
        float bv = -INFINITY;
        int bi = INT32_MAX, be = -1;
        for (int e = lane; e < m; e += 32)
            if (v[e] != -INFINITY && (be < 0 || ahead(v[e], key(e), bv, bi)))
                bv = v[e], bi = key(e), be = e;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o),
                      oe = __shfl_xor_sync(0xffffffffu, be, o);
            if (oe >= 0 && (be < 0 || ahead(ov, oi, bv, bi))) bv = ov, bi = oi, be = oe;
        }
        if (lane == 0) {
            out_v[k] = bv, out_i[k] = bi;
            if (be >= 0) v[be] = -INFINITY;
        }
        __syncwarp();
    }
}

// block (queries r0 .. r0 + qb - 1, head h), two warps a query: the scores of
// the head's sub-keys, staged in shared memory SEL_TILE rows at a time (rows
// padded to half + 1 floats: a warp's threads on consecutive rows hit
// different banks) and shared by the block's qb queries, each score summed
// in the CPU's order; then warps 2q and 2q + 1 take query q's top kk of each
// half and warp 2q the top kk of its pair sums. (A thread reading its own
// sub-key's row from global memory, as the first version did, made every
// load instruction touch 32 sectors: 0.19 ms a layer on the H200, by its
// operation count about 15 us.)
#define SEL_TILE 128
#define QB_MAX 4
__global__ void k_pkm_select(int32_t* idx, float* w, const float* q, const float* K, int R, int Hm,
                             int dk, int n, int kk, int qb) {
    // scores [qb][2n], pair sums [qb][kk * kk], queries [qb][dk], the tile [SEL_TILE][half + 1]
    extern __shared__ float s[];
    __shared__ float ts[2 * QB_MAX][KK_MAX], sc[QB_MAX][KK_MAX];
    __shared__ int ti[2 * QB_MAX][KK_MAX], slot[QB_MAX][KK_MAX];
    const int r0 = blockIdx.x * qb, h = blockIdx.y, half = dk / 2, warp = threadIdx.x / 32;
    const int nq = R - r0 < qb ? R - r0 : qb, hp = half + 1;
    float *ps = s + (size_t)qb * 2 * n, *sq = ps + qb * kk * kk, *sK = sq + qb * dk;
    for (int e = threadIdx.x; e < nq * dk; e += blockDim.x)
        sq[e] = q[((int64_t)(r0 + e / dk) * Hm + h) * dk + e % dk];
    for (int p = 0; p < 2; p++)
        for (int j0 = 0; j0 < n; j0 += SEL_TILE) {
            const int nj = n - j0 < SEL_TILE ? n - j0 : SEL_TILE;
            const float* Kt = K + (((int64_t)h * 2 + p) * n + j0) * half;
            __syncthreads();  // the last tile's readers are done (and the queries are in)
            load_rows(sK, Kt, 0, nj, nj, half, hp, half, 0);
            __syncthreads();
            for (int x = threadIdx.x; x < nq * nj; x += blockDim.x) {
                const int qq = x / nj, j = x % nj;
                const float *qh = sq + qq * dk + p * half, *kp = sK + j * hp;
                float v = 0;
                for (int i = 0; i < half; i++) v += qh[i] * kp[i];
                s[(size_t)qq * 2 * n + p * n + j0 + j] = v;
            }
        }
    __syncthreads();
    const int qq = warp / 2;
    if (qq < nq)
        warp_top(
            s + (size_t)qq * 2 * n + (warp % 2) * n, n, kk, [](int e) { return e; }, ts[warp],
            ti[warp]);
    __syncthreads();
    if (warp % 2 || qq >= nq) return;
    const int *ta = ti[2 * qq], *tb = ti[2 * qq + 1];
    float* pq = ps + qq * kk * kk;
    for (int e = threadIdx.x % 32; e < kk * kk; e += 32)
        pq[e] = ts[2 * qq][e / kk] + ts[2 * qq + 1][e % kk];
    __syncwarp();
    warp_top(
        pq, kk * kk, kk, [&](int e) { return ta[e / kk] * n + tb[e % kk]; }, sc[qq], slot[qq]);
    if (threadIdx.x % 32) return;
    float* c = sc[qq];
    const float mx = c[0];
    float sum = 0;
    for (int j = 0; j < kk; j++) sum += c[j] = expf(c[j] - mx);
    const int64_t l0 = ((int64_t)(r0 + qq) * Hm + h) * kk;
    for (int j = 0; j < kk; j++) idx[l0 + j] = slot[qq][j], w[l0 + j] = c[j] / sum;
}

// block r: out[r] = sum over heads and slots of w * V[row]
__global__ void k_pkm_read(float* out, const int32_t* row, const float* w, const float* V, int Hm,
                           int kk, int d) {
    const int r = blockIdx.x;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float o = 0;
        for (int64_t l = (int64_t)r * Hm * kk; l < (int64_t)(r + 1) * Hm * kk; l++)
            o += w[l] * V[(int64_t)row[l] * d + c];
        out[(int64_t)r * d + c] = o;
    }
}

// block (r, h), a warp a lookup at a time: dsc (into scratch), dq, the value
// rows w * dout[r] (the first version summed the kk dot products one after
// another over the whole block, three barriers each)
#define LOOKUP_THREADS 64
__global__ void k_pkm_back_lookup(float* dq, float* dV_rows, float* dsc_out, const float* dout,
                                  const int32_t* idx, const int32_t* row, const float* w,
                                  const float* K, const float* V, int Hm, int dk, int n, int kk,
                                  int d) {
    __shared__ float dsc[KK_MAX];
    const int r = blockIdx.x, h = blockIdx.y, half = dk / 2;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const int64_t l0 = ((int64_t)r * Hm + h) * kk;
    const float* g = dout + (int64_t)r * d;
    for (int i = warp; i < kk; i += warps) {  // dw_i = g . V[row_i]
        const float* Vi = V + (int64_t)row[l0 + i] * d;
        float a = 0;
        for (int c = lane; c < d; c += 32) a += g[c] * Vi[c];
        for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
        if (lane == 0) dsc[i] = a;
    }
    __syncthreads();
    float s = 0;  // sum_i w_i dw_i, in i order, the same in every thread
    for (int i = 0; i < kk; i++) s += w[l0 + i] * dsc[i];
    __syncthreads();  // every thread has read dsc
    for (int i = threadIdx.x; i < kk; i += blockDim.x) {
        dsc[i] = w[l0 + i] * (dsc[i] - s);
        if (dsc_out) dsc_out[l0 + i] = dsc[i];
    }
    __syncthreads();
    if (dq) {
        const float *K1 = K + (int64_t)h * 2 * n * half, *K2 = K1 + (int64_t)n * half;
        float* dq1 = dq + ((int64_t)r * Hm + h) * dk;
        for (int x = threadIdx.x; x < dk; x += blockDim.x) {
            float a = 0;
            for (int i = 0; i < kk; i++) {
                const int32_t sa = idx[l0 + i] / n, sb = idx[l0 + i] % n;
                a += dsc[i] *
                     (x < half ? K1[(int64_t)sa * half + x] : K2[(int64_t)sb * half + x - half]);
            }
            dq1[x] += a;
        }
    }
    if (dV_rows)
        for (int e = threadIdx.x; e < kk * d; e += blockDim.x)
            dV_rows[l0 * d + e] = w[l0 + e / d] * g[e % d];
}

// G[r - r0, h, p, a] = the sum, in slot order, of dsc over lookup (r, h)'s
// slots whose half-p sub-key is a (zero for the n - kk others): one block per
// (row, head), the row's slots in shared memory, every entry written
__global__ void k_pkm_dsc_dense(float* G, const float* dsc, const int32_t* idx, int r0, int Hm,
                                int n, int kk) {
    __shared__ float ds[KK_MAX];
    __shared__ int32_t sub[2][KK_MAX];
    const int r = r0 + blockIdx.x, h = blockIdx.y;
    const int64_t l0 = ((int64_t)r * Hm + h) * kk;
    for (int i = threadIdx.x; i < kk; i += blockDim.x)
        ds[i] = dsc[l0 + i], sub[0][i] = idx[l0 + i] / n, sub[1][i] = idx[l0 + i] % n;
    __syncthreads();
    float* g = G + ((int64_t)blockIdx.x * Hm + h) * 2 * n;
    for (int x = threadIdx.x; x < 2 * n; x += blockDim.x) {
        const int p = x >= n, a = x - p * n;
        float acc = 0;
        for (int i = 0; i < kk; i++)
            if (sub[p][i] == a) acc += ds[i];
        g[x] = acc;
    }
}

extern "C" void cuda_pkm_select(int32_t* idx, float* w, const float* q, const float* K, int R,
                                int Hm, int dk, int n, int kk) {
    if (R <= 0) return;
    if (kk > KK_MAX || n > N_MAX || dk > DK_MAX)
        cuda_fail(__FILE__, __LINE__, "pkm_select",
                  "top-k over 64, sub-keys over 8192 or key width over 256");
    // queries a block: as many as fit in 48 KB (up to 4), at least one
    const auto bytes = [&](int qb) {
        return ((size_t)qb * (2 * n + kk * kk + dk) + (size_t)SEL_TILE * (dk / 2 + 1)) *
               sizeof(float);
    };
    int qb = QB_MAX;
    while (qb > 1 && bytes(qb) > 48 * 1024) qb--;
    const size_t sh = bytes(qb);
    allow_shared((const void*)k_pkm_select, sh);
    const dim3 grid((unsigned)((R + qb - 1) / qb), Hm);
    k_pkm_select<<<grid, 64 * qb, sh, cuda_stream()>>>(idx, w, q, K, R, Hm, dk, n, kk, qb);
    launchCheck();
}

extern "C" void cuda_pkm_read(float* out, const int32_t* row, const float* w, const float* V, int R,
                              int Hm, int kk, int d) {
    if (R <= 0) return;
    k_pkm_read<<<R, 64, 0, cuda_stream()>>>(out, row, w, V, Hm, kk, d);
    launchCheck();
}

// rows of the dense sub-key gradient per product: at most 8192, its
// [rows, Hm, 2, n] block at most 8 MB of the scratch (2048 rows at ELASTIC's
// Hm = 2, n = 256; 32 MB before, a tenth of ELASTIC's device memory at 8 x
// 4096 once the scratch counted)
static int dense_rows(int R, int Hm, int n) {
    const int64_t per = (int64_t)Hm * 2 * n * (int64_t)sizeof(float);
    int64_t cap = ((int64_t)8 << 20) / per;
    cap = cap < 1 ? 1 : cap > 8192 ? 8192 : cap;
    return (int)(cap < R ? cap : R);
}

extern "C" void cuda_pkm_backward(float* dq, float* dK, float* dV_rows, const float* dout,
                                  const int32_t* idx, const int32_t* row, const float* w,
                                  const float* q, const float* K, const float* V, int R, int Hm,
                                  int dk, int n, int kk, int d) {
    if (R <= 0 || (!dq && !dK && !dV_rows)) return;
    if (kk > KK_MAX) cuda_fail(__FILE__, __LINE__, "pkm_backward", "top-k over 64");
    // scratch: dsc [R,Hm,kk], then the dense sub-key gradient of a block of rows
    const int64_t nl = (int64_t)R * Hm * kk;
    const int rows = dense_rows(R, Hm, n), half = dk / 2;
    const size_t db = align256((size_t)nl * sizeof(float));
    char* scratch = dK ? (char*)cuda_scratch(db + (size_t)rows * Hm * 2 * n * sizeof(float)) : NULL;
    float *dsc = dK ? (float*)scratch : NULL, *G = dK ? (float*)(scratch + db) : NULL;
    k_pkm_back_lookup<<<dim3(R, Hm), LOOKUP_THREADS, 0, cuda_stream()>>>(
        dq, dV_rows, dsc, dout, idx, row, w, K, V, Hm, dk, n, kk, d);
    launchCheck();
    // dK[h, p] (n x half) += G[:, h, p, :]^T q[:, h, p half : (p + 1) half],
    // a product per block of rows, head and half (column-major: half x n)
    for (int r0 = 0; dK && r0 < R; r0 += rows) {
        const int nr = R - r0 < rows ? R - r0 : rows;
        k_pkm_dsc_dense<<<dim3(nr, Hm), 128, 0, cuda_stream()>>>(G, dsc, idx, r0, Hm, n, kk);
        launchCheck();
        for (int h = 0; h < Hm; h++)
            for (int p = 0; p < 2; p++)
                cuda_gemm(CUBLAS_OP_N, CUBLAS_OP_T, half, n, nr,
                          q + ((int64_t)r0 * Hm + h) * dk + p * half, Hm * dk,
                          G + ((int64_t)h * 2 + p) * n, Hm * 2 * n, 1,
                          dK + ((int64_t)h * 2 + p) * n * half, half);
    }
}

__global__ void k_adam_sparse(float* table, float* m, float* v, const int32_t* rows,
                              const float* grads, int64_t nrows, int d, float beta1, float beta2,
                              float step, float rbc2, float eps) {
    const int64_t n = nrows * d;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = (int64_t)rows[i / d] * d + i % d;
        const float g = grads[i];
        const float mc = beta1 * m[o] + (1 - beta1) * g, vc = beta2 * v[o] + (1 - beta2) * g * g;
        m[o] = mc, v[o] = vc;
        table[o] -= step * mc / (sqrtf(vc) * rbc2 + eps);
    }
}

extern "C" void cuda_adam_sparse_update(float* table, float* m, float* v, const int32_t* rows,
                                        const float* grads, int64_t nrows, int d, float lr,
                                        float beta1, float beta2, float eps, int64_t t) {
    if (nrows <= 0) return;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    k_adam_sparse<<<blocks_for(nrows * d, 256), 256, 0, cuda_stream()>>>(
        table, m, v, rows, grads, nrows, d, beta1, beta2, lr / bc1,
        (float)(1.0 / sqrt((double)bc2)), eps);
    launchCheck();
}
