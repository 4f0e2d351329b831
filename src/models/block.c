// block.c: the FFN half of the pre-LN blocks, shared by every model.
#include "block.h"

#include <math.h>
#include <string.h>

#include "device.h"
#include "init.h"

uint64_t block_seed(uint64_t seed, int layer, int site) {
    return rng_hash64(seed, 1000003ull * (uint64_t)(layer + 1) + (uint64_t)site);
}

void ffn_add_tensors(model* m, ffn_half* o, int nl) {
    const int d = m->d;
    o->ln2w = layer_tensor_add(m, "ln2w", nl, d, 0);
    o->ln2b = layer_tensor_add(m, "ln2b", nl, d, 0);
    o->fcw = layer_tensor_add(m, "fcw", nl, 4 * d, d);
    o->fcb = layer_tensor_add(m, "fcb", nl, 4 * d, 0);
    o->fcprojw = layer_tensor_add(m, "fcprojw", nl, d, 4 * d);
    o->fcprojb = layer_tensor_add(m, "fcprojb", nl, d, 0);
}

void ffn_init(model* m, const ffn_half* o, int nl, uint64_t seed) {
    real* P = m->params;
    const int d = m->d;
    init_const(P + o->ln2w, (size_t)nl * d, 1);
    init_const(P + o->ln2b, (size_t)nl * d, 0);
    init_normal(P + o->fcw, (size_t)nl * 4 * d * d, 0.02, seed, 5);
    init_const(P + o->fcb, (size_t)nl * 4 * d, 0);
    init_normal(P + o->fcprojw, (size_t)nl * 4 * d * d, 0.02 / sqrt(2.0 * nl), seed, 6);
    init_const(P + o->fcprojb, (size_t)nl * d, 0);
}

int ffn_block_rows(size_t BL) {
    const size_t most = device_current() == DEVICE_CUDA ? 16384 : 1024;
    return (int)(BL < most ? BL : most);
}

size_t ffn_scratch_floats(int d, int rows) { return (size_t)rows * (13 * (size_t)d + 2); }

void ffn_scratch_carve(ffn_scratch* s, int d, int rows) {
    const size_t nd = (size_t)rows * d;
    s->ln2 = s->base, s->mean = s->base + nd, s->rstd = s->mean + rows;
    s->fch = s->rstd + rows, s->g = s->fch + 4 * nd, s->dg = s->g + 4 * nd;
}

// Layer l's kept activations of rows [r0, r0+n), or the scratch they are
// rebuilt in.
static ffn_acts block_acts(const ffn_half* f, int d, int l, int r0) {
    if (f->recompute) return (ffn_acts){f->s.ln2, f->s.mean, f->s.rstd, f->s.fch};
    const size_t r = (size_t)l * f->rows + (size_t)r0;
    return (ffn_acts){f->kept.ln2 + r * d, f->kept.mean + r, f->kept.rstd + r,
                      f->kept.fch + r * 4 * d};
}

static void fc_forward(const ffn_acts* b, const real* res2, const model* m, const ffn_half* o,
                       int l, int n) {
    const int d = m->d;
    const real* P = m->params;
    layernorm_forward(b->ln2, b->mean, b->rstd, res2, P + o->ln2w + l * d, P + o->ln2b + l * d, n,
                      d);
    matmul_forward(b->fch, b->ln2, P + o->fcw + (size_t)l * 4 * d * d, P + o->fcb + l * 4 * d, n, d,
                   4 * d);
}

void ffn_forward(real* res3, const real* res2, const model* m, const ffn_half* o, int l, real* tmp,
                 real p, uint64_t seed, int R) {
    const ffn_scratch* s = &o->s;
    const int d = m->d;
    const real* P = m->params;
    const size_t w = (size_t)l * 4 * d * d;
    for (int r0 = 0; r0 < R; r0 += m->ffn_rows) {
        const int n = R - r0 < m->ffn_rows ? R - r0 : m->ffn_rows;
        const ffn_acts b = block_acts(o, d, l, r0);
        fc_forward(&b, res2 + (size_t)r0 * d, m, o, l, n);
        gelu_forward(s->g, b.fch, (int64_t)n * 4 * d);
        matmul_forward(tmp + (size_t)r0 * d, s->g, P + o->fcprojw + w, P + o->fcprojb + l * d, n,
                       4 * d, d);
    }
    dropout_forward(tmp, tmp, p, block_seed(seed, l, 2), model_elem0(m), (int64_t)R * d);
    residual_forward(res3, res2, tmp, (int64_t)R * d);
}

