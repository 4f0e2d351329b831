// group.cu: the memory bank's exchange plan on the device (kernels.h): ids
// grouped by owner through CUB's stable radix sort and a scan, sums over runs
// of equal ids in the CPU's order, owners' local rows, usage marks. Only the
// counts that size the exchange come back to the host.
#include "common.cuh"

#include <cub/cub.cuh>

// key[i] = the place of ids[i] in owner order; val[i] = i; bad[0] counts ids
// out of range
__global__ void k_group_keys(uint32_t* key, int32_t* val, int* bad, const int32_t* ids, int64_t n,
                             int64_t rows, int P, int64_t per) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t id = ids[i];
        if (id < 0 || id >= rows) {
            atomicAdd(bad, 1);
            key[i] = 0;
        } else {
            key[i] = (uint32_t)((id % P) * per + id / P);
        }
        val[i] = (int32_t)i;
    }
}

// flag[k] = 1 where sorted key k starts a run
__global__ void k_group_flags(int32_t* flag, const uint32_t* skey, int64_t n) {
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x)
        flag[k] = k == 0 || skey[k] != skey[k - 1];
}

// from the runs' inclusive count pos[k]: row, uniq, first
__global__ void k_group_runs(int32_t* uniq, int32_t* row, int32_t* first, const uint32_t* skey,
                             const int32_t* perm, const int32_t* flag, const int32_t* pos,
                             int64_t n, int P, int64_t per) {
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        const int32_t j = pos[k] - 1;
        row[perm[k]] = j;
        if (flag[k]) {
            const int64_t owner = skey[k] / per, local = skey[k] % per;
            uniq[j] = (int32_t)(local * P + owner);
            first[j] = (int32_t)k;
        }
        if (k == n - 1) first[j + 1] = (int32_t)n;
    }
}

// out[q] = the distinct keys in [q per, (q + 1) per) for q < P; out[P] = u
__global__ void k_group_counts(int64_t* out, const uint32_t* skey, const int32_t* pos, int64_t n,
                               int P, int64_t per) {
    const auto runs_below = [&](int64_t bound) {  // distinct keys < bound
        int64_t lo = 0, hi = n;                   // first k with skey[k] >= bound
        while (lo < hi) {
            const int64_t mid = (lo + hi) / 2;
            if ((int64_t)skey[mid] < bound)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo ? (int64_t)pos[lo - 1] : 0;
    };
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q <= P; q += gridDim.x * blockDim.x)
        out[q] = q == P ? (n ? pos[n - 1] : 0) : runs_below((q + 1) * per) - runs_below(q * per);
}

// work (3n uint64): keys, sorted keys, positions, flags, run counts (4-byte
// arrays); cuda_scratch: CUB's storage, the counts and the bad-id count
extern "C" int64_t cuda_ids_group(int32_t* uniq, int32_t* row, int32_t* perm, int32_t* first,
                                  int64_t* counts, const int32_t* ids, int64_t n, int64_t rows,
                                  int P, uint64_t* work) {
    const int64_t per = (rows + P - 1) / P;
    const int bits = key_bits((uint64_t)P * per);
    uint32_t* key = (uint32_t*)work;
    uint32_t* skey = key + n;
    int32_t* val = (int32_t*)(skey + n);
    int32_t* flag = val + n;
    int32_t* pos = flag + n;
    size_t sort_bytes = 0, scan_bytes = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairs(NULL, sort_bytes, key, skey, val, perm, n, 0, bits,
                                              cuda_stream()));
    cudaCheck(cub::DeviceScan::InclusiveSum(NULL, scan_bytes, flag, pos, n, cuda_stream()));
    const size_t temp = align256(sort_bytes > scan_bytes ? sort_bytes : scan_bytes);
    char* scratch = (char*)cuda_scratch(temp + align256((size_t)(P + 1) * sizeof(int64_t)) + 256);
    int64_t* dcounts = (int64_t*)(scratch + temp);
    int* bad = (int*)(scratch + temp + align256((size_t)(P + 1) * sizeof(int64_t)));
    cudaCheck(cudaMemsetAsync(bad, 0, sizeof(int), cuda_stream()));
    if (n > 0) {
        const unsigned g = blocks_for(n, 256);
        k_group_keys<<<g, 256, 0, cuda_stream()>>>(key, val, bad, ids, n, rows, P, per);
        launchCheck();
        cudaCheck(cub::DeviceRadixSort::SortPairs(scratch, sort_bytes, key, skey, val, perm, n, 0,
                                                  bits, cuda_stream()));
        k_group_flags<<<g, 256, 0, cuda_stream()>>>(flag, skey, n);
        launchCheck();
        cudaCheck(cub::DeviceScan::InclusiveSum(scratch, scan_bytes, flag, pos, n, cuda_stream()));
        k_group_runs<<<g, 256, 0, cuda_stream()>>>(uniq, row, first, skey, perm, flag, pos, n, P,
                                                   per);
        launchCheck();
    } else {
        cudaCheck(cudaMemsetAsync(first, 0, sizeof(int32_t), cuda_stream()));
    }
    k_group_counts<<<blocks_for(P + 1, 128), 128, 0, cuda_stream()>>>(dcounts, skey, pos, n, P,
                                                                      per);
    launchCheck();
    // the host's share: the counts, u and the bad ids, in one wait
    int64_t* host = (int64_t*)malloc((size_t)(P + 2) * sizeof(int64_t));
    if (!host) cuda_fail(__FILE__, __LINE__, "malloc", "out of memory for the exchange's counts");
    cudaCheck(cudaMemcpyAsync(host, dcounts, (size_t)(P + 1) * sizeof(int64_t),
                              cudaMemcpyDeviceToHost, cuda_stream()));
    int nbad = 0;
    cudaCheck(cudaMemcpyAsync(&nbad, bad, sizeof nbad, cudaMemcpyDeviceToHost, cuda_stream()));
    cudaCheck(cudaStreamSynchronize(cuda_stream()));
    const int64_t u = host[P];
    for (int q = 0; q < P; q++) counts[q] = host[q];
    free(host);
    return nbad ? -1 : u;
}

