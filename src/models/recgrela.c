// recgrela.c: RecGRELA (DESIGN §3), following the authors' model made causal.
// Pre-LN blocks whose mixer is, per layer:
//   h = LN1(x), g = SiLU(h Wg^T + bg), u = h Win^T + bin
//   q, k = u Wqk^T + bqk;  qf, kf = elu(q)+1, elu(k)+1;  qr, kr = RoPE(qf), RoPE(kf)
//   a = causal linear attention(qr, kr; normaliser qf, kf; values u)   (chunked)
//   r = SiLU(causal depthwise conv_K(u))                     (--no-local: r = 0)
//   x = x + dropout(Wout ((a + r) * g) + bout)               (--no-gate: no * g)
// then the FFN half and a final LN. No absolute positions.
// B batch, L length, d width, H heads, C chunk, K conv width, nl layers.
#include "recgrela.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "device.h"
#include "init.h"

typedef struct {
    int nl, H, C, K, local, gate;
    real dropout;
    size_t wte, ln1w, ln1b, wg, bg, win, bin, wqk, bqk, convw, convb, wout, bout, lnfw, lnfb;
    ffn_half ffn;
    // per-layer activations [nl, B, L, d] unless noted
    real *ln1, *ln1_mean, *ln1_rstd, *gpre, *g, *u, *q, *k, *qf, *kf, *qr, *kr, *a, *den, *cpre, *s,
        *z, *res2, *res3;
    real *encoded, *lnf_mean, *lnf_rstd, *tmp;
    // backward scratch [B, L, d]
    real *dres, *dbuf, *dz, *ds, *dg, *du, *dq, *dk, *dqf, *dkf, *dqr, *dkr, *dc, *dln1;
    int B;
    uint64_t seed;
} recgrela;

static void zero(real* x, size_t n) { dev_zero(x, n * sizeof *x); }

