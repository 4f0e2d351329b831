// rows.c: gathers and scatters of rows, and the sum of squares (kernels.h).
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "on_cuda.h"

void rows_gather(real* out, const real* in, const int32_t* rows, int R, int d) {
    ON_CUDA(rows_gather, out, in, rows, R, d);
    // out[R,d], in[*,d], rows[R]
#pragma omp parallel for if (R > 256)
    for (int r = 0; r < R; r++)
        memcpy(out + (int64_t)r * d, in + (int64_t)rows[r] * d, (size_t)d * sizeof(real));
}

void rows_scatter(real* out, const real* in, const int32_t* rows, int R, int d) {
    ON_CUDA(rows_scatter, out, in, rows, R, d);
    // out[*,d], in[R,d], rows[R] distinct
#pragma omp parallel for if (R > 256)
    for (int r = 0; r < R; r++)
        memcpy(out + (int64_t)rows[r] * d, in + (int64_t)r * d, (size_t)d * sizeof(real));
}

// Fixed slices summed in order, then the slices' sums in order: the same bits
// for any thread count.
#define SQ_SLICES 64
double sum_squares(const real* x, int64_t n) {
    double s = 0;
    ON_CUDA_VALUE(sum_squares, s, x, n);
    double part[SQ_SLICES];
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int k = 0; k < SQ_SLICES; k++) {
        const int64_t a = n * k / SQ_SLICES, b = n * (k + 1) / SQ_SLICES;
        double t = 0;
        for (int64_t i = a; i < b; i++) t += (double)x[i] * x[i];
        part[k] = t;
    }
    for (int k = 0; k < SQ_SLICES; k++) s += part[k];
    return s;
}

void sum_squares_into(double* out, const real* x, int64_t n) {
    ON_CUDA(sum_squares_into, out, x, n);
    *out = sum_squares(x, n);
}
