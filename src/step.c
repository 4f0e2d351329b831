// step.c: the training step (step.h).
#include "step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "util.h"

// Floats of the dense gradient summed by one all-reduce call (16 MB).
#define DENSE_BUCKET ((size_t)1 << 22)

// bytes on the backend's memory, zeroed; dies naming `what` when out of memory
static void* dev_calloc(size_t bytes, const char* what) {
    void* p = dev_alloc(bytes);
    if (!p) die("out of memory allocating %zu bytes for %s", bytes, what);
    dev_zero(p, bytes);
    return p;
}

// Rows of logits the loss computes at once: --ce-block, else 256 on the CPU
// (the block stays in cache) and on CUDA as many as 512 MB of logits hold (a
// few large matrix products keep a GPU busy, 128 small ones do not); never
// more than a batch has.
static int loss_block_rows(int want, int V, size_t BL) {
    size_t rb = want > 0 ? (size_t)want
                : device_current() == DEVICE_CUDA
                    ? ((size_t)512 << 20) / sizeof(real) / (size_t)(V > 1 ? V - 1 : 1)
                    : 256;
    if (rb > BL) rb = BL;
    return rb < 1 ? 1 : (int)rb;
}

// Blocks of fewer rows than this (or than wanted, if fewer) are not worth
// the memory they save: the loss then gets its own.
#define LOSS_MIN_ROWS 64

// The loss's scratch: the gathered rows and their gradients (2 x [B*L, d],
// for batches with padding) and the logits blocks. They live in the model's
// spare activations (model.h: dead between forward and backward, which is
// when the loss runs) when those hold them with blocks of at least
// LOSS_MIN_ROWS rows (all the rows an explicit --ce-block asks); else the
// blocks get their own memory and the rows theirs at the first padded batch.
static void loss_scratch(stepper* s, const config* cfg) {
    model* m = s->m;
    const size_t BL = (size_t)m->B * m->L, nd = BL * m->d, V1 = (size_t)(m->V > 1 ? m->V - 1 : 1);
    const int want = loss_block_rows(cfg->ce_block, m->V, BL);
    const size_t fit = m->spare_floats > 2 * nd ? (m->spare_floats - 2 * nd) / V1 : 0;
    const size_t least = cfg->ce_block > 0 || want < LOSS_MIN_ROWS ? (size_t)want : LOSS_MIN_ROWS;
    if (fit >= least) {
        s->h = m->spare, s->dh = m->spare + nd, s->scratch = m->spare + 2 * nd;
        s->ce_block = fit < (size_t)want ? (int)fit : want;
        s->in_spare = 1;
        return;
    }
    s->ce_block = want;
    s->scratch = dev_calloc((size_t)want * V1 * sizeof(real), "loss blocks");
    s->loss_bytes = (size_t)want * V1 * sizeof(real);
}

void stepper_init(stepper* s, model* m, const config* cfg) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->wte = model_tensor(m, "wte");
    s->adam_m = dev_calloc(m->n_params * sizeof(real), "Adam first moments");
    s->adam_v = dev_calloc(m->n_params * sizeof(real), "Adam second moments");
    s->beta1 = (real)cfg->beta1, s->beta2 = (real)cfg->beta2, s->eps = (real)cfg->eps;
    s->weight_decay = (real)cfg->weight_decay;
    s->overlap = cfg->allreduce_overlap && m->n_layers > 0;
    const size_t BL = (size_t)m->B * m->L;
    loss_scratch(s, cfg);
    s->rows = dev_calloc(BL * sizeof(int32_t), "loss row index");
    s->targets = dev_calloc(BL * sizeof(int32_t), "loss targets");
    s->sums = dev_calloc(3 * sizeof(double), "the step's sums");
    for (int i = 0; i < 2; i++)
        if (!(s->batch_h[i] = dev_host_alloc((3 * BL + (size_t)m->B) * sizeof(int32_t))))
            die("out of memory for the batch's host buffers (%zu bytes)",
                (3 * BL + (size_t)m->B) * sizeof(int32_t));
}

void stepper_free(stepper* s) {
    if (!s->in_spare) dev_free(s->h), dev_free(s->dh), dev_free(s->scratch);
    dev_free(s->adam_m), dev_free(s->adam_v);
    dev_free(s->rows), dev_free(s->targets), dev_free(s->stage);
    dev_free(s->sums);
    dev_host_free(s->batch_h[0]), dev_host_free(s->batch_h[1]), free(s->req);
    memset(s, 0, sizeof *s);
}