void ffn_backward(real* dres, model* m, const ffn_half* o, int l, const real* res2, real* dbuf,
                  real p, uint64_t seed, int R) {
    const ffn_scratch* s = &o->s;
    const int d = m->d;
    const size_t nd = (size_t)R * d, w = (size_t)l * 4 * d * d;
    const real* P = m->params;
    real* G = m->grads;
    dev_zero(dbuf, nd * sizeof(real));
    dropout_backward(dbuf, dres, p, block_seed(seed, l, 2), model_elem0(m), (int64_t)nd);
    for (int r0 = 0; r0 < R; r0 += m->ffn_rows) {
        const int n = R - r0 < m->ffn_rows ? R - r0 : m->ffn_rows;
        const size_t n4 = (size_t)n * 4 * d;
        const ffn_acts b = block_acts(o, d, l, r0);
        const real* x = res2 + (size_t)r0 * d;
        if (o->recompute) fc_forward(&b, x, m, o, l, n);
        gelu_forward(s->g, b.fch, (int64_t)n4);  // recomputed, not kept from forward
        dev_zero(s->dg, n4 * sizeof(real));
        matmul_backward(s->dg, G + o->fcprojw + w, G + o->fcprojb + l * d, dbuf + (size_t)r0 * d,
                        s->g, P + o->fcprojw + w, n, 4 * d, d);
        real *dfch = s->g, *dln2 = s->dg;  // g is dead once fcproj's gradients are taken
        dev_zero(dfch, n4 * sizeof(real));
        gelu_backward(dfch, b.fch, s->dg, (int64_t)n4);
        dev_zero(dln2, (size_t)n * d * sizeof(real));
        matmul_backward(dln2, G + o->fcw + w, G + o->fcb + l * 4 * d, dfch, b.ln2, P + o->fcw + w,
                        n, d, 4 * d);
        // res3 = res2 + FFN(res2): dres already carries the identity path
        layernorm_backward(dres + (size_t)r0 * d, G + o->ln2w + l * d, G + o->ln2b + l * d, dln2, x,
                           P + o->ln2w + l * d, b.mean, b.rstd, n, d);
    }
}

int block_last_group(const model* m) { return m->L / 2 < 64 ? m->L / 2 : 64; }

void block_last_rows(model* m, const ffn_half* f, int l, const real* x, real* ylast, const real* w,
                     const real* bias, const real* lnfw, const real* lnfb, real* mean, real* rstd,
                     real* scratch, int B) {
    const int d = m->d, G = block_last_group(m), Bp = (B + G - 1) / G * G;
    const size_t gd = (size_t)G * d;
    real *xl = scratch, *t = xl + gd, *r2 = t + gd, *r3 = r2 + gd, *ol = r3 + gd;
    if (Bp > B) dev_zero(ylast + (size_t)B * d, (size_t)(Bp - B) * d * sizeof(real));
    for (int g0 = 0; g0 < B; g0 += G) {
        const int n = B - g0 < G ? B - g0 : G;  // the group's real rows; zeros after them
        if (n < G) dev_zero(xl + (size_t)n * d, (size_t)(G - n) * d * sizeof(real));
        rows_gather(xl, x, m->last_rows + g0, n, d);
        matmul_forward(t, ylast + (size_t)g0 * d, w, bias, G, d, d);
        residual_forward(r2, xl, t, (int64_t)gd);
        ffn_forward(r3, r2, m, f, l, t, 0, 0, G);
        layernorm_forward(ol, mean, rstd, r3, lnfw, lnfb, G, d);
        rows_scatter(m->out, ol, m->last_rows + g0, n, d);
    }
}

void rope_row(real* y, const real* x, int64_t t, int n) {
    for (int i = 0; i < n / 2; i++) {
        const double th = (double)t * pow(10000.0, -2.0 * i / n), c = cos(th), sn = sin(th);
        const double x0 = x[2 * i], x1 = x[2 * i + 1];
        y[2 * i] = (real)(x0 * c - x1 * sn);
        y[2 * i + 1] = (real)(x0 * sn + x1 * c);
    }
    if (n % 2) y[n - 1] = x[n - 1];
}
