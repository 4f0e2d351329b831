// group.c: the memory bank's exchange plan (kernels.h): ids grouped by owner,
// sums over runs of equal ids, owners' local rows, usage marks.
#include <stdint.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"

static int bit_width(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }

// keys[n] ascending, their low `bits` bits significant: least significant
// digit first, 11 bits a pass, through tmp[n]. Keys are distinct (each holds
// its position), so the order is the one any sort gives, and the passes
// replace a qsort that was most of a lookup's time.
static void radix_sort(uint64_t* keys, uint64_t* tmp, int64_t n, int bits) {
    enum { DIGIT = 11, BUCKETS = 1 << DIGIT };
    static int64_t count[BUCKETS];
    for (int shift = 0; shift < bits; shift += DIGIT) {
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < n; i++) count[(keys[i] >> shift) & (BUCKETS - 1)]++;
        for (int64_t j = 0, at = 0; j < BUCKETS; j++) {
            const int64_t c = count[j];
            count[j] = at, at += c;
        }
        for (int64_t i = 0; i < n; i++) tmp[count[(keys[i] >> shift) & (BUCKETS - 1)]++] = keys[i];
        uint64_t* t = keys;
        keys = tmp, tmp = t;
    }
    // an odd number of passes left the result in the caller's tmp
    if ((bits + DIGIT - 1) / DIGIT % 2) memcpy(tmp, keys, (size_t)n * sizeof *keys);
}

// The key of a position: its id's place in owner order above the position.
int64_t ids_group(int32_t* uniq, int32_t* row, int32_t* perm, int32_t* first, int64_t* counts,
                  const int32_t* ids, int64_t n, int64_t rows, int P, uint64_t* work) {
    int64_t u = 0;
    ON_CUDA_VALUE(ids_group, u, uniq, row, perm, first, counts, ids, n, rows, P, work);
    const int64_t per = (rows + P - 1) / P;  // local rows of rank 0, the most
    const int pb = bit_width((uint64_t)(n > 1 ? n - 1 : 1));
    uint64_t* key = work;
    for (int64_t i = 0; i < n; i++) {
        const int64_t id = ids[i];
        if (id < 0 || id >= rows) return -1;
        key[i] = (uint64_t)((id % P) * per + id / P) << pb | (uint64_t)i;
    }
    radix_sort(key, work + n, n, bit_width((uint64_t)P * per) + pb);
    for (int q = 0; q < P; q++) counts[q] = 0;
    uint64_t last = UINT64_MAX;
    const uint64_t low = ((uint64_t)1 << pb) - 1;
    for (int64_t k = 0; k < n; k++) {
        const uint64_t kk = key[k] >> pb;
        if (kk != last) {
            const int64_t owner = (int64_t)kk / per, local = (int64_t)kk % per;
            first[u] = (int32_t)k;
            uniq[u++] = (int32_t)(local * P + owner);
            counts[owner]++;
            last = kk;
        }
        perm[k] = (int32_t)(key[k] & low);
        row[perm[k]] = (int32_t)(u - 1);
    }
    first[u] = (int32_t)n;
    return u;
}

#ifdef KERNELS_F64
#define FMA fma
#else
#define FMA fmaf
#endif

void rows_sum_runs(real* out, const real* rows, const real* w, int group, const int32_t* perm,
                   const int32_t* first, int64_t u, int d) {
    ON_CUDA(rows_sum_runs, out, rows, w, group, perm, first, u, d);
#pragma omp parallel for if (u > 256)
    for (int64_t j = 0; j < u; j++) {
        real* o = out + (size_t)j * d;
        const int32_t a = perm[first[j]];
        if (!w) {
            memcpy(o, rows + (size_t)a * d, (size_t)d * sizeof(real));
            for (int32_t k = first[j] + 1; k < first[j + 1]; k++) {
                const real* g = rows + (size_t)perm[k] * d;
                for (int c = 0; c < d; c++) o[c] += g[c];
            }
            continue;
        }
        const real* g0 = rows + (size_t)(a / group) * d;
        for (int c = 0; c < d; c++) o[c] = w[a] * g0[c];
        for (int32_t k = first[j] + 1; k < first[j + 1]; k++) {
            const real wk = w[perm[k]], *g = rows + (size_t)(perm[k] / group) * d;
            for (int c = 0; c < d; c++) o[c] = FMA(wk, g[c], o[c]);
        }
    }
}

int64_t ids_local(int32_t* at, const int32_t* ids, int64_t n, int64_t rows, int P, int rank) {
    int64_t bad = 0;
    ON_CUDA_VALUE(ids_local, bad, at, ids, n, rows, P, rank);
    for (int64_t j = 0; j < n; j++) {
        const int64_t id = ids[j];
        if (id < 0 || id >= rows || id % P != rank)
            bad++, at[j] = 0;
        else
            at[j] = (int32_t)(id / P);
    }
    return bad;
}

void rows_mark(uint8_t* marks, const int32_t* rows, int64_t n) {
    ON_CUDA(rows_mark, marks, rows, n);
    for (int64_t i = 0; i < n; i++) marks[rows[i]] = 1;
}
