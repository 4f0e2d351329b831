// sasrec.c: SASRec, pre-LN blocks of causal multi-head softmax attention and a
// GELU FFN over item + learned position embeddings (DESIGN §3).
//   x   = dropout(wte[inp] + wpe)                              [B,L,d]
//   per layer: x = x + dropout(attproj(attention(qkv(LN1(x)))))
//              x = x + dropout(fcproj(gelu(fc(LN2(x)))))
//   out = LNf(x)                                               [B,L,d]
// B batch, L length, d width, H heads, nl layers, V = N+1 item rows.
#include "sasrec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "device.h"
#include "init.h"

typedef struct {
    int nl, H, fused;
    real dropout;
    // parameter offsets (elements) into params / grads
    size_t wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, lnfw, lnfb;
    ffn_half ffn;
    // activations, one allocation; per-layer ones are [nl, ...]
    real *encoded, *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *res2, *res3, *lnf_mean,
        *lnf_rstd, *tmp;
    // backward scratch
    real *dres, *dbuf, *dbuf2, *dqkv, *datt;
    int B;
    uint64_t seed;
} sasrec;

static void zero(real* x, size_t n) { dev_zero(x, n * sizeof *x); }

static void forward(model* m, int B, uint64_t seed) {
    sasrec* s = m->impl;
    const int L = m->L, d = m->d, H = s->H, BL = B * L;
    const real* P = m->params;
    const real p = seed ? s->dropout : 0;
    s->B = B;
    s->seed = seed;
    const size_t sd = (size_t)m->B * L * d, sr = (size_t)m->B * L;  // per-layer strides

    embedding_forward(s->encoded, m->inputs, P + s->wte, P + s->wpe, B, L, d);
    dropout_forward(s->encoded, s->encoded, p, block_seed(seed, -1, 0), model_elem0(m),
                    (int64_t)BL * d);
    const real* x = s->encoded;
    for (int l = 0; l < s->nl; l++) {
        real *ln1 = s->ln1 + l * sd, *qkv = s->qkv + 3 * l * sd, *atty = s->atty + l * sd;
        real *res2 = s->res2 + l * sd, *res3 = s->res3 + l * sd;
        layernorm_forward(ln1, s->ln1_mean + l * sr, s->ln1_rstd + l * sr, x, P + s->ln1w + l * d,
                          P + s->ln1b + l * d, BL, d);
        matmul_forward(qkv, ln1, P + s->qkvw + (size_t)l * 3 * d * d, P + s->qkvb + l * 3 * d, BL,
                       d, 3 * d);
        if (block_last_applies(m, l, s->nl)) {  // one query a row: the last
            attention_last(s->dbuf, qkv, m->pad, B, L, d, H);
            block_last_rows(m, &s->ffn, l, x, s->dbuf, P + s->attprojw + (size_t)l * d * d,
                            P + s->attprojb + l * d, P + s->lnfw, P + s->lnfb, s->lnf_mean,
                            s->lnf_rstd, s->dqkv, B);
            return;
        }
        if (s->fused)
            attention_fused_forward(atty, s->att + (size_t)l * m->B * H * L, qkv, m->pad, B, L, d,
                                    H);
        else
            attention_forward(atty, s->att + (size_t)l * m->B * H * L * L, qkv, m->pad, B, L, d, H);
        matmul_forward(s->tmp, atty, P + s->attprojw + (size_t)l * d * d, P + s->attprojb + l * d,
                       BL, d, d);
        dropout_forward(s->tmp, s->tmp, p, block_seed(seed, l, 1), model_elem0(m), (int64_t)BL * d);
        residual_forward(res2, x, s->tmp, (int64_t)BL * d);
        ffn_forward(res3, res2, m, &s->ffn, l, s->tmp, p, seed, BL);
        x = res3;
    }
    layernorm_forward(m->out, s->lnf_mean, s->lnf_rstd, x, P + s->lnfw, P + s->lnfb, BL, d);
}

