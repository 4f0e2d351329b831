// fixture.h: reading the PyTorch oracles' HDF5 fixtures in the model tests.
// Defines (static, for inclusion by one test file each): read_f64, read_i32,
// attr_i64, rel_err, fixture_compare, check_causality, spread_params,
// check_dropout_grad.
// Include after cmocka.h.
#ifndef ELASTIC_TESTS_FIXTURE_H
#define ELASTIC_TESTS_FIXTURE_H

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>

#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "bank.h"
#include "model.h"

static double* read_f64(hid_t f, const char* name, size_t* n) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(ds >= 0);
    hid_t sp = H5Dget_space(ds);
    *n = (size_t)H5Sget_simple_extent_npoints(sp);
    double* x = malloc(*n * sizeof *x);
    assert_true(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Sclose(sp);
    H5Dclose(ds);
    return x;
}

static int32_t* read_i32(hid_t f, const char* name) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(ds >= 0);
    hid_t sp = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
    int32_t* x = malloc(n * sizeof *x);
    assert_true(H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Sclose(sp);
    H5Dclose(ds);
    return x;
}

static int64_t attr_i64(hid_t f, const char* name) {
    int64_t v = 0;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    return v;
}

// max |a-b| / (atol + max|b|) over the tensor: relative to the tensor's scale
static double rel_err(const real* a, const double* b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return md / (1e-6 + mb);
}

// Loads the oracle's parameters (and memory bank) into m by tensor name, runs
// forward, the tied loss and backward on the fixture's batch, and checks the
// hidden states (non-padding positions), the loss and every gradient (the
// bank's sparse rows scattered densely) against the oracle's.
static void fixture_compare(model* m, hid_t f, const char* label) {
    const int B = (int)attr_i64(f, "B"), L = m->L, d = m->d;
    const int64_t N = m->V - 1;
    size_t cnt;
    for (int i = 0; i < m->n_tensors; i++) {
        double* x = read_f64(f, m->tensors[i].name, &cnt);
        assert_int_equal(cnt, m->tensors[i].size);
        for (size_t j = 0; j < cnt; j++) m->params[m->tensors[i].offset + j] = (real)x[j];
        free(x);
    }
    if (m->bank) {
        double* x = read_f64(f, "bank", &cnt);
        assert_int_equal(cnt, (size_t)m->bank->rows * d);
        for (size_t j = 0; j < cnt; j++) m->bank->values[j] = (real)x[j];
        free(x);
    }
    int32_t *inputs = read_i32(f, "inputs"), *targets = read_i32(f, "targets"),
            *pad = read_i32(f, "pad");
    memset(m->grads, 0, m->n_params * sizeof(real));
    model_forward(m, inputs, pad, B, 0);
    double* hidden = read_f64(f, "hidden", &cnt);
    assert_int_equal(cnt, (size_t)B * L * d);
    double maxh = 0;
    for (int b = 0; b < B; b++)
        for (int t = pad[b]; t < L; t++)
            for (int j = 0; j < d; j++) {
                size_t k = ((size_t)b * L + t) * d + j;
                maxh = fmax(maxh, fabs(m->out[k] - hidden[k]));
            }
    printf("# %s: hidden max abs diff %.3g\n", label, maxh);
    assert_true(maxh < 1e-4);

    int ntg = 0;
    for (int i = 0; i < B * L; i++) ntg += targets[i] != 0;
    const tensor_spec* wte = model_tensor(m, "wte");
    real* scratch = malloc(sizeof(real) * 4 * N);
    memset(m->dout, 0, sizeof(real) * B * L * d);
    double loss =
        crossentropy_tied(m->dout, m->grads + wte->offset, m->out, m->params + wte->offset, targets,
                          B * L, d, m->V, (real)(1.0 / ntg), scratch, 4) /
        ntg;
    double* want = read_f64(f, "loss", &cnt);
    printf("# %s: loss %.9f, oracle %.9f\n", label, loss, want[0]);
    assert_true(fabs(loss - want[0]) < 1e-5 * fabs(want[0]));
    m->backward(m);
    for (int i = 0; i < m->n_tensors; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad_%s", m->tensors[i].name);
        double* g = read_f64(f, name, &cnt);
        double e = rel_err(m->grads + m->tensors[i].offset, g, cnt);
        if (e > 1e-4) printf("# %s: %s relative error %.3g\n", label, name, e);
        assert_true(e < 1e-4);
        free(g);
    }
    if (m->bank) {
        real* dense = calloc((size_t)m->bank->rows * d, sizeof(real));
        for (int64_t r = 0; r < m->n_bank_grads; r++)
            for (int j = 0; j < d; j++)
                dense[(size_t)m->bank_grad_ids[r] * d + j] += model_bank_grad(m, r, j);
        double* g = read_f64(f, "grad_bank", &cnt);
        double e = rel_err(dense, g, cnt);
        printf("# %s: grad_bank relative error %.3g over %lld looked-up rows\n", label, e,
               (long long)m->n_bank_grads);
        assert_true(e < 1e-4);
        free(g);
        free(dense);
    }
    free(want), free(hidden), free(scratch), free(inputs), free(targets), free(pad);
}

