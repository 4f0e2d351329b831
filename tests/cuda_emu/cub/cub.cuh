// cub/cub.cuh of the CUDA emulator (tests/cuda_emu/cuda_runtime.h): the CUB
// algorithms the backend calls, cub::DeviceRadixSort::SortPairs (and
// cub::DeviceScan::InclusiveSum, at the end), with CUB's
// two-phase temporary storage (a first call with d_temp_storage == NULL only
// sets temp_storage_bytes). The emulator's compile line puts -Itests/cuda_emu
// first, so <cub/cub.cuh> is this file there and the real CUB under nvcc.
// What it emulates: the result (a stable sort of the (key, value) pairs by the
// key's bits [begin_bit, end_bit), signed keys ordered as numbers, as CUB's
// bit twiddling does), the size query, and the misuses the emulator can see:
// every array and the temporary storage must lie within one cudaMalloc block,
// the temporary storage must be at least the bytes the query asked for and
// overlap no array, and the outputs must overlap no input. The storage is
// scribbled over before the inputs are read, as the real passes would.
// What not: the GPU's passes, their speed and stream ordering (it runs at
// once, like every emulated call), floating-point keys, descending order,
// DoubleBuffer overloads and every other CUB algorithm.
#ifndef ELASTIC_CUDA_EMU_CUB_CUH
#define ELASTIC_CUDA_EMU_CUB_CUH

#include <algorithm>
#include <type_traits>
#include <utility>

#include "../cuda_runtime.h"

namespace emu {
// [p, p + bytes) lies within one live cudaMalloc block
inline void need_device_range(const void* p, size_t bytes, const char* what, int i) {
    need_device(p, what, i);
    if (!bytes) return;
    const auto u = (uintptr_t)p;
    auto it = blocks.upper_bound(u);
    --it;  // need_device found p in a block
    if (u + bytes > it->first + it->second) {
        fprintf(stderr, "cuda_emu: %s: argument %d (%p, %zu bytes) runs past its device block\n",
                what, i, p, bytes);
        abort();
    }
}
inline bool overlap(const void* a, size_t na, const void* b, size_t nb) {
    const auto x = (uintptr_t)a, y = (uintptr_t)b;
    return na && nb && x < y + nb && y < x + na;
}
}  // namespace emu