static void backward(model* m) {
    sasrec* s = m->impl;
    const int B = s->B, L = m->L, d = m->d, H = s->H, BL = B * L;
    const size_t nd = (size_t)BL * d, sd = (size_t)m->B * L * d, sr = (size_t)m->B * L;
    const real* P = m->params;
    real* G = m->grads;
    const real p = s->seed ? s->dropout : 0;
    const uint64_t seed = s->seed;

    const real* xlast = s->nl ? s->res3 + (s->nl - 1) * sd : s->encoded;
    zero(s->dres, nd);
    layernorm_backward(s->dres, G + s->lnfw, G + s->lnfb, m->dout, xlast, P + s->lnfw, s->lnf_mean,
                       s->lnf_rstd, BL, d);
    for (int l = s->nl - 1; l >= 0; l--) {
        const real* x = l ? s->res3 + (l - 1) * sd : s->encoded;
        real *ln1 = s->ln1 + l * sd, *qkv = s->qkv + 3 * l * sd, *atty = s->atty + l * sd;
        ffn_backward(s->dres, m, &s->ffn, l, s->res2 + l * sd, s->dbuf, p, seed, BL);
        // attention half: dres is now d(res2), which flows unchanged to d(x)
        zero(s->dbuf, nd);
        dropout_backward(s->dbuf, s->dres, p, block_seed(seed, l, 1), model_elem0(m), (int64_t)nd);
        zero(s->dbuf2, nd);
        matmul_backward(s->dbuf2, G + s->attprojw + (size_t)l * d * d, G + s->attprojb + l * d,
                        s->dbuf, atty, P + s->attprojw + (size_t)l * d * d, BL, d, d);
        zero(s->dqkv, 3 * nd);
        if (s->fused)
            attention_fused_backward(s->dqkv, s->dbuf2, atty, s->att + (size_t)l * m->B * H * L,
                                     qkv, m->pad, B, L, d, H);
        else
            attention_backward(s->dqkv, s->datt, s->dbuf2, qkv,
                               s->att + (size_t)l * m->B * H * L * L, m->pad, B, L, d, H);
        zero(s->dbuf, nd);
        matmul_backward(s->dbuf, G + s->qkvw + (size_t)l * 3 * d * d, G + s->qkvb + l * 3 * d,
                        s->dqkv, ln1, P + s->qkvw + (size_t)l * 3 * d * d, BL, d, 3 * d);
        layernorm_backward(s->dres, G + s->ln1w + l * d, G + s->ln1b + l * d, s->dbuf, x,
                           P + s->ln1w + l * d, s->ln1_mean + l * sr, s->ln1_rstd + l * sr, BL, d);
        model_layer_done(m, l);
    }
    zero(s->dbuf, nd);
    dropout_backward(s->dbuf, s->dres, p, block_seed(seed, -1, 0), model_elem0(m), (int64_t)nd);
    embedding_backward(G + s->wte, G + s->wpe, s->dbuf, m->inputs, B, L, d);
}

static void init(model* m, uint64_t seed) {
    sasrec* s = m->impl;
    real* P = m->params;
    const int d = m->d, nl = s->nl;
    const double std = 0.02, proj_std = 0.02 / sqrt(2.0 * nl);
    init_normal(P + s->wte, (size_t)m->V * d, std, seed, 1);
    init_const(P + s->wte, d, 0);  // row 0 is padding
    init_normal(P + s->wpe, (size_t)m->L * d, std, seed, 2);
    init_const(P + s->ln1w, (size_t)nl * d, 1);
    init_const(P + s->ln1b, (size_t)nl * d, 0);
    init_normal(P + s->qkvw, (size_t)nl * 3 * d * d, std, seed, 3);
    init_const(P + s->qkvb, (size_t)nl * 3 * d, 0);
    init_normal(P + s->attprojw, (size_t)nl * d * d, proj_std, seed, 4);
    init_const(P + s->attprojb, (size_t)nl * d, 0);
    ffn_init(m, &s->ffn, nl, seed);
    init_const(P + s->lnfw, d, 1);
    init_const(P + s->lnfb, d, 0);
}

