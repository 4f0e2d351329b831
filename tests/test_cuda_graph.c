// Forwards replayed as CUDA graphs (model_forward): each model's hidden
// states from a replayed forward are the eager forward's bit for bit, on new
// inputs every time, for whole rows and for the last position only; another
// shape, a forward with dropout or a change of precision runs eagerly and
// records again; a bank whose lookups are counted on the host is never
// replayed. On a GPU, or on the CUDA emulator (which records and replays as
// CUDA does); skipped otherwise. [PATTERN] runs only the matching tests.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cuda_check.h"
#include "bank.h"
#include "config.h"
#include "model.h"
#include "util.h"

enum { GB = 3, GL = 16, GV = 60 };

static model* build(const char* name) {
    config cfg;
    config_defaults(&cfg);
    snprintf(cfg.model, sizeof cfg.model, "%s", name);
    cfg.L = GL, cfg.d = 16, cfg.heads = 2, cfg.layers = 2, cfg.dropout = 0.1;
    snprintf(cfg.attention, sizeof cfg.attention, "fused");
    cfg.experts = 2, cfg.chunk = 4;  // ELASTIC: 4 chunks
    cfg.mem_slots = 64, cfg.mem_topk = 2, cfg.mem_heads = 2, cfg.mem_dk = 8;
    char err[512];
    model* m = model_create(&cfg, GV - 1, GB, NULL, err);
    if (!m) fail_msg("%s: %s", name, err);
    model_init(m, 7);
    if (m->bank) bank_count_lookups(m->bank, 0);  // as evaluation and serving
    return m;
}

// batch k's inputs: left padding of a different length in each row
static void batch(int k, int32_t* inputs, int32_t* pad) {
    for (int b = 0; b < GB; b++) {
        pad[b] = (b * 5 + k * 3) % (GL / 2);
        for (int t = 0; t < GL; t++)
            inputs[b * GL + t] =
                t < pad[b] ? 0 : 1 + (int32_t)(rng_hash64(k * 131 + b, (uint64_t)t) % (GV - 1));
    }
}

// the hidden states of rows [0, B) (every position, or with last_only the
// last of each row) into host[B * L * d]
static void hidden(const model* m, int B, real* host) {
    const size_t row = (size_t)m->L * m->d;
    if (!m->last_only) {
        dev_to_host(host, m->out, B * row * sizeof(real));
        return;
    }
    for (int b = 0; b < B; b++)
        dev_to_host(host + b * row + row - m->d, m->out + b * row + row - m->d,
                    m->d * sizeof(real));
}

// the compared rows bit for bit; if not, where first and by how much at most
// (a real device could pick other kernels in a recording)
static void same_bits(const real* a, const real* b, const model* m, int B, const char* what) {
    const int d = m->d, L = m->L;
    int fb = -1, ft = -1;
    double most = 0, scale = 1e-30;
    for (int b0 = 0; b0 < B; b0++)
        for (int t = m->last_only ? L - 1 : 0; t < L; t++) {
            const size_t o = ((size_t)b0 * L + t) * d;
            if (fb < 0 && memcmp(a + o, b + o, d * sizeof(real))) fb = b0, ft = t;
            for (int c = 0; c < d; c++) {
                most = fmax(most, fabs((double)a[o + c] - b[o + c]));
                scale = fmax(scale, fabs((double)b[o + c]));
            }
        }
    if (fb >= 0)
        fail_msg(
            "%s %s: row %d position %d differs from the eager forward (at most %.3g of "
            "its largest value)",
            m->name, what, fb, ft, most / scale);
}

// forward over batch k at B rows, eager (graphs off), into ref
static void eager(model* m, int k, int B, real* ref) {
    int32_t inputs[GB * GL], pad[GB];
    batch(k, inputs, pad);
    setenv("ELASTIC_CUDA_GRAPHS", "0", 1);
    const long before = m->graph_replays;
    model_forward(m, inputs, pad, B, 0);
    unsetenv("ELASTIC_CUDA_GRAPHS");
    assert_int_equal(m->graph_replays, before);
    hidden(m, B, ref);
}