// For a model built for 2 rows: perturbing the items at positions t+1..
// leaves outputs at <= t bit-identical and changes later ones, for every t
// from 2 on (so across every chunk boundary); padding content is invisible.
// Items are 1..N; row 1 has pad1 leading padding positions.
static void check_causality(model* m, int N, int pad1) {
    const int B = 2, L = m->L, d = m->d;
    int32_t* inp = malloc(sizeof(int32_t) * B * L);
    int32_t* p = malloc(sizeof(int32_t) * B * L);
    int32_t pad[2] = {0, pad1};
    for (int i = 0; i < B * L; i++) inp[i] = 1 + (i * 7) % N;
    for (int t = 0; t < pad1; t++) inp[L + t] = 0;
    real* base = malloc(sizeof(real) * B * L * d);
    model_forward(m, inp, pad, B, 0);
    memcpy(base, m->out, sizeof(real) * B * L * d);
    for (int t = 2; t + 1 < L; t++) {
        memcpy(p, inp, sizeof(int32_t) * B * L);
        for (int b = 0; b < B; b++)
            for (int s = t + 1; s < L; s++)
                if (s >= pad[b]) p[b * L + s] = 1 + (p[b * L + s] + 13) % N;
        model_forward(m, p, pad, B, 0);
        double before = 0, after = 0;
        for (int b = 0; b < B; b++)
            for (int s = pad[b]; s < L; s++)
                for (int j = 0; j < d; j++) {
                    size_t k = ((size_t)b * L + s) * d + j;
                    double diff = fabs(m->out[k] - base[k]);
                    if (s <= t)
                        before = fmax(before, diff);
                    else
                        after = fmax(after, diff);
                }
        assert_true(before == 0.0);
        assert_true(after > 1e-4);  // the perturbation did reach later positions
    }
    memcpy(p, inp, sizeof(int32_t) * B * L);
    for (int t = 0; t < pad1; t++) p[L + t] = 3 + t;
    model_forward(m, p, pad, B, 0);
    for (int s = pad1; s < L; s++)
        for (int j = 0; j < d; j++) {
            size_t k = ((size_t)L + s) * d + j;
            assert_true(fabs(m->out[k] - base[k]) < 1e-6);
        }
    free(base), free(inp), free(p);
}

// ---- finite differences of the whole model with dropout on. The masks are
// counter-based hashes of (seed, layer, site, index), so every forward with
// the same seed drops the same units and the loss is a smooth function of the
// parameters: backward must give its gradient, masks and 1/(1-p) included.
typedef struct {
    model* m;
    int32_t *inputs, *targets, *pad;
    int B, ntg;
    uint64_t seed;
    real* scratch;
} dropout_fd;

