// test_dist.c: the row-sharded memory bank and the training step across
// ranks. Runs on one process (make test) and under mpirun (tests/cli/dist.sh:
// 2, 3 and 4 ranks). Lookups with skewed owners (every id on one rank),
// repeated ids, a rank that looks up nothing, and nothing at all fetch exactly
// the rows' values; pushed gradients reach their owners summed. Then each
// model trains 5 steps with dropout, its global batch split over the ranks,
// beside a one-process reference on the whole batch: the same loss and
// gradient norm at every step, and after them the same dense parameters and
// the same bank rows and Adam moments, row by row. Failures are summed over
// ranks, so rank 0 (which alone prints) fails the test for any rank.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bank.h"
#include "comm.h"
#include "config.h"
#include "model.h"
#include "step.h"

static comm C;

static double all_failures(double mine) {
    char err[COMM_ERRLEN];
    if (comm_allreduce_sum_f64(&C, &mine, 1, err)) fail_msg("%s", err);
    return mine;
}

static real value_of(int64_t id, int c) { return (real)(id + 0.001 * c); }

static void fill(real* row, int64_t id, void* ctx) {
    const int d = *(const int*)ctx;
    for (int c = 0; c < d; c++) row[c] = value_of(id, c);
}

// This rank's ids for pattern p (n of them into ids; at most 40).
static int64_t pattern(int p, int64_t rows, int32_t* ids) {
    const int P = C.world, me = C.rank;
    int64_t n = 0;
    switch (p) {
        case 0:  // skewed: every id on rank 0, repeated
            for (int i = 0; i < 30; i++) ids[n++] = (int32_t)(((i * 7 + me) % 6) * P);
            break;
        case 1:  // rank 1 looks up nothing; the others scattered ids, repeated
            if (me != 1)
                for (int i = 0; i < 40; i++) ids[n++] = (int32_t)((i * 13 + me * 5) % rows);
            break;
        case 2:  // every rank the same ids
            for (int i = 0; i < 25; i++) ids[n++] = (int32_t)((i * i) % rows);
            break;
        default:  // nothing anywhere
            break;
    }
    return n;
}

static void test_lookup_and_push(void** state) {
    const int64_t rows = 50;
    int d = 4;
    char err[512];
    bank* b = bank_create(rows, d, 2, 40, 80, &C, 0, err);
    assert_non_null(b);
    bank_init_rows(b, fill, &d);
    double bad = 0;
    int32_t ids[80];
    real* grads = malloc(80 * (size_t)d * sizeof(real));
    double* want = calloc((size_t)rows, sizeof(double));
    for (int p = 0; p < 4; p++) {
        // two lookups per "forward", as two layers would
        const int64_t n = pattern(p, rows, ids);
        for (int call = 0; call < 2; call++) {
            const int32_t* row;
            const real* V = bank_lookup(b, call, ids, n, &row);
            for (int64_t i = 0; i < n; i++)
                for (int c = 0; c < d; c++) bad += V[(size_t)row[i] * d + c] != value_of(ids[i], c);
        }
        // the rows fetched stay for backward
        const int32_t* row;
        const real* V = bank_fetched(b, 0, &row);
        for (int64_t i = 0; i < n; i++) bad += V[(size_t)row[i] * d] != value_of(ids[i], 0);
        // push every lookup twice, gradient (rank + 1) each: an owned row's sum
        // is 2 x the lookups of it on each rank x (rank + 1)
        memcpy(ids + n, ids, (size_t)n * sizeof(int32_t));
        for (int64_t i = 0; i < 2 * n * d; i++) grads[i] = (real)(C.rank + 1);
        double gsq = -1;  // the CPU's device memory is the host's
        bank_push(b, ids, NULL, grads, 1, 2 * n, &gsq);
        memset(want, 0, (size_t)rows * sizeof(double));
        for (int q = 0; q < C.world; q++) {  // what every rank looked up, recomputed here
            comm other = C;
            other.rank = q;
            comm keep = C;
            C = other;
            int32_t qi[40];
            const int64_t qn = pattern(p, rows, qi);
            C = keep;
            for (int64_t i = 0; i < qn; i++) want[qi[i]] += 2.0 * (q + 1);
        }
        double mine_sq = 0;
        int64_t owned = 0;
        for (int64_t id = C.rank; id < rows; id += C.world)
            if (want[id] != 0) owned++, mine_sq += d * want[id] * want[id];
        bad += b->n_own != owned;
        for (int64_t j = 0; j < b->n_own; j++) {
            const int64_t id = (int64_t)b->upd[j] * C.world + C.rank;
            if (j) bad += b->upd[j] <= b->upd[j - 1];  // ascending
            for (int c = 0; c < d; c++) bad += b->upd_sum[(size_t)j * d + c] != (real)want[id];
        }
        bad += fabs(gsq - mine_sq) > 1e-9 * (1 + mine_sq);
    }
    free(grads), free(want);
    bank_free(b);
    assert_true(all_failures(bad) == 0);
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1e-30); }

