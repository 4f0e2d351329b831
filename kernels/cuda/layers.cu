// layers.cu: LayerNorm, the matrix products (cuBLAS) and the embedding, as
// kernels.h defines them. Every sum runs in a fixed order, so each is the same
// bits every run: the sums over rows (the norms' weight gradients, the bias
// gradient) in fixed slices, and the item table's gradient (ids repeat within
// a batch) by grouping the positions by id with a stable radix sort (CUB) and
// adding each id's rows in ascending position order, the CPU's order. No
// kernel here uses atomics.
#include <cub/cub.cuh>
#include <math.h>

#include "common.cuh"

#define LN_EPS 1e-5f

// one warp per row: the mean, then the variance of the shifted values
__global__ void k_ln_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                             const float* b, int R, int d) {
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= R) return;
    const float* x = inp + (int64_t)r * d;
    float s = 0;
    for (int c = lane; c < d; c += 32) s += x[c];
    const float m = warp_sum(s) / d;
    float v = 0;
    for (int c = lane; c < d; c += 32) v += (x[c] - m) * (x[c] - m);
    const float rs = rsqrtf(warp_sum(v) / d + LN_EPS);
    float* o = out + (int64_t)r * d;
    for (int c = lane; c < d; c += 32) o[c] = (x[c] - m) * rs * w[c] + b[c];
    if (lane == 0) mean[r] = m, rstd[r] = rs;
}

__global__ void k_ln_backward_dinp(float* dinp, const float* dout, const float* inp, const float* w,
                                   const float* mean, const float* rstd, int R, int d) {
    const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= R) return;
    const float *x = inp + (int64_t)r * d, *g = dout + (int64_t)r * d;
    const float m = mean[r], s = rstd[r];
    float a = 0, bsum = 0;
    for (int c = lane; c < d; c += 32) {
        const float dn = w[c] * g[c];
        a += dn;
        bsum += dn * (x[c] - m) * s;
    }
    const float mdn = warp_sum(a) / d, mdnn = warp_sum(bsum) / d;
    float* dx = dinp + (int64_t)r * d;
    for (int c = lane; c < d; c += 32) dx[c] += s * (w[c] * g[c] - mdn - (x[c] - m) * s * mdnn);
}

// Column sums over R rows, in a fixed order, in two passes: block (x, y)
// takes 32 columns of the y-th slice of COLSUM_ROWS rows, its 32 x 32
// threads stride the slice, thread row 0 adds their 32 partial sums in order
// into part[y]; then one thread per column adds the slices in order. With inp:
// the sum of dout * (inp - mean) * rstd (a norm's weight) as well.
#define COLSUM_ROWS 256
__global__ void k_colsum_part(float* pw, float* pb, const float* dout, const float* inp,
                              const float* mean, const float* rstd, int R, int d) {
    __shared__ float sw[32][33], sb[32][33];
    const int c = blockIdx.x * 32 + threadIdx.x, r0 = blockIdx.y * COLSUM_ROWS;
    const int r1 = R - r0 < COLSUM_ROWS ? R : r0 + COLSUM_ROWS;
    float aw = 0, ab = 0;
    if (c < d)
        for (int r = r0 + threadIdx.y; r < r1; r += 32) {
            const float g = dout[(int64_t)r * d + c];
            ab += g;
            if (inp) aw += g * (inp[(int64_t)r * d + c] - mean[r]) * rstd[r];
        }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < d) {
        float tw = 0, tb = 0;
        for (int y = 0; y < 32; y++) tw += sw[y][threadIdx.x], tb += sb[y][threadIdx.x];
        pw[(int64_t)blockIdx.y * d + c] = tw;
        pb[(int64_t)blockIdx.y * d + c] = tb;
    }
}

