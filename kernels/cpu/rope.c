// rope.c: RecGRELA's feature map phi = elu + 1 and the full-width RoPE
// (DESIGN §3). RoPE rotates pair i = dims (2i, 2i+1) of each d-wide row at
// position t by the angle t * 10000^(-2i/d), computed in double; backward is
// the transpose, i.e. the inverse rotation. Angles are computed once per
// position and shared by the B rows of that position, so the trig cost is
// O(L*d), not O(B*L*d), and no angle recurrence drifts.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "on_cuda.h"
#include "vmath.h"

void elu1_forward(real* out, const real* inp, int64_t n) {
    ON_CUDA(elu1_forward, out, inp, n);
    // out[n], inp[n]; out may alias inp
    // exp only of x <= 0, so the branch not taken never overflows
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        const real x = inp[i];
        const real e = vexp(x > 0 ? 0 : x);
        out[i] = x > 0 ? x + 1 : e;
    }
}

void elu1_backward(real* dinp, const real* inp, const real* dout, int64_t n) {
    ON_CUDA(elu1_backward, dinp, inp, dout, n);
    // dinp[n], inp[n], dout[n]; d phi/dx = 1 for x > 0, exp(x) otherwise
#pragma omp parallel for simd
    for (int64_t i = 0; i < n; i++) {
        const real x = inp[i];
        const real e = vexp(x > 0 ? 0 : x);
        dinp[i] += dout[i] * (x > 0 ? 1 : e);
    }
}

// out = R(t) inp (sign = 1) or R(t)^T inp (sign = -1) for every row; acc adds
// into out. (x0, x1) becomes (x0 c - x1 s, x0 s + x1 c), s = sign * sin. out
// may alias inp: a pair is read whole before it is written. An odd last dim
// has no pair and passes through.
static void rope_apply(real* out, const real* inp, int B, int L, int d, double sign, int acc) {
    const int np = d / 2;
    double th[np > 0 ? np : 1];
    for (int i = 0; i < np; i++) th[i] = pow(10000.0, -2.0 * i / d);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < L; t++) {
        double cs[np > 0 ? np : 1], sn[np > 0 ? np : 1];
        for (int i = 0; i < np; i++) {
            cs[i] = cos((double)t * th[i]);
            sn[i] = sign * sin((double)t * th[i]);
        }
        for (int b = 0; b < B; b++) {
            const ptrdiff_t o = ((ptrdiff_t)b * L + t) * d;
            const real* x = inp + o;
            real* y = out + o;
            for (int i = 0; i < np; i++) {
                const double x0 = x[2 * i], x1 = x[2 * i + 1];
                const real y0 = (real)(x0 * cs[i] - x1 * sn[i]);
                const real y1 = (real)(x0 * sn[i] + x1 * cs[i]);
                y[2 * i] = acc ? y[2 * i] + y0 : y0;
                y[2 * i + 1] = acc ? y[2 * i + 1] + y1 : y1;
            }
            if (d & 1) y[d - 1] = acc ? y[d - 1] + x[d - 1] : x[d - 1];
        }
    }
}

void rope_forward(real* out, const real* inp, int B, int L, int d) {
    ON_CUDA(rope_forward, out, inp, B, L, d);
    // out[B,L,d], inp[B,L,d]; out may alias inp
    rope_apply(out, inp, B, L, d, 1, 0);
}

void rope_backward(real* dinp, const real* dout, int B, int L, int d) {
    ON_CUDA(rope_backward, dinp, dout, B, L, d);
    // dinp[B,L,d] += R(t)^T dout[B,L,d]
    rope_apply(dinp, dout, B, L, d, -1, 1);
}