static void forward(model* m, int B, uint64_t seed) {
    recgrela* e = m->impl;
    const int L = m->L, d = m->d, H = e->H, BL = B * L;
    const size_t sd = (size_t)m->B * L * d, sr = (size_t)m->B * L, nd = (size_t)BL * d;
    const real* P = m->params;
    const real p = seed ? e->dropout : 0;
    e->B = B;
    e->seed = seed;

    embedding_forward(e->encoded, m->inputs, P + e->wte, NULL, B, L, d);
    dropout_forward(e->encoded, e->encoded, p, block_seed(seed, -1, 0), model_elem0(m),
                    (int64_t)nd);
    const real* x = e->encoded;
    for (int l = 0; l < e->nl; l++) {
        real *ln1 = e->ln1 + l * sd, *u = e->u + l * sd, *q = e->q + l * sd, *k = e->k + l * sd;
        real *qf = e->qf + l * sd, *kf = e->kf + l * sd, *qr = e->qr + l * sd, *kr = e->kr + l * sd;
        real *a = e->a + l * sd, *s = e->s + l * sd, *z = e->z + l * sd;
        real *res2 = e->res2 + l * sd, *res3 = e->res3 + l * sd;
        const real* wqk = P + e->wqk + (size_t)l * 2 * d * d;
        const real* bqk = P + e->bqk + (size_t)l * 2 * d;
        layernorm_forward(ln1, e->ln1_mean + l * sr, e->ln1_rstd + l * sr, x, P + e->ln1w + l * d,
                          P + e->ln1b + l * d, BL, d);
        if (e->gate) {
            matmul_forward(e->gpre + l * sd, ln1, P + e->wg + (size_t)l * d * d, P + e->bg + l * d,
                           BL, d, d);
            silu_forward(e->g + l * sd, e->gpre + l * sd, (int64_t)nd);
        }
        matmul_forward(u, ln1, P + e->win + (size_t)l * d * d, P + e->bin + l * d, BL, d, d);
        matmul_forward(q, u, wqk, bqk, BL, d, d);
        matmul_forward(k, u, wqk + (size_t)d * d, bqk + d, BL, d, d);
        elu1_forward(qf, q, (int64_t)nd);
        elu1_forward(kf, k, (int64_t)nd);
        rope_forward(qr, qf, B, L, d);
        rope_forward(kr, kf, B, L, d);
        linear_attention_forward(a, e->den + (size_t)l * m->B * H * L, qr, kr, qf, kf, u, m->pad, B,
                                 L, d, H, e->C);
        if (e->local) {
            conv_causal_forward(e->cpre + l * sd, u, P + e->convw + (size_t)l * d * e->K,
                                P + e->convb + l * d, m->pad, B, L, d, e->K);
            silu_forward(s, e->cpre + l * sd, (int64_t)nd);
            residual_forward(s, s, a, (int64_t)nd);
        } else {
            dev_copy(s, a, nd * sizeof(real));
        }
        if (e->gate)
            mul_forward(z, s, e->g + l * sd, (int64_t)nd);
        else
            dev_copy(z, s, nd * sizeof(real));
        if (block_last_applies(m, l, e->nl)) {
            rows_gather(e->dbuf, z, m->last_rows, B, d);
            block_last_rows(m, &e->ffn, l, x, e->dbuf, P + e->wout + (size_t)l * d * d,
                            P + e->bout + l * d, P + e->lnfw, P + e->lnfb, e->lnf_mean, e->lnf_rstd,
                            e->dz, B);
            return;
        }
        matmul_forward(e->tmp, z, P + e->wout + (size_t)l * d * d, P + e->bout + l * d, BL, d, d);
        dropout_forward(e->tmp, e->tmp, p, block_seed(seed, l, 1), model_elem0(m), (int64_t)nd);
        residual_forward(res2, x, e->tmp, (int64_t)nd);
        ffn_forward(res3, res2, m, &e->ffn, l, e->tmp, p, seed, BL);
        x = res3;
    }
    layernorm_forward(m->out, e->lnf_mean, e->lnf_rstd, x, P + e->lnfw, P + e->lnfb, BL, d);
}