__global__ void k_colsum_total(float* dw, float* db, const float* pw, const float* pb, int S,
                               int d) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    float tw = 0, tb = 0;
    for (int y = 0; y < S; y++) tw += pw[(int64_t)y * d + c], tb += pb[(int64_t)y * d + c];
    if (dw) dw[c] += tw;
    if (db) db[c] += tb;
}

static void colsum(float* dw, float* db, const float* dout, const float* inp, const float* mean,
                   const float* rstd, int R, int d) {
    const int S = (R + COLSUM_ROWS - 1) / COLSUM_ROWS;
    float* pw = (float*)cuda_scratch((size_t)2 * S * d * sizeof(float));
    float* pb = pw + (size_t)S * d;
    k_colsum_part<<<dim3((d + 31) / 32, S), dim3(32, 32), 0, cuda_stream()>>>(pw, pb, dout, inp,
                                                                              mean, rstd, R, d);
    launchCheck();
    k_colsum_total<<<(d + 127) / 128, 128, 0, cuda_stream()>>>(dw, db, pw, pb, S, d);
    launchCheck();
}

extern "C" void cuda_layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                       const float* w, const float* b, int R, int d) {
    if (R <= 0) return;
    k_ln_forward<<<(R + 7) / 8, 256, 0, cuda_stream()>>>(out, mean, rstd, inp, w, b, R, d);
    launchCheck();
}

extern "C" void cuda_layernorm_backward(float* dinp, float* dw, float* db, const float* dout,
                                        const float* inp, const float* w, const float* mean,
                                        const float* rstd, int R, int d) {
    if (R <= 0) return;
    if (dinp) {
        k_ln_backward_dinp<<<(R + 7) / 8, 256, 0, cuda_stream()>>>(dinp, dout, inp, w, mean, rstd,
                                                                   R, d);
        launchCheck();
    }
    if (dw || db) {
        colsum(dw, db, dout, inp, mean, rstd, R, d);
    }
}

__global__ void k_bias_rows(float* out, const float* bias, int R, int OC) {
    const int64_t n = (int64_t)R * OC;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = bias[i % OC];
}

// Row-major X[r, c] is column-major X^T: out^T[OC,R] = w^T^T[OC,IC] inp^T[IC,R].
extern "C" void cuda_matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                                    int R, int IC, int OC) {
    if (R <= 0) return;
    cuda_mark_begin();
    if (bias) {
        k_bias_rows<<<blocks_for((int64_t)R * OC, 256), 256, 0, cuda_stream()>>>(out, bias, R, OC);
        launchCheck();
        cuda_mark("matmul: bias rows");
    }
    cuda_gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, R, IC, w, IC, inp, IC, bias ? 1.0f : 0.0f, out, OC);
    cuda_mark("matmul: product");
}

extern "C" void cuda_matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                                     const float* inp, const float* w, int R, int IC, int OC) {
    if (R <= 0) return;
    cuda_mark_begin();
    // dinp^T[IC,R] += w^T[IC,OC] dout^T[OC,R]
    if (dinp) cuda_gemm(CUBLAS_OP_N, CUBLAS_OP_N, IC, R, OC, w, IC, dout, OC, 1, dinp, IC);
    cuda_mark("matmul backward: dinp product");
    // dw^T[IC,OC] += inp^T[IC,R] dout[R,OC] (a long sum: R terms)
    if (dw) cuda_gemm(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, R, inp, IC, dout, OC, 1, dw, IC);
    cuda_mark("matmul backward: dw product");
    if (dbias) {
        colsum(NULL, dbias, dout, NULL, NULL, NULL, R, OC);
        cuda_mark("matmul backward: bias sums");
    }
}

__global__ void k_embed_forward(float* out, const int32_t* inp, const float* wte, const float* wpe,
                                int L, int d, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t bt = i / d;
        const int c = (int)(i % d);
        float v = wte[(int64_t)inp[bt] * d + c];
        if (wpe) v += wpe[(bt % L) * d + c];
        out[i] = v;
    }
}

