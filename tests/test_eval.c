// test_eval.c: ranking metrics and target ranks against hand-computed cases;
// evaluate() end to end on tiny datasets written here, with a stub model whose
// ranks are known by hand and with the popularity baseline; the protocol line.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataset.h"
#include "eval.h"
#include "train.h"

static char dir[] = "/tmp/elastic-test-eval-XXXXXX";
static char err[512];

// Writes the histories seqs (each ended by 0) as dataset `name` in the temp folder.
static const char* write_seqs(const char* name, const int32_t* const* seqs, int n_users,
                              int64_t n_items) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int32_t items[256];
    int64_t offsets[32] = {0};
    for (int u = 0; u < n_users; u++) {
        int64_t at = offsets[u];
        for (const int32_t* x = seqs[u]; *x; x++) items[at++] = *x;
        offsets[u + 1] = at;
    }
    ds_contents c = {.items = items,
                     .offsets = offsets,
                     .n_users = n_users,
                     .n_items = n_items,
                     .source = "test_eval",
                     .filter = "none"};
    if (ds_write(path, &c, err)) fail_msg("%s", err);
    return path;
}

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
    assert_true(target_rank(s, 5, 4, hist, 2, &p, 0, mark) == EVAL_MISS);  // masked target
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

// One rank exactly at and one past each cutoff: HR, NDCG and MRR count rank r
// (0-based) at K iff r < K.
static void test_metrics_cutoffs(void** state) {
    static const struct {
        int64_t rank;
        double hr[EVAL_NK];
    } cases[] = {
        {4, {1, 1, 1}},  {5, {0, 1, 1}},  {9, {0, 1, 1}},
        {10, {0, 0, 1}}, {19, {0, 0, 1}}, {20, {0, 0, 0}},
    };
    for (int c = 0; c < 6; c++) {
        metrics m;
        memset(&m, 0, sizeof m);
        metrics_add_rank(&m, cases[c].rank);
        metrics_finish(&m);
        const double r = (double)cases[c].rank;
        for (int i = 0; i < EVAL_NK; i++) {
            const double hr = cases[c].hr[i];
            assert_true(m.hr[i] == hr);
            assert_true(fabs(m.ndcg[i] - hr / log2(r + 2)) < 1e-12);
            assert_true(fabs(m.mrr[i] - hr / (r + 1)) < 1e-12);
        }
    }
    // the same six together: HR@5 1/6, HR@10 3/6, HR@20 5/6
    metrics m;
    memset(&m, 0, sizeof m);
    for (int c = 0; c < 6; c++) metrics_add_rank(&m, cases[c].rank);
    metrics_finish(&m);
    assert_true(fabs(m.hr[0] - 1 / 6.0) < 1e-12);
    assert_true(fabs(m.hr[1] - 3 / 6.0) < 1e-12);
    assert_true(fabs(m.hr[2] - 5 / 6.0) < 1e-12);
    const double n20 =
        1 / log2(6.0) + 1 / log2(7.0) + 1 / log2(11.0) + 1 / log2(12.0) + 1 / log2(21.0);
    assert_true(fabs(m.ndcg[2] - n20 / 6) < 1e-12);
    assert_true(fabs(m.mrr[1] - (1 / 5.0 + 1 / 6.0 + 1 / 10.0) / 6) < 1e-12);
}

// Sampled negatives: every candidate is drawn when more are asked than exist,
// so the rank is exact; negatives tying with the target count above it.
static void test_rank_sampled_ties(void** state) {
    const real s[6] = {1, 2, 2, 2, 3, 0};  // items 1..6
    uint8_t mark[7] = {0};
    eval_protocol p = {.sampled_negatives = 100, .seed = 5};
    assert_int_equal(target_rank(s, 6, 2, NULL, 0, &p, 0, mark), 3);  // 3, 4 tie; 5 above
    const int32_t hist[1] = {5};
    assert_int_equal(target_rank(s, 6, 2, hist, 1, &p, 0, mark), 2);  // 5 is never a negative
    const real flat[6] = {1, 1, 1, 1, 1, 1};
    assert_int_equal(target_rank(flat, 6, 4, hist, 1, &p, 0, mark), 4);  // every negative ties
    p.sampled_negatives = 3;
    assert_int_equal(target_rank(flat, 6, 4, hist, 1, &p, 7, mark), 3);  // no credit for ties
    for (int i = 0; i < 7; i++) assert_int_equal(mark[i], 0);
}

