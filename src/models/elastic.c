// elastic.c: ELASTIC (DESIGN §3), pre-LN blocks whose mixer is, per layer:
//   h   = LN1(x)                                                  [B,L,d]
//   P   = aggregate(qe = E Wq1^T, kh = h Wk1^T, values h, prior u, pb)   [B,nc,k,d]
//   Pt  = P + PKM(P Wqm^T)            (product-key memory; skipped with --no-memory)
//   y   = dispatch(q, kl, vl = h Wq|Wk|Wv^T + b, ki, vi = Pt Wk|Wv^T + b)   [B,L,d]
//   x   = x + dropout(attproj(y));  x = x + dropout(FFN(LN2(x)))
// then out = LNf(x). No absolute positions: order enters through the chunks
// and the RoPE of the local dispatch. The memory bank V[n*n,d] is shared by
// all layers and memory heads; it lives outside params and is updated
// row-wise from the rows backward lists.
// B batch, L length, d width, H heads, k experts, C chunk, nc chunks,
// Hm memory heads, dk key width, n sub-keys per half, kk top-k, nl layers.
#include "elastic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bank.h"
#include "block.h"
#include "device.h"
#include "init.h"

typedef struct {
    int nl, H, k, C, nc, Hm, dk, n, kk, memory;
    real dropout;
    int recompute;  // LN1, the keys, q/kl/vl and y rebuilt in backward, not kept (and the FFN)
    size_t wte, ln1w, ln1b, experts, wq1, wk1, prior_u, prior_b, wqm, subkeys, qkvw, qkvb, attprojw,
        attprojb, lnfw, lnfb;
    ffn_half ffn;
    // per-layer activations, [nl, ...]
    real *ln1, *ln1_mean, *ln1_rstd, *qe, *kh, *P, *agg_lse, *qm, *w, *Pt, *q, *kl, *vl, *ki, *vi,
        *y, *disp_lse, *res2, *res3;
    int32_t* idx;  // [nl, R, Hm, kk] memory slots
    // a last-position forward's bank read (bank_last_chunk): the last chunk's
    // interest rows [B, k] of P, then the read's slots; x, y, qm and w
    int32_t *last_interests, *last_slots;
    real* last;
    real *encoded, *lnf_mean, *lnf_rstd, *tmp;
    // backward scratch
    real *dres, *dbuf, *dh, *dq, *dkl, *dvl, *dy, *dkh, *dP, *dPt, *dki, *dvi, *dqm, *dqe;
    int B;
    uint64_t seed;
} elastic;

static void zero(real* x, size_t n) { dev_zero(x, n * sizeof *x); }

// Per-layer strides of the activation arrays, for batches of m->B rows.
typedef struct {
    size_t sd, sr, sP, sPl, sqm, sw, sq;
} strides;

static strides layer_strides(const model* m, const elastic* e) {
    const size_t BL = (size_t)m->B * m->L, R = (size_t)m->B * e->nc * e->k;
    strides s = {.sd = BL * m->d,
                 .sr = BL,
                 .sP = R * m->d,
                 .sPl = R * e->H,
                 .sqm = R * e->Hm * e->dk,
                 .sw = R * e->Hm * e->kk,
                 .sq = (size_t)e->k * m->d};
    return s;
}

// Batch rows a group of bank_last_chunk (a row's numbers do not depend on B:
// block_last_rows' rule), and the interest rows its buffers hold for B rows.
#define LAST_GROUP 8
static int last_chunk_rows(const elastic* e, int B) {
    return (B + LAST_GROUP - 1) / LAST_GROUP * LAST_GROUP * e->k;
}

// Step 2 of a last-position forward's last layer: the bank read for the last
// chunk's interests alone (the last position's dispatch reads no other
// chunk's); the other chunks' rows of Pt are P's. The query products go in
// groups of LAST_GROUP batch rows, zeros after the batch's; one bank lookup
// for them all (every rank makes the same calls).
static void bank_last_chunk(model* m, elastic* e, int l, const real* P, real* Pt, int B) {
    const int d = m->d, k = e->k, n = B * k, np = last_chunk_rows(e, B), G = LAST_GROUP * k;
    const int qw = e->Hm * e->dk, per = e->Hm * e->kk;
    const real* P_ = m->params;
    real *x = e->last, *y = x + (size_t)np * d, *qm = y + (size_t)np * d;
    real* w = qm + (size_t)np * qw;
    dev_copy(Pt, P, (size_t)B * e->nc * k * d * sizeof(real));
    rows_gather(x, P, e->last_interests, n, d);
    if (np > n) zero(x + (size_t)n * d, (size_t)(np - n) * d);
    for (int g0 = 0; g0 < np; g0 += G)
        matmul_forward(qm + (size_t)g0 * qw, x + (size_t)g0 * d, P_ + e->wqm + (size_t)l * qw * d,
                       NULL, G, d, qw);
    pkm_select(e->last_slots, w, qm, P_ + e->subkeys + (size_t)l * e->Hm * e->n * e->dk, np, e->Hm,
               e->dk, e->n, e->kk);
    const int32_t* row;
    const real* V = bank_lookup(m->bank, l, e->last_slots, (int64_t)np * per, &row);
    pkm_read(y, row, w, V, np, e->Hm, e->kk, d);
    residual_forward(y, y, x, (int64_t)np * d);
    rows_scatter(Pt, y, e->last_interests, n, d);
}