// forward over batch k at B rows through model_forward's graphs, compared
// with ref (unless NULL); `replayed`: whether it must have been a replay
static void forward_vs(model* m, int k, int B, const real* ref, int replayed, const char* what) {
    int32_t inputs[GB * GL], pad[GB];
    batch(k, inputs, pad);
    const size_t n = (size_t)GB * GL * m->d;
    real* got = calloc(n, sizeof *got);
    const long before = m->graph_replays;
    model_forward(m, inputs, pad, B, 0);
    if (m->graph_replays != before + replayed)
        fail_msg("%s %s (last position only: %d): %s", m->name, what, m->last_only,
                 replayed ? "not replayed" : "replayed");
    hidden(m, B, got);
    if (ref) same_bits(got, ref, m, B, what);
    free(got);
}

static void replayed(const char* name) {
    need_gpu();
    model* m = build(name);
    const size_t n = (size_t)GB * GL * m->d;
    real* ref[4];
    for (int last = 0; last < 2; last++) {
        m->last_only = last;
        for (int k = 0; k < 4; k++) {
            ref[k] = calloc(n, sizeof(real));
            eager(m, k, k == 3 ? GB - 1 : GB, ref[k]);
        }
        forward_vs(m, 0, GB, ref[0], 0, "warm-up");  // eager: sizes the scratch
        forward_vs(m, 1, GB, ref[1], 1, "recorded");
        forward_vs(m, 2, GB, ref[2], 1, "replayed");
        forward_vs(m, 0, GB, ref[0], 1, "replayed again");
        forward_vs(m, 3, GB - 1, ref[3], 0, "another shape");
        forward_vs(m, 3, GB - 1, ref[3], 1, "the other shape recorded");
        forward_vs(m, 2, GB, ref[2], 0, "back to the first shape");
        // a forward with dropout drops the recording
        int32_t inputs[GB * GL], pad[GB];
        batch(1, inputs, pad);
        model_forward(m, inputs, pad, GB, 99);
        forward_vs(m, 1, GB, ref[1], 0, "after dropout");
        forward_vs(m, 2, GB, ref[2], 1, "recorded after dropout");
        for (int k = 0; k < 4; k++) free(ref[k]);
    }
    // a precision change leaves the recording out of date: eager, then again
    m->last_only = 0;
    device_set_precision(PRECISION_FP32);
    real* r32 = calloc(n, sizeof(real));
    eager(m, 1, GB, r32);
    device_set_precision(PRECISION_TF32);
    forward_vs(m, 1, GB, NULL, 1, "recorded in TF32");
    device_set_precision(PRECISION_FP32);
    forward_vs(m, 1, GB, r32, 0, "out of date");
    forward_vs(m, 1, GB, r32, 1, "recorded in fp32");
    device_set_precision(PRECISION_TF32);
    free(r32);
    model_free(m);
}

static void test_sasrec(void** state) {
    (void)state;
    replayed("sasrec");
}
static void test_recgrela(void** state) {
    (void)state;
    replayed("recgrela");
}
static void test_elastic(void** state) {
    (void)state;
    replayed("elastic");
}

// lookups counted on the host (training's statistics): never recorded
static void test_counted_bank_not_replayed(void** state) {
    (void)state;
    need_gpu();
    model* m = build("elastic");
    assert_non_null(m->bank);
    bank_count_lookups(m->bank, 1);
    int32_t inputs[GB * GL], pad[GB];
    batch(0, inputs, pad);
    model_forward(m, inputs, pad, GB, 0);
    const int64_t one = m->bank->stats.lookups;
    assert_true(one > 0);
    for (int i = 0; i < 3; i++) model_forward(m, inputs, pad, GB, 0);
    assert_int_equal(m->graph_replays, 0);
    assert_int_equal(m->bank->stats.lookups, 4 * one);
    model_free(m);
}

int main(int argc, char** argv) {
    // blocking launches (jobs/gpu_check.sh's, for the other tests) rule
    // graphs out: before the CUDA runtime starts
    unsetenv("CUDA_LAUNCH_BLOCKING");
    cuda_tests_begin(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sasrec),
        cmocka_unit_test(test_recgrela),
        cmocka_unit_test(test_elastic),
        cmocka_unit_test(test_counted_bank_not_replayed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
