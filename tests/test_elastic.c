// test_elastic.c: the C ELASTIC against the PyTorch oracle's fixtures (with
// and without the memory bank: forward, loss, every gradient, the bank's
// sparse gradient); causality across chunk boundaries; padding; the sparse
// bank update touches exactly the rows that were looked up; the gradient with
// dropout on against finite differences of the whole model; the streamed
// user state against the whole-history forward at every event.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "fixture.h"
#include "bank.h"
#include "model.h"
#include "models/elastic.h"

// rows: FFN blocks of that many rows (0: the default, one block here)
static void fixture_check(const char* path, int recompute, int rows) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "elastic");
    cfg.L = (int)attr_i64(f, "L"), cfg.d = (int)attr_i64(f, "d");
    cfg.heads = (int)attr_i64(f, "H"), cfg.layers = (int)attr_i64(f, "n_layers");
    cfg.experts = (int)attr_i64(f, "k"), cfg.chunk = (int)attr_i64(f, "C");
    const int64_t n = attr_i64(f, "mem_n");
    cfg.mem_slots = n * n, cfg.mem_topk = (int)attr_i64(f, "mem_topk");
    cfg.mem_heads = (int)attr_i64(f, "mem_heads"), cfg.mem_dk = (int)attr_i64(f, "mem_dk");
    cfg.no_memory = !attr_i64(f, "memory");
    cfg.dropout = 0;
    cfg.recompute = recompute;
    char err[512];
    model* m = model_create(&cfg, attr_i64(f, "n_items"), (int)attr_i64(f, "B"), NULL, err);
    assert_non_null(m);
    if (rows) m->ffn_rows = rows;
    fixture_compare(m, f, path);
    model_free(m);
    H5Fclose(f);
}

static void test_fixture_memory(void** state) {
    fixture_check("tests/reference/fixtures/elastic.h5", 0, 0);
    fixture_check("tests/reference/fixtures/elastic.h5", 0, 8);  // 22 rows: blocks of 8, 8, 6
    fixture_check("tests/reference/fixtures/elastic.h5", 1, 8);  // rebuilt in backward
}
static void test_fixture_no_memory(void** state) {
    fixture_check("tests/reference/fixtures/elastic_nomem.h5", 0, 0);
    fixture_check("tests/reference/fixtures/elastic_nomem.h5", 1, 5);
}

static model* small_model_r(int no_memory, int recompute) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "elastic");
    cfg.L = 19, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.experts = 3, cfg.chunk = 4;
    cfg.mem_slots = 64, cfg.mem_topk = 4, cfg.mem_heads = 2, cfg.mem_dk = 8;
    cfg.no_memory = no_memory;
    cfg.recompute = recompute;
    char err[512];
    model* m = model_create(&cfg, 50, 2, NULL, err);
    assert_non_null(m);
    m->init(m, 11);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 5;  // visible propagation
    return m;
}

static model* small_model(int no_memory) { return small_model_r(no_memory, 0); }

// across chunk boundaries, with and without the memory
static void causality_check(int no_memory) {
    model* m = small_model(no_memory);
    check_causality(m, 50, 6);
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
    model_forward(m, inp, pad, B, 1234);
    memset(m->grads, 0, m->n_params * sizeof(real));
    for (size_t i = 0; i < (size_t)B * L * d; i++) m->dout[i] = (real)((i % 7) - 3) * 0.01f;
    m->backward(m);
    assert_true(m->n_bank_grads > 0);
    const size_t rows = (size_t)m->bank->rows;
    real* before = malloc(rows * d * sizeof(real));
    memcpy(before, m->bank->values, rows * d * sizeof(real));
    real *bm = calloc(rows * d, sizeof(real)), *bv = calloc(rows * d, sizeof(real));
    int32_t* uniq = malloc(m->n_bank_grads * sizeof(int32_t));
    real* sum = malloc(m->n_bank_grads * d * sizeof(real));
    int64_t* perm = malloc(m->n_bank_grads * sizeof(int64_t));
    real* grad_rows = malloc(m->n_bank_grads * d * sizeof(real));
    for (int64_t i = 0; i < m->n_bank_grads * d; i++)
        grad_rows[i] = model_bank_grad(m, i / d, (int)(i % d));
    int64_t nu =
        sparse_rows_reduce(uniq, sum, m->bank_grad_ids, grad_rows, m->n_bank_grads, d, perm);
    free(grad_rows);
    adam_sparse_update(m->bank->values, bm, bv, uniq, sum, nu, d, 1e-2f, 0.9f, 0.98f, 1e-8f, 1);
    uint8_t* touched = calloc(rows, 1);
    for (int64_t i = 0; i < nu; i++) touched[uniq[i]] = 1;
    int64_t changed = 0;
    for (size_t r = 0; r < rows; r++) {
        int same = !memcmp(before + r * d, m->bank->values + r * d, d * sizeof(real));
        if (!touched[r]) assert_true(same);
        changed += !same;
    }
    printf("# %lld of %zu rows looked up and changed\n", (long long)changed, rows);
    assert_int_equal(changed, nu);
    assert_true(nu < (int64_t)rows);
    free(before), free(bm), free(bv), free(uniq), free(sum), free(perm), free(touched);
    model_free(m);
}