model* sasrec_create(const config* cfg, int V, int B, char* err) {
    model* m = model_new("sasrec", sizeof(sasrec), cfg, V, B);
    if (!m) goto oom;
    sasrec* s = m->impl;
    s->nl = cfg->layers, s->H = cfg->heads, s->dropout = (real)cfg->dropout;
    s->fused = !strcmp(cfg->attention, "fused");
    const int d = m->d, L = m->L, nl = s->nl, H = s->H;
    s->wte = tensor_add(m, "wte", V, d, 0);
    s->wpe = tensor_add(m, "wpe", L, d, 0);
    s->ln1w = layer_tensor_add(m, "ln1w", nl, d, 0);
    s->ln1b = layer_tensor_add(m, "ln1b", nl, d, 0);
    s->qkvw = layer_tensor_add(m, "qkvw", nl, 3 * d, d);
    s->qkvb = layer_tensor_add(m, "qkvb", nl, 3 * d, 0);
    s->attprojw = layer_tensor_add(m, "attprojw", nl, d, d);
    s->attprojb = layer_tensor_add(m, "attprojb", nl, d, 0);
    ffn_add_tensors(m, &s->ffn, nl);
    s->lnfw = tensor_add(m, "lnfw", d, 0, 0);
    s->lnfb = tensor_add(m, "lnfb", d, 0, 0);
    // activation table: per-layer tensors are [nl, B, L, width]
    const size_t BL = (size_t)B * L, nd = BL * d;
    const size_t nlf = cfg->recompute ? 0 : (size_t)nl;  // layers of FFN activations kept
    m->ffn_rows = ffn_block_rows(BL);
    const size_t att = s->fused ? (size_t)B * H * L : (size_t)B * H * L * L;
    const act_spec acts[] = {
        {&s->encoded, nd, ACT_KEPT},
        {&s->ln1, nl * nd, ACT_KEPT},
        {&s->ln1_mean, nl * BL, ACT_KEPT},
        {&s->ln1_rstd, nl * BL, ACT_KEPT},
        {&s->qkv, 3 * nl * nd, ACT_KEPT},
        {&s->atty, nl * nd, ACT_KEPT},
        {&s->att, nl * att, ACT_KEPT},  // probabilities, or the fused kernel's lse
        {&s->res2, nl * nd, ACT_KEPT},
        {&s->ffn.kept.ln2, nlf * nd, ACT_KEPT},
        {&s->ffn.kept.mean, nlf * BL, ACT_KEPT},
        {&s->ffn.kept.rstd, nlf * BL, ACT_KEPT},
        {&s->ffn.kept.fch, 4 * nlf * nd,
         ACT_KEPT},  // GELU(fch) is recomputed in backward, not kept
        {&s->res3, nl * nd, ACT_KEPT},
        {&s->ffn.s.base, ffn_scratch_floats(d, m->ffn_rows), ACT_SPARE},
        {&s->lnf_mean, BL, ACT_KEPT},
        {&s->lnf_rstd, BL, ACT_KEPT},
        {&s->tmp, nd, ACT_SPARE},
        {&m->out, nd, ACT_KEPT},
        {&m->dout, nd, ACT_KEPT},
        {&s->dres, nd, ACT_SPARE},
        {&s->dbuf, nd, ACT_SPARE},
        {&s->dbuf2, nd, ACT_SPARE},
        {&s->dqkv, 3 * nd, ACT_SPARE},
        {&s->datt, s->fused ? 0 : (size_t)B * H * L * L, ACT_SPARE},
    };
    if (model_alloc(m, acts, sizeof acts / sizeof acts[0], B)) goto oom;
    ffn_scratch_carve(&s->ffn.s, d, m->ffn_rows);
    s->ffn.recompute = cfg->recompute, s->ffn.rows = BL;
    m->forward = forward;
    m->backward = backward;
    m->init = init;
    return m;
oom:
    snprintf(err, 512, "out of memory building sasrec (V=%d, L=%d, d=%d, batch %d)", V, cfg->L,
             cfg->d, B);
    model_free(m);
    return NULL;
}