static void forward(model* m, int B, uint64_t seed) {
    elastic* e = m->impl;
    const int L = m->L, d = m->d, H = e->H, k = e->k, C = e->C, BL = B * L;
    const int R = B * e->nc * k;  // interest rows of this batch
    const real* P_ = m->params;
    const real p = seed ? e->dropout : 0;
    const strides S = layer_strides(m, e);
    e->B = B;
    e->seed = seed;

    embedding_forward(e->encoded, m->inputs, P_ + e->wte, NULL, B, L, d);
    dropout_forward(e->encoded, e->encoded, p, block_seed(seed, -1, 0), model_elem0(m),
                    (int64_t)BL * d);
    const real* x = e->encoded;
    for (int l = 0; l < e->nl; l++) {
        const int lf = e->recompute ? 0 : l;  // slot of what backward rebuilds
        real *ln1 = e->ln1 + lf * S.sd, *kh = e->kh + lf * S.sd, *qe = e->qe + l * S.sq;
        real *P = e->P + l * S.sP, *Pt = e->Pt + l * S.sP, *agg_lse = e->agg_lse + l * S.sPl;
        real *q = e->q + lf * S.sd, *kl = e->kl + lf * S.sd, *vl = e->vl + lf * S.sd;
        real *ki = e->ki + l * S.sP, *vi = e->vi + l * S.sP, *y = e->y + lf * S.sd;
        real *res2 = e->res2 + l * S.sd, *res3 = e->res3 + l * S.sd;
        const real* qkvw = P_ + e->qkvw + (size_t)l * 3 * d * d;
        const real* qkvb = P_ + e->qkvb + (size_t)l * 3 * d;
        layernorm_forward(ln1, e->ln1_mean + l * S.sr, e->ln1_rstd + l * S.sr, x,
                          P_ + e->ln1w + l * d, P_ + e->ln1b + l * d, BL, d);
        // step 1: aggregate the prefix into k interests per chunk
        matmul_forward(qe, P_ + e->experts + l * S.sq, P_ + e->wq1 + (size_t)l * d * d, NULL, k, d,
                       d);
        matmul_forward(kh, ln1, P_ + e->wk1 + (size_t)l * d * d, NULL, BL, d, d);
        interest_aggregate_forward(P, agg_lse, qe, kh, ln1, P_ + e->prior_u + l * S.sq,
                                   P_ + e->prior_b + (size_t)l * k * H, m->pad, B, L, d, H, k, C);
        // step 2: retrieve from the memory bank
        if (e->memory && block_last_applies(m, l, e->nl) && e->nc > 1) {
            bank_last_chunk(m, e, l, P, Pt, B);
        } else if (e->memory) {
            real* qm = e->qm + l * S.sqm;
            matmul_forward(qm, P, P_ + e->wqm + (size_t)l * e->Hm * e->dk * d, NULL, R, d,
                           e->Hm * e->dk);
            pkm_select(e->idx + l * S.sw, e->w + l * S.sw, qm,
                       P_ + e->subkeys + (size_t)l * e->Hm * e->n * e->dk, R, e->Hm, e->dk, e->n,
                       e->kk);
            // the selected rows, fetched from the ranks that hold them
            const int32_t* row;
            const real* V =
                bank_lookup(m->bank, l, e->idx + l * S.sw, (int64_t)R * e->Hm * e->kk, &row);
            pkm_read(Pt, row, e->w + l * S.sw, V, R, e->Hm, e->kk, d);
            residual_forward(Pt, Pt, P, (int64_t)R * d);
        } else {
            dev_copy(Pt, P, (size_t)R * d * sizeof(real));
        }
        // step 3: dispatch over [interests ; own chunk]
        matmul_forward(q, ln1, qkvw, qkvb, BL, d, d);
        matmul_forward(kl, ln1, qkvw + (size_t)d * d, qkvb + d, BL, d, d);
        matmul_forward(vl, ln1, qkvw + (size_t)2 * d * d, qkvb + 2 * d, BL, d, d);
        matmul_forward(ki, Pt, qkvw + (size_t)d * d, qkvb + d, R, d, d);
        matmul_forward(vi, Pt, qkvw + (size_t)2 * d * d, qkvb + 2 * d, R, d, d);
        dispatch_forward(y, e->disp_lse + (size_t)l * m->B * H * L, q, kl, vl, ki, vi, m->pad, B, L,
                         d, H, k, C);
        if (block_last_applies(m, l, e->nl)) {
            rows_gather(e->dbuf, y, m->last_rows, B, d);
            block_last_rows(m, &e->ffn, l, x, e->dbuf, P_ + e->attprojw + (size_t)l * d * d,
                            P_ + e->attprojb + l * d, P_ + e->lnfw, P_ + e->lnfb, e->lnf_mean,
                            e->lnf_rstd, e->dh, B);
            return;
        }
        matmul_forward(e->tmp, y, P_ + e->attprojw + (size_t)l * d * d, P_ + e->attprojb + l * d,
                       BL, d, d);
        dropout_forward(e->tmp, e->tmp, p, block_seed(seed, l, 1), model_elem0(m), (int64_t)BL * d);
        residual_forward(res2, x, e->tmp, (int64_t)BL * d);
        ffn_forward(res3, res2, m, &e->ffn, l, e->tmp, p, seed, BL);
        x = res3;
    }
    layernorm_forward(m->out, e->lnf_mean, e->lnf_rstd, x, P_ + e->lnfw, P_ + e->lnfb, BL, d);
}

