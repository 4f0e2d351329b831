// test_elastic.c: the C ELASTIC against the PyTorch oracle's fixtures (with
// and without the memory bank: forward, loss, every gradient, the bank's
// sparse gradient); causality across chunk boundaries; padding; the sparse
// bank update touches exactly the rows that were looked up.
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

static void fixture_check(const char* path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    const int B = (int)attr_i64(f, "B"), L = (int)attr_i64(f, "L"), d = (int)attr_i64(f, "d");
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "elastic");
    cfg.L = L, cfg.d = d, cfg.heads = (int)attr_i64(f, "H");
    cfg.layers = (int)attr_i64(f, "n_layers");
    cfg.experts = (int)attr_i64(f, "k"), cfg.chunk = (int)attr_i64(f, "C");
    const int64_t n = attr_i64(f, "mem_n");
    cfg.mem_slots = n * n, cfg.mem_topk = (int)attr_i64(f, "mem_topk");
    cfg.mem_heads = (int)attr_i64(f, "mem_heads"), cfg.mem_dk = (int)attr_i64(f, "mem_dk");
    cfg.no_memory = !attr_i64(f, "memory");
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
    if (m->bank) {
        double* x = read_f64(f, "bank", &cnt);
        assert_int_equal(cnt, (size_t)m->bank_rows * d);
        for (size_t j = 0; j < cnt; j++) m->bank[j] = (real)x[j];
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
    printf("# %s: hidden max abs diff %.3g\n", path, maxh);
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
    if (m->bank) {  // the sparse rows, scattered densely, against the oracle's dense gradient
        real* dense = calloc((size_t)m->bank_rows * d, sizeof(real));
        for (int64_t r = 0; r < m->n_bank_grads; r++)
            for (int j = 0; j < d; j++)
                dense[(size_t)m->bank_grad_ids[r] * d + j] += m->bank_grad_rows[(size_t)r * d + j];
        double* g = read_f64(f, "grad_bank", &cnt);
        double e = rel_err(dense, g, cnt);
        printf("# %s: grad_bank relative error %.3g over %lld looked-up rows\n", path, e,
               (long long)m->n_bank_grads);
        assert_true(e < 1e-4);
        free(g);
        free(dense);
    }
    free(want);
    free(hidden);
    free(scratch);
    free(inputs);
    free(targets);
    free(pad);
    model_free(m);
    H5Fclose(f);
}

static void test_fixture_memory(void** state) {
    fixture_check("tests/reference/fixtures/elastic.h5");
}
static void test_fixture_no_memory(void** state) {
    fixture_check("tests/reference/fixtures/elastic_nomem.h5");
}

static model* small_model(int no_memory) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "elastic");
    cfg.L = 19, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.experts = 3, cfg.chunk = 4;
    cfg.mem_slots = 64, cfg.mem_topk = 4, cfg.mem_heads = 2, cfg.mem_dk = 8;
    cfg.no_memory = no_memory;
    char err[512];
    model* m = model_create(&cfg, 50, 2, err);
    assert_non_null(m);
    m->init(m, 11);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 5;  // visible propagation
    return m;
}

// Perturbing positions t+1.. leaves outputs at <= t unchanged, for t on both
// sides of every chunk boundary; padding content is invisible.
static void causality_check(int no_memory) {
    model* m = small_model(no_memory);
    const int B = 2, L = m->L, d = m->d, N = 50;
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

static void test_causality_memory(void** state) { causality_check(0); }
static void test_causality_no_memory(void** state) { causality_check(1); }

// One sparse Adam step on the rows backward listed: those rows change, every
// other row of the bank stays bit-identical.
static void test_sparse_update_rows(void** state) {
    model* m = small_model(0);
    const int B = 2, L = m->L, d = m->d;
    int32_t inp[2 * 19], pad[2] = {0, 0};
    for (int i = 0; i < B * L; i++) inp[i] = 1 + (i * 5) % 50;
    m->forward(m, inp, pad, B, 1234);
    memset(m->grads, 0, m->n_params * sizeof(real));
    for (size_t i = 0; i < (size_t)B * L * d; i++) m->dout[i] = (real)((i % 7) - 3) * 0.01f;
    m->backward(m);
    assert_true(m->n_bank_grads > 0);
    const size_t rows = (size_t)m->bank_rows;
    real* before = malloc(rows * d * sizeof(real));
    memcpy(before, m->bank, rows * d * sizeof(real));
    real *bm = calloc(rows * d, sizeof(real)), *bv = calloc(rows * d, sizeof(real));
    int32_t* uniq = malloc(m->n_bank_grads * sizeof(int32_t));
    real* sum = malloc(m->n_bank_grads * d * sizeof(real));
    int64_t* perm = malloc(m->n_bank_grads * sizeof(int64_t));
    int64_t nu = sparse_rows_reduce(uniq, sum, m->bank_grad_ids, m->bank_grad_rows, m->n_bank_grads,
                                    d, perm);
    adam_sparse_update(m->bank, bm, bv, uniq, sum, nu, d, 1e-2f, 0.9f, 0.98f, 1e-8f, 1);
    uint8_t* touched = calloc(rows, 1);
    for (int64_t i = 0; i < nu; i++) touched[uniq[i]] = 1;
    int64_t changed = 0;
    for (size_t r = 0; r < rows; r++) {
        int same = !memcmp(before + r * d, m->bank + r * d, d * sizeof(real));
        if (!touched[r]) assert_true(same);
        changed += !same;
    }
    printf("# %lld of %zu rows looked up and changed\n", (long long)changed, rows);
    assert_int_equal(changed, nu);
    assert_true(nu < (int64_t)rows);
    free(before), free(bm), free(bv), free(uniq), free(sum), free(perm), free(touched);
    model_free(m);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_memory),     cmocka_unit_test(test_fixture_no_memory),
        cmocka_unit_test(test_causality_memory),   cmocka_unit_test(test_causality_no_memory),
        cmocka_unit_test(test_sparse_update_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
