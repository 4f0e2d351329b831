// test_recgrela.c: the C RecGRELA against the PyTorch oracle's fixtures (full
// model, and with the local branch and the gate ablated: forward, loss, every
// gradient); causality across chunk boundaries; padding; the gradient with
// dropout on against finite differences of the whole model.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "fixture.h"
#include "model.h"
#include "models/recgrela.h"

static void fixture_check(const char* path, int chunk, int recompute) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "recgrela");
    cfg.L = (int)attr_i64(f, "L"), cfg.d = (int)attr_i64(f, "d");
    cfg.heads = (int)attr_i64(f, "H"), cfg.layers = (int)attr_i64(f, "n_layers");
    cfg.conv_kernel = (int)attr_i64(f, "conv_kernel");
    cfg.no_local = !attr_i64(f, "local"), cfg.no_gate = !attr_i64(f, "gate");
    cfg.chunk = chunk;
    cfg.dropout = 0;
    cfg.recompute = recompute;
    char err[512], label[300];
    model* m = model_create(&cfg, attr_i64(f, "n_items"), (int)attr_i64(f, "B"), NULL, err);
    assert_non_null(m);
    if (recompute) m->ffn_rows = 8;  // several FFN blocks, the last one short
    snprintf(label, sizeof label, "%s (chunk %d)", path, chunk);
    fixture_compare(m, f, label);
    model_free(m);
    H5Fclose(f);
}

// chunk sizes 4 (several chunks) and 64 (one chunk) must both match the oracle
static void test_fixture_full(void** state) {
    fixture_check("tests/reference/fixtures/recgrela.h5", 4, 0);
    fixture_check("tests/reference/fixtures/recgrela.h5", 64, 1);  // and FFN rebuilt
}
static void test_fixture_ablated(void** state) {
    fixture_check("tests/reference/fixtures/recgrela_ablate.h5", 3, 0);
}

static void causality_check(int no_local, int no_gate) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "recgrela");
    cfg.L = 19, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.chunk = 4;
    cfg.no_local = no_local, cfg.no_gate = no_gate;
    char err[512];
    model* m = model_create(&cfg, 50, 2, NULL, err);
    assert_non_null(m);
    m->init(m, 5);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 5;  // visible propagation
    check_causality(m, 50, 6);
    model_free(m);
}

static void test_causality(void** state) { causality_check(0, 0); }
static void test_causality_ablated(void** state) { causality_check(1, 1); }

// Streaming: a user's state carried event by event gives, at every event,
// the final state the forward over the whole history (no padding) gives at
// that position: across chunk boundaries (C = 4, 45 events), with the conv
// window filling up; and a state copied midway (a save) and restored goes on
// to the same bits.
static void stream_check(int no_local, int no_gate) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "recgrela");
    const int n = 45;
    cfg.L = n, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.chunk = 4;
    cfg.no_local = no_local, cfg.no_gate = no_gate, cfg.dropout = 0;
    char err[512];
    model* m = model_create(&cfg, 50, 1, NULL, err);
    assert_non_null(m);
    m->init(m, 7);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 3;  // well away from zero
    const tensor_spec* cw = model_tensor(m, "convw");            // every tap of the conv in use
    for (size_t i = 0; cw && i < cw->size; i++)
        m->params[cw->offset + i] = (real)(rng_uniform(13, i) - 0.5);
    int32_t items[45];
    for (int t = 0; t < n; t++) items[t] = 1 + (int32_t)(rng_hash64(11, (uint64_t)t) % 49);
    check_stream(m, items, n, 20, 24);
    model_free(m);
}
static void test_stream(void** state) { stream_check(0, 0); }
static void test_stream_ablated(void** state) { stream_check(1, 1); }

// Dropout on (p = 0.3, every site): backward against central differences of
// the float model: full with the FFN kept, ablated with it rebuilt.
static void dropout_grad(int ablate, int recompute) {
    config cfg;
    config_defaults(&cfg);
    strcpy(cfg.model, "recgrela");
    cfg.L = 9, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.chunk = 4;
    cfg.no_local = ablate, cfg.no_gate = ablate, cfg.recompute = recompute, cfg.dropout = 0.3;
    char err[512];
    model* m = model_create(&cfg, 30, 3, NULL, err);
    assert_non_null(m);
    m->init(m, 3);
    spread_params(m);
    check_dropout_grad(m, 30, 0x5eed, 1e-3, 2e-2, 2, ablate ? "ablated" : "full");
    model_free(m);
}

static void test_dropout_grad(void** state) { dropout_grad(0, 0); }
static void test_dropout_grad_ablated(void** state) { dropout_grad(1, 1); }

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_full), cmocka_unit_test(test_fixture_ablated),
        cmocka_unit_test(test_causality),    cmocka_unit_test(test_causality_ablated),
        cmocka_unit_test(test_stream),       cmocka_unit_test(test_stream_ablated),
        cmocka_unit_test(test_dropout_grad), cmocka_unit_test(test_dropout_grad_ablated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