// mean cross-entropy of the next items over the batch, the tied table as output
static double dropout_fd_loss(dropout_fd* c) {
    model* m = c->m;
    model_forward(m, c->inputs, c->pad, c->B, c->seed);
    return crossentropy_tied(NULL, NULL, m->out, m->params + model_tensor(m, "wte")->offset,
                             c->targets, c->B * m->L, m->d, m->V, 1, c->scratch, 4) /
           c->ntg;
}

// Derivative of the loss in x by the 4-point central stencil (error O(h^4),
// so the step can stay well above the float loss's rounding), over the
// float steps actually taken.
static double dropout_fd_diff(dropout_fd* c, real* x, double h) {
    const real x0 = *x;
    const real xs[4] = {(real)(x0 - 2 * h), (real)(x0 - h), (real)(x0 + h), (real)(x0 + 2 * h)};
    double f[4];
    for (int i = 0; i < 4; i++) {
        *x = xs[i];
        f[i] = dropout_fd_loss(c);
    }
    *x = x0;
    const double step = ((double)xs[2] - (double)xs[1]) / 2;
    return (8 * (f[2] - f[1]) - (f[3] - f[0])) / (12 * step);
}
// The model's streamed state against the whole-history forward: items[n]
// fed event by event must give, at every event, the final state the forward
// over all n (one row, no padding) gives at that position (relative error
// 1e-4); a state copied before event `save` (a save) and restored goes on to
// the same bits at event `again`.
static inline void check_stream(model* m, const int32_t* items, int n, int save, int again) {
    const int d = m->d;
    const int32_t pad = 0;
    model_forward(m, items, &pad, 1, 0);
    real* full = malloc((size_t)n * d * sizeof *full);
    memcpy(full, m->out, (size_t)n * d * sizeof *full);
    const size_t ns = m->stream_floats(m);
    real *st = calloc(ns, sizeof *st), *saved = malloc(ns * sizeof *saved);
    real *h = malloc((size_t)d * sizeof *h), *kept = malloc((size_t)d * sizeof *kept);
    double worst = 0;
    for (int t = 0; t < n; t++) {
        if (t == save) memcpy(saved, st, ns * sizeof *st);
        m->stream_step(m, st, t, items[t], h);
        double num = 0, den = 1e-30;
        for (int c = 0; c < d; c++) {
            num = fmax(num, fabs((double)h[c] - full[(size_t)t * d + c]));
            den = fmax(den, fabs((double)full[(size_t)t * d + c]));
        }
        worst = fmax(worst, num / den);
        if (t == again) memcpy(kept, h, (size_t)d * sizeof *h);
    }
    if (worst > 1e-4)
        fail_msg("streamed state against the whole forward: relative error %.2e", worst);
    memcpy(st, saved, ns * sizeof *st);  // restored: events save..again once more
    for (int t = save; t <= again; t++) m->stream_step(m, st, t, items[t], h);
    assert_memory_equal(h, kept, (size_t)d * sizeof *h);
    free(full), free(st), free(saved), free(h), free(kept);
}

// Parameters for a gradient check: init's values times 5 plus a fixed spread
// of +-0.05, so that gradients stand well above the float loss's rounding and
// no parameter sits at init's zeros (a zero prior ties every score it feeds).
static void spread_params(model* m) {
    uint64_t r = 1;
    for (size_t i = 0; i < m->n_params; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        m->params[i] = m->params[i] * 5 + (real)(0.1 * ((double)(r >> 40) / 16777216.0 - 0.5));
    }
}