// ---- evaluate() with a stub model over a dataset of SN items. wte is the
// identity (row i = unit vector i-1, d = SN), so an item's score is its entry
// of the user state. The state at position t whose input is x scores item i
// by -((i - x - 1) mod SN): x+1 best, then x+2, ..., so the rank of a target
// is its forward distance from x+1, with no ties. `constant` scores all alike.
enum { SN = 30, SL = 4, SB = 2 };

typedef struct {
    int constant, calls;
    uint64_t seed;
} stub_state;

static void stub_forward(model* m, int B, uint64_t seed) {
    stub_state* s = m->impl;
    const int32_t* inputs = m->inputs;
    s->calls++, s->seed = seed;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < m->L; t++) {
            const int x = inputs[b * m->L + t];
            real* o = m->out + ((size_t)b * m->L + t) * m->d;
            for (int i = 1; i <= m->d; i++)
                o[i - 1] = s->constant ? 1 : -(real)(((i - x - 1) % SN + SN) % SN);
        }
}

typedef struct {
    model m;
    stub_state s;
    real wte[(SN + 1) * SN], out[SB * SL * SN];
    int32_t inputs[SB * SL], pad[SB];
} stub;

static void stub_init(stub* st, int V, int d) {
    memset(st, 0, sizeof *st);
    model* m = &st->m;
    m->name = "stub", m->V = V, m->L = SL, m->d = d, m->B = SB;
    m->params = st->wte, m->n_params = (size_t)V * d, m->out = st->out;
    m->inputs = st->inputs, m->pad = st->pad;
    m->n_tensors = 1;
    m->tensors[0] = (tensor_spec){
        .name = "wte", .offset = 0, .size = (size_t)V * d, .ndim = 2, .shape = {V, d}};
    for (int i = 1; i < V && i <= d; i++) st->wte[(size_t)i * d + i - 1] = 1;
    m->forward = stub_forward;
    m->impl = &st->s;
}

// users, their test split (history | target) and the state's input x = last history item:
//   u0 5 6 7 | 8            x=7   rank 0; masked 0
//   u1 14 2 13 1 12 | 17   x=12  rank 4 (13..16); masked 2 (13, 14 seen; 14 before the window)
//   u2 9 3 4 | 9            x=4   rank 4 (5..8); masked: a seen target is a miss
//   u3 25 28 30 | 2         x=30  rank 1 (item 1, wrapping); masked 1
//   u4 3 10 | 6             x=10  rank 25 (11..30, 1..5); masked 24: a miss either way
static const int32_t U0[] = {5, 6, 7, 8, 0}, U1[] = {14, 2, 13, 1, 12, 17, 0},
                     U2[] = {9, 3, 4, 9, 0}, U3[] = {25, 28, 30, 2, 0}, U4[] = {3, 10, 6, 0};

static void expect(const metrics* m, const double hr[EVAL_NK], const double ndcg[EVAL_NK],
                   const double mrr[EVAL_NK], double n) {
    assert_true(m->n == n);
    for (int i = 0; i < EVAL_NK; i++) {
        if (fabs(m->hr[i] - hr[i]) > 1e-9 || fabs(m->ndcg[i] - ndcg[i]) > 1e-9 ||
            fabs(m->mrr[i] - mrr[i]) > 1e-9)
            fail_msg("@%d: HR %.6f NDCG %.6f MRR %.6f, want %.6f %.6f %.6f", EVAL_KS[i], m->hr[i],
                     m->ndcg[i], m->mrr[i], hr[i], ndcg[i], mrr[i]);
    }
}