static void backward(model* m) {
    elastic* e = m->impl;
    const int B = e->B, L = m->L, d = m->d, H = e->H, k = e->k, C = e->C, BL = B * L;
    const int R = B * e->nc * k, lookups = R * e->Hm * e->kk;
    const size_t nd = (size_t)BL * d, nP = (size_t)R * d;
    const real* P_ = m->params;
    real* G = m->grads;
    const real p = e->seed ? e->dropout : 0;
    const uint64_t seed = e->seed;
    const strides S = layer_strides(m, e);
    m->n_bank_grads = 0;

    const real* xlast = e->res3 + (e->nl - 1) * S.sd;
    zero(e->dres, nd);
    layernorm_backward(e->dres, G + e->lnfw, G + e->lnfb, m->dout, xlast, P_ + e->lnfw, e->lnf_mean,
                       e->lnf_rstd, BL, d);
    for (int l = e->nl - 1; l >= 0; l--) {
        const int lf = e->recompute ? 0 : l;
        const real* x = l ? e->res3 + (l - 1) * S.sd : e->encoded;
        real *ln1 = e->ln1 + lf * S.sd, *kh = e->kh + lf * S.sd, *qe = e->qe + l * S.sq;
        real *P = e->P + l * S.sP, *Pt = e->Pt + l * S.sP, *agg_lse = e->agg_lse + l * S.sPl;
        real *q = e->q + lf * S.sd, *kl = e->kl + lf * S.sd, *vl = e->vl + lf * S.sd;
        real *ki = e->ki + l * S.sP, *vi = e->vi + l * S.sP, *y = e->y + lf * S.sd;
        real* disp_lse = e->disp_lse + (size_t)l * m->B * H * L;
        const size_t wo = (size_t)l * 3 * d * d, bo = (size_t)l * 3 * d;
        if (e->recompute) {  // the layer's LN1, q, kl, vl and dispatch output, as forward made them
            const real *w = P_ + e->qkvw + wo, *b = P_ + e->qkvb + bo;
            layernorm_forward(ln1, e->ln1_mean + l * S.sr, e->ln1_rstd + l * S.sr, x,
                              P_ + e->ln1w + l * d, P_ + e->ln1b + l * d, BL, d);
            matmul_forward(q, ln1, w, b, BL, d, d);
            matmul_forward(kl, ln1, w + (size_t)d * d, b + d, BL, d, d);
            matmul_forward(vl, ln1, w + (size_t)2 * d * d, b + 2 * d, BL, d, d);
            dispatch_forward(y, disp_lse, q, kl, vl, ki, vi, m->pad, B, L, d, H, k, C);
        }
        ffn_backward(e->dres, m, &e->ffn, l, e->res2 + l * S.sd, e->dbuf, p, seed, BL);
        // mixer half: dres is now d(res2), flowing unchanged to d(x)
        zero(e->dbuf, nd);
        dropout_backward(e->dbuf, e->dres, p, block_seed(seed, l, 1), model_elem0(m), (int64_t)nd);
        zero(e->dy, nd);
        matmul_backward(e->dy, G + e->attprojw + (size_t)l * d * d, G + e->attprojb + l * d,
                        e->dbuf, y, P_ + e->attprojw + (size_t)l * d * d, BL, d, d);
        zero(e->dq, nd), zero(e->dkl, nd), zero(e->dvl, nd), zero(e->dki, nP), zero(e->dvi, nP);
        dispatch_backward(e->dq, e->dkl, e->dvl, e->dki, e->dvi, e->dy, y, disp_lse, q, kl, vl, ki,
                          vi, m->pad, B, L, d, H, k, C);
        zero(e->dh, nd);  // d(ln1): from q, kl, vl, the aggregation keys and values
        matmul_backward(e->dh, G + e->qkvw + wo, G + e->qkvb + bo, e->dq, ln1, P_ + e->qkvw + wo,
                        BL, d, d);
        matmul_backward(e->dh, G + e->qkvw + wo + (size_t)d * d, G + e->qkvb + bo + d, e->dkl, ln1,
                        P_ + e->qkvw + wo + (size_t)d * d, BL, d, d);
        matmul_backward(e->dh, G + e->qkvw + wo + (size_t)2 * d * d, G + e->qkvb + bo + 2 * d,
                        e->dvl, ln1, P_ + e->qkvw + wo + (size_t)2 * d * d, BL, d, d);
        zero(e->dPt, nP);
        matmul_backward(e->dPt, G + e->qkvw + wo + (size_t)d * d, G + e->qkvb + bo + d, e->dki, Pt,
                        P_ + e->qkvw + wo + (size_t)d * d, R, d, d);
        matmul_backward(e->dPt, G + e->qkvw + wo + (size_t)2 * d * d, G + e->qkvb + bo + 2 * d,
                        e->dvi, Pt, P_ + e->qkvw + wo + (size_t)2 * d * d, R, d, d);
        // Pt = P + PKM(P Wqm^T): the identity path, then the memory path
        dev_copy(e->dP, e->dPt, nP * sizeof(real));
        if (e->memory) {
            const size_t so = (size_t)l * e->Hm * e->n * e->dk;
            real* qm = e->qm + l * S.sqm;
            const int32_t* row;
            const real* V = bank_fetched(m->bank, l, &row);
            zero(e->dqm, (size_t)R * e->Hm * e->dk);
            pkm_backward(e->dqm, G + e->subkeys + so, NULL, e->dPt, e->idx + l * S.sw, row,
                         e->w + l * S.sw, qm, P_ + e->subkeys + so, V, R, e->Hm, e->dk, e->n, e->kk,
                         d);
            // the bank's row gradients, w * dPt of the lookup's query (bank_push's form)
            const int64_t at = m->n_bank_grads;
            dev_copy(m->bank_grad_ids + at, e->idx + l * S.sw, (size_t)lookups * sizeof(int32_t));
            dev_copy(m->bank_grad_w + at, e->w + l * S.sw, (size_t)lookups * sizeof(real));
            dev_copy(m->bank_grad_src + (size_t)(at / m->bank_grad_group) * d, e->dPt,
                     nP * sizeof(real));
            m->n_bank_grads += lookups;
            matmul_backward(e->dP, G + e->wqm + (size_t)l * e->Hm * e->dk * d, NULL, e->dqm, P,
                            P_ + e->wqm + (size_t)l * e->Hm * e->dk * d, R, d, e->Hm * e->dk);
        }
        if (e->recompute)  // the aggregation keys, rebuilt rather than kept per layer
            matmul_forward(kh, ln1, P_ + e->wk1 + (size_t)l * d * d, NULL, BL, d, d);
        zero(e->dkh, nd);
        zero(e->dqe, S.sq);
        interest_aggregate_backward(e->dqe, e->dkh, e->dh, G + e->prior_u + l * S.sq,
                                    G + e->prior_b + (size_t)l * k * H, e->dP, P, agg_lse, qe, kh,
                                    ln1, P_ + e->prior_u + l * S.sq,
                                    P_ + e->prior_b + (size_t)l * k * H, m->pad, B, L, d, H, k, C);
        matmul_backward(e->dh, G + e->wk1 + (size_t)l * d * d, NULL, e->dkh, ln1,
                        P_ + e->wk1 + (size_t)l * d * d, BL, d, d);
        matmul_backward(G + e->experts + l * S.sq, G + e->wq1 + (size_t)l * d * d, NULL, e->dqe,
                        P_ + e->experts + l * S.sq, P_ + e->wq1 + (size_t)l * d * d, k, d, d);
        layernorm_backward(e->dres, G + e->ln1w + l * d, G + e->ln1b + l * d, e->dh, x,
                           P_ + e->ln1w + l * d, e->ln1_mean + l * S.sr, e->ln1_rstd + l * S.sr, BL,
                           d);
        model_layer_done(m, l);
    }
    zero(e->dbuf, nd);
    dropout_backward(e->dbuf, e->dres, p, block_seed(seed, -1, 0), model_elem0(m), (int64_t)nd);
    embedding_backward(G + e->wte, NULL, e->dbuf, m->inputs, B, L, d);
}

