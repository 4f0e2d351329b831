// mma.h of the CUDA emulator (tests/cuda_emu): the warp matrix functions
// (nvcuda::wmma) the backend uses, TF32 in with FP32 sums for 16 x 16 x 8
// tiles, IEEE half in with FP32 sums for 16 x 16 x 16. On a GPU a fragment is spread over the
// warp's 32 threads in an unspecified layout; here every thread holds the whole tile and computes
// it (the same values, stored by every thread), so kernels must treat
// fragments as opaque, as on a GPU. Loads and stores are warp-synchronous,
// as on a GPU: every lane has loaded before any stores (an accumulator
// loaded, added to and stored in place is added once, not once a lane). TF32 is modelled (inputs
// rounded to 10 mantissa bits as cvt.rna does; the sums in FP32, in k order). The loads and stores
// check what the hardware requires and stops the run otherwise: a 256-bit aligned pointer and a
// leading dimension a multiple of 16 bytes (4 floats, 8 halves).
#ifndef ELASTIC_CUDA_EMU_MMA_H
#define ELASTIC_CUDA_EMU_MMA_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment;
template <int M, int N, int K, class Layout>
struct fragment<matrix_a, M, N, K, precision::tf32, Layout> {
    static constexpr int num_elements = M * K;
    float x[M * K];  // [M][K]
};
template <int M, int N, int K, class Layout>
struct fragment<matrix_b, M, N, K, precision::tf32, Layout> {
    static constexpr int num_elements = K * N;
    float x[K * N];  // [K][N]
};
template <int M, int N, int K, class Layout>
struct fragment<matrix_a, M, N, K, __half, Layout> {
    static constexpr int num_elements = M * K;
    float x[M * K];  // [M][K], each a half's value
};
template <int M, int N, int K, class Layout>
struct fragment<matrix_b, M, N, K, __half, Layout> {
    static constexpr int num_elements = K * N;
    float x[K * N];  // [K][N], each a half's value
};
template <int M, int N, int K>
struct fragment<accumulator, M, N, K, float, void> {
    static constexpr int num_elements = M * N;
    float x[M * N];  // [M][N]
};

inline void emu_wmma_check(const void* p, unsigned ldm, const char* what, unsigned elem = 4) {
    if ((uintptr_t)p % 32 || ldm * elem % 16) {
        fprintf(stderr,
                "cuda_emu: wmma %s at %p, leading dimension %u: the pointer must be 32-byte "
                "aligned and the leading dimension a multiple of 16 bytes\n",
                what, p, ldm);
        abort();
    }
}

// x[r][c] of an R x C operand from p: p[r ldm + c] row-major, p[c ldm + r]
// column-major (A(i, k) is x[i][k], B(k, j) is x[k][j]; layout L)
template <class L, class T>
inline void emu_operand(float* x, const T* p, unsigned ldm, int R, int C) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            const T v =
                std::is_same_v<L, row_major> ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
            if constexpr (std::is_same_v<T, __half>)
                x[r * C + c] = __half2float(v);
            else
                x[r * C + c] = v;
        }
}
// matrix_a (M x K) or matrix_b (K x N) from floats (TF32) or halves
template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm) {
    constexpr bool a = std::is_same_v<Use, matrix_a>;
    emu_wmma_check(p, ldm, a ? "load_matrix_sync (matrix_a)" : "load_matrix_sync (matrix_b)",
                   sizeof(P));
    emu_operand<L>(f.x, p, ldm, a ? M : K, a ? K : N);
    emu::wait(emu::AT_WARP);
}
template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float, void>& f, const float* p,
                             unsigned ldm, layout_t l) {
    emu_wmma_check(p, ldm, "load_matrix_sync (accumulator)");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            f.x[i * N + j] = l == mem_row_major ? p[(size_t)i * ldm + j] : p[(size_t)j * ldm + i];
    emu::wait(emu::AT_WARP);
}
template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float, void>& f,
                              unsigned ldm, layout_t l) {
    emu_wmma_check(p, ldm, "store_matrix_sync");
    emu::wait(emu::AT_WARP);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            (l == mem_row_major ? p[(size_t)i * ldm + j] : p[(size_t)j * ldm + i]) = f.x[i * N + j];
}
template <class F>
inline void fill_fragment(F& f, float v) {
    for (int i = 0; i < F::num_elements; i++) f.x[i] = v;
}
template <int M, int N, int K, class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float, void>& d,
                     const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b,
                     const fragment<accumulator, M, N, K, float, void>& c) {
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.x[i * N + j];
            for (int k = 0; k < K; k++) s += a.x[i * K + k] * b.x[k * N + j];
            out[i * N + j] = s;
        }
    memcpy(d.x, out, sizeof out);
}
// to TF32: 10 mantissa bits, the nearest, ties away from zero (cvt.rna)
inline float __float_to_tf32(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
    memcpy(&v, &u, 4);
    return v;
}
}  // namespace wmma
}  // namespace nvcuda

#endif
