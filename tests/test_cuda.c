// test_cuda.c: the CUDA backend's shared kernels (elementwise, optimizers,
// layer norm, products, embedding, rows, the bank's plan, the loss, NCCL)
// against the CPU backend (test_cuda_mixers.c: the models' mixers), on
// fresh random inputs: the same function called with --device cpu on host
// buffers and with --device cuda on device buffers, forward and backward, each
// output compared by relative error (fp32: cuBLAS without TF32 here; the
// elementwise kernels differ by the exp implementation only). Without a GPU (or
// a build without CUDA) every test reports skipped, never passed.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "cuda_check.h"
#include "device.h"
#include "kernels.h"

// Elementwise op `kind` forward (out) and backward (da, db += ...), on
// whichever backend is current: host pointers on the CPU, device ones on CUDA.
static void elementwise_op(int kind, float* out, float* da, float* db, const float* a,
                           const float* b, const float* g, int64_t n) {
    switch (kind) {
        case 0:
            residual_forward(out, a, b, n), residual_backward(da, db, g, n);
            break;
        case 1:
            gelu_forward(out, a, n), gelu_backward(da, a, g, n);
            break;
        case 2:
            silu_forward(out, a, n), silu_backward(da, a, g, n);
            break;
        case 3:
            mul_forward(out, a, b, n), mul_backward(da, db, a, b, g, n);
            break;
        default:
            dropout_forward(out, a, 0.3f, 77, 1000, n);
            dropout_backward(da, g, 0.3f, 77, 1000, n);
            break;
    }
}

static void test_elementwise(void** state) {
    need_gpu();
    const int64_t n = 100003;
    float *a = randn(n, 1, 3), *b = randn(n, 2, 3), *g = randn(n, 3, 1);
    float *out = calloc(n, 4), *da = calloc(n, 4), *db = calloc(n, 4);
    float *Da = up(a, n), *Db = up(b, n), *Dg = up(g, n), *Dout = up(out, n), *Dda = up(da, n),
          *Ddb = up(db, n);
    struct {
        const char* name;
        int kind;
    } ops[] = {{"residual", 0}, {"gelu", 1}, {"silu", 2}, {"mul", 3}, {"dropout p=0.3", 4}};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        memset(da, 0, n * 4), memset(db, 0, n * 4);
        on("cpu");
        elementwise_op(ops[k].kind, out, da, db, a, b, g, n);
        on("cuda");
        dev_zero(Dda, n * 4), dev_zero(Ddb, n * 4);
        elementwise_op(ops[k].kind, Dout, Dda, Ddb, Da, Db, Dg, n);
        char nm[64];
        snprintf(nm, sizeof nm, "%s forward", ops[k].name);
        CHECK(nm, Dout, out, n, 1e-5);
        snprintf(nm, sizeof nm, "%s backward", ops[k].name);
        CHECK(nm, Dda, da, n, 1e-5);
        if (ops[k].kind == 0 || ops[k].kind == 3)
            CHECK("  second input's gradient", Ddb, db, n, 1e-5);
    }
    on("cuda");
    dev_free(Da), dev_free(Db), dev_free(Dg), dev_free(Dout), dev_free(Dda), dev_free(Ddb);
    free(a), free(b), free(g), free(out), free(da), free(db);
}

