// sparse.c: the row-sparse side of the memory bank (DESIGN §4): the per-lookup
// gradient rows summed by row id, and the lazy Adam that updates only the rows
// that got one.
// sparse_rows_reduce sorts keys (id - min id) << pb | position, unique per
// lookup, with an in-place radix sort in perm, then sums each id's rows in
// input order: the result is the same bits for any thread count. Needs
// n < 2^32 (id and position share the 64-bit key).
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"

#define SR_SMALL 32  // buckets this small are insertion-sorted
#define SR_MAXT 256  // threads that sum segments

static int bit_width(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }

static void insertion_sort(uint64_t* a, int64_t n) {
    for (int64_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        int64_t j = i;
        for (; j > 0 && a[j - 1] > v; j--) a[j] = a[j - 1];
        a[j] = v;
    }
}

// In-place MSD radix sort (American flag) of a[n] by bits [0, shift + 8):
// one pass on the byte at shift, then each bucket on the bits below (the
// last byte may overlap bits already sorted on, which are then equal).
static void radix_sort(uint64_t* a, int64_t n, int shift, int parallel) {
    if (n <= SR_SMALL) {
        insertion_sort(a, n);
        return;
    }
    int64_t start[257], head[256] = {0};
    for (int64_t i = 0; i < n; i++) head[(a[i] >> shift) & 255]++;
    start[0] = 0;
    for (int b = 0; b < 256; b++) start[b + 1] = start[b] + head[b], head[b] = start[b];
    // each key goes straight to the next free place of its bucket, carrying
    // the key it displaces on, until one lands in bucket b
    for (int b = 0; b < 256; b++) {
        while (head[b] < start[b + 1]) {
            uint64_t v = a[head[b]];
            for (int db = (v >> shift) & 255; db != b; db = (v >> shift) & 255) {
                uint64_t t = a[head[db]];
                a[head[db]++] = v;
                v = t;
            }
            a[head[b]++] = v;
        }
    }
    if (shift == 0) return;
    const int next = shift >= 8 ? shift - 8 : 0;
    if (parallel) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int b = 0; b < 256; b++) radix_sort(a + start[b], start[b + 1] - start[b], next, 0);
    } else {
        for (int b = 0; b < 256; b++) radix_sort(a + start[b], start[b + 1] - start[b], next, 0);
    }
}

// the first i' >= i where a new id starts (or n)
static int64_t segment_start(const uint64_t* key, int64_t n, int64_t i, int pb) {
    while (i > 0 && i < n && key[i] >> pb == key[i - 1] >> pb) i++;
    return i;
}

int64_t sparse_rows_reduce(int32_t* uniq, real* out, const int32_t* ids, const real* rows,
                           int64_t n, int d, int64_t* perm) {
    ON_CUDA_MISSING(sparse_rows_reduce);
    // uniq[m], out[m,d], ids[n], rows[n,d], perm[n]; m <= n is returned
    if (n <= 0) return 0;
    int32_t lo = ids[0], hi = ids[0];
#pragma omp parallel for reduction(min : lo) reduction(max : hi)
    for (int64_t i = 0; i < n; i++) {
        lo = ids[i] < lo ? ids[i] : lo;
        hi = ids[i] > hi ? ids[i] : hi;
    }
    const int pb = bit_width((uint64_t)(n - 1));
    const int tb = pb + bit_width((uint64_t)((int64_t)hi - lo));
    const uint64_t pmask = ((uint64_t)1 << pb) - 1;
    uint64_t* key = (uint64_t*)perm;
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) key[i] = (uint64_t)((int64_t)ids[i] - lo) << pb | (uint64_t)i;
    radix_sort(key, n, tb > 8 ? tb - 8 : 0, 1);

    // thread t sums the ids starting in its share of the sorted keys, after
    // counting them so that it knows where its first one goes
    int64_t count[SR_MAXT + 1], m = 0;
    const int nt = omp_get_max_threads() < SR_MAXT ? omp_get_max_threads() : SR_MAXT;
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const int64_t b0 = segment_start(key, n, n * t / T, pb);
        const int64_t b1 = segment_start(key, n, n * (t + 1) / T, pb);
        int64_t c = 0;
        for (int64_t i = b0; i < b1; i++) c += i == b0 || key[i] >> pb != key[i - 1] >> pb;
        count[t + 1] = c;
#pragma omp barrier
#pragma omp single
        {
            count[0] = 0;
            for (int u = 0; u < T; u++) count[u + 1] += count[u];
            m = count[T];
        }
        real* o = out;
        for (int64_t i = b0, j = count[t]; i < b1; i++) {
            const real* src = rows + (int64_t)(key[i] & pmask) * d;
            if (i == b0 || key[i] >> pb != key[i - 1] >> pb) {
                uniq[j] = (int32_t)((int64_t)(key[i] >> pb) + lo);
                o = out + j++ * d;
                memcpy(o, src, sizeof(real) * d);
            } else {
                for (int c2 = 0; c2 < d; c2++) o[c2] += src[c2];
            }
        }
    }
    return m;
}

void adam_sparse_update(real* table, real* m, real* v, const int32_t* rows, const real* grads,
                        int64_t nrows, int d, real lr, real beta1, real beta2, real eps,
                        int64_t t) {
    ON_CUDA(adam_sparse_update, table, m, v, rows, grads, nrows, d, lr, beta1, beta2, eps, t);
    // table, m, v [*,d]; rows[nrows] (unique), grads[nrows,d]
    // the arithmetic of adamw_update with no decay, on rows[i] only
    const real bc1 = (real)(1.0 - pow((double)beta1, (double)t));
    const real bc2 = (real)(1.0 - pow((double)beta2, (double)t));
    const real step = lr / bc1, rbc2 = (real)(1.0 / sqrt((double)bc2));
#pragma omp parallel for
    for (int64_t i = 0; i < nrows; i++) {
        const int64_t o = (int64_t)rows[i] * d;
        const real* g = grads + i * d;
        real *p = table + o, *mi = m + o, *vi = v + o;
#pragma omp simd
        for (int c = 0; c < d; c++) {
            real mc = beta1 * mi[c] + (1 - beta1) * g[c];
            real vc = beta2 * vi[c] + (1 - beta2) * g[c] * g[c];
            mi[c] = mc;
            vi[c] = vc;
            p[c] = p[c] - step * mc / (sqrt(vc) * rbc2 + eps);
        }
    }
}