// The item table's gradient without atomics, in the CPU's order
// (kernels/cpu/embedding.c adds position bt's row into dwte[inp[bt]] for bt =
// 0, 1, ... in turn, padding item 0 included). cuda_embedding_backward sorts
// the pairs (id, position) by id with CUB's radix sort, which is stable, so
// the positions of each id stay ascending; a run of equal ids in the sorted
// keys is one id's segment. k_embed_backward_items then gives every (sorted
// slot i, column c) a thread: the thread whose slot starts a segment (i == 0
// or a different id before it) finds the segment's end and adds its rows of
// dout, column c, one after another onto dwte[id][c]: the same additions in
// the same order as the CPU, so the same bits. One thread per (segment,
// column) rather than a warp per segment: the warp's lanes take neighbouring
// columns of the same row, so the reads of dout are coalesced, and a column's
// sum is a chain of dependent adds either way (it must be, to keep the CPU's
// order). Threads of other slots skip at once; the longest segment (often
// padding item 0: most of a batch of short histories) sets the time, as it
// serialised the atomics before: its end is found by binary search in the
// sorted keys (a walk to it was one dependent load a slot) and its rows are
// loaded 8 at a time ahead of their adds (the same adds in the same order).

// pos[i] = i: the positions, the values the sort carries along with the ids
__global__ void k_embed_positions(int32_t* pos, int n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        pos[i] = (int32_t)i;
}

// dwte[id] += the rows of dout at id's positions, ascending: one thread per
// (segment, column), skey/spos the ids and positions sorted by id (stable)
__global__ void k_embed_backward_items(float* dwte, const float* dout, const int32_t* skey,
                                       const int32_t* spos, int n, int d) {
    const int64_t m = (int64_t)n * d;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < m;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(j / d), c = (int)(j % d);
        const int32_t id = skey[i];
        if (i > 0 && skey[i - 1] == id) continue;  // not the first slot of its segment
        int e = i + 1, hi = n;  // the segment's end: the first key past id (they are sorted)
        while (e < hi) {
            const int mid = (e + hi) >> 1;
            if (skey[mid] <= id)
                e = mid + 1;
            else
                hi = mid;
        }
        float* g = dwte + (int64_t)id * d + c;
        float s = *g;
        int k = i;
        for (; k + 8 <= e; k += 8) {  // 8 loads in flight, then their sums in order
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) x[u] = dout[(int64_t)spos[k + u] * d + c];
#pragma unroll
            for (int u = 0; u < 8; u++) s += x[u];
        }
        for (; k < e; k++) s += dout[(int64_t)spos[k] * d + c];
        *g = s;
    }
}

// The position table's gradient: thread (t, c) sums over the batch in order.
__global__ void k_embed_backward_pos(float* dwpe, const float* dout, int B, int L, int d) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < (int64_t)L * d;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = j / d;
        const int c = (int)(j % d);
        float s = 0;
        for (int b = 0; b < B; b++) s += dout[((int64_t)b * L + t) * d + c];
        dwpe[j] += s;
    }
}

extern "C" void cuda_embedding_forward(float* out, const int32_t* inp, const float* wte,
                                       const float* wpe, int B, int L, int d) {
    const int64_t n = (int64_t)B * L * d;
    if (n <= 0) return;
    k_embed_forward<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(out, inp, wte, wpe, L, d, n);
    launchCheck();
}

