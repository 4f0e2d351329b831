// recgrela.cu: RecGRELA's elementwise feature map (elu + 1), the full-width
// RoPE (angles in double, as on the CPU) and the causal depthwise convolution
// (kernels.h). The convolution's weight and bias gradients: one block per
// channel, a fixed-order reduction, no atomics.
#include <math.h>

#include "common.cuh"

#define FOR_N                                                               \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; \
         i += (int64_t)gridDim.x * blockDim.x)

__global__ void k_elu1_forward(float* out, const float* inp, int64_t n) {
    FOR_N {
        const float x = inp[i];
        out[i] = x > 0 ? x + 1 : expf(x);
    }
}
__global__ void k_elu1_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
    FOR_N {
        const float x = inp[i];
        dinp[i] += dout[i] * (x > 0 ? 1.0f : expf(x));
    }
}
extern "C" void cuda_elu1_forward(float* out, const float* inp, int64_t n) {
    if (n <= 0) return;
    k_elu1_forward<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(out, inp, n);
    launchCheck();
}
extern "C" void cuda_elu1_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
    if (n <= 0) return;
    k_elu1_backward<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(dinp, inp, dout, n);
    launchCheck();
}

// tab[t][p] = (cos, sin) of t * 10000^(-2p/d), in double: once a call for the
// L positions, shared by the B rows (a pow, a cos and a sin in double for
// every element before: 29 us a call at 32K x 64 on the H200)
__global__ void k_rope_table(double* tab, int L, int d) {
    const int np = d / 2;
    const int64_t n = (int64_t)L * np;
    FOR_N {
        const int t = (int)(i / np), p = (int)(i % np);
        const double th = pow(10000.0, -2.0 * p / d), a = (double)t * th;
        tab[2 * i] = cos(a), tab[2 * i + 1] = sin(a);
    }
}

// one thread per pair (b, t, i); sign -1 is the inverse rotation, acc adds
__global__ void k_rope(float* out, const float* inp, const double* tab, int B, int L, int d,
                       double sign, int acc) {
    const int np = d / 2;
    const int64_t n = (int64_t)B * L * (np + (d & 1));
    FOR_N {
        const int64_t row = i / (np + (d & 1));
        const int p = (int)(i % (np + (d & 1)));
        const int t = (int)(row % L);
        const float* x = inp + row * d;
        float* y = out + row * d;
        if (p == np) {  // an odd last dim passes through
            y[d - 1] = acc ? y[d - 1] + x[d - 1] : x[d - 1];
            continue;
        }
        const double* cs_sn = tab + 2 * ((int64_t)t * np + p);
        const double cs = cs_sn[0], sn = sign * cs_sn[1];
        const double x0 = x[2 * p], x1 = x[2 * p + 1];
        const float y0 = (float)(x0 * cs - x1 * sn), y1 = (float)(x0 * sn + x1 * cs);
        y[2 * p] = acc ? y[2 * p] + y0 : y0;
        y[2 * p + 1] = acc ? y[2 * p + 1] + y1 : y1;
    }
}
static void rope(float* out, const float* inp, int B, int L, int d, double sign, int acc) {
    const int64_t n = (int64_t)B * L * (d / 2 + (d & 1)), nt = (int64_t)L * (d / 2);
    if (n <= 0) return;
    double* tab = (double*)cuda_scratch((size_t)(2 * nt + 1) * sizeof(double));
    k_rope_table<<<blocks_for(nt, 256), 256, 0, cuda_stream()>>>(tab, L, d);
    launchCheck();
    k_rope<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(out, inp, tab, B, L, d, sign, acc);
    launchCheck();
}
extern "C" void cuda_rope_forward(float* out, const float* inp, int B, int L, int d) {
    rope(out, inp, B, L, d, 1.0, 0);
}
extern "C" void cuda_rope_backward(float* dinp, const float* dout, int B, int L, int d) {
    rope(dinp, dout, B, L, d, -1.0, 1);
}