// one block a run, its threads across the row: the run's rows added in order
// (weighted: a product, then fused multiply-adds, as the CPU rounds them);
// the loop unrolled so that the loads of 8 rows go out before their sums (a
// run's sum is serial: the longest run, a bank row most lookups chose, sets
// the time: 0.75 ms at 8 x 4096 on the H200 with a load's wait every row)
__global__ void k_rows_sum_runs(float* __restrict__ out, const float* __restrict__ rows,
                                const float* __restrict__ w, int group,
                                const int32_t* __restrict__ perm, const int32_t* __restrict__ first,
                                int64_t u, int d) {
    for (int64_t j = blockIdx.x; j < u; j += gridDim.x) {
        const int32_t a = first[j], b = first[j + 1];
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
            float s;
            if (!w) {
                s = rows[(int64_t)perm[a] * d + c];
#pragma unroll 8
                for (int32_t k = a + 1; k < b; k++)
                    s = __fadd_rn(s, rows[(int64_t)perm[k] * d + c]);
            } else {
                s = __fmul_rn(w[perm[a]], rows[(int64_t)(perm[a] / group) * d + c]);
#pragma unroll 8
                for (int32_t k = a + 1; k < b; k++)
                    s = __fmaf_rn(w[perm[k]], rows[(int64_t)(perm[k] / group) * d + c], s);
            }
            out[j * d + c] = s;
        }
    }
}

extern "C" void cuda_rows_sum_runs(float* out, const float* rows, const float* w, int group,
                                   const int32_t* perm, const int32_t* first, int64_t u, int d) {
    if (u <= 0 || d <= 0) return;
    const int threads = d < 32 ? 32 : d > 256 ? 256 : (d + 31) / 32 * 32;
    const unsigned blocks = (unsigned)(u < 65535 * 8 ? u : 65535 * 8);
    k_rows_sum_runs<<<blocks, threads, 0, cuda_stream()>>>(out, rows, w, group < 1 ? 1 : group,
                                                           perm, first, u, d);
    launchCheck();
}

__global__ void k_ids_local(int32_t* at, int* bad, const int32_t* ids, int64_t n, int64_t rows,
                            int P, int rank) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int64_t id = ids[j];
        if (id < 0 || id >= rows || id % P != rank) {
            atomicAdd(bad, 1);
            at[j] = 0;
        } else {
            at[j] = (int32_t)(id / P);
        }
    }
}

extern "C" int64_t cuda_ids_local(int32_t* at, const int32_t* ids, int64_t n, int64_t rows, int P,
                                  int rank) {
    if (n <= 0) return 0;
    int* bad = (int*)cuda_scratch(sizeof(int));
    cudaCheck(cudaMemsetAsync(bad, 0, sizeof(int), cuda_stream()));
    k_ids_local<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(at, bad, ids, n, rows, P, rank);
    launchCheck();
    int nbad = 0;
    cudaCheck(cudaMemcpyAsync(&nbad, bad, sizeof nbad, cudaMemcpyDeviceToHost, cuda_stream()));
    cudaCheck(cudaStreamSynchronize(cuda_stream()));
    return nbad;
}

__global__ void k_rows_mark(uint8_t* marks, const int32_t* rows, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        marks[rows[i]] = 1;
}

extern "C" void cuda_rows_mark(uint8_t* marks, const int32_t* rows, int64_t n) {
    if (n <= 0) return;
    k_rows_mark<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(marks, rows, n);
    launchCheck();
}