static void backward(model* m) {
    recgrela* e = m->impl;
    const int B = e->B, L = m->L, d = m->d, H = e->H, BL = B * L;
    const size_t nd = (size_t)BL * d, sd = (size_t)m->B * L * d, sr = (size_t)m->B * L;
    const real* P = m->params;
    real* G = m->grads;
    const real p = e->seed ? e->dropout : 0;
    const uint64_t seed = e->seed;

    const real* xlast = e->res3 + (e->nl - 1) * sd;
    zero(e->dres, nd);
    layernorm_backward(e->dres, G + e->lnfw, G + e->lnfb, m->dout, xlast, P + e->lnfw, e->lnf_mean,
                       e->lnf_rstd, BL, d);
    for (int l = e->nl - 1; l >= 0; l--) {
        const real* x = l ? e->res3 + (l - 1) * sd : e->encoded;
        real *ln1 = e->ln1 + l * sd, *u = e->u + l * sd, *q = e->q + l * sd, *k = e->k + l * sd;
        real *qf = e->qf + l * sd, *kf = e->kf + l * sd, *qr = e->qr + l * sd, *kr = e->kr + l * sd;
        real *a = e->a + l * sd, *s = e->s + l * sd, *z = e->z + l * sd;
        const size_t wqk = e->wqk + (size_t)l * 2 * d * d, bqk = e->bqk + (size_t)l * 2 * d;
        ffn_backward(e->dres, m, &e->ffn, l, e->res2 + l * sd, e->dbuf, p, seed, BL);
        // mixer half: dres is now d(res2), flowing unchanged to d(x)
        zero(e->dbuf, nd);
        dropout_backward(e->dbuf, e->dres, p, block_seed(seed, l, 1), model_elem0(m), (int64_t)nd);
        zero(e->dz, nd);
        matmul_backward(e->dz, G + e->wout + (size_t)l * d * d, G + e->bout + l * d, e->dbuf, z,
                        P + e->wout + (size_t)l * d * d, BL, d, d);
        zero(e->dln1, nd);
        zero(e->ds, nd);
        if (e->gate) {
            zero(e->dg, nd);
            mul_backward(e->ds, e->dg, s, e->g + l * sd, e->dz, (int64_t)nd);
            zero(e->dbuf, nd);
            silu_backward(e->dbuf, e->gpre + l * sd, e->dg, (int64_t)nd);
            matmul_backward(e->dln1, G + e->wg + (size_t)l * d * d, G + e->bg + l * d, e->dbuf, ln1,
                            P + e->wg + (size_t)l * d * d, BL, d, d);
        } else {
            dev_copy(e->ds, e->dz, nd * sizeof(real));
        }
        zero(e->du, nd);
        if (e->local) {  // s = a + SiLU(conv(u)): ds reaches both
            zero(e->dc, nd);
            silu_backward(e->dc, e->cpre + l * sd, e->ds, (int64_t)nd);
            conv_causal_backward(e->du, G + e->convw + (size_t)l * d * e->K, G + e->convb + l * d,
                                 e->dc, u, P + e->convw + (size_t)l * d * e->K, m->pad, B, L, d,
                                 e->K);
        }
        zero(e->dqr, nd), zero(e->dkr, nd), zero(e->dqf, nd), zero(e->dkf, nd);
        linear_attention_backward(e->dqr, e->dkr, e->dqf, e->dkf, e->du, e->ds, a,
                                  e->den + (size_t)l * m->B * H * L, qr, kr, qf, kf, u, m->pad, B,
                                  L, d, H, e->C);
        rope_backward(e->dqf, e->dqr, B, L, d);
        rope_backward(e->dkf, e->dkr, B, L, d);
        zero(e->dq, nd), zero(e->dk, nd);
        elu1_backward(e->dq, q, e->dqf, (int64_t)nd);
        elu1_backward(e->dk, k, e->dkf, (int64_t)nd);
        matmul_backward(e->du, G + wqk, G + bqk, e->dq, u, P + wqk, BL, d, d);
        matmul_backward(e->du, G + wqk + (size_t)d * d, G + bqk + d, e->dk, u,
                        P + wqk + (size_t)d * d, BL, d, d);
        matmul_backward(e->dln1, G + e->win + (size_t)l * d * d, G + e->bin + l * d, e->du, ln1,
                        P + e->win + (size_t)l * d * d, BL, d, d);
        layernorm_backward(e->dres, G + e->ln1w + l * d, G + e->ln1b + l * d, e->dln1, x,
                           P + e->ln1w + l * d, e->ln1_mean + l * sr, e->ln1_rstd + l * sr, BL, d);
        model_layer_done(m, l);
    }
    zero(e->dbuf, nd);
    dropout_backward(e->dbuf, e->dres, p, block_seed(seed, -1, 0), model_elem0(m), (int64_t)nd);
    embedding_backward(G + e->wte, NULL, e->dbuf, m->inputs, B, L, d);
}

// ---- streaming: one user's state carried event by event (elastic_eval
// --stream). Per layer: the linear attention's S [H, hd, hd] (row index the
// key's component) and z [H, hd], and the last K-1 conv inputs [K-1, d]
// (newest first). An event at position t runs the position-wise parts on one
// row, rotates q and k at angle t, adds kr u^T to S and kf to z, and reads the
// attention from them: the same function as the whole-history forward with no
// padding, at O(1) cost in the history's length. The model's row-0 scratch
// is used (its batch is then not a training batch).
static size_t stream_layer(const model* m) {
    const recgrela* e = m->impl;
    const size_t d = (size_t)m->d, hd = d / e->H;
    return d * hd + d + (size_t)(e->K - 1) * d;
}

