// test_eval.c: ranking metrics and target ranks against hand-computed cases.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "eval.h"
#include "train.h"

static void test_metrics_by_hand(void** state) {
    metrics m;
    memset(&m, 0, sizeof m);
    const int64_t ranks[] = {0, 3, 7, 15, 25};
    for (int i = 0; i < 5; i++) metrics_add_rank(&m, ranks[i]);
    metrics_finish(&m);
    // HR@5: ranks 0,3; HR@10: +7; HR@20: +15
    assert_true(fabs(m.hr[0] - 2 / 5.0) < 1e-12);
    assert_true(fabs(m.hr[1] - 3 / 5.0) < 1e-12);
    assert_true(fabs(m.hr[2] - 4 / 5.0) < 1e-12);
    double n5 = 1 + 1 / log2(5.0), n10 = n5 + 1 / log2(9.0), n20 = n10 + 1 / log2(17.0);
    assert_true(fabs(m.ndcg[0] - n5 / 5) < 1e-12);
    assert_true(fabs(m.ndcg[1] - n10 / 5) < 1e-12);
    assert_true(fabs(m.ndcg[2] - n20 / 5) < 1e-12);
    assert_true(fabs(m.mrr[0] - (1 + 0.25) / 5) < 1e-12);
    assert_true(fabs(m.mrr[1] - (1 + 0.25 + 0.125) / 5) < 1e-12);
    assert_true(fabs(m.mrr[2] - (1 + 0.25 + 0.125 + 1 / 16.0) / 5) < 1e-12);
    assert_true(m.n == 5);
}

static void test_rank_full(void** state) {
    const real s[5] = {0.5f, 0.9f, 0.1f, 0.9f, 0.3f};  // items 1..5
    uint8_t mark[6] = {0};
    eval_protocol p = {0};
    assert_int_equal(target_rank(s, 5, 2, NULL, 0, &p, 0, mark), 1);  // tie counts above
    assert_int_equal(target_rank(s, 5, 5, NULL, 0, &p, 0, mark), 3);
    assert_int_equal(target_rank(s, 5, 3, NULL, 0, &p, 0, mark), 4);
    const int32_t hist[2] = {2, 4};
    p.mask_history = 1;
    assert_int_equal(target_rank(s, 5, 5, hist, 2, &p, 0, mark), 1);
    assert_int_equal(target_rank(s, 5, 4, hist, 2, &p, 0, mark), 5);  // masked target: a miss
    for (int i = 0; i < 6; i++) assert_int_equal(mark[i], 0);
    p.mask_history = 0;
    assert_int_equal(target_rank(s, 5, 5, hist, 2, &p, 0, mark), 3);  // unmasked: history counts
    const real flat[5] = {1, 1, 1, 1, 1};
    assert_int_equal(target_rank(flat, 5, 3, NULL, 0, &p, 0, mark), 4);  // no credit for ties
}

static void test_rank_sampled(void** state) {
    enum { N = 999 };
    real* s = malloc(sizeof(real) * N);
    for (int i = 0; i < N; i++) s[i] = (real)(i + 1);  // score = item id
    uint8_t* mark = calloc(N + 1, 1);
    eval_protocol p = {.sampled_negatives = 100, .seed = 3};
    assert_int_equal(target_rank(s, N, N, NULL, 0, &p, 9, mark), 0);
    assert_int_equal(target_rank(s, N, 1, NULL, 0, &p, 9, mark), 100);
    int32_t hist[10];
    for (int i = 0; i < 10; i++) hist[i] = 990 + i;                      // the ten best items
    assert_int_equal(target_rank(s, N, 989, hist, 10, &p, 9, mark), 0);  // never drawn
    int64_t r1 = target_rank(s, N, 500, NULL, 0, &p, 9, mark);
    int64_t r2 = target_rank(s, N, 500, NULL, 0, &p, 9, mark);
    assert_int_equal(r1, r2);
    assert_true(r1 > 20 && r1 < 80);  // about half of 100 uniform negatives score above 500
    for (int i = 0; i <= N; i++) assert_int_equal(mark[i], 0);
    free(s);
    free(mark);
}

static void test_lr_schedule(void** state) {
    config c;
    config_defaults(&c);
    c.lr = 1e-3, c.warmup = 10;
    assert_true(fabs(lr_at(&c, 0, 100) - 1e-4) < 1e-12);
    assert_true(fabs(lr_at(&c, 9, 100) - 1e-3) < 1e-12);
    assert_true(fabs(lr_at(&c, 50, 100) - 1e-3) < 1e-12);
    strcpy(c.schedule, "cosine");
    assert_true(fabs(lr_at(&c, 10, 110) - 1e-3) < 1e-12);
    assert_true(fabs(lr_at(&c, 60, 110) - 0.5e-3) < 1e-12);
    assert_true(lr_at(&c, 110, 110) < 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_by_hand),
        cmocka_unit_test(test_rank_full),
        cmocka_unit_test(test_rank_sampled),
        cmocka_unit_test(test_lr_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