static metrics run_eval(stub* st, const char* path, split_kind split, eval_protocol p) {
    evaler* ev = evaler_open(path, SL, SB, split, 0, 1, 0, err);
    if (!ev) fail_msg("%s", err);
    const comm c = {.rank = 0, .world = 1, .backend = COMM_LOCAL};
    metrics m;
    st->s.calls = 0, st->s.seed = 99;
    if (evaluate(&st->m, NULL, ev, &p, &c, &m, err)) fail_msg("%s", err);
    evaler_close(ev);
    assert_int_equal(st->s.calls, 3);  // batches of 2, 2, 1
    assert_true(st->s.seed == 0);      // no dropout in evaluation
    return m;
}

static void test_evaluate_model(void** state) {
    const int32_t* seqs[] = {U0, U1, U2, U3, U4};
    const char* path = write_seqs("stub.h5", seqs, 5, SN);
    stub st;
    stub_init(&st, SN + 1, SN);
    const double l3 = 1 / log2(3.0), l4 = 1 / log2(4.0), l6 = 1 / log2(6.0);
    {  // ranks 0, 4, 4, 1, 25
        metrics m = run_eval(&st, path, SPLIT_TEST, (eval_protocol){0});
        const double hr = 4 / 5.0, nd = (1 + l6 + l6 + l3) / 5, mrr = (1 + 0.2 + 0.2 + 0.5) / 5;
        expect(&m, (double[]){hr, hr, hr}, (double[]){nd, nd, nd}, (double[]){mrr, mrr, mrr}, 5);
    }
    {  // masked: 0, 2, miss, 1, 24
        metrics m = run_eval(&st, path, SPLIT_TEST, (eval_protocol){.mask_history = 1});
        const double hr = 3 / 5.0, nd = (1 + l4 + l3) / 5, mrr = (1 + 1 / 3.0 + 0.5) / 5;
        expect(&m, (double[]){hr, hr, hr}, (double[]){nd, nd, nd}, (double[]){mrr, mrr, mrr}, 5);
    }
    {  // validation split (target = the item before the last): x = 6, 1, 3, 28, 3 for
       // targets 7, 12, 4, 30, 10: ranks 0, 10, 0, 1, 6
        metrics m = run_eval(&st, path, SPLIT_VALID, (eval_protocol){0});
        const double n5 = 2 + l3, n10 = n5 + 1 / log2(8.0), n20 = n10 + 1 / log2(12.0);
        const double m5 = 2.5, m10 = m5 + 1 / 7.0, m20 = m10 + 1 / 11.0;
        expect(&m, (double[]){3 / 5.0, 4 / 5.0, 1}, (double[]){n5 / 5, n10 / 5, n20 / 5},
               (double[]){m5 / 5, m10 / 5, m20 / 5}, 5);
    }
    {  // every non-history item drawn: ranks 0, 2, 4 (the seen target competes), 1, 24
        metrics m = run_eval(&st, path, SPLIT_TEST, (eval_protocol){.sampled_negatives = 100});
        const double nd = (1 + l4 + l6 + l3) / 5, mrr = (1 + 1 / 3.0 + 0.2 + 0.5) / 5;
        expect(&m, (double[]){0.8, 0.8, 0.8}, (double[]){nd, nd, nd}, (double[]){mrr, mrr, mrr}, 5);
    }
    st.s.constant = 1;
    {  // a constant scorer: every drawn negative ties and counts above, rank 3 for all
        metrics m = run_eval(&st, path, SPLIT_TEST, (eval_protocol){.sampled_negatives = 3});
        const double nd = 1 / log2(5.0);
        expect(&m, (double[]){1, 1, 1}, (double[]){nd, nd, nd}, (double[]){0.25, 0.25, 0.25}, 5);
        // all of the 24..27 candidates tie: no credit at all
        m = run_eval(&st, path, SPLIT_TEST, (eval_protocol){.sampled_negatives = 100});
        expect(&m, (double[]){0, 0, 0}, (double[]){0, 0, 0}, (double[]){0, 0, 0}, 5);
        m = run_eval(&st, path, SPLIT_TEST, (eval_protocol){0});
        expect(&m, (double[]){0, 0, 0}, (double[]){0, 0, 0}, (double[]){0, 0, 0}, 5);
    }
}