void elastic_expert_load(const model* m, double* load) {
    const elastic* e = m->impl;
    const int B = e->B, L = m->L, d = m->d, H = e->H, k = e->k, C = e->C, hd = d / H;
    const strides S = layer_strides(m, e);
    // the arrays it reads, on the host (staged from a GPU; views on the CPU):
    // each layer's input and its LN1 statistics (with --recompute LN1 itself is
    // not kept per layer), the dispatch's lse, the interest keys
    const size_t n_x = S.sd, n_res = (size_t)(e->nl - 1) * S.sd, n_st = (size_t)e->nl * S.sr,
                 n_par = m->n_params, n_lse = (size_t)e->nl * m->B * H * L,
                 n_ki = (size_t)e->nl * S.sP;
    const size_t sizes[] = {n_x, n_res, n_st, n_st, n_par, n_lse, n_ki};
    const void* from[] = {e->encoded, e->res3,     e->ln1_mean, e->ln1_rstd,
                          m->params,  e->disp_lse, e->ki};
    const real* at[7];
    size_t total = 0;
    for (int i = 0; i < 7; i++) total += sizes[i];
    int failed = 0;
    real* stage = dev_host_staging(total * sizeof(real) + (size_t)B * sizeof(int32_t), &failed);
    for (int i = 0; i < k; i++) load[i] = 0;
    if (failed) return;  // out of memory: a diagnostic, not worth stopping for
    real* next = stage;
    for (int i = 0; i < 7; i++) {
        at[i] = dev_host_view(from[i], sizes[i] * sizeof(real), next);
        if (next) next += sizes[i];
    }
    const real *x0 = at[0], *res3 = at[1], *mean = at[2], *rstd = at[3], *params = at[4],
               *disp_lse = at[5], *kis = at[6];
    const int32_t* pads = dev_host_view(m->pad, (size_t)B * sizeof(int32_t), next);
    double count = 0, q[hd], h1[d];  // hd = d / H, d: a few dozen
    for (int l = 0; l < e->nl; l++)
        for (int b = 0; b < B; b++)
            for (int t = pads[b]; t < L; t++)
                for (int h = 0; h < H; h++) {
                    // q of this head, from LN1 of the layer's input
                    const size_t r = (size_t)b * L + t;
                    const real* xr = (l ? res3 + (l - 1) * S.sd : x0) + r * d;
                    const real *g = params + e->ln1w + l * d, *be = params + e->ln1b + l * d;
                    for (int i = 0; i < d; i++)
                        h1[i] = (xr[i] - mean[l * S.sr + r]) * rstd[l * S.sr + r] * g[i] + be[i];
                    const real* wq = params + e->qkvw + (size_t)l * 3 * d * d;
                    const real* bq = params + e->qkvb + (size_t)l * 3 * d;
                    for (int j = 0; j < hd; j++) {
                        double acc = bq[h * hd + j];
                        for (int i = 0; i < d; i++)
                            acc += (double)wq[(size_t)(h * hd + j) * d + i] * h1[i];
                        q[j] = acc;
                    }
                    const real lse =
                        disp_lse[(size_t)l * m->B * H * L + ((size_t)b * H + h) * L + t];
                    const int c = t / C;
                    for (int x = 0; x < k; x++) {
                        const real* ki =
                            kis + l * S.sP + (((size_t)b * e->nc + c) * k + x) * d + h * hd;
                        double s = 0;
                        for (int j = 0; j < hd; j++) s += (double)q[j] * ki[j];
                        load[x] += exp(s / sqrt((double)hd) - lse);
                    }
                    count += 1;
                }
    for (int i = 0; i < k; i++) load[i] /= count > 0 ? count : 1;
    free(stage);
}