// Loss summed over this rank's targets (scaled by `scale` in the gradients)
// into loss[0], device memory; writes m->dout and accumulates the tied
// table's gradient. The rows with a
// target are gathered into h (with left padding most rows of a short-history
// batch have none) and their gradients scattered back from dh; a batch
// without padding needs neither and reads m->out in place.
static void tied_loss(stepper* s, double* loss, const int32_t* targets, int B, real scale) {
    model* m = s->m;
    const int d = m->d, BL = B * m->L;
    int R = 0;
    for (int i = 0; i < BL; i++)
        if (targets[i]) s->rows_h[R] = i, s->targets_h[R++] = targets[i];
    dev_to_device(s->targets, s->targets_h, (size_t)R * sizeof(int32_t));
    const real* h = m->out;
    real* dh = m->dout;
    if (R < BL) {
        const size_t rows = (size_t)m->B * m->L * d * sizeof(real);
        if (!s->h) {
            s->h = dev_calloc(rows, "loss rows"), s->dh = dev_calloc(rows, "loss rows");
            s->loss_bytes += 2 * rows;
        }
        dev_to_device(s->rows, s->rows_h, (size_t)R * sizeof(int32_t));
        rows_gather(s->h, m->out, s->rows, R, d);
        h = s->h, dh = s->dh;
    }
    dev_zero(dh, (size_t)R * d * sizeof(real));
    const size_t w = s->wte->offset;
    crossentropy_tied_into(loss, dh, m->grads + w, h, m->params + w, s->targets, R, d, m->V, scale,
                           s->scratch, s->ce_block);
    if (R < BL) {
        dev_zero(m->dout, (size_t)BL * d * sizeof(real));
        rows_scatter(m->dout, dh, s->rows, R, d);
    }
}

// m->layer_done: layer l's gradients are final; its slices go to the stage
// and their all-reduce starts.
static void layer_done(model* m, int l) {
    stepper* s = m->layer_ctx;
    real* at = s->stage + (size_t)l * s->per_layer;
    for (int i = 0; i < m->n_tensors; i++) {
        const tensor_spec* t = &m->tensors[i];
        if (!t->layered) continue;
        const size_t slice = t->size / (size_t)m->n_layers;
        dev_copy(at, m->grads + t->offset + (size_t)l * slice, slice * sizeof(real));
        at += slice;
    }
    const double t0 = now_sec();
    if (!s->failed && comm_iallreduce_sum(s->c, s->stage + (size_t)l * s->per_layer,
                                          (int64_t)s->per_layer, &s->req[l], s->err_text))
        s->failed = 1;
    s->dense_wait_s += now_sec() - t0;
}

// In place, in buckets of DENSE_BUCKET: n floats at g.
static int allreduce_buckets(const comm* c, real* g, size_t n, char* err) {
    for (size_t at = 0; at < n; at += DENSE_BUCKET) {
        const size_t k = n - at < DENSE_BUCKET ? n - at : DENSE_BUCKET;
        if (comm_allreduce_sum(c, g + at, (int64_t)k, err)) return -1;
    }
    return 0;
}

// The dense gradients summed over ranks. With overlap, the layered tensors'
// all-reduces were started during backward: the others are summed in place,
// then the layers' are awaited and copied back.
static int dense_allreduce(stepper* s, const comm* c, char* err) {
    model* m = s->m;
    if (!s->c) return allreduce_buckets(c, m->grads, m->n_params, err);
    s->c = NULL;
    if (s->failed) {
        snprintf(err, 512, "%s", s->err_text);
        return -1;
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const tensor_spec* t = &m->tensors[i];
        if (!t->layered && allreduce_buckets(c, m->grads + t->offset, t->size, err)) return -1;
    }
    for (int l = m->n_layers - 1; l >= 0; l--)
        if (comm_wait(c, &s->req[l], err)) return -1;
    for (int l = 0; l < m->n_layers; l++) {
        const real* at = s->stage + (size_t)l * s->per_layer;
        for (int i = 0; i < m->n_tensors; i++) {
            const tensor_spec* t = &m->tensors[i];
            if (!t->layered) continue;
            const size_t slice = t->size / (size_t)m->n_layers;
            dev_copy(m->grads + t->offset + (size_t)l * slice, at, slice * sizeof(real));
            at += slice;
        }
    }
    return 0;
}

