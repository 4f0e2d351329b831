// test_comm.c: the communicator's collectives, on one process (local) and
// under mpirun (tests/cli/comm.sh runs it on 2, 3 and 4 ranks): all-to-all
// with variable counts (skewed: everything to one rank; empty buckets; a rank
// that sends nothing; rows of several bytes at scattered offsets), the count
// exchange, all-gather and the averaging all-reduce. Every rank checks what it
// received; the failures are summed over ranks, so a wrong byte anywhere fails
// the test on rank 0, which alone prints.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

static comm C;

// Failures summed over every rank.
static double all_failures(double mine) {
    char err[COMM_ERRLEN];
    if (comm_allreduce_sum_f64(&C, &mine, 1, err)) fail_msg("%s", err);
    return mine;
}

// The value rank `from` sends as element i of its bucket for rank `to`.
static int64_t val(int from, int to, int64_t i) { return 1000003LL * from + 1009LL * to + i; }

// Exchanges counts[to] = count(me, to) elements of `elem` bytes (each element
// filled from val), buckets packed in rank order behind a gap of `gap`
// elements, and checks every received byte.
static double exchange(int64_t (*count)(int from, int to), size_t elem, int64_t gap) {
    const int P = C.world, me = C.rank;
    char err[COMM_ERRLEN];
    int64_t *sc = calloc(P, 8), *so = calloc(P, 8), *rc = calloc(P, 8), *ro = calloc(P, 8);
    int64_t ns = 0, nr = 0;
    for (int q = 0; q < P; q++) so[q] = ns + gap, ns += gap + (sc[q] = count(me, q));
    if (comm_alltoall_i64(&C, sc, rc, err)) fail_msg("%s", err);
    double bad = 0;
    for (int q = 0; q < P; q++) {
        bad += rc[q] != count(q, me);  // the count exchange itself
        ro[q] = nr + gap, nr += gap + rc[q];
    }
    const size_t words = elem / 8;
    int64_t* send = calloc((size_t)(ns + 1) * words, 8);
    int64_t* recv = calloc((size_t)(nr + 1) * words, 8);
    for (int q = 0; q < P; q++)
        for (int64_t i = 0; i < sc[q]; i++)
            for (size_t w = 0; w < words; w++)
                send[(so[q] + i) * words + w] = val(me, q, i) * 7 + (int64_t)w;
    if (comm_alltoallv(&C, send, sc, so, recv, rc, ro, elem, err)) fail_msg("%s", err);
    for (int q = 0; q < P; q++) {
        for (int64_t i = 0; i < rc[q]; i++)
            for (size_t w = 0; w < words; w++)
                bad += recv[(ro[q] + i) * words + w] != val(q, me, i) * 7 + (int64_t)w;
        for (int64_t g = ro[q] - gap; g < ro[q]; g++)  // gaps are not written
            for (size_t w = 0; w < words; w++) bad += recv[g * words + w] != 0;
    }
    free(sc), free(so), free(rc), free(ro), free(send), free(recv);
    return bad;
}

static int64_t general(int from, int to) { return (from * 7 + to * 3) % 5; }
static int64_t all_to_zero(int from, int to) { return to == 0 ? 3 + from : 0; }
static int64_t rank1_silent(int from, int to) { return from == 1 ? 0 : 1 + (from + to) % 3; }
static int64_t none(int from, int to) { return 0; }
static int64_t big(int from, int to) { return 20000 + 13 * from + to; }

static void test_alltoallv_general(void** state) {
    assert_true(all_failures(exchange(general, 8, 0)) == 0);
}
static void test_alltoallv_skewed_to_one_rank(void** state) {
    assert_true(all_failures(exchange(all_to_zero, 8, 0)) == 0);
}
static void test_alltoallv_a_rank_sends_nothing(void** state) {
    assert_true(all_failures(exchange(rank1_silent, 8, 2)) == 0);
}
static void test_alltoallv_nothing_at_all(void** state) {
    assert_true(all_failures(exchange(none, 8, 0)) == 0);
}
static void test_alltoallv_rows_at_offsets(void** state) {  // 64-byte rows, gaps between buckets
    assert_true(all_failures(exchange(general, 64, 3)) == 0);
    assert_true(all_failures(exchange(big, 24, 1)) == 0);
}

static void test_allgather_and_mean(void** state) {
    const int P = C.world, me = C.rank;
    char err[COMM_ERRLEN];
    int64_t mine[3] = {me, 10 * me, -me}, *all = calloc(3 * (size_t)P, 8);
    assert_int_equal(comm_allgather(&C, mine, all, sizeof mine, err), 0);
    double bad = 0;
    for (int q = 0; q < P; q++)
        bad += all[3 * q] != q || all[3 * q + 1] != 10 * q || all[3 * q + 2] != -q;
    float x[4] = {(float)me, 1.0f, 2.0f * me, 0.5f};
    assert_int_equal(comm_allreduce_mean(&C, x, 4, err), 0);
    const float want0 = (float)(P - 1) / 2.0f;
    bad += x[0] != want0 || x[1] != 1.0f || x[2] != 2.0f * want0 || x[3] != 0.5f;
    free(all);
    assert_true(all_failures(bad) == 0);
}

int main(int argc, char** argv) {
    char err[COMM_ERRLEN];
    if (comm_init(&C, &argc, &argv, "auto", err)) {
        fprintf(stderr, "test_comm: %s\n", err);
        return 1;
    }
    if (C.rank != 0 && !freopen("/dev/null", "w", stdout)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alltoallv_general),
        cmocka_unit_test(test_alltoallv_skewed_to_one_rank),
        cmocka_unit_test(test_alltoallv_a_rank_sends_nothing),
        cmocka_unit_test(test_alltoallv_nothing_at_all),
        cmocka_unit_test(test_alltoallv_rows_at_offsets),
        cmocka_unit_test(test_allgather_and_mean),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    comm_finalize(&C);
    return rc;
}