void elastic_diagnostics(const model* m, char* buf, size_t n) {
    const elastic* e = m->impl;
    double load[64], total = 0;
    elastic_expert_load(m, load);
    for (int i = 0; i < e->k; i++) total += load[i];
    if (!isfinite(total)) {  // a diverged model: say so rather than print nan
        snprintf(buf, n, "expert load: not finite (the model's activations overflowed)");
        return;
    }
    size_t at = (size_t)snprintf(buf, n, "expert load (share of interest attention):");
    for (int i = 0; i < e->k && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, " %.3f", total > 0 ? load[i] / total : 0);
    if (at < n) snprintf(buf + at, n - at, " | interests take %.3f of attention", total);
}

// ---- streaming: one user's state carried event by event (elastic_eval
// --stream). Per layer, floats in this order:
//   m, l [k, H]    the aggregation's running max and sum over every position
//   acc [k, d]     so far, and its weighted sum of values (starts as the prior)
//   ki, vi [k, d]  the open chunk's interest keys and values (its P~ once)
//   kl, vl [C, d]  the open chunk's local keys (rotated) and values
// An event at t opens chunk t / C when t % C == 0 (P = acc / l over the
// earlier chunks, then the bank's retrieval and the projections, once a
// chunk), joins the running aggregate (for the chunks after this one), and
// dispatches its query over [ki ; kl of the chunk so far]: the same function
// as the whole-history forward with no padding, at O(k d + C d) an event.
static size_t stream_layer(const model* m) {
    const elastic* e = m->impl;
    const size_t d = (size_t)m->d, k = (size_t)e->k;
    return 2 * k * e->H + 3 * k * d + 2 * (size_t)e->C * d;
}

static size_t stream_floats(const model* m) {
    return ((const elastic*)m->impl)->nl * stream_layer(m);
}

// Chunk c opens: its interests from the running aggregate (chunks < c),
// retrieved from the bank, projected to the dispatch's keys and values.
static void stream_open_chunk(model* m, int l, const real* al, const real* acc, real* ki,
                              real* vi) {
    elastic* e = m->impl;
    const int d = m->d, k = e->k, H = e->H, hd = d / H;
    const real* P_ = m->params;
    const real* qkvw = P_ + e->qkvw + (size_t)l * 3 * d * d;
    const real* qkvb = P_ + e->qkvb + (size_t)l * 3 * d;
    real *P = e->P, *Pt = e->Pt;
    for (int x = 0; x < k; x++)
        for (int h = 0; h < H; h++) {
            const real inv = 1 / al[x * H + h];
            for (int i = 0; i < hd; i++) P[x * d + h * hd + i] = acc[x * d + h * hd + i] * inv;
        }
    if (e->memory) {
        matmul_forward(e->qm, P, P_ + e->wqm + (size_t)l * e->Hm * e->dk * d, NULL, k, d,
                       e->Hm * e->dk);
        pkm_select(e->idx, e->w, e->qm, P_ + e->subkeys + (size_t)l * e->Hm * e->n * e->dk, k,
                   e->Hm, e->dk, e->n, e->kk);
        const int32_t* row;
        const real* V = bank_lookup(m->bank, l, e->idx, (int64_t)k * e->Hm * e->kk, &row);
        pkm_read(Pt, row, e->w, V, k, e->Hm, e->kk, d);
        residual_forward(Pt, Pt, P, (int64_t)k * d);
    } else {
        memcpy(Pt, P, (size_t)k * d * sizeof(real));
    }
    matmul_forward(ki, Pt, qkvw + (size_t)d * d, qkvb + d, k, d, d);
    matmul_forward(vi, Pt, qkvw + (size_t)2 * d * d, qkvb + 2 * d, k, d, d);
}