// out[b,t,c] = bias[c] + sum over taps i with t - i >= pad[b] of w[c,i] inp[b,t-i,c]
__global__ void k_conv_forward(float* out, const float* inp, const float* w, const float* bias,
                               const int32_t* pad, int B, int L, int d, int K) {
    const int64_t n = (int64_t)B * L * d;
    FOR_N {
        const int c = (int)(i % d);
        const int64_t bt = i / d;
        const int t = (int)(bt % L), b = (int)(bt / L);
        float o = bias[c];
        for (int k = 0; k < K && t - k >= pad[b]; k++)
            o += w[(int64_t)c * K + k] * inp[((int64_t)b * L + t - k) * d + c];
        out[i] = o;
    }
}
// dinp[b,s,c] += sum over taps i with s + i < L of w[c,i] dout[b,s+i,c]; none before pad[b]
__global__ void k_conv_dinp(float* dinp, const float* dout, const float* w, const int32_t* pad,
                            int B, int L, int d, int K) {
    const int64_t n = (int64_t)B * L * d;
    FOR_N {
        const int c = (int)(i % d);
        const int64_t bt = i / d;
        const int s = (int)(bt % L), b = (int)(bt / L);
        if (s < pad[b]) continue;
        float g = 0;
        for (int k = 0; k < K && s + k < L; k++)
            g += w[(int64_t)c * K + k] * dout[((int64_t)b * L + s + k) * d + c];
        dinp[i] += g;
    }
}
// dbias[c] (every position) and dw[c, 0..K) (positions t >= pad[b] + k), in
// two passes: block s sums its slice of CONV_SLICE rows, a thread a column
// (reads along rows, coalesced), into part[s][c][K + 1]; then each (c, k)
// sums the slices in order. (The first version gave each column one block
// striding down its rows: d blocks, every read a separate cache line.) A
// thread sums one tap at a time over the slice, a register accumulator and
// loads that wait for nothing (the K + 1 sums of a row at once lived in local
// memory: 0.26 ms a layer on the H200 at 32K rows), in the same order.
#define CONV_SLICE 256
__global__ void k_conv_dw_part(float* __restrict__ part, const float* __restrict__ dout,
                               const float* __restrict__ inp, const int32_t* __restrict__ pad,
                               int L, int d, int K, int64_t rows) {
    const int64_t r0 = (int64_t)blockIdx.x * CONV_SLICE,
                  r1 = r0 + CONV_SLICE < rows ? r0 + CONV_SLICE : rows;
    for (int c = threadIdx.x; c < d; c += blockDim.x)
        for (int k = -1; k < K; k++) {  // -1: the bias
            float acc = 0;
            int t = (int)(r0 % L), b = (int)(r0 / L);
#pragma unroll 4
            for (int64_t r = r0; r < r1; r++) {
                const float g = dout[r * d + c];
                if (k < 0)
                    acc += g;
                else if (t >= pad[b] + k)
                    acc += g * inp[(r - k) * d + c];
                if (++t == L) t = 0, b++;
            }
            part[((int64_t)blockIdx.x * d + c) * (K + 1) + 1 + k] = acc;
        }
}
__global__ void k_conv_dw_total(float* dw, float* dbias, const float* part, int S, int d, int K) {
    const int n = d * (K + 1);
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x) {
        float a = 0;
#pragma unroll 8
        for (int s = 0; s < S; s++) a += part[(int64_t)s * n + e];
        const int c = e / (K + 1), k = e % (K + 1);
        if (k == 0) {
            if (dbias) dbias[c] += a;
        } else if (dw) {
            dw[(int64_t)c * K + k - 1] += a;
        }
    }
}
extern "C" void cuda_conv_causal_forward(float* out, const float* inp, const float* w,
                                         const float* bias, const int32_t* pad, int B, int L, int d,
                                         int K) {
    const int64_t n = (int64_t)B * L * d;
    if (n <= 0) return;
    k_conv_forward<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(out, inp, w, bias, pad, B, L, d,
                                                                  K);
    launchCheck();
}
extern "C" void cuda_conv_causal_backward(float* dinp, float* dw, float* dbias, const float* dout,
                                          const float* inp, const float* w, const int32_t* pad,
                                          int B, int L, int d, int K) {
    const int64_t n = (int64_t)B * L * d;
    if (n <= 0) return;
    if (dinp) {
        k_conv_dinp<<<blocks_for(n, 256), 256, 0, cuda_stream()>>>(dinp, dout, w, pad, B, L, d, K);
        launchCheck();
    }
    if (dw || dbias) {
        if (K > 64) cuda_fail(__FILE__, __LINE__, "conv_causal_backward", "over 64 taps");
        const int64_t rows = (int64_t)B * L;
        const int S = (int)((rows + CONV_SLICE - 1) / CONV_SLICE);
        float* part = (float*)cuda_scratch((size_t)S * d * (K + 1) * sizeof(float));
        const int threads = d < 256 ? (d + 31) / 32 * 32 : 256;
        k_conv_dw_part<<<S, threads, 0, cuda_stream()>>>(part, dout, inp, pad, L, d, K, rows);
        launchCheck();
        k_conv_dw_total<<<blocks_for((int64_t)d * (K + 1), 128), 128, 0, cuda_stream()>>>(
            dw, dbias, part, S, d, K);
        launchCheck();
    }
}