namespace cub {
struct DeviceRadixSort {
    template <typename KeyT, typename ValueT, typename NumItemsT>
    static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes,
                                 const KeyT* d_keys_in, KeyT* d_keys_out, const ValueT* d_values_in,
                                 ValueT* d_values_out, NumItemsT num_items, int begin_bit = 0,
                                 int end_bit = sizeof(KeyT) * 8, cudaStream_t stream = 0) {
        static_assert(std::is_integral_v<KeyT>, "the emulated SortPairs takes integer keys");
        (void)stream;
        const char* what = "cub::DeviceRadixSort::SortPairs";
        emu::not_while_capturing(what);  // not recorded: the backend captures none
        const size_t n = num_items > 0 ? (size_t)num_items : 0;
        // about what CUB asks: a second buffer of keys and values, histograms
        const size_t need = n * (sizeof(KeyT) + sizeof(ValueT)) + 4096;
        if (!d_temp_storage) return temp_storage_bytes = need, cudaSuccess;
        if (temp_storage_bytes < need || begin_bit < 0 || end_bit > (int)sizeof(KeyT) * 8 ||
            begin_bit >= end_bit) {
            fprintf(stderr,
                    "cuda_emu: %s: %zu bytes of temporary storage (%zu asked), bits [%d, %d)\n",
                    what, temp_storage_bytes, need, begin_bit, end_bit);
            abort();
        }
        const size_t kb = n * sizeof(KeyT), vb = n * sizeof(ValueT);
        emu::need_device_range(d_temp_storage, temp_storage_bytes, what, 0);
        emu::need_device_range(d_keys_in, kb, what, 2);
        emu::need_device_range(d_keys_out, kb, what, 3);
        emu::need_device_range(d_values_in, vb, what, 4);
        emu::need_device_range(d_values_out, vb, what, 5);
        const std::pair<const void*, size_t> arr[] = {
            {d_keys_in, kb}, {d_keys_out, kb}, {d_values_in, vb}, {d_values_out, vb}};
        for (int a = 0; a < 4; a++)
            if (emu::overlap(d_temp_storage, temp_storage_bytes, arr[a].first, arr[a].second)) {
                fprintf(stderr, "cuda_emu: %s: the temporary storage overlaps argument %d\n", what,
                        a + 2);
                abort();
            }
        for (int o = 1; o < 4; o += 2)
            for (int in = 0; in < 4; in += 2)
                if (emu::overlap(arr[o].first, arr[o].second, arr[in].first, arr[in].second)) {
                    fprintf(stderr, "cuda_emu: %s: output argument %d overlaps input argument %d\n",
                            what, o + 2, in + 2);
                    abort();
                }
        memset(d_temp_storage, 0xff, temp_storage_bytes);
        // the sort key: the key's bits, the sign bit flipped for signed types, then [begin, end)
        using U = std::make_unsigned_t<KeyT>;
        const auto bits = [&](KeyT k) {
            U u = (U)k;
            if constexpr (std::is_signed_v<KeyT>) u ^= (U)((U)1 << (sizeof(KeyT) * 8 - 1));
            const int w = end_bit - begin_bit;
            const U mask = w >= (int)sizeof(U) * 8 ? (U) ~(U)0 : (U)(((U)1 << w) - 1);
            return (U)((u >> begin_bit) & mask);
        };
        std::vector<std::pair<KeyT, ValueT>> v(n);
        for (size_t i = 0; i < n; i++) v[i] = {d_keys_in[i], d_values_in[i]};
        std::stable_sort(v.begin(), v.end(), [&](const auto& a, const auto& b) {
            return bits(a.first) < bits(b.first);
        });
        for (size_t i = 0; i < n; i++) d_keys_out[i] = v[i].first, d_values_out[i] = v[i].second;
        return cudaSuccess;
    }
};

// cub::DeviceScan::InclusiveSum: out[i] = in[0] + ... + in[i], with the same
// two-phase temporary storage and the same misuse checks (out may be in).
struct DeviceScan {
    template <typename InT, typename OutT, typename NumItemsT>
    static cudaError_t InclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, const InT* in,
                                    OutT* out, NumItemsT num_items, cudaStream_t stream = 0) {
        (void)stream;
        const char* what = "cub::DeviceScan::InclusiveSum";
        emu::not_while_capturing(what);
        const size_t n = num_items > 0 ? (size_t)num_items : 0, need = 1024;
        if (!d_temp_storage) return temp_storage_bytes = need, cudaSuccess;
        if (temp_storage_bytes < need) {
            fprintf(stderr, "cuda_emu: %s: %zu bytes of temporary storage (%zu asked)\n", what,
                    temp_storage_bytes, need);
            abort();
        }
        emu::need_device_range(d_temp_storage, temp_storage_bytes, what, 0);
        emu::need_device_range(in, n * sizeof(InT), what, 2);
        emu::need_device_range(out, n * sizeof(OutT), what, 3);
        if (emu::overlap(d_temp_storage, temp_storage_bytes, in, n * sizeof(InT)) ||
            emu::overlap(d_temp_storage, temp_storage_bytes, out, n * sizeof(OutT))) {
            fprintf(stderr, "cuda_emu: %s: the temporary storage overlaps an array\n", what);
            abort();
        }
        memset(d_temp_storage, 0xff, temp_storage_bytes);
        OutT s = 0;
        for (size_t i = 0; i < n; i++) s += (OutT)in[i], out[i] = s;
        return cudaSuccess;
    }
};
}  // namespace cub

#endif