static void stream_step(model* m, real* state, int64_t t, int32_t item, real* hout) {
    elastic* e = m->impl;
    const int d = m->d, H = e->H, hd = d / H, k = e->k, C = e->C, j = (int)(t % C);
    const real scale = (real)(1.0 / sqrt((double)hd));
    const real* P_ = m->params;
    const size_t sr = (size_t)m->B * m->L;
    real *x = e->encoded, *ln1 = e->ln1, *kh = e->kh, *y = e->y;
    real *q = e->q, *kraw = e->kl, *qr = e->vl;  // row-0 scratch
    memcpy(x, P_ + e->wte + (size_t)item * d, d * sizeof(real));
    for (int l = 0; l < e->nl; l++) {
        real *am = state + l * stream_layer(m), *al = am + k * H, *acc = al + k * H;
        real *ki = acc + (size_t)k * d, *vi = ki + (size_t)k * d, *kl = vi + (size_t)k * d;
        real* vl = kl + (size_t)C * d;
        const real* qkvw = P_ + e->qkvw + (size_t)l * 3 * d * d;
        const real* qkvb = P_ + e->qkvb + (size_t)l * 3 * d;
        const real* u = P_ + e->prior_u + (size_t)l * k * d;
        const real* pb = P_ + e->prior_b + (size_t)l * k * H;
        layernorm_forward(ln1, e->ln1_mean + l * sr, e->ln1_rstd + l * sr, x, P_ + e->ln1w + l * d,
                          P_ + e->ln1b + l * d, 1, d);
        if (t == 0) {  // the aggregate starts as the prior
            for (int i = 0; i < k * H; i++) am[i] = pb[i], al[i] = 1;
            memcpy(acc, u, (size_t)k * d * sizeof(real));
        }
        if (j == 0) stream_open_chunk(m, l, al, acc, ki, vi);
        // this position joins the aggregate of the chunks after this one
        matmul_forward(e->qe, P_ + e->experts + (size_t)l * k * d, P_ + e->wq1 + (size_t)l * d * d,
                       NULL, k, d, d);
        matmul_forward(kh, ln1, P_ + e->wk1 + (size_t)l * d * d, NULL, 1, d, d);
        for (int ex = 0; ex < k; ex++)
            for (int h = 0; h < H; h++) {
                real s = 0;
                for (int i = 0; i < hd; i++) s += e->qe[ex * d + h * hd + i] * kh[h * hd + i];
                s *= scale;
                real *mx = am + ex * H + h, *lx = al + ex * H + h, *ax = acc + ex * d + h * hd;
                if (s > *mx) {
                    const real corr = (real)exp(*mx - s);
                    *lx *= corr;
                    for (int i = 0; i < hd; i++) ax[i] *= corr;
                    *mx = s;
                }
                const real p = (real)exp(s - *mx);
                *lx += p;
                for (int i = 0; i < hd; i++) ax[i] += p * ln1[h * hd + i];
            }
        // the dispatch: this query over the chunk's interests and its own rows so far
        matmul_forward(q, ln1, qkvw, qkvb, 1, d, d);
        matmul_forward(kraw, ln1, qkvw + (size_t)d * d, qkvb + d, 1, d, d);
        for (int h = 0; h < H; h++) rope_row(kl + (size_t)j * d + h * hd, kraw + h * hd, t, hd);
        matmul_forward(vl + (size_t)j * d, ln1, qkvw + (size_t)2 * d * d, qkvb + 2 * d, 1, d, d);
        for (int h = 0; h < H; h++) rope_row(qr + h * hd, q + h * hd, t, hd);
        for (int h = 0; h < H; h++) {
            const int o = h * hd;
            double sc[k + C], mx = -INFINITY, sum = 0, out[hd];
            for (int ex = 0; ex < k + j + 1; ex++) {
                const real* key = ex < k ? ki + (size_t)ex * d + o : kl + (size_t)(ex - k) * d + o;
                const real* qq = ex < k ? q + o : qr + o;
                double s = 0;
                for (int i = 0; i < hd; i++) s += (double)qq[i] * key[i];
                sc[ex] = s * scale;
                mx = sc[ex] > mx ? sc[ex] : mx;
            }
            for (int i = 0; i < hd; i++) out[i] = 0;
            for (int ex = 0; ex < k + j + 1; ex++) {
                const double p = exp(sc[ex] - mx);
                const real* val = ex < k ? vi + (size_t)ex * d + o : vl + (size_t)(ex - k) * d + o;
                sum += p;
                for (int i = 0; i < hd; i++) out[i] += p * val[i];
            }
            for (int i = 0; i < hd; i++) y[o + i] = (real)(out[i] / sum);
        }
        matmul_forward(e->tmp, y, P_ + e->attprojw + (size_t)l * d * d, P_ + e->attprojb + l * d, 1,
                       d, d);
        residual_forward(e->res2, x, e->tmp, d);
        ffn_forward(e->res3 + (size_t)l * d, e->res2, m, &e->ffn, l, e->tmp, 0, 0, 1);
        x = e->res3 + (size_t)l * d;
    }
    layernorm_forward(hout, e->lnf_mean, e->lnf_rstd, x, P_ + e->lnfw, P_ + e->lnfb, 1, d);
}