// recommend() against a brute-force ranking: every item's stub score for the
// user's last input item, sorted (higher score, then lower item), the history
// left out or not, the first k; users by index, items by index (no id tables).
static void check_recommend(stub* st, const char* path, split_kind split, int k, int exclude) {
    evaler* ev = evaler_open(path, SL, SB, split, 0, 1, 0, err);
    if (!ev) fail_msg("%s", err);
    char* text = NULL;
    size_t len = 0;
    FILE* out = open_memstream(&text, &len);
    if (recommend(&st->m, ev, k, exclude, NULL, NULL, out, err)) fail_msg("%s", err);
    fclose(out);
    // the brute force, from the data itself
    evaler_rewind(ev);
    char want[4096] = "";
    size_t at = 0;
    const eval_batch* eb;
    while ((eb = evaler_next(ev, err)))
        for (int b = 0; b < eb->B; b++) {
            const int x = eb->inputs[(size_t)b * SL + SL - 1];
            int order[SN], n = 0;
            for (int i = 1; i <= SN; i++) {
                int seen = 0;
                for (int64_t h = eb->hist_off[b]; h < eb->hist_off[b + 1]; h++)
                    seen |= eb->hist[h] == i;
                if (!(exclude && seen)) order[n++] = i;
            }
            for (int i = 0; i < n; i++)  // selection sort: score desc, item asc
                for (int j = i + 1; j < n; j++) {
                    const int a = order[i], c2 = order[j];
                    const int sa = -(((a - x - 1) % SN + SN) % SN),
                              sc = -(((c2 - x - 1) % SN + SN) % SN);
                    if (sc > sa || (sc == sa && c2 < a)) order[i] = c2, order[j] = a;
                }
            for (int r = 0; r < k && r < n; r++)
                at += (size_t)snprintf(want + at, sizeof want - at, "%lld,%d,%d,%d\n",
                                       (long long)eb->user[b], r + 1, order[r],
                                       -(((order[r] - x - 1) % SN + SN) % SN));
        }
    evaler_close(ev);
    if (strcmp(text, want))
        fail_msg("recommend k=%d exclude=%d split=%d:\n%s\nbrute force:\n%s", k, exclude,
                 (int)split, text, want);
    free(text);
}

static void test_recommend_brute_force(void** state) {
    const int32_t* seqs[] = {U0, U1, U2, U3, U4};
    const char* path = write_seqs("rec.h5", seqs, 5, SN);
    stub st;
    stub_init(&st, SN + 1, SN);
    for (int exclude = 0; exclude < 2; exclude++) {
        check_recommend(&st, path, SPLIT_TEST, 4, exclude);
        check_recommend(&st, path, SPLIT_ALL, 3, exclude);    // after the whole history
        check_recommend(&st, path, SPLIT_TEST, SN, exclude);  // every item, in order
    }
}

// ---- the popularity baseline on 9 items. Training parts (all but the last
// two items): p0 1 1 1 2 2 3 | 9 2, p1 1 2 4 5 | 4 1, p2 3 4 | 6 5; counts
// 1:4 2:3 3:2 4:2 5:1 6..9:0.
static const int32_t P0[] = {1, 1, 1, 2, 2, 3, 9, 2, 0}, P1[] = {1, 2, 4, 5, 4, 1, 0},
                     P2[] = {3, 4, 6, 5, 0};