// Scratch for n = B*L positions: CUB's temporary storage, then the sorted ids,
// the positions 0..n-1 and the positions sorted by id (3n int32s).
extern "C" void cuda_embedding_backward(float* dwte, float* dwpe, const float* dout,
                                        const int32_t* inp, int B, int L, int d) {
    const int n = B * L;
    if (n <= 0 || d <= 0) return;
    if (dwte) {
        size_t temp = 0;
        cudaCheck(cub::DeviceRadixSort::SortPairs(NULL, temp, inp, (int32_t*)NULL,
                                                  (const int32_t*)NULL, (int32_t*)NULL, n, 0, 32,
                                                  cuda_stream()));
        const size_t ta = align256(temp), ia = align256((size_t)n * sizeof(int32_t));
        char* scratch = (char*)cuda_scratch(ta + 3 * ia);
        int32_t* skey = (int32_t*)(scratch + ta);
        int32_t* pos = (int32_t*)(scratch + ta + ia);
        int32_t* spos = (int32_t*)(scratch + ta + 2 * ia);
        k_embed_positions<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(pos, n);
        launchCheck();
        cudaCheck(cub::DeviceRadixSort::SortPairs(scratch, temp, inp, skey, pos, spos, n, 0, 32,
                                                  cuda_stream()));
        const int64_t m = (int64_t)n * d;
        k_embed_backward_items<<<blocks_for(m, 256), 256, 0, cuda_stream()>>>(dwte, dout, skey,
                                                                              spos, n, d);
        launchCheck();
    }
    if (dwpe) {
        k_embed_backward_pos<<<blocks_for((int64_t)L * d, 256), 256, 0, cuda_stream()>>>(dwpe, dout,
                                                                                         B, L, d);
        launchCheck();
    }
}

// rows: one thread per element
__global__ void k_rows_move(float* out, const float* in, const int32_t* rows, int R, int d,
                            int scatter) {
    const int64_t n = (int64_t)R * d;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / d, c = i % d;
        if (scatter)
            out[(int64_t)rows[r] * d + c] = in[i];
        else
            out[i] = in[(int64_t)rows[r] * d + c];
    }
}

extern "C" void cuda_rows_gather(float* out, const float* in, const int32_t* rows, int R, int d) {
    if (R <= 0) return;
    k_rows_move<<<blocks_for((int64_t)R * d, 256), 256, 0, cuda_stream()>>>(out, in, rows, R, d, 0);
    launchCheck();
}

extern "C" void cuda_rows_scatter(float* out, const float* in, const int32_t* rows, int R, int d) {
    if (R <= 0) return;
    k_rows_move<<<blocks_for((int64_t)R * d, 256), 256, 0, cuda_stream()>>>(out, in, rows, R, d, 1);
    launchCheck();
}

// The sum of squares in double: each block sums a fixed slice in a fixed
// order into partial[block], then one thread adds the partials in order, on
// the device (sum_squares_into: no wait) or read back.
#define SQ_BLOCKS 256
__global__ void k_sum_squares(double* partial, const float* x, int64_t n) {
    __shared__ double s[256];
    double a = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        a += (double)x[i] * x[i];
    s[threadIdx.x] = a;
    __syncthreads();
    for (int k = 128; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

__global__ void k_sum_partials(double* out, const double* partial) {
    double s = 0;
    for (int b = 0; b < SQ_BLOCKS; b++) s += partial[b];
    out[0] = s;
}

extern "C" void cuda_sum_squares_into(double* out, const float* x, int64_t n) {
    if (n <= 0) {
        cudaCheck(cudaMemsetAsync(out, 0, sizeof(double), cuda_stream()));
        return;
    }
    double* partial = (double*)cuda_scratch(SQ_BLOCKS * sizeof(double));
    k_sum_squares<<<SQ_BLOCKS, 256, 0, cuda_stream()>>>(partial, x, n);
    launchCheck();
    k_sum_partials<<<1, 1, 0, cuda_stream()>>>(out, partial);
    launchCheck();
}

extern "C" double cuda_sum_squares(const float* x, int64_t n) {
    static double* out;
    if (!out) cudaCheck(cudaMalloc(&out, sizeof(double)));
    cuda_sum_squares_into(out, x, n);
    double h = 0;
    cudaCheck(cudaMemcpyAsync(&h, out, sizeof h, cudaMemcpyDeviceToHost, cuda_stream()));
    cudaCheck(cudaStreamSynchronize(cuda_stream()));
    return h;
}