typedef struct {
    double std;
    uint64_t seed;
    int d;
} bank_fill;

// A bank row's initial values: row `id` of one [rows, d] normal draw, the
// same whichever rank holds it.
static void fill_row(real* row, int64_t id, void* ctx) {
    const bank_fill* f = ctx;
    init_normal_from(row, (size_t)f->d, f->std, f->seed, 12, (uint64_t)id * f->d);
}

static void init(model* m, uint64_t seed) {
    elastic* e = m->impl;
    real* P = m->params;
    const int d = m->d, nl = e->nl, k = e->k, H = e->H;
    const double std = 0.02, proj_std = 0.02 / sqrt(2.0 * nl);
    init_normal(P + e->wte, (size_t)m->V * d, std, seed, 1);
    init_const(P + e->wte, d, 0);
    init_const(P + e->ln1w, (size_t)nl * d, 1);
    init_const(P + e->ln1b, (size_t)nl * d, 0);
    init_normal(P + e->experts, (size_t)nl * k * d, 1.0, seed, 7);  // unit-scale queries
    init_normal(P + e->wq1, (size_t)nl * d * d, std, seed, 8);
    init_normal(P + e->wk1, (size_t)nl * d * d, std, seed, 9);
    init_const(P + e->prior_u, (size_t)nl * k * d, 0);
    init_const(P + e->prior_b, (size_t)nl * k * H, 0);
    if (e->memory) {
        init_normal(P + e->wqm, (size_t)nl * e->Hm * e->dk * d, std, seed, 10);
        init_normal(P + e->subkeys, (size_t)nl * e->Hm * e->n * e->dk, 1.0 / sqrt(e->dk / 2.0),
                    seed, 11);
        bank_fill f = {.std = std, .seed = seed, .d = d};
        bank_init_rows(m->bank, fill_row, &f);
    }
    init_normal(P + e->qkvw, (size_t)nl * 3 * d * d, std, seed, 3);
    init_const(P + e->qkvb, (size_t)nl * 3 * d, 0);
    init_normal(P + e->attprojw, (size_t)nl * d * d, proj_std, seed, 4);
    init_const(P + e->attprojb, (size_t)nl * d, 0);
    ffn_init(m, &e->ffn, nl, seed);
    init_const(P + e->lnfw, d, 1);
    init_const(P + e->lnfb, d, 0);
}

static void elastic_free(model* m) {
    const elastic* e = m->impl;
    if (e) dev_free(e->idx), dev_free(e->last_interests);
}