static size_t stream_floats(const model* m) {
    return ((const recgrela*)m->impl)->nl * stream_layer(m);
}

static void stream_step(model* m, real* state, int64_t t, int32_t item, real* h) {
    recgrela* e = m->impl;
    const int d = m->d, H = e->H, hd = d / H, K = e->K;
    const size_t sd = (size_t)m->B * m->L * d, sr = (size_t)m->B * m->L;
    const real* P = m->params;
    real* x = e->encoded;
    memcpy(x, P + e->wte + (size_t)item * d, d * sizeof(real));
    for (int l = 0; l < e->nl; l++) {
        real *S = state + l * stream_layer(m), *z = S + (size_t)d * hd, *win = z + d;
        real *ln1 = e->ln1 + l * sd, *u = e->u + l * sd, *q = e->q + l * sd, *k = e->k + l * sd;
        real *qf = e->qf + l * sd, *kf = e->kf + l * sd, *qr = e->qr + l * sd, *kr = e->kr + l * sd;
        real *a = e->a + l * sd, *s = e->s + l * sd, *zz = e->z + l * sd, *g = e->g + l * sd;
        const real* wqk = P + e->wqk + (size_t)l * 2 * d * d;
        const real* bqk = P + e->bqk + (size_t)l * 2 * d;
        layernorm_forward(ln1, e->ln1_mean + l * sr, e->ln1_rstd + l * sr, x, P + e->ln1w + l * d,
                          P + e->ln1b + l * d, 1, d);
        if (e->gate) {
            matmul_forward(e->gpre + l * sd, ln1, P + e->wg + (size_t)l * d * d, P + e->bg + l * d,
                           1, d, d);
            silu_forward(g, e->gpre + l * sd, d);
        }
        matmul_forward(u, ln1, P + e->win + (size_t)l * d * d, P + e->bin + l * d, 1, d, d);
        matmul_forward(q, u, wqk, bqk, 1, d, d);
        matmul_forward(k, u, wqk + (size_t)d * d, bqk + d, 1, d, d);
        elu1_forward(qf, q, d);
        elu1_forward(kf, k, d);
        rope_row(qr, qf, t, d);
        rope_row(kr, kf, t, d);
        for (int hh = 0; hh < H; hh++) {  // this event joins the state, then is read from it
            real *Sh = S + (size_t)hh * hd * hd, *zh = z + hh * hd;
            const int o = hh * hd;
            double den = 1e-6;
            for (int c = 0; c < hd; c++) {
                zh[c] += kf[o + c];
                for (int v = 0; v < hd; v++) Sh[c * hd + v] += kr[o + c] * u[o + v];
            }
            for (int c = 0; c < hd; c++) den += (double)qf[o + c] * zh[c];
            for (int v = 0; v < hd; v++) {
                double num = 0;
                for (int c = 0; c < hd; c++) num += (double)qr[o + c] * Sh[c * hd + v];
                a[o + v] = (real)(num / den);
            }
        }
        if (e->local) {  // the causal conv over u_t, u_{t-1}, ... (before the history: nothing)
            const real *w = P + e->convw + (size_t)l * d * K, *b = P + e->convb + l * d;
            real* cpre = e->cpre + l * sd;
            for (int c = 0; c < d; c++) {
                real acc = b[c] + w[(size_t)c * K] * u[c];
                for (int i = 1; i < K && i <= t; i++)
                    acc += w[(size_t)c * K + i] * win[(size_t)(i - 1) * d + c];
                cpre[c] = acc;
            }
            if (K > 1) {
                memmove(win + d, win, (size_t)(K - 2) * d * sizeof(real));
                memcpy(win, u, d * sizeof(real));
            }
            silu_forward(s, cpre, d);
            residual_forward(s, s, a, d);
        } else {
            memcpy(s, a, d * sizeof(real));
        }
        if (e->gate)
            mul_forward(zz, s, g, d);
        else
            memcpy(zz, s, d * sizeof(real));
        matmul_forward(e->tmp, zz, P + e->wout + (size_t)l * d * d, P + e->bout + l * d, 1, d, d);
        residual_forward(e->res2 + l * sd, x, e->tmp, d);
        ffn_forward(e->res3 + l * sd, e->res2 + l * sd, m, &e->ffn, l, e->tmp, 0, 0, 1);
        x = e->res3 + l * sd;
    }
    layernorm_forward(h, e->lnf_mean, e->lnf_rstd, x, P + e->lnfw, P + e->lnfb, 1, d);
}