static void test_adamw(void** state) {
    need_gpu();
    const int64_t n = 54321;
    float *p = randn(n, 4, 1), *g = randn(n, 5, 0.1f), *m = randn(n, 6, 0.01f);
    float* v = randn(n, 7, 0.01f);
    for (int64_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    float *Dp = up(p, n), *Dg = up(g, n), *Dm = up(m, n), *Dv = up(v, n);
    on("cpu");
    adamw_update(p, g, m, v, n, 1e-3f, 0.9f, 0.98f, 1e-8f, 0.01f, 7);
    on("cuda");
    adamw_update(Dp, Dg, Dm, Dv, n, 1e-3f, 0.9f, 0.98f, 1e-8f, 0.01f, 7);
    CHECK("adamw params", Dp, p, n, 1e-6);
    CHECK("adamw first moment", Dm, m, n, 1e-6);
    CHECK("adamw second moment", Dv, v, n, 1e-6);
    dev_free(Dp), dev_free(Dg), dev_free(Dm), dev_free(Dv);
    free(p), free(g), free(m), free(v);
}

static void test_layernorm(void** state) {
    need_gpu();
    const int R = 1000, d = 72;
    const size_t n = (size_t)R * d;
    float *x = randn(n, 8, 2), *w = randn(d, 9, 1), *b = randn(d, 10, 1), *g = randn(n, 11, 1);
    float *out = malloc(n * 4), *mean = malloc(R * 4), *rstd = malloc(R * 4);
    float *dx = calloc(n, 4), *dw = calloc(d, 4), *db = calloc(d, 4);
    float *Dx = up(x, n), *Dw = up(w, d), *Db = up(b, d), *Dg = up(g, n), *Dout = up(out, n),
          *Dmean = up(mean, R), *Drstd = up(rstd, R), *Ddx = up(dx, n), *Ddw = up(dw, d),
          *Ddb = up(db, d);
    on("cpu");
    layernorm_forward(out, mean, rstd, x, w, b, R, d);
    layernorm_backward(dx, dw, db, g, x, w, mean, rstd, R, d);
    on("cuda");
    layernorm_forward(Dout, Dmean, Drstd, Dx, Dw, Db, R, d);
    layernorm_backward(Ddx, Ddw, Ddb, Dg, Dx, Dw, Dmean, Drstd, R, d);
    CHECK("layernorm out", Dout, out, n, 1e-5);
    CHECK("layernorm rstd", Drstd, rstd, R, 1e-5);
    CHECK("layernorm dinp", Ddx, dx, n, 1e-5);
    CHECK("layernorm dw", Ddw, dw, d, 1e-5);
    CHECK("layernorm db", Ddb, db, d, 1e-5);
    void* all[] = {Dx, Dw, Db, Dg, Dout, Dmean, Drstd, Ddx, Ddw, Ddb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(x), free(w), free(b), free(g), free(out), free(mean), free(rstd), free(dx), free(dw),
        free(db);
}

static void test_matmul(void** state) {
    need_gpu();
    const int R = 777, IC = 96, OC = 160;
    float *x = randn((size_t)R * IC, 12, 1), *w = randn((size_t)OC * IC, 13, 0.1f),
          *bias = randn(OC, 14, 1), *g = randn((size_t)R * OC, 15, 1);
    float *out = malloc((size_t)R * OC * 4), *dx = calloc((size_t)R * IC, 4),
          *dw = calloc((size_t)OC * IC, 4), *db = calloc(OC, 4);
    float *Dx = up(x, (size_t)R * IC), *Dw = up(w, (size_t)OC * IC), *Db = up(bias, OC),
          *Dg = up(g, (size_t)R * OC), *Dout = up(out, (size_t)R * OC),
          *Ddx = up(dx, (size_t)R * IC), *Ddw = up(dw, (size_t)OC * IC), *Ddb = up(db, OC);
    on("cpu");
    matmul_forward(out, x, w, bias, R, IC, OC);
    matmul_backward(dx, dw, db, g, x, w, R, IC, OC);
    on("cuda");
    device_set_precision(PRECISION_FP32);
    matmul_forward(Dout, Dx, Dw, Db, R, IC, OC);
    matmul_backward(Ddx, Ddw, Ddb, Dg, Dx, Dw, R, IC, OC);
    CHECK("matmul out (fp32)", Dout, out, (size_t)R * OC, 1e-5);
    CHECK("matmul dinp", Ddx, dx, (size_t)R * IC, 1e-5);
    CHECK("matmul dw", Ddw, dw, (size_t)OC * IC, 1e-5);
    CHECK("matmul dbias", Ddb, db, OC, 1e-5);
    device_set_precision(PRECISION_TF32);
    matmul_forward(Dout, Dx, Dw, Db, R, IC, OC);
    const double e_tf32 = rel_err(Dout, out, (size_t)R * OC);
    CHECK("matmul out (tf32)", Dout, out, (size_t)R * OC, 2e-3);
    device_set_precision(PRECISION_BF16);
    matmul_forward(Dout, Dx, Dw, Db, R, IC, OC);
    const double e_bf16 = rel_err(Dout, out, (size_t)R * OC);
    CHECK("matmul out (bf16)", Dout, out, (size_t)R * OC, 1.5e-2);
    // bf16 keeps 7 mantissa bits to TF32's 10 (8x the rounding): an error
    // under 4x TF32's means the product did not really run in bf16
    printf("# matmul bf16 error / tf32 error %.1f (at least 4)\n", e_bf16 / e_tf32);
    if (!(e_bf16 >= 4 * e_tf32))
        fail_msg("--precision bf16 is not bf16: its error %.2e is under 4x TF32's %.2e", e_bf16,
                 e_tf32);
    device_set_precision(PRECISION_FP32);
    void* all[] = {Dx, Dw, Db, Dg, Dout, Ddx, Ddw, Ddb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(x), free(w), free(bias), free(g), free(out), free(dx), free(dw), free(db);
}

static void test_embedding(void** state) {
    need_gpu();
    const int B = 6, L = 50, d = 40, V = 30;  // few items: rows repeat
    int32_t inp[6 * 50];
    // ids 0..V-3: item 0 (padding) and every id repeat; ids V-2, V-1 never occur
    for (int i = 0; i < B * L; i++) inp[i] = (int32_t)(rng_hash64(16, i) % (V - 2));
    float *wte = randn((size_t)V * d, 17, 1), *wpe = randn((size_t)L * d, 18, 1),
          *g = randn((size_t)B * L * d, 19, 1);
    float *out = malloc((size_t)B * L * d * 4), *dwte = randn((size_t)V * d, 20, 1),
          *dwpe = calloc((size_t)L * d, 4);
    int32_t* Dinp = dev_alloc(sizeof inp);
    dev_to_device(Dinp, inp, sizeof inp);
    float *Dwte = up(wte, (size_t)V * d), *Dwpe = up(wpe, (size_t)L * d),
          *Dg = up(g, (size_t)B * L * d), *Dout = up(out, (size_t)B * L * d),
          *Ddwte = up(dwte, (size_t)V * d), *Ddwpe = up(dwpe, (size_t)L * d);
    on("cpu");
    embedding_forward(out, inp, wte, wpe, B, L, d);
    embedding_backward(dwte, dwpe, g, inp, B, L, d);
    on("cuda");
    embedding_forward(Dout, Dinp, Dwte, Dwpe, B, L, d);
    embedding_backward(Ddwte, Ddwpe, Dg, Dinp, B, L, d);
    CHECK("embedding out", Dout, out, (size_t)B * L * d, 1e-6);
    // added to what dwte held, in the CPU's order (ascending positions per id):
    // the same bits, and the rows of absent ids untouched
    CHECK("embedding dwte", Ddwte, dwte, (size_t)V * d, 0.0);
    CHECK("embedding dwpe", Ddwpe, dwpe, (size_t)L * d, 1e-5);
    void* all[] = {Dinp, Dwte, Dwpe, Dg, Dout, Ddwte, Ddwpe};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(wte), free(wpe), free(g), free(out), free(dwte), free(dwpe);
}

static void test_rows_and_norm(void** state) {
    need_gpu();
    const int R = 500, d = 48, T = 2000;
    float *table = randn((size_t)T * d, 20, 1), *in = randn((size_t)R * d, 21, 1);
    int32_t rows[500];
    for (int r = 0; r < R; r++) rows[r] = (r * 7 + 3) % T;  // distinct: 7 and 2000 coprime
    float *gat = malloc((size_t)R * d * 4), *sca = malloc((size_t)T * d * 4);
    memcpy(sca, table, (size_t)T * d * 4);
    int32_t* Drows = dev_alloc(sizeof rows);
    dev_to_device(Drows, rows, sizeof rows);
    float *Dtable = up(table, (size_t)T * d), *Din = up(in, (size_t)R * d),
          *Dgat = up(gat, (size_t)R * d), *Dsca = up(table, (size_t)T * d);
    on("cpu");
    rows_gather(gat, table, rows, R, d);
    rows_scatter(sca, in, rows, R, d);
    const double sq = sum_squares(table, (int64_t)T * d);
    on("cuda");
    rows_gather(Dgat, Dtable, Drows, R, d);
    rows_scatter(Dsca, Din, Drows, R, d);
    const double dsq = sum_squares(Dtable, (int64_t)T * d);
    CHECK("rows_gather", Dgat, gat, (size_t)R * d, 0.0);
    CHECK("rows_scatter", Dsca, sca, (size_t)T * d, 0.0);
    printf("# sum_squares %.12g (CPU %.12g)\n", dsq, sq);
    assert_true(fabs(dsq - sq) <= 1e-12 * sq);
    void* all[] = {Drows, Dtable, Din, Dgat, Dsca};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(table), free(in), free(gat), free(sca);
}

// An int32 device array brought back and compared with the CPU's, exactly.
static int same_i32(const int32_t* dev, const int32_t* ref, int64_t n) {
    int32_t* h = malloc((size_t)(n ? n : 1) * sizeof *h);
    dev_to_host(h, dev, (size_t)n * sizeof *h);
    const int same = !memcmp(h, ref, (size_t)n * sizeof *h);
    free(h);
    return same;
}

// The memory bank's exchange plan (ids_group, rows_sum_runs, ids_local,
// rows_mark) against the CPU's, which the rank-count tests check: the same
// ids in the same order, the same bits in every sum, plain and weighted (a
// query's gradient row shared by 3 lookups). Ids drawn with heavy repeats,
// over P = 1, 3 and 8 owners, and an empty call.
static void bank_plan_case(int64_t n, int64_t rows, int P, int d, uint64_t seed) {
    int32_t *ids = malloc((size_t)(n + 1) * 4), *uniq = malloc((size_t)(n + 1) * 4),
            *row = malloc((size_t)(n + 1) * 4), *perm = malloc((size_t)(n + 1) * 4),
            *first = malloc((size_t)(n + 2) * 4), *at = malloc((size_t)(n + 1) * 4);
    for (int64_t i = 0; i < n; i++)  // a few hot rows among many cold ones
        ids[i] = (int32_t)(rng_hash64(seed, i) % 4 ? rng_hash64(seed + 1, i) % 50
                                                   : rng_hash64(seed + 2, i) % rows);
    float* g = randn((size_t)(n + 1) * d, seed + 3, 1);
    float* w = randn((size_t)(n + 1), seed + 4, 1);
    float *sum = malloc((size_t)(n + 1) * d * 4), *wsum = malloc((size_t)(n + 1) * d * 4);
    uint64_t* work = malloc((size_t)(3 * n + 1) * 8);
    int64_t counts[8], dcounts[8];
    uint8_t* marks = calloc((size_t)rows, 1);
    on("cpu");
    const int64_t u = ids_group(uniq, row, perm, first, counts, ids, n, rows, P, work);
    rows_sum_runs(sum, g, NULL, 1, perm, first, u, d);
    rows_sum_runs(wsum, g, w, 3, perm, first, u, d);
    int64_t bad = 0;  // the first owner's ids, then all of them (all but its own bad)
    if (u) bad = ids_local(at, uniq, u, rows, P, 0);
    rows_mark(marks, at, counts[0]);
    on("cuda");
    int32_t *Dids = dev_alloc((size_t)(n + 1) * 4), *Duniq = dev_alloc((size_t)(n + 1) * 4),
            *Drow = dev_alloc((size_t)(n + 1) * 4), *Dperm = dev_alloc((size_t)(n + 1) * 4),
            *Dfirst = dev_alloc((size_t)(n + 2) * 4), *Dat = dev_alloc((size_t)(n + 1) * 4);
    uint64_t* Dwork = dev_alloc((size_t)(3 * n + 1) * 8);
    uint8_t* Dmarks = dev_alloc((size_t)rows);
    dev_zero(Dmarks, (size_t)rows);
    dev_to_device(Dids, ids, (size_t)n * 4);
    float *Dg = up(g, (size_t)(n + 1) * d), *Dsum = up(sum, (size_t)(n + 1) * d);
    float *Dw = up(w, (size_t)(n + 1)), *Dwsum = up(sum, (size_t)(n + 1) * d);
    const int64_t du = ids_group(Duniq, Drow, Dperm, Dfirst, dcounts, Dids, n, rows, P, Dwork);
    rows_sum_runs(Dsum, Dg, NULL, 1, Dperm, Dfirst, du, d);
    rows_sum_runs(Dwsum, Dg, Dw, 3, Dperm, Dfirst, du, d);
    int64_t dbad = 0;
    if (du) dbad = ids_local(Dat, Duniq, du, rows, P, 0);
    rows_mark(Dmarks, Dat, dcounts[0]);
    printf("# bank plan n %lld rows %lld P %d: %lld distinct (CUDA %lld), %lld not owner 0's\n",
           (long long)n, (long long)rows, P, (long long)u, (long long)du, (long long)dbad);
    assert_int_equal(du, u);
    assert_memory_equal(dcounts, counts, (size_t)P * sizeof *counts);
    assert_true(same_i32(Duniq, uniq, u));
    assert_true(same_i32(Drow, row, n));
    assert_true(same_i32(Dperm, perm, n));
    assert_true(same_i32(Dfirst, first, u + 1));
    assert_int_equal(dbad, bad);
    assert_true(same_i32(Dat, at, counts[0]));
    CHECK("bank plan sums", Dsum, sum, (size_t)u * d, 0.0);
    CHECK("bank plan weighted sums", Dwsum, wsum, (size_t)u * d, 0.0);
    uint8_t* hm = malloc((size_t)rows);
    dev_to_host(hm, Dmarks, (size_t)rows);
    assert_memory_equal(hm, marks, (size_t)rows);
    // an id out of range is refused on both
    if (n) {
        ids[n / 2] = (int32_t)rows;
        dev_to_device(Dids, ids, (size_t)n * 4);
        assert_int_equal(ids_group(Duniq, Drow, Dperm, Dfirst, dcounts, Dids, n, rows, P, Dwork),
                         -1);
        on("cpu");
        assert_int_equal(ids_group(uniq, row, perm, first, counts, ids, n, rows, P, work), -1);
        on("cuda");
    }
    void* all[] = {Dids, Duniq, Drow, Dperm, Dfirst, Dat, Dwork, Dmarks, Dg, Dsum, Dw, Dwsum};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(ids), free(uniq), free(row), free(perm), free(first), free(at), free(g), free(sum);
    free(w), free(wsum);
    free(work), free(marks), free(hm);
}

static void test_bank_plan(void** state) {
    need_gpu();
    bank_plan_case(3000, 700, 1, 16, 40);
    bank_plan_case(5000, 100000, 3, 24, 41);
    bank_plan_case(4097, 65536, 8, 64, 42);
    bank_plan_case(0, 1000, 3, 8, 43);
}

// One cross-entropy shape against the CPU: the loss, dh and dwte. N = V - 1
// items a row; a row of N floats starts 16-byte aligned only where r N is a
// multiple of 4 (the kernel's float4 head and tail). tf32: the precision
// that takes the half logits blocks where a row fits in shared memory (their
// bounds: half's 10-bit mantissa on inputs, logits and gradients), the fp32
// path with TF32 products where not.
static void crossentropy_precision(int R, int d, int V, int rb, uint64_t seed, int tf32) {
    const int N = V - 1;
    printf("# crossentropy R %d d %d N %d (row %d bytes) in blocks of %d rows, %s\n", R, d, N,
           4 * N, rb, tf32 ? "TF32 (half logits if the row fits)" : "fp32");
    float *h = randn((size_t)R * d, seed, 1), *wte = randn((size_t)V * d, seed + 1, 0.5f);
    int32_t* tg = malloc((size_t)R * sizeof *tg);
    for (int r = 0; r < R; r++)
        tg[r] = r % 17 == 5 ? 0 : 1 + (int32_t)(rng_hash64(seed + 2, r) % (uint64_t)N);
    float *dh = calloc((size_t)R * d, 4), *dwte = calloc((size_t)V * d, 4);
    float* scratch = malloc((size_t)rb * N * 4);
    int32_t* Dtg = dev_alloc((size_t)R * sizeof *tg);
    dev_to_device(Dtg, tg, (size_t)R * sizeof *tg);
    float *Dh = up(h, (size_t)R * d), *Dwte = up(wte, (size_t)V * d), *Ddh = up(dh, (size_t)R * d),
          *Ddwte = up(dwte, (size_t)V * d), *Dscratch = dev_alloc((size_t)rb * N * 4);
    on("cpu");
    const double loss = crossentropy_tied(dh, dwte, h, wte, tg, R, d, V, 0.01f, scratch, rb);
    on("cuda");
    device_set_precision(tf32 ? PRECISION_TF32 : PRECISION_FP32);
    const double dloss = crossentropy_tied(Ddh, Ddwte, Dh, Dwte, Dtg, R, d, V, 0.01f, Dscratch, rb);
    device_set_precision(PRECISION_FP32);
    printf("# crossentropy loss %.9g (CPU %.9g)\n", dloss, loss);
    assert_true(fabs(dloss - loss) <= (tf32 ? 1e-4 : 1e-5) * fabs(loss));
    CHECK("crossentropy dh", Ddh, dh, (size_t)R * d, tf32 ? 3e-3 : 1e-4);
    CHECK("crossentropy dwte", Ddwte, dwte, (size_t)V * d, tf32 ? 3e-3 : 1e-4);
    void* all[] = {Dtg, Dh, Dwte, Ddh, Ddwte, Dscratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(h), free(wte), free(tg), free(dh), free(dwte), free(scratch);
}

static void crossentropy_case(int R, int d, int V, int rb, uint64_t seed) {
    crossentropy_precision(R, d, V, rb, seed, 0);
    crossentropy_precision(R, d, V, rb, seed, 1);
}

static void test_crossentropy(void** state) {
    need_gpu();
    // rows in 3 blocks, the last short; each row in shared memory (20 KB)
    crossentropy_case(300, 32, 5001, 128, 22);
    // SASRec's N = 20000 less one: rows at every 4-byte offset, 80 KB of
    // shared memory (over the 48 KB default)
    crossentropy_case(70, 16, 20000, 32, 25);
    // 240 KB rows, over any GPU's shared memory (227 KB on sm_90): the
    // two-pass kernel
    crossentropy_case(20, 8, 60002, 16, 28);
    // the half rows in registers (ELASTIC_CE_ROWS): 3 and 10 vectors a thread
    setenv("ELASTIC_CE_ROWS", "registers", 1);
    printf("# ELASTIC_CE_ROWS=registers:\n");
    crossentropy_precision(300, 32, 5001, 128, 22, 1);
    crossentropy_precision(70, 16, 20000, 32, 25, 1);
    unsetenv("ELASTIC_CE_ROWS");
}

// The loss without a logits block under ELASTIC_CE=fused (16 rows a warp)
// and fused2 (32): every shape, or (small) one case a variant at the
// trainer's width, for gpu_check's racecheck.
static void crossentropy_fused_cases(int small) {
    const char* fused[] = {"fused", "fused2"};
    for (int f = 0; f < 2; f++) {
        setenv("ELASTIC_CE", fused[f], 1);
        printf("# ELASTIC_CE=%s:\n", fused[f]);
        if (small) {
            crossentropy_precision(40, 64, 201, 16, 34, 1);
            continue;
        }
        crossentropy_precision(150, 32, 1001, 128, 29, 1);
        crossentropy_precision(40, 64, 700, 32, 30, 1);
        crossentropy_precision(70, 16, 3001, 32, 31, 1);
    }
    if (!small) crossentropy_precision(20, 128, 301, 32, 32, 1);  // fused2 takes fused's kernels
    unsetenv("ELASTIC_CE");
}

// widths 16, 32, 64 and 128 (wider than a tile of items), rows and items in
// part-filled tiles, target-0 rows, several shares
static void test_crossentropy_fused(void** state) {
    need_gpu();
    crossentropy_fused_cases(0);
}

static void test_crossentropy_fused_small(void** state) {
    need_gpu();
    crossentropy_fused_cases(1);
}

// comm's nccl backend at one rank on the GPU (NCCL refuses two ranks on one
// GPU; tests/cli/cuda_emu.sh runs two over the emulator's NCCL): the id made
// and the communicator started, the all-reduces in place on device memory
// (sum, mean, and the overlapped one after its wait) leave one rank's values,
// and the all-to-all on device memory copies this rank's part to its offset.
static void test_nccl_one_rank(void** state) {
    need_gpu();
    comm c;
    char err[512], how[64], name[256];
    if (comm_init(&c, NULL, NULL, "nccl", err) ||
        comm_start_device(&c, device_name(name, sizeof name), how, sizeof how, err))
        fail_msg("nccl at one rank: %s", err);
    assert_string_equal(how, "nccl");
    const size_t n = 3000;
    float *x = randn(n, 61, 1.0f), *got = malloc(n * sizeof *got);
    float* dx = up(x, n);
    assert_int_equal(comm_allreduce_sum(&c, dx, (int64_t)n, err), 0);
    assert_int_equal(comm_allreduce_mean(&c, dx, (int64_t)n, err), 0);
    comm_request r;
    assert_int_equal(comm_iallreduce_sum(&c, dx, (int64_t)n, &r, err), 0);
    assert_int_equal(comm_wait(&c, &r, err), 0);
    dev_to_host(got, dx, n * sizeof *got);
    assert_memory_equal(got, x, n * sizeof *got);
    // 900 elements of 3 floats from offset 5 of the send buffer to offset 2 of recv
    float* dy = up(x, n);
    dev_zero(dy, n * sizeof *dy);
    const int64_t sc = 900, so = 5, rc = 900, ro = 2;
    assert_int_equal(comm_alltoallv_dev(&c, dx, &sc, &so, dy, &rc, &ro, 3 * sizeof(float), err), 0);
    dev_to_host(got, dy, n * sizeof *got);
    for (size_t i = 0; i < n; i++) {
        const float want = i >= 6 && i < 6 + 2700 ? x[15 + i - 6] : 0;
        if (got[i] != want) fail_msg("all-to-all: float %zu is %g, not %g", i, got[i], want);
    }
    comm_finalize(&c);
    dev_free(dx), dev_free(dy);
    free(x), free(got);
}

// The CPU backend's accounting, with or without a GPU: the peak of the bytes
// held at once through dev_alloc.
static void test_peak_bytes(void** state) {
    on("cpu");
    const size_t base = dev_peak_bytes();
    void* a = dev_alloc(1 << 20);
    void* b = dev_alloc(3 << 20);
    assert_true(dev_peak_bytes() >= base + (4 << 20));
    dev_free(a);
    dev_free(b);
    const size_t peak = dev_peak_bytes();
    void* c = dev_alloc(2 << 20);  // fits under the peak: it does not move
    assert_int_equal(dev_peak_bytes(), peak);
    dev_free(c);
}

// On CUDA the backend's own buffers count too: cuBLAS's workspace (32 MiB),
// and the scratch a call grows (the loss's half item table, 3.2 MB here),
// with every dev_alloc made before the first reading.
static void test_peak_bytes_cuda(void** state) {
    need_gpu();
    on("cuda");
    enum { R = 4, D = 32, V = 50001 };
    float *h = dev_alloc((size_t)R * D * 4), *wte = dev_alloc((size_t)V * D * 4);
    float *dh = dev_alloc((size_t)R * D * 4), *dwte = dev_alloc((size_t)V * D * 4);
    float* scratch = dev_alloc((size_t)4 * (V - 1) * 4);
    int32_t* tg = dev_alloc(R * sizeof(int32_t));
    dev_zero(h, (size_t)R * D * 4), dev_zero(wte, (size_t)V * D * 4);
    dev_zero(dh, (size_t)R * D * 4), dev_zero(dwte, (size_t)V * D * 4);
    dev_zero(tg, R * sizeof(int32_t));
    const size_t before = dev_peak_bytes();
    assert_true(before >= ((size_t)32 << 20));
    device_set_precision(PRECISION_TF32);
    crossentropy_tied(dh, dwte, h, wte, tg, R, D, V, 1.0f, scratch, 4);
    device_set_precision(PRECISION_FP32);
    printf("# device peak %.1f MB, after the loss %.1f MB\n", before / 1e6, dev_peak_bytes() / 1e6);
    assert_true(dev_peak_bytes() >= before + (size_t)(V - 1) * D * 2);
    void* all[] = {h, wte, dh, dwte, scratch, tg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
}

// test_cuda [PATTERN]: only the tests whose names match (jobs/gpu_check.sh
// runs each in its own process, so one that kills the GPU context hides no
// other).
int main(int argc, char** argv) {
    cuda_tests_begin(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peak_bytes),         cmocka_unit_test(test_peak_bytes_cuda),
        cmocka_unit_test(test_elementwise),        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_layernorm),          cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_embedding),          cmocka_unit_test(test_rows_and_norm),
        cmocka_unit_test(test_bank_plan),          cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_crossentropy_fused), cmocka_unit_test(test_crossentropy_fused_small),
        cmocka_unit_test(test_nccl_one_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