// For the m->B rows of random items 1..N (row 1 padded by 2), with dropout p
// = the model's (> 0) under `seed`: the loss differs from the one without
// dropout, repeats bit for bit, and backward's gradient agrees with central
// differences (step h times max(1, |x|)) within tol at the `top` elements of
// largest gradient of every tensor, and of the item rows that are only ever
// inputs (item N-b opens row b and appears nowhere else: its gradient comes
// through the embedding's dropout, not the output layer). Errors are
// relative to the larger of the two, floored at 1% of the model's largest
// gradient (below that the loss's rounding dominates the differences).
// Returns the worst error.
static double check_dropout_grad(model* m, int N, uint64_t seed, double h, double tol, int top,
                                 const char* label) {
    const int B = m->B, L = m->L, d = m->d;
    dropout_fd c = {.m = m, .B = B, .seed = seed};
    c.inputs = malloc(sizeof(int32_t) * B * L), c.targets = malloc(sizeof(int32_t) * B * L);
    c.pad = calloc(B, sizeof(int32_t));
    c.scratch = malloc(sizeof(real) * 4 * (m->V - 1));
    assert_true(N > 2 * B && N < m->V);
    if (B > 1) c.pad[1] = 2;
    uint64_t r = seed;
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= L; t++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            int32_t item = 1 + (int32_t)((r >> 33) % (uint64_t)(N - B));
            if (t < c.pad[b]) item = 0;
            if (t == c.pad[b]) item = N - b;
            if (t < L) c.inputs[b * L + t] = item;
            if (t > 0) c.targets[b * L + t - 1] = t - 1 < c.pad[b] ? 0 : item;
        }
    for (int i = 0; i < B * L; i++) c.ntg += c.targets[i] != 0;

    c.seed = 0;
    const double plain = dropout_fd_loss(&c);
    c.seed = seed;
    const double loss = dropout_fd_loss(&c), again = dropout_fd_loss(&c);
    printf("# %s: loss %.6f with dropout, %.6f without\n", label, loss, plain);
    assert_true(loss == again);
    assert_true(fabs(loss - plain) > 1e-3);

    const tensor_spec* wte = model_tensor(m, "wte");
    memset(m->grads, 0, m->n_params * sizeof(real));
    model_forward(m, c.inputs, c.pad, B, seed);
    memset(m->dout, 0, sizeof(real) * B * L * d);
    crossentropy_tied(m->dout, m->grads + wte->offset, m->out, m->params + wte->offset, c.targets,
                      B * L, d, m->V, (real)(1.0 / c.ntg), c.scratch, 4);
    m->backward(m);

    double worst = 0, gmax = 0;
    const char* worst_at = "";
    for (size_t i = 0; i < m->n_params; i++) gmax = fmax(gmax, fabs(m->grads[i]));
    for (int ti = 0; ti <= m->n_tensors; ti++) {
        // the tensors, then the input-only rows N-B+1..N of wte
        const int rows = ti == m->n_tensors;
        const size_t off = rows ? wte->offset + (size_t)(N - B + 1) * d : m->tensors[ti].offset;
        const size_t n = rows ? (size_t)B * d : m->tensors[ti].size;
        const char* name = rows ? "wte (input-only rows)" : m->tensors[ti].name;
        real* x = m->params + off;
        const real* g = m->grads + off;
        size_t done[8];
        for (int k = 0; k < top && k < 8; k++) {
            size_t best = 0;
            double gb = -1;
            for (size_t i = 0; i < n; i++) {
                int seen = 0;
                for (int j = 0; j < k; j++) seen |= done[j] == i;
                if (!seen && fabs(g[i]) > gb) gb = fabs(g[i]), best = i;
            }
            done[k] = best;
            if (gb == 0) continue;  // nothing reaches this tensor in this batch
            const double num = dropout_fd_diff(&c, x + best, h * fmax(1, fabs(x[best])));
            const double e =
                fabs(g[best] - num) / fmax(fmax(fabs(g[best]), fabs(num)), 1e-2 * gmax);
            if (e > tol)
                printf("# %s: %s[%zu] backward %.6g, differences %.6g\n", label, name, best,
                       (double)g[best], num);
            if (e > worst) worst = e, worst_at = name;
        }
    }
    printf("# %s: worst relative error %.3g (%s)\n", label, worst, worst_at);
    assert_true(worst <= tol);
    free(c.inputs), free(c.targets), free(c.pad), free(c.scratch);
    return worst;
}

#endif