// The expert load after a forward: the same whether q is kept or rebuilt
// (--recompute), each share in [0,1], their sum (the interests' share of the
// dispatch attention) in (0,1).
static void test_expert_load(void** state) {
    model *a = small_model_r(0, 0), *b = small_model_r(0, 1);
    int32_t inp[2 * 19], pad[2] = {0, 5};
    for (int i = 0; i < 2 * 19; i++) inp[i] = 1 + (i * 7) % 50;
    model_forward(a, inp, pad, 2, 0);
    model_forward(b, inp, pad, 2, 0);
    double la[3], lb[3], sum = 0;
    elastic_expert_load(a, la);
    elastic_expert_load(b, lb);
    for (int x = 0; x < 3; x++) {
        assert_true(la[x] >= 0 && la[x] <= 1);
        assert_true(fabs(la[x] - lb[x]) < 1e-6);
        sum += la[x];
    }
    assert_true(sum > 0 && sum < 1);
    model_free(a);
    model_free(b);
}

// Dropout on (p = 0.3, every site): backward against central differences of
// the float model, the FFN kept and rebuilt. Without the memory bank: its
// top-k selection makes the loss piecewise smooth, and a selection flipping
// inside the step breaks the differences (its gradients are checked, with the
// selection fixed, against the oracle above); the dropout sites are the same.
static void dropout_grad(int recompute) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "elastic");
    cfg.L = 9, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.experts = 3, cfg.chunk = 4;
    cfg.no_memory = 1, cfg.recompute = recompute, cfg.dropout = 0.3;
    char err[512];
    model* m = model_create(&cfg, 30, 3, NULL, err);
    assert_non_null(m);
    m->init(m, 3);
    spread_params(m);
    check_dropout_grad(m, 30, 0x5eed, 1e-3, 2e-2, 2, recompute ? "recompute" : "kept");
    model_free(m);
}

static void test_dropout_grad(void** state) { dropout_grad(0); }
static void test_dropout_grad_recompute(void** state) { dropout_grad(1); }

// A bank row of clearly non-zero values, so the retrieval weighs in.
static void big_row(real* row, int64_t id, void* ctx) {
    const int d = *(const int*)ctx;
    for (int c = 0; c < d; c++) row[c] = (real)(rng_uniform(17, (uint64_t)id * d + c) - 0.5);
}

// Streaming: a user's state carried event by event gives, at every event,
// the final state the forward over the whole history (no padding) gives at
// that position: across chunk boundaries (C = 4, 45 events: the interests of
// every chunk from the running aggregate, the bank read once a chunk), with a
// prior of its own; and a state copied midway (a save) and restored goes on
// to the same bits.
static void stream_check(int no_memory, int recompute) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "elastic");
    const int n = 45;
    cfg.L = n, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.experts = 3, cfg.chunk = 4;
    cfg.mem_slots = 64, cfg.mem_topk = 4, cfg.mem_heads = 2, cfg.mem_dk = 8;
    cfg.no_memory = no_memory, cfg.recompute = recompute, cfg.dropout = 0;
    char err[512];
    model* m = model_create(&cfg, 50, 1, NULL, err);
    assert_non_null(m);
    m->init(m, 7);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 3;  // well away from zero
    const char* prior[] = {"prior_u", "prior_b"};                // a prior that is not zero
    for (int p = 0; p < 2; p++) {
        const tensor_spec* t = model_tensor(m, prior[p]);
        for (size_t i = 0; i < t->size; i++)
            m->params[t->offset + i] = (real)(rng_uniform(19 + p, i) - 0.5);
    }
    if (!no_memory) bank_init_rows(m->bank, big_row, &cfg.d);
    int32_t items[45];
    for (int t = 0; t < n; t++) items[t] = 1 + (int32_t)(rng_hash64(11, (uint64_t)t) % 49);
    check_stream(m, items, n, 18, 24);  // saved mid-chunk: the open chunk kept
    model_free(m);
}
static void test_stream_memory(void** state) { stream_check(0, 0); }
static void test_stream_no_memory_recompute(void** state) { stream_check(1, 1); }

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_memory),
        cmocka_unit_test(test_fixture_no_memory),
        cmocka_unit_test(test_causality_memory),
        cmocka_unit_test(test_causality_no_memory),
        cmocka_unit_test(test_sparse_update_rows),
        cmocka_unit_test(test_expert_load),
        cmocka_unit_test(test_dropout_grad),
        cmocka_unit_test(test_dropout_grad_recompute),
        cmocka_unit_test(test_stream_memory),
        cmocka_unit_test(test_stream_no_memory_recompute),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