// `name` trains 5 steps on P ranks beside a one-process reference.
static void train_beside_reference(const char* name, int no_memory) {
    config cfg;
    config_defaults(&cfg);
    snprintf(cfg.model, sizeof cfg.model, "%s", name);
    cfg.L = 12, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.experts = 3, cfg.chunk = 4;
    cfg.mem_slots = 64, cfg.mem_topk = 4, cfg.mem_heads = 2, cfg.mem_dk = 8;
    cfg.no_memory = no_memory;
    cfg.dropout = 0.2, cfg.lr = 1e-2;
    const int Bg = 12, L = cfg.L, V = 41, P = C.world;
    const int B = Bg / P, row0 = C.rank * B;
    char err[512];
    model* m = model_create(&cfg, V - 1, B, &C, err);
    model* ref = model_create(&cfg, V - 1, Bg, NULL, err);
    assert_non_null(m);
    assert_non_null(ref);
    m->init(m, 5);
    ref->init(ref, 5);
    stepper sm, sr;
    stepper_init(&sm, m, &cfg);
    stepper_init(&sr, ref, &cfg);
    int32_t inputs[12 * 12], targets[12 * 12], pad[12];
    for (int b = 0; b < Bg; b++) {
        pad[b] = (b * 5) % 7;  // some rows padded
        for (int t = 0; t < L; t++) {
            const int on = t >= pad[b];
            inputs[b * L + t] = on ? 1 + (b * 7 + t * 3) % (V - 1) : 0;
            targets[b * L + t] = on ? 1 + (b * 11 + t * 5 + 3) % (V - 1) : 0;
        }
    }
    const comm one = {.rank = 0, .world = 1, .backend = COMM_LOCAL};
    double bad = 0;
    for (int64_t t = 1; t <= 5; t++) {
        step_result a, r;
        const uint64_t seed = 1000 + (uint64_t)t;
        assert_int_equal(stepper_run(&sm, &C, inputs + row0 * L, pad + row0, targets + row0 * L, B,
                                     row0, seed, cfg.lr, t, &a, err),
                         0);
        assert_int_equal(
            stepper_run(&sr, &one, inputs, pad, targets, Bg, 0, seed, cfg.lr, t, &r, err), 0);
        bad += rel(a.loss, r.loss) > 1e-5 || rel(a.grad_sq, r.grad_sq) > 1e-4;
        if (C.rank == 0)
            printf("# %s%s step %lld: loss %.7f (reference %.7f), |g|^2 %.6g (%.6g)\n", name,
                   no_memory ? " --no-memory" : "", (long long)t, a.loss, r.loss, a.grad_sq,
                   r.grad_sq);
    }
    // Adam moves a parameter by about lr a step whatever its gradient's size,
    // so a gradient at rounding level (a key bias's, exactly 0 in exact
    // arithmetic) moves it by noise: parameters are compared in units of the
    // most 5 steps can move them, moments relative to their size
    const double move = 5 * cfg.lr;
    double worst = 0;
    for (size_t i = 0; i < m->n_params; i++)
        worst = fmax(worst, fabs(m->params[i] - ref->params[i]) / move);
    bad += worst > 1e-3;
    double bworst = 0;
    if (m->bank) {
        const bank *bm = m->bank, *br = ref->bank;
        const int d = bm->d;
        for (int64_t i = 0; i < bm->local_rows; i++) {
            const size_t g = (size_t)(i * P + C.rank) * d, l = (size_t)i * d;
            for (int c = 0; c < d; c++) {
                bworst = fmax(bworst, fabs(bm->values[l + c] - br->values[g + c]) / move);
                bworst =
                    fmax(bworst, fabs(bm->m[l + c] - br->m[g + c]) / (1e-6 + fabs(br->m[g + c])));
                bworst =
                    fmax(bworst, fabs(bm->v[l + c] - br->v[g + c]) / (1e-9 + fabs(br->v[g + c])));
            }
        }
        bad += bworst > 1e-3;
    }
    if (C.rank == 0)
        printf(
            "# %s: worst difference in units of 5 steps' movement (dense, bank rows), or "
            "relative (bank moments): dense %.3g, bank %.3g\n",
            name, worst, bworst);
    stepper_free(&sm), stepper_free(&sr);
    model_free(m), model_free(ref);
    assert_true(all_failures(bad) == 0);
}

static void test_sasrec_across_ranks(void** state) { train_beside_reference("sasrec", 0); }
static void test_recgrela_across_ranks(void** state) { train_beside_reference("recgrela", 0); }
static void test_elastic_across_ranks(void** state) { train_beside_reference("elastic", 0); }

// A bank over the budget is refused, naming the ranks it needs.
static void test_budget(void** state) {
    char err[512];
    // 4096 rows x 16 floats x 3 arrays = 768 KiB (+4 KiB of marks) on one rank
    bank* b = bank_create(4096, 16, 1, 8, 8, NULL, 0.5, err);
    assert_null(b);
    assert_non_null(strstr(err, "needs at least 2 ranks"));
    assert_int_equal(bank_ranks_needed(4096, 16, 0.5), 2);
    assert_int_equal(bank_ranks_needed(4096, 16, 0.2), 4);
    const comm four = {.rank = 3, .world = 4, .backend = COMM_LOCAL};
    b = bank_create(4096, 16, 1, 8, 8, &four, 0.2, err);
    assert_non_null(b);
    assert_int_equal(b->local_rows, 1024);
    bank_free(b);
}

int main(int argc, char** argv) {
    char err[COMM_ERRLEN];
    if (comm_init(&C, &argc, &argv, "auto", err)) {
        fprintf(stderr, "test_dist: %s\n", err);
        return 1;
    }
    if (C.rank != 0 && !freopen("/dev/null", "w", stdout)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_and_push),
        cmocka_unit_test(test_sasrec_across_ranks),
        cmocka_unit_test(test_recgrela_across_ranks),
        cmocka_unit_test(test_elastic_across_ranks),
        cmocka_unit_test(test_budget),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    comm_finalize(&C);
    return rc;
}