static void init(model* m, uint64_t seed) {
    recgrela* e = m->impl;
    real* P = m->params;
    const int d = m->d, nl = e->nl;
    const double std = 0.02, proj_std = 0.02 / sqrt(2.0 * nl);
    init_normal(P + e->wte, (size_t)m->V * d, std, seed, 1);
    init_const(P + e->wte, d, 0);
    init_const(P + e->ln1w, (size_t)nl * d, 1);
    init_const(P + e->ln1b, (size_t)nl * d, 0);
    if (e->gate) {
        init_normal(P + e->wg, (size_t)nl * d * d, std, seed, 13);
        init_const(P + e->bg, (size_t)nl * d, 0);
    }
    init_normal(P + e->win, (size_t)nl * d * d, std, seed, 14);
    init_const(P + e->bin, (size_t)nl * d, 0);
    init_normal(P + e->wqk, (size_t)nl * 2 * d * d, std, seed, 15);
    init_const(P + e->bqk, (size_t)nl * 2 * d, 0);
    if (e->local) {
        init_normal(P + e->convw, (size_t)nl * d * e->K, 1.0 / sqrt((double)e->K), seed, 16);
        init_const(P + e->convb, (size_t)nl * d, 0);
    }
    init_normal(P + e->wout, (size_t)nl * d * d, proj_std, seed, 4);
    init_const(P + e->bout, (size_t)nl * d, 0);
    ffn_init(m, &e->ffn, nl, seed);
    init_const(P + e->lnfw, d, 1);
    init_const(P + e->lnfb, d, 0);
}