model* elastic_create(const config* cfg, int V, int B, const comm* c, char* err) {
    model* m = model_new("elastic", sizeof(elastic), cfg, V, B);
    if (!m) goto oom;
    elastic* e = m->impl;
    m->free = elastic_free;
    e->nl = cfg->layers, e->H = cfg->heads, e->k = cfg->experts, e->C = cfg->chunk;
    e->nc = (cfg->L + cfg->chunk - 1) / cfg->chunk;
    e->memory = !cfg->no_memory;
    e->Hm = cfg->mem_heads, e->dk = cfg->mem_dk, e->kk = cfg->mem_topk;
    e->n = (int)llround(sqrt((double)cfg->mem_slots));
    e->dropout = (real)cfg->dropout;
    e->recompute = cfg->recompute;
    const int d = m->d, L = m->L, nl = e->nl, H = e->H, k = e->k;
    e->wte = tensor_add(m, "wte", V, d, 0);
    e->ln1w = layer_tensor_add(m, "ln1w", nl, d, 0);
    e->ln1b = layer_tensor_add(m, "ln1b", nl, d, 0);
    e->experts = layer_tensor_add(m, "experts", nl, k, d);
    e->wq1 = layer_tensor_add(m, "wq1", nl, d, d);
    e->wk1 = layer_tensor_add(m, "wk1", nl, d, d);
    e->prior_u = layer_tensor_add(m, "prior_u", nl, k, d);
    e->prior_b = layer_tensor_add(m, "prior_b", nl, k, H);
    if (e->memory) {
        e->wqm = layer_tensor_add(m, "wqm", nl, (int64_t)e->Hm * e->dk, d);
        e->subkeys = layer_tensor_add(m, "subkeys", nl, (int64_t)e->Hm * 2 * e->n, e->dk / 2);
    }
    e->qkvw = layer_tensor_add(m, "qkvw", nl, 3 * d, d);
    e->qkvb = layer_tensor_add(m, "qkvb", nl, 3 * d, 0);
    e->attprojw = layer_tensor_add(m, "attprojw", nl, d, d);
    e->attprojb = layer_tensor_add(m, "attprojb", nl, d, 0);
    ffn_add_tensors(m, &e->ffn, nl);
    e->lnfw = tensor_add(m, "lnfw", d, 0, 0);
    e->lnfb = tensor_add(m, "lnfb", d, 0, 0);
    const size_t BL = (size_t)B * L, nd = BL * d, R = (size_t)B * e->nc * k;
    const size_t nlf = cfg->recompute ? 0 : (size_t)nl;  // layers of FFN activations kept
    // layers of LN1, the keys, q/kl/vl and y kept (with recompute one layer's
    // room, spare: backward rebuilds every layer's)
    const size_t nlk = cfg->recompute ? 1 : (size_t)nl;
    m->ffn_rows = ffn_block_rows(BL);
    const size_t nP = R * d, lookups = R * e->Hm * e->kk;
    const size_t mem = e->memory;
    const act_spec acts[] = {
        {&e->encoded, nd, ACT_KEPT},
        {&e->ln1, nlk * nd, e->recompute},
        {&e->ln1_mean, nl * BL, ACT_KEPT},
        {&e->ln1_rstd, nl * BL, ACT_KEPT},
        {&e->qe, (size_t)nl * k * d, ACT_KEPT},
        {&e->kh, nlk * nd, e->recompute},
        {&e->P, nl * nP, ACT_KEPT},
        {&e->agg_lse, nl * R * H, ACT_KEPT},
        {&e->qm, mem * nl * R * e->Hm * e->dk, ACT_KEPT},
        {&e->w, mem * nl * lookups, ACT_KEPT},
        {&e->Pt, nl * nP, ACT_KEPT},
        {&e->q, nlk * nd, e->recompute},
        {&e->kl, nlk * nd, e->recompute},
        {&e->vl, nlk * nd, e->recompute},
        {&e->ki, nl * nP, ACT_KEPT},
        {&e->vi, nl * nP, ACT_KEPT},
        {&e->y, nlk * nd, e->recompute},
        {&e->disp_lse, nl * BL * H, ACT_KEPT},
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
        {&e->dh, 5 * nd,
         ACT_SPARE},  // dh, dq, dkl, dvl, dy; dkh reuses dy, dead once the dispatch is through
        {&e->dP, nP, ACT_SPARE},
        {&e->dPt, nP, ACT_SPARE},
        {&e->dki, nP, ACT_SPARE},
        {&e->dvi, nP, ACT_SPARE},
        {&e->dqm, mem * R * e->Hm * e->dk, ACT_SPARE},
        {&e->dqe, (size_t)k * d, ACT_SPARE},
        {&e->last, mem * last_chunk_rows(e, B) * (2 * (size_t)d + e->Hm * (e->dk + e->kk)),
         ACT_SPARE},
    };
    if (model_alloc(m, acts, sizeof acts / sizeof acts[0], B)) goto oom;
    ffn_scratch_carve(&e->ffn.s, d, m->ffn_rows);
    e->ffn.recompute = cfg->recompute, e->ffn.rows = BL;
    e->dq = e->dh + nd, e->dkl = e->dh + 2 * nd, e->dvl = e->dh + 3 * nd, e->dy = e->dh + 4 * nd;
    e->dkh = e->dy;
    e->idx = dev_alloc((mem * nl * lookups + 1) * sizeof(int32_t));
    if (!e->idx) goto oom;
    // the last chunk's interest rows of each batch row, then bank_last_chunk's slots
    const size_t last_lookups = mem * last_chunk_rows(e, B) * e->Hm * e->kk;
    e->last_interests = dev_alloc(((size_t)B * k + last_lookups + 1) * sizeof(int32_t));
    int32_t* rows = malloc((size_t)B * k * sizeof(int32_t) + 1);
    if (!e->last_interests || !rows) {
        free(rows);
        goto oom;
    }
    for (int b = 0; b < B; b++)
        for (int i = 0; i < k; i++) rows[b * k + i] = (b * e->nc + e->nc - 1) * k + i;
    dev_to_device(e->last_interests, rows, (size_t)B * k * sizeof(int32_t));
    free(rows);
    e->last_slots = e->last_interests + (size_t)B * k;
    if (e->memory) {
        m->bank_grad_cap = (int64_t)(nl * lookups);
        m->bank_grad_group = e->Hm * e->kk;
        m->bank_grad_ids = dev_alloc(nl * lookups * sizeof(int32_t) + 1);
        m->bank_grad_w = dev_alloc(nl * lookups * sizeof(real) + 1);
        m->bank_grad_src = dev_alloc(nl * nP * sizeof(real) + 1);
        if (!m->bank_grad_ids || !m->bank_grad_w || !m->bank_grad_src) goto oom;
        const int64_t cap = lookups > last_lookups ? lookups : last_lookups;
        m->bank = bank_create((int64_t)e->n * e->n, d, nl, cap, m->bank_grad_cap, c,
                              cfg->mem_budget, err);
        if (!m->bank) {
            model_free(m);
            return NULL;
        }
    }
    // the slots (idx) and the bank's gradient list: ids, weights, query rows
    m->act_bytes +=
        mem * nl * (lookups * (2 * sizeof(int32_t) + sizeof(real)) + nP * sizeof(real)) +
        ((size_t)B * k + last_lookups) * sizeof(int32_t);
    m->forward = forward;
    m->backward = backward;
    m->init = init;
    m->diagnostics = elastic_diagnostics;
    m->stream_floats = stream_floats;
    m->stream_step = stream_step;
    return m;
oom:
    snprintf(err, 512, "out of memory building elastic (V=%d, L=%d, d=%d, batch %d, %lld slots)", V,
             cfg->L, cfg->d, B, (long long)cfg->mem_slots);
    model_free(m);
    return NULL;
}
