// test_recgrela.c: the C RecGRELA against the PyTorch oracle's fixtures (full
// model, and with the local branch and the gate ablated: forward, loss, every
// gradient); causality across chunk boundaries; padding.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "config.h"
#include "fixture.h"
#include "model.h"

static void fixture_check(const char* path, int chunk) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    const int B = (int)attr_i64(f, "B"), L = (int)attr_i64(f, "L"), d = (int)attr_i64(f, "d");
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "recgrela");
    cfg.L = L, cfg.d = d, cfg.heads = (int)attr_i64(f, "H");
    cfg.layers = (int)attr_i64(f, "n_layers");
    cfg.conv_kernel = (int)attr_i64(f, "conv_kernel");
    cfg.no_local = !attr_i64(f, "local"), cfg.no_gate = !attr_i64(f, "gate");
    cfg.chunk = chunk;
    cfg.dropout = 0;
    const int64_t N = attr_i64(f, "n_items");
    char err[512];
    model* m = model_create(&cfg, N, B, err);
    assert_non_null(m);
    size_t cnt;
    for (int i = 0; i < m->n_tensors; i++) {
        double* x = read_f64(f, m->tensors[i].name, &cnt);
        assert_int_equal(cnt, m->tensors[i].size);
        for (size_t j = 0; j < cnt; j++) m->params[m->tensors[i].offset + j] = (real)x[j];
        free(x);
    }
    int32_t *inputs = read_i32(f, "inputs"), *targets = read_i32(f, "targets"),
            *pad = read_i32(f, "pad");
    memset(m->grads, 0, m->n_params * sizeof(real));
    m->forward(m, inputs, pad, B, 0);
    double* hidden = read_f64(f, "hidden", &cnt);
    double maxh = 0;
    for (int b = 0; b < B; b++)
        for (int t = pad[b]; t < L; t++)
            for (int j = 0; j < d; j++) {
                size_t k = ((size_t)b * L + t) * d + j;
                maxh = fmax(maxh, fabs(m->out[k] - hidden[k]));
            }
    printf("# %s (chunk %d): hidden max abs diff %.3g\n", path, chunk, maxh);
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
    printf("# %s: loss %.9f, oracle %.9f\n", path, loss, want[0]);
    assert_true(fabs(loss - want[0]) < 1e-5 * fabs(want[0]));
    m->backward(m);
    for (int i = 0; i < m->n_tensors; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad_%s", m->tensors[i].name);
        double* g = read_f64(f, name, &cnt);
        double e = rel_err(m->grads + m->tensors[i].offset, g, cnt);
        if (e > 1e-4) printf("# %s: %s relative error %.3g\n", path, name, e);
        assert_true(e < 1e-4);
        free(g);
    }
    free(want), free(hidden), free(scratch), free(inputs), free(targets), free(pad);
    model_free(m);
    H5Fclose(f);
}

// chunk sizes 4 (several chunks) and 64 (one chunk) must both match the oracle
static void test_fixture_full(void** state) {
    fixture_check("tests/reference/fixtures/recgrela.h5", 4);
    fixture_check("tests/reference/fixtures/recgrela.h5", 64);
}
static void test_fixture_ablated(void** state) {
    fixture_check("tests/reference/fixtures/recgrela_ablate.h5", 3);
}

static void causality_check(int no_local, int no_gate) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "recgrela");
    cfg.L = 19, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.chunk = 4;
    cfg.no_local = no_local, cfg.no_gate = no_gate;
    const int B = 2, L = cfg.L, d = cfg.d, N = 50;
    char err[512];
    model* m = model_create(&cfg, N, B, err);
    assert_non_null(m);
    m->init(m, 5);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 5;
    int32_t inp[2 * 19], pad[2] = {0, 6};
    for (int i = 0; i < B * L; i++) inp[i] = 1 + (i * 7) % N;
    for (int t = 0; t < pad[1]; t++) inp[L + t] = 0;
    real* base = malloc(sizeof(real) * B * L * d);
    m->forward(m, inp, pad, B, 0);
    memcpy(base, m->out, sizeof(real) * B * L * d);
    for (int t = 2; t + 1 < L; t++) {
        int32_t p[2 * 19];
        memcpy(p, inp, sizeof p);
        for (int b = 0; b < B; b++)
            for (int s = t + 1; s < L; s++)
                if (s >= pad[b]) p[b * L + s] = 1 + (p[b * L + s] + 13) % N;
        m->forward(m, p, pad, B, 0);
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
        assert_true(after > 1e-4);
    }
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

static void test_causality(void** state) { causality_check(0, 0); }
static void test_causality_ablated(void** state) { causality_check(1, 1); }

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_full),
        cmocka_unit_test(test_fixture_ablated),
        cmocka_unit_test(test_causality),
        cmocka_unit_test(test_causality_ablated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
