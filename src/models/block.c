// block.c: the FFN half of the pre-LN blocks, shared by every model.
#include "block.h"

#include <math.h>
#include <string.h>

#include "init.h"

uint64_t block_seed(uint64_t seed, int layer, int site) {
    return rng_hash64(seed, 1000003ull * (uint64_t)(layer + 1) + (uint64_t)site);
}

void ffn_add_tensors(model* m, ffn_offsets* o, int nl) {
    const int d = m->d;
    o->ln2w = tensor_add(m, "ln2w", nl, d, 0);
    o->ln2b = tensor_add(m, "ln2b", nl, d, 0);
    o->fcw = tensor_add(m, "fcw", nl, 4 * d, d);
    o->fcb = tensor_add(m, "fcb", nl, 4 * d, 0);
    o->fcprojw = tensor_add(m, "fcprojw", nl, d, 4 * d);
    o->fcprojb = tensor_add(m, "fcprojb", nl, d, 0);
}

void ffn_init(model* m, const ffn_offsets* o, int nl, uint64_t seed) {
    real* P = m->params;
    const int d = m->d;
    init_const(P + o->ln2w, (size_t)nl * d, 1);
    init_const(P + o->ln2b, (size_t)nl * d, 0);
    init_normal(P + o->fcw, (size_t)nl * 4 * d * d, 0.02, seed, 5);
    init_const(P + o->fcb, (size_t)nl * 4 * d, 0);
    init_normal(P + o->fcprojw, (size_t)nl * 4 * d * d, 0.02 / sqrt(2.0 * nl), seed, 6);
    init_const(P + o->fcprojb, (size_t)nl * d, 0);
}

void ffn_forward(real* res3, const real* res2, const model* m, const ffn_offsets* o, int l,
                 const ffn_acts* a, real* tmp, real p, uint64_t seed, int R) {
    const int d = m->d;
    const real* P = m->params;
    const size_t w = (size_t)l * 4 * d * d;
    layernorm_forward(a->ln2, a->mean, a->rstd, res2, P + o->ln2w + l * d, P + o->ln2b + l * d, R,
                      d);
    matmul_forward(a->fch, a->ln2, P + o->fcw + w, P + o->fcb + l * 4 * d, R, d, 4 * d);
    gelu_forward(a->fch_gelu, a->fch, (int64_t)R * 4 * d);
    matmul_forward(tmp, a->fch_gelu, P + o->fcprojw + w, P + o->fcprojb + l * d, R, 4 * d, d);
    dropout_forward(tmp, tmp, p, block_seed(seed, l, 2), (int64_t)R * d);
    residual_forward(res3, res2, tmp, (int64_t)R * d);
}

void ffn_backward(real* dres, model* m, const ffn_offsets* o, int l, const ffn_acts* a,
                  const real* res2, real* dbuf, real* dfch, real* dfch_gelu, real p, uint64_t seed,
                  int R, int recompute) {
    const int d = m->d;
    const size_t nd = (size_t)R * d, w = (size_t)l * 4 * d * d;
    const real* P = m->params;
    real* G = m->grads;
    if (recompute) {
        layernorm_forward(a->ln2, a->mean, a->rstd, res2, P + o->ln2w + l * d, P + o->ln2b + l * d,
                          R, d);
        matmul_forward(a->fch, a->ln2, P + o->fcw + w, P + o->fcb + l * 4 * d, R, d, 4 * d);
    }
    memset(dbuf, 0, nd * sizeof(real));
    dropout_backward(dbuf, dres, p, block_seed(seed, l, 2), (int64_t)nd);
    gelu_forward(dfch, a->fch, 4 * (int64_t)nd);  // recomputed, not kept from forward
    memset(dfch_gelu, 0, 4 * nd * sizeof(real));
    matmul_backward(dfch_gelu, G + o->fcprojw + w, G + o->fcprojb + l * d, dbuf, dfch,
                    P + o->fcprojw + w, R, 4 * d, d);
    memset(dfch, 0, 4 * nd * sizeof(real));
    gelu_backward(dfch, a->fch, dfch_gelu, 4 * (int64_t)nd);
    memset(dbuf, 0, nd * sizeof(real));
    matmul_backward(dbuf, G + o->fcw + w, G + o->fcb + l * 4 * d, dfch, a->ln2, P + o->fcw + w, R,
                    d, 4 * d);
    // res3 = res2 + FFN(res2): dres already carries the identity path
    layernorm_backward(dres, G + o->ln2w + l * d, G + o->ln2b + l * d, dbuf, res2,
                       P + o->ln2w + l * d, a->mean, a->rstd, R, d);
}
