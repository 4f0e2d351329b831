// test_sasrec.c: the C SASRec against the PyTorch oracle's fixture (forward,
// loss, every gradient), for both attention kernels; causality; padding.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fixture.h"
#include "model.h"

#define FIXTURE "tests/reference/fixtures/sasrec.h5"

static void fixture_check(const char* attention) {
    hid_t f = H5Fopen(FIXTURE, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    const int B = (int)attr_i64(f, "B"), L = (int)attr_i64(f, "L"), d = (int)attr_i64(f, "d");
    config cfg;
    config_defaults(&cfg);
    cfg.L = L, cfg.d = d, cfg.heads = (int)attr_i64(f, "H"),
    cfg.layers = (int)attr_i64(f, "n_layers");
    cfg.dropout = 0;
    strcpy(cfg.attention, attention);
    const int64_t N = attr_i64(f, "n_items");
    char err[512];
    model* m = model_create(&cfg, N, B, err);
    assert_non_null(m);
    for (int i = 0; i < m->n_tensors; i++) {
        size_t n;
        double* x = read_f64(f, m->tensors[i].name, &n);
        assert_int_equal(n, m->tensors[i].size);
        for (size_t j = 0; j < n; j++) m->params[m->tensors[i].offset + j] = (real)x[j];
        free(x);
    }
    int32_t *inputs = read_i32(f, "inputs"), *targets = read_i32(f, "targets"),
            *pad = read_i32(f, "pad");
    memset(m->grads, 0, m->n_params * sizeof(real));
    m->forward(m, inputs, pad, B, 0);

    size_t n;
    double* hidden = read_f64(f, "hidden", &n);
    assert_int_equal(n, (size_t)B * L * d);
    double maxh = 0;
    for (int b = 0; b < B; b++)
        for (int t = pad[b]; t < L; t++)
            for (int j = 0; j < d; j++) {
                size_t k = ((size_t)b * L + t) * d + j;
                maxh = fmax(maxh, fabs(m->out[k] - hidden[k]));
            }
    printf("# %s: hidden max abs diff %.3g\n", attention, maxh);
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
    double* want_loss = read_f64(f, "loss", &n);
    printf("# %s: loss %.9f, oracle %.9f\n", attention, loss, want_loss[0]);
    assert_true(fabs(loss - want_loss[0]) < 1e-5 * fabs(want_loss[0]));
    m->backward(m);
    for (int i = 0; i < m->n_tensors; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad_%s", m->tensors[i].name);
        double* g = read_f64(f, name, &n);
        double e = rel_err(m->grads + m->tensors[i].offset, g, n);
        if (e > 1e-4) printf("# %s: %s relative error %.3g\n", attention, name, e);
        assert_true(e < 1e-4);
        free(g);
    }
    free(want_loss);
    free(hidden);
    free(scratch);
    free(inputs);
    free(targets);
    free(pad);
    model_free(m);
    H5Fclose(f);
}

static void test_fixture_plain(void** state) { fixture_check("plain"); }
static void test_fixture_fused(void** state) { fixture_check("fused"); }

// Changing the item at position t+1 (and everything after) leaves outputs at
// positions <= t unchanged; changing padding changes nothing at all.
static void causality_check(const char* attention) {
    config cfg;
    config_defaults(&cfg);
    cfg.L = 19, cfg.d = 16, cfg.heads = 2, cfg.layers = 2;
    strcpy(cfg.attention, attention);
    const int B = 2, L = cfg.L, d = cfg.d, N = 50;
    char err[512];
    model* m = model_create(&cfg, N, B, err);
    assert_non_null(m);
    m->init(m, 7);
    // larger weights than the init so that perturbations propagate visibly
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 5;
    int32_t inp[2 * 19], pad[2] = {0, 4};
    for (int i = 0; i < B * L; i++) inp[i] = 1 + (i * 7) % N;
    for (int t = 0; t < pad[1]; t++) inp[L + t] = 0;
    real* base = malloc(sizeof(real) * B * L * d);
    m->forward(m, inp, pad, B, 0);
    memcpy(base, m->out, sizeof(real) * B * L * d);
    for (int t = 4; t + 1 < L; t += 3) {
        int32_t p[2 * 19];
        memcpy(p, inp, sizeof p);
        for (int b = 0; b < B; b++)
            for (int s = t + 1; s < L; s++) p[b * L + s] = 1 + (p[b * L + s] + 13) % N;
        m->forward(m, p, pad, B, 0);
        double before = 0, after = 0;
        for (int b = 0; b < B; b++)
            for (int s = 0; s < L; s++)
                for (int j = 0; j < d; j++) {
                    size_t k = ((size_t)b * L + s) * d + j;
                    double diff = fabs(m->out[k] - base[k]);
                    if (s <= t)
                        before = fmax(before, diff);
                    else
                        after = fmax(after, diff);
                }
        assert_true(before == 0.0);
        assert_true(after > 1e-3);  // the perturbation did reach later positions
    }
    // padding content is invisible to real positions
    int32_t p2[2 * 19];
    memcpy(p2, inp, sizeof p2);
    for (int t = 0; t < pad[1]; t++) p2[L + t] = 3 + t;
    m->forward(m, p2, pad, B, 0);
    for (int s = pad[1]; s < L; s++)
        for (int j = 0; j < d; j++) {
            size_t k = ((size_t)L + s) * d + j;
            assert_true(fabs(m->out[k] - base[k]) < 1e-6);
        }
    free(base);
    model_free(m);
}

static void test_causality_plain(void** state) { causality_check("plain"); }
static void test_causality_fused(void** state) { causality_check("fused"); }

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_plain),
        cmocka_unit_test(test_fixture_fused),
        cmocka_unit_test(test_causality_plain),
        cmocka_unit_test(test_causality_fused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
