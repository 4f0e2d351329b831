// test_sasrec.c: the C SASRec against the PyTorch oracle's fixture (forward,
// loss, every gradient), for both attention kernels; causality; padding; the
// gradient with dropout on against finite differences of the whole model.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "fixture.h"
#include "model.h"

// rows: FFN blocks of that many rows (0: the default, one block here)
static void fixture_check(const char* attention, int recompute, int rows) {
    hid_t f = H5Fopen("tests/reference/fixtures/sasrec.h5", H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    config cfg;
    config_defaults(&cfg);
    cfg.L = (int)attr_i64(f, "L"), cfg.d = (int)attr_i64(f, "d");
    cfg.heads = (int)attr_i64(f, "H"), cfg.layers = (int)attr_i64(f, "n_layers");
    cfg.dropout = 0;
    strcpy(cfg.attention, attention);
    cfg.recompute = recompute;
    char err[512];
    model* m = model_create(&cfg, attr_i64(f, "n_items"), (int)attr_i64(f, "B"), NULL, err);
    assert_non_null(m);
    if (rows) m->ffn_rows = rows;
    fixture_compare(m, f, attention);
    model_free(m);
    H5Fclose(f);
}

static void test_fixture_plain(void** state) { fixture_check("plain", 0, 0); }
// the kept FFN activations read back in blocks of 5 rows (21 rows: 5,5,5,5,1)
static void test_fixture_plain_blocked(void** state) { fixture_check("plain", 0, 5); }
static void test_fixture_fused(void** state) { fixture_check("fused", 0, 0); }
// the FFN half rebuilt in backward gives the same gradients
static void test_fixture_recompute(void** state) { fixture_check("fused", 1, 8); }

static void causality(const char* attention) {
    config cfg;
    config_defaults(&cfg);
    cfg.L = 19, cfg.d = 16, cfg.heads = 2, cfg.layers = 2;
    strcpy(cfg.attention, attention);
    char err[512];
    model* m = model_create(&cfg, 50, 2, NULL, err);
    assert_non_null(m);
    m->init(m, 7);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 5;  // visible propagation
    check_causality(m, 50, 4);
    model_free(m);
}

static void test_causality_plain(void** state) { causality("plain"); }
static void test_causality_fused(void** state) { causality("fused"); }

// Dropout on (p = 0.3, every site): backward against central differences of
// the float model: plain attention with the FFN kept, fused with it rebuilt.
static void dropout_grad(const char* attention, int recompute) {
    config cfg;
    config_defaults(&cfg);
    cfg.L = 8, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.dropout = 0.3;
    strcpy(cfg.attention, attention);
    cfg.recompute = recompute;
    char err[512];
    model* m = model_create(&cfg, 30, 3, NULL, err);
    assert_non_null(m);
    m->init(m, 3);
    spread_params(m);
    check_dropout_grad(m, 30, 0x5eed, 1e-3, 2e-2, 2, attention);
    model_free(m);
}

static void test_dropout_grad_plain(void** state) { dropout_grad("plain", 0); }
static void test_dropout_grad_fused(void** state) { dropout_grad("fused", 1); }

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_plain),      cmocka_unit_test(test_fixture_fused),
        cmocka_unit_test(test_fixture_recompute),  cmocka_unit_test(test_fixture_plain_blocked),
        cmocka_unit_test(test_causality_plain),    cmocka_unit_test(test_causality_fused),
        cmocka_unit_test(test_dropout_grad_plain), cmocka_unit_test(test_dropout_grad_fused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