static void test_popularity(void** state) {
    const int32_t* seqs[] = {P0, P1, P2};
    const char* path = write_seqs("pop.h5", seqs, 3, 9);
    static const int64_t counts[9] = {4, 3, 2, 2, 1, 0, 0, 0, 0};
    ds_file* f = ds_open(path, err);
    if (!f) fail_msg("%s", err);
    real s[9];
    assert_int_equal(popularity_scores(f, s, err), 0);
    ds_close(f);
    for (int i = 0; i < 9; i++) {
        // the jitter is in [0, 0.5): never reaches the next count
        assert_true(s[i] >= (real)counts[i] && s[i] < (real)counts[i] + 0.5f);
        for (int j = 0; j < 9; j++) {
            if (counts[i] > counts[j]) assert_true(s[i] > s[j]);
            if (i != j && counts[i] == counts[j]) assert_true(s[i] != s[j]);  // ties broken
        }
    }
    // test targets 2, 1, 5 (counts 3, 4, 1): ranks 1, 0, 4; masked: 2 and 1
    // were seen (misses, at K = 10 and 20 too though there are only 9 items),
    // 5 is behind 1 and 2 only (3, 4 seen): rank 2
    stub st;
    stub_init(&st, 10, 1);
    const comm c = {.rank = 0, .world = 1, .backend = COMM_LOCAL};
    evaler* ev = evaler_open(path, SL, SB, SPLIT_TEST, 0, 1, 0, err);
    if (!ev) fail_msg("%s", err);
    metrics m;
    eval_protocol p = {0};
    assert_int_equal(evaluate(&st.m, s, ev, &p, &c, &m, err), 0);
    const double nd = (1 / log2(3.0) + 1 + 1 / log2(6.0)) / 3, mrr = (0.5 + 1 + 0.2) / 3;
    expect(&m, (double[]){1, 1, 1}, (double[]){nd, nd, nd}, (double[]){mrr, mrr, mrr}, 3);
    p.mask_history = 1;
    assert_int_equal(evaluate(&st.m, s, ev, &p, &c, &m, err), 0);
    expect(&m, (double[]){1 / 3.0, 1 / 3.0, 1 / 3.0}, (double[]){0.5 / 3, 0.5 / 3, 0.5 / 3},
           (double[]){1 / 9.0, 1 / 9.0, 1 / 9.0}, 3);
    assert_int_equal(st.s.calls, 0);  // a fixed scorer never runs the model
    evaler_close(ev);
}

// The protocol line names the negatives actually used: never more than exist.
static void test_protocol_str(void** state) {
    char buf[160];
    eval_protocol p = {.sampled_negatives = 100000};
    eval_protocol_str(&p, 300, buf);
    printf("# %s\n", buf);
    assert_non_null(strstr(buf, "all 299 other items"));
    assert_non_null(strstr(buf, "100000"));
    assert_null(strstr(buf, "against 100000"));
    p.sampled_negatives = 299;
    eval_protocol_str(&p, 300, buf);
    assert_non_null(strstr(buf, "all 299 other items"));
    p.sampled_negatives = 100;
    eval_protocol_str(&p, 300, buf);
    assert_string_equal(buf,
                        "ranked against 100 sampled negatives of 300 items, history excluded "
                        "from negatives");
    p = (eval_protocol){.mask_history = 1};
    eval_protocol_str(&p, 300, buf);
    assert_string_equal(buf, "full ranking over 300 items, history masked");
}

static int setup(void** state) { return mkdtemp(dir) ? 0 : -1; }

static int teardown(void** state) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_by_hand),   cmocka_unit_test(test_metrics_cutoffs),
        cmocka_unit_test(test_rank_full),         cmocka_unit_test(test_rank_sampled),
        cmocka_unit_test(test_rank_sampled_ties), cmocka_unit_test(test_evaluate_model),
        cmocka_unit_test(test_popularity),        cmocka_unit_test(test_protocol_str),
        cmocka_unit_test(test_lr_schedule),       cmocka_unit_test(test_recommend_brute_force),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