model* recgrela_create(const config* cfg, int V, int B, char* err) {
    model* m = model_new("recgrela", sizeof(recgrela), cfg, V, B);
    if (!m) goto oom;
    recgrela* e = m->impl;
    e->nl = cfg->layers, e->H = cfg->heads, e->C = cfg->chunk, e->K = cfg->conv_kernel;
    e->local = !cfg->no_local, e->gate = !cfg->no_gate;
    e->dropout = (real)cfg->dropout;
    const int d = m->d, L = m->L, nl = e->nl, H = e->H;
    e->wte = tensor_add(m, "wte", V, d, 0);
    e->ln1w = layer_tensor_add(m, "ln1w", nl, d, 0);
    e->ln1b = layer_tensor_add(m, "ln1b", nl, d, 0);
    if (e->gate) {
        e->wg = layer_tensor_add(m, "wg", nl, d, d);
        e->bg = layer_tensor_add(m, "bg", nl, d, 0);
    }
    e->win = layer_tensor_add(m, "win", nl, d, d);
    e->bin = layer_tensor_add(m, "bin", nl, d, 0);
    e->wqk = layer_tensor_add(m, "wqk", nl, 2 * d, d);
    e->bqk = layer_tensor_add(m, "bqk", nl, 2 * d, 0);
    if (e->local) {
        e->convw = layer_tensor_add(m, "convw", nl, d, e->K);
        e->convb = layer_tensor_add(m, "convb", nl, d, 0);
    }
    e->wout = layer_tensor_add(m, "wout", nl, d, d);
    e->bout = layer_tensor_add(m, "bout", nl, d, 0);
    ffn_add_tensors(m, &e->ffn, nl);
    e->lnfw = tensor_add(m, "lnfw", d, 0, 0);
    e->lnfb = tensor_add(m, "lnfb", d, 0, 0);
    const size_t BL = (size_t)B * L, nd = BL * d, gate = e->gate, local = e->local;
    const size_t nlf = cfg->recompute ? 0 : (size_t)nl;  // layers of FFN activations kept
    m->ffn_rows = ffn_block_rows(BL);
    real* mix;  // the mixer's gradients, see below
    const act_spec acts[] = {
        {&e->encoded, nd, ACT_KEPT},
        {&e->ln1, nl * nd, ACT_KEPT},
        {&e->ln1_mean, nl * BL, ACT_KEPT},
        {&e->ln1_rstd, nl * BL, ACT_KEPT},
        {&e->gpre, gate * nl * nd, ACT_KEPT},
        {&e->g, gate * nl * nd, ACT_KEPT},
        {&e->u, nl * nd, ACT_KEPT},
        {&e->q, nl * nd, ACT_KEPT},
        {&e->k, nl * nd, ACT_KEPT},
        {&e->qf, nl * nd, ACT_KEPT},
        {&e->kf, nl * nd, ACT_KEPT},
        {&e->qr, nl * nd, ACT_KEPT},
        {&e->kr, nl * nd, ACT_KEPT},
        {&e->a, nl * nd, ACT_KEPT},
        {&e->den, nl * BL * H, ACT_KEPT},
        {&e->cpre, local * nl * nd, ACT_KEPT},
        {&e->s, nl * nd, ACT_KEPT},
        {&e->z, nl * nd, ACT_KEPT},
        {&e->res2, nl * nd, ACT_KEPT},
        {&e->ffn.kept.ln2, nlf * nd, ACT_KEPT},
        {&e->ffn.kept.mean, nlf * BL, ACT_KEPT},
        {&e->ffn.kept.rstd, nlf * BL, ACT_KEPT},
        {&e->ffn.kept.fch, 4 * nlf * nd,
         ACT_KEPT},  // GELU(fch) is recomputed in backward, not kept
        {&e->res3, nl * nd, ACT_KEPT},
        {&e->ffn.s.base, ffn_scratch_floats(d, m->ffn_rows), ACT_SPARE},
        {&e->lnf_mean, BL, ACT_KEPT},
        {&e->lnf_rstd, BL, ACT_KEPT},
        {&e->tmp, nd, ACT_SPARE},
        {&m->out, nd, ACT_KEPT},
        {&m->dout, nd, ACT_KEPT},
        {&e->dres, nd, ACT_SPARE},
        {&e->dbuf, nd, ACT_SPARE},
        {&e->du, nd, ACT_SPARE},
        {&e->dln1, nd, ACT_SPARE},
        {&e->ds, nd, ACT_SPARE},
        {&mix, 4 * nd, ACT_SPARE},
    };
    if (model_alloc(m, acts, sizeof acts / sizeof acts[0], B)) goto oom;
    ffn_scratch_carve(&e->ffn.s, d, m->ffn_rows);
    e->ffn.recompute = cfg->recompute, e->ffn.rows = BL;
    // Four buffers for nine gradients, each taken once the one before is dead:
    // dz and dg (gate) -> dqr, dkr (rotated features) -> dq, dk; dc (local
    // branch) -> dqf; dkf.
    e->dz = mix, e->dg = mix + nd, e->dc = mix + 2 * nd, e->dkf = mix + 3 * nd;
    e->dqr = e->dz, e->dkr = e->dg, e->dq = e->dqr, e->dk = e->dkr, e->dqf = e->dc;
    m->forward = forward;
    m->backward = backward;
    m->init = init;
    m->stream_floats = stream_floats;
    m->stream_step = stream_step;
    return m;
oom:
    snprintf(err, 512, "out of memory building recgrela (V=%d, L=%d, d=%d, batch %d)", V, cfg->L,
             cfg->d, B);
    model_free(m);
    return NULL;
}