// Installs the overlap for this step's backward (several ranks, the option
// on), its stage made once; s->c set says it is on.
static void overlap_setup(stepper* s, const comm* c) {
    model* m = s->m;
    m->layer_done = NULL;
    s->c = NULL;
    if (!s->overlap || c->world < 2) return;
    if (!s->stage) {
        size_t layered = 0;
        for (int i = 0; i < m->n_tensors; i++)
            if (m->tensors[i].layered) layered += m->tensors[i].size;
        s->per_layer = layered / (size_t)m->n_layers;
        s->stage = dev_calloc(layered * sizeof(real), "all-reduce staging");
        s->req = xcalloc((size_t)m->n_layers, sizeof(comm_request), "all-reduce requests");
    }
    s->c = c;
    s->failed = 0;
    m->layer_ctx = s;
    m->layer_done = layer_done;
}

int stepper_run(stepper* s, const comm* c, const int32_t* inputs, const int32_t* pad,
                const int32_t* targets, int B, int64_t row0, uint64_t dropout_seed, double lr,
                int64_t t, step_result* r, char* err) {
    model* m = s->m;
    const size_t np = m->n_params;
    double nt = 0;
    for (size_t i = 0; i < (size_t)B * m->L; i++) nt += targets[i] != 0;
    if (comm_allreduce_sum_f64(c, &nt, 1, err)) return -1;
    if (nt <= 0) {
        snprintf(err, 512, "the global batch has no targets");
        return -1;
    }
    dev_zero(m->grads, np * sizeof(real));
    m->row0 = row0;
    // this step's half of the page-locked batch buffers (the other half may
    // still be copying to the device)
    const size_t BL = (size_t)m->B * m->L;
    s->parity ^= 1;
    s->inputs_h = s->batch_h[s->parity], s->pad_h = s->inputs_h + BL;
    s->rows_h = s->pad_h + m->B, s->targets_h = s->rows_h + BL;
    memcpy(s->inputs_h, inputs, (size_t)B * m->L * sizeof(int32_t));
    memcpy(s->pad_h, pad, (size_t)B * sizeof(int32_t));
    model_forward(m, s->inputs_h, s->pad_h, B, dropout_seed);
    // The step's sums stay in device memory (s->sums: this rank's loss, the
    // dense gradient's squared norm, this rank's share of the bank's) until
    // the whole step is queued: the host waits once, at the end, besides the
    // bank's exchange counts. Each rank scales by 1/(global target count):
    // the summed gradient is the mean's.
    dev_zero(s->sums, 3 * sizeof(double));
    tied_loss(s, s->sums, targets, B, (real)(1.0 / nt));
    overlap_setup(s, c);
    m->backward(m);
    m->layer_done = NULL;
    // the bank's row gradients to the ranks that hold the rows (the layers'
    // all-reduces may be under way meanwhile), then the dense gradients
    if (m->bank)
        bank_push(m->bank, m->bank_grad_ids, m->bank_grad_w, m->bank_grad_src, m->bank_grad_group,
                  m->n_bank_grads, s->sums + 2);
    double t0 = now_sec();
    if (dense_allreduce(s, c, err)) return -1;
    s->dense_wait_s += now_sec() - t0;
    s->dense_bytes += c->world > 1 ? (double)np * sizeof(real) : 0;
    sum_squares_into(s->sums + 1, m->grads, (int64_t)np);
    adamw_update(m->params, m->grads, s->adam_m, s->adam_v, (int64_t)np, (real)lr, s->beta1,
                 s->beta2, s->eps, s->weight_decay, t);
    if (m->bank) bank_apply(m->bank, (real)lr, s->beta1, s->beta2, s->eps, t);
    // the step's one wait; then the loss and the bank's share over the ranks.
    // A non-finite sum stops the run after its update (no checkpoint follows
    // an error), as the divergence checks do.
    double h[3];
    dev_to_host(h, s->sums, sizeof h);
    double sums[2] = {h[0], h[2]};
    t0 = now_sec();
    if (comm_allreduce_sum_f64(c, sums, 2, err)) return -1;
    s->dense_wait_s += now_sec() - t0;
    r->n_targets = nt;
    r->loss = sums[0] / nt;
    const double gsq = h[1], bsq = sums[1];
    if (!isfinite(r->loss) || !isfinite(gsq) || !isfinite(bsq)) {
        snprintf(err, 512, "%s is not finite",
                 !isfinite(r->loss) ? "the loss"
                 : !isfinite(gsq)   ? "the gradient"
                                    : "the memory bank's gradient");
        return -1;
    }
    r->grad_sq = gsq + bsq;
    return 0;
}
