// test_cuda.c: every kernel the CUDA backend has, against the CPU backend, on
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
#include "device.h"
#include "kernels.h"

static char why[512];
static int have_gpu;

static void on(const char* dev) {
    char err[512];
    assert_int_equal(device_init(dev, 0, err), 0);
}

// Skips without a GPU; else makes CUDA the current device (a test before may
// have left the CPU current, and buffers made then would be host memory).
static void need_gpu(void) {
    if (!have_gpu) {
        printf("# skipped: %s\n", why);
        skip();
    }
    on("cuda");
}

static float* randn(size_t n, uint64_t seed, float scale) {
    float* x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)(2 * rng_uniform(seed, i) - 1);
    return x;
}

// A host array's copy on the device.
static float* up(const float* h, size_t n) {
    float* d = dev_alloc(n * sizeof *d);
    assert_non_null(d);
    dev_to_device(d, h, n * sizeof *d);
    return d;
}

// max |a - b| / (max |b| + tiny) over n, with the device array brought back.
static double rel_err(const float* dev, const float* ref, size_t n) {
    float* h = malloc(n * sizeof *h);
    dev_to_host(h, dev, n * sizeof *h);
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)h[i] - ref[i]));
        den = fmax(den, fabs((double)ref[i]));
    }
    free(h);
    return num / den;
}

#define CHECK(name, dev, ref, n, tol)                                          \
    do {                                                                       \
        const double e_ = rel_err(dev, ref, n);                                \
        printf("# %-28s relative error %.2e (bound %.0e)\n", name, e_, (tol)); \
        assert_true(e_ <= (tol));                                              \
    } while (0)

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
// multiple of 4 (the kernel's float4 head and tail).
static void crossentropy_case(int R, int d, int V, int rb, uint64_t seed) {
    const int N = V - 1;
    printf("# crossentropy R %d d %d N %d (row %d bytes) in blocks of %d rows\n", R, d, N, 4 * N,
           rb);
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
    device_set_precision(PRECISION_FP32);
    const double dloss = crossentropy_tied(Ddh, Ddwte, Dh, Dwte, Dtg, R, d, V, 0.01f, Dscratch, rb);
    printf("# crossentropy loss %.9g (CPU %.9g)\n", dloss, loss);
    assert_true(fabs(dloss - loss) <= 1e-5 * fabs(loss));
    CHECK("crossentropy dh", Ddh, dh, (size_t)R * d, 1e-4);
    CHECK("crossentropy dwte", Ddwte, dwte, (size_t)V * d, 1e-4);
    void* all[] = {Dtg, Dh, Dwte, Ddh, Ddwte, Dscratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(h), free(wte), free(tg), free(dh), free(dwte), free(scratch);
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
}

// The fused (tiled) attention alone at one shape: out, lse and dqkv against
// the CPU's, in fp32 (the CUDA cores) and in TF32 (the tensor cores when the
// head width is a multiple of 16: bounds of TF32's 10-bit inputs).
static void fused_attention_precision(int L, int d, int H, const int32_t pad[3], int tf32) {
    const int B = 3;
    const size_t nq = (size_t)B * L * 3 * d, no = (size_t)B * L * d, nl = (size_t)B * H * L;
    float *qkv = randn(nq, 41, 1), *g = randn(no, 42, 1);
    float *out = malloc(no * 4), *lse = malloc(nl * 4), *dqkv = calloc(nq, 4);
    int32_t* Dpad = dev_alloc(3 * sizeof *pad);
    dev_to_device(Dpad, pad, 3 * sizeof *pad);
    float *Dqkv = up(qkv, nq), *Dg = up(g, no), *Dout = dev_alloc(no * 4),
          *Dlse = dev_alloc(nl * 4), *Ddqkv = up(dqkv, nq);
    on("cpu");
    attention_fused_forward(out, lse, qkv, pad, B, L, d, H);
    attention_fused_backward(dqkv, g, out, lse, qkv, pad, B, L, d, H);
    on("cuda");
    device_set_precision(tf32 ? PRECISION_TF32 : PRECISION_FP32);
    attention_fused_forward(Dout, Dlse, Dqkv, Dpad, B, L, d, H);
    attention_fused_backward(Ddqkv, Dg, Dout, Dlse, Dqkv, Dpad, B, L, d, H);
    device_set_precision(PRECISION_FP32);
    const int tc = tf32 && (d / H) % 16 == 0;
    printf("# fused attention L %d d %d H %d, %s\n", L, d, H,
           tc ? "TF32 tensor cores" : "fp32 CUDA cores");
    CHECK("fused attention out", Dout, out, no, tc ? 3e-3 : 1e-5);
    CHECK("fused attention lse", Dlse, lse, nl, tc ? 1e-3 : 1e-5);
    CHECK("fused attention dqkv", Ddqkv, dqkv, nq, tc ? 5e-3 : 1e-4);
    void* all[] = {Dpad, Dqkv, Dg, Dout, Dlse, Ddqkv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(qkv), free(g), free(out), free(lse), free(dqkv);
}

static void fused_attention_case(int L, int d, int H, const int32_t pad[3]) {
    fused_attention_precision(L, d, H, pad, 0);
    fused_attention_precision(L, d, H, pad, 1);
}

// The fused kernel's other tiling: heads of 128 columns take tiles of 32
// rows, here 5 of them, a padding run ending inside the second.
static void test_attention_wide_heads(void** state) {
    need_gpu();
    const int32_t pad[3] = {0, 40, 149};
    fused_attention_case(150, 256, 2, pad);
    // SASRec's heads of 32 (tiles of 64), a padding run ending inside the
    // second tile and a partial last one
    const int32_t pad1[3] = {0, 70, 190};
    fused_attention_case(200, 64, 2, pad1);
    // odd head width, a partial last tile: the register tiles' edges
    const int32_t pad2[3] = {0, 7, 74};
    fused_attention_case(75, 18, 2, pad2);
}

static void test_attention(void** state) {
    need_gpu();
    const int B = 3, L = 70, d = 32, H = 2;
    const int32_t pad[3] = {0, 13, 69};  // none, some, all but the last position
    const size_t nq = (size_t)B * L * 3 * d, no = (size_t)B * L * d, na = (size_t)B * H * L * L;
    float *qkv = randn(nq, 25, 1), *g = randn(no, 26, 1);
    float *out = malloc(no * 4), *att = malloc(na * 4), *datt = malloc(na * 4),
          *dqkv = calloc(nq, 4);
    int32_t* Dpad = dev_alloc(sizeof pad);
    dev_to_device(Dpad, pad, sizeof pad);
    float *Dqkv = up(qkv, nq), *Dg = up(g, no), *Dout = up(out, no), *Datt = dev_alloc(na * 4),
          *Ddatt = dev_alloc(na * 4), *Ddqkv = up(dqkv, nq);
    on("cpu");
    attention_forward(out, att, qkv, pad, B, L, d, H);
    attention_backward(dqkv, datt, g, qkv, att, pad, B, L, d, H);
    on("cuda");
    attention_forward(Dout, Datt, Dqkv, Dpad, B, L, d, H);
    attention_backward(Ddqkv, Ddatt, Dg, Dqkv, Datt, Dpad, B, L, d, H);
    CHECK("attention out", Dout, out, no, 1e-5);
    CHECK("attention probabilities", Datt, att, na, 1e-5);
    CHECK("attention dqkv", Ddqkv, dqkv, nq, 1e-4);
    // the fused form: the same out, its lse, and the same gradients
    float* lse = malloc((size_t)B * H * L * 4);
    float* Dlse = dev_alloc((size_t)B * H * L * 4);
    memset(dqkv, 0, nq * 4);
    dev_zero(Ddqkv, nq * 4);
    on("cpu");
    attention_fused_forward(out, lse, qkv, pad, B, L, d, H);
    attention_fused_backward(dqkv, g, out, lse, qkv, pad, B, L, d, H);
    on("cuda");
    device_set_precision(PRECISION_FP32);  // the CUDA cores (TF32: fused_attention_case)
    attention_fused_forward(Dout, Dlse, Dqkv, Dpad, B, L, d, H);
    attention_fused_backward(Ddqkv, Dg, Dout, Dlse, Dqkv, Dpad, B, L, d, H);
    CHECK("fused attention out", Dout, out, no, 1e-5);
    CHECK("fused attention lse", Dlse, lse, (size_t)B * H * L, 1e-5);
    CHECK("fused attention dqkv", Ddqkv, dqkv, nq, 1e-4);
    dev_free(Dlse), free(lse);
    void* all[] = {Dpad, Dqkv, Dg, Dout, Datt, Ddatt, Ddqkv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(qkv), free(g), free(out), free(att), free(datt), free(dqkv);
}

static void test_recgrela_parts(void** state) {
    need_gpu();
    // an odd width: its last dim passes RoPE through; 600 rows: the conv's
    // weight gradient sums several slices of rows, the last one partial
    const int B = 3, L = 200, d = 33, K = 4;
    const int32_t pad[3] = {0, 9, 199};
    const size_t n = (size_t)B * L * d;
    float *x = randn(n, 27, 2), *g = randn(n, 28, 1), *w = randn((size_t)d * K, 29, 1),
          *bias = randn(d, 30, 1);
    float *e = malloc(n * 4), *de = calloc(n, 4), *r = malloc(n * 4), *dr = calloc(n, 4),
          *c = malloc(n * 4), *dc = calloc(n, 4), *dw = calloc((size_t)d * K, 4),
          *db = calloc(d, 4);
    int32_t* Dpad = dev_alloc(sizeof pad);
    dev_to_device(Dpad, pad, sizeof pad);
    float *Dx = up(x, n), *Dg = up(g, n), *Dw = up(w, (size_t)d * K), *Dbias = up(bias, d),
          *De = up(e, n), *Dde = up(de, n), *Dr = up(r, n), *Ddr = up(dr, n), *Dc = up(c, n),
          *Ddc = up(dc, n), *Ddw = up(dw, (size_t)d * K), *Ddb = up(db, d);
    on("cpu");
    elu1_forward(e, x, n), elu1_backward(de, x, g, n);
    rope_forward(r, x, B, L, d), rope_backward(dr, g, B, L, d);
    conv_causal_forward(c, x, w, bias, pad, B, L, d, K);
    conv_causal_backward(dc, dw, db, g, x, w, pad, B, L, d, K);
    on("cuda");
    elu1_forward(De, Dx, n), elu1_backward(Dde, Dx, Dg, n);
    rope_forward(Dr, Dx, B, L, d), rope_backward(Ddr, Dg, B, L, d);
    conv_causal_forward(Dc, Dx, Dw, Dbias, Dpad, B, L, d, K);
    conv_causal_backward(Ddc, Ddw, Ddb, Dg, Dx, Dw, Dpad, B, L, d, K);
    CHECK("elu1 forward", De, e, n, 1e-6);
    CHECK("elu1 backward", Dde, de, n, 1e-6);
    CHECK("rope forward", Dr, r, n, 1e-6);
    CHECK("rope backward", Ddr, dr, n, 1e-6);
    CHECK("conv forward", Dc, c, n, 1e-5);
    CHECK("conv dinp", Ddc, dc, n, 1e-5);
    CHECK("conv dw", Ddw, dw, (size_t)d * K, 1e-5);
    CHECK("conv dbias", Ddb, db, d, 1e-5);
    void* all[] = {Dpad, Dx, Dg, Dw, Dbias, De, Dde, Dr, Ddr, Dc, Ddc, Ddw, Ddb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(x), free(g), free(w), free(bias), free(e), free(de), free(r), free(dr), free(c), free(dc);
    free(dw), free(db);
}

// one shape: B = 3 sequences, padded to pad[b]
static void linear_attention_case(int L, int d, int H, int C, const int32_t pad[3]) {
    const int B = 3;
    const size_t n = (size_t)B * L * d, nd = (size_t)B * H * L;
    float *qr = randn(n, 31, 1), *kr = randn(n, 32, 1), *v = randn(n, 33, 1), *g = randn(n, 34, 1);
    float *qf = randn(n, 35, 1), *kf = randn(n, 36, 1);
    for (size_t i = 0; i < n; i++)
        qf[i] = 1 + qf[i] * qf[i], kf[i] = 1 + kf[i] * kf[i];  // positive
    float *out = malloc(n * 4), *den = malloc(nd * 4);
    float* grads[5];
    for (int i = 0; i < 5; i++) grads[i] = calloc(n, 4);
    int32_t* Dpad = dev_alloc(3 * sizeof *pad);
    dev_to_device(Dpad, pad, 3 * sizeof *pad);
    float *Dqr = up(qr, n), *Dkr = up(kr, n), *Dv = up(v, n), *Dg = up(g, n), *Dqf = up(qf, n),
          *Dkf = up(kf, n), *Dout = up(out, n), *Dden = dev_alloc(nd * 4);
    float* Dgrads[5];
    for (int i = 0; i < 5; i++) Dgrads[i] = up(grads[i], n);
    on("cpu");
    linear_attention_forward(out, den, qr, kr, qf, kf, v, pad, B, L, d, H, C);
    linear_attention_backward(grads[0], grads[1], grads[2], grads[3], grads[4], g, out, den, qr, kr,
                              qf, kf, v, pad, B, L, d, H, C);
    on("cuda");
    linear_attention_forward(Dout, Dden, Dqr, Dkr, Dqf, Dkf, Dv, Dpad, B, L, d, H, C);
    linear_attention_backward(Dgrads[0], Dgrads[1], Dgrads[2], Dgrads[3], Dgrads[4], Dg, Dout, Dden,
                              Dqr, Dkr, Dqf, Dkf, Dv, Dpad, B, L, d, H, C);
    CHECK("linear attention out", Dout, out, n, 1e-4);
    CHECK("linear attention den", Dden, den, nd, 1e-5);
    const char* names[5] = {"dqr", "dkr", "dqf", "dkf", "dv"};
    for (int i = 0; i < 5; i++) CHECK(names[i], Dgrads[i], grads[i], n, 1e-4);
    void* all[] = {Dpad, Dqr, Dkr, Dv, Dg, Dqf, Dkf, Dout, Dden};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    for (int i = 0; i < 5; i++) dev_free(Dgrads[i]), free(grads[i]);
    free(qr), free(kr), free(v), free(g), free(qf), free(kf), free(out), free(den);
}

// the GPU's chunks (32 positions) against the CPU's: a padding run inside the
// first chunk and one ending in a later chunk, one chunk or ten, heads of 16
// and 64 columns (the larger past 48 KB of shared memory per block)
static void test_linear_attention(void** state) {
    need_gpu();
    const int32_t pad1[3] = {0, 11, 49}, pad2[3] = {0, 70, 299};
    linear_attention_case(50, 32, 2, 8, pad1);
    linear_attention_case(300, 128, 2, 16, pad2);
}

// One case of the aggregation against the CPU: rows padded 0, p1 and p2;
// keys scaled by ks (large scores test the running maxima).
static void aggregate_case(int L, int d, int H, int k, int C, int p1, int p2, float ks) {
    const int B = 3, nc = (L + C - 1) / C;
    printf("# case L %d d %d H %d k %d C %d pad 0,%d,%d, keys x%g\n", L, d, H, k, C, p1, p2, ks);
    const int32_t pad[3] = {0, p1, p2};
    const size_t n = (size_t)B * L * d, np = (size_t)B * nc * k * d, nl = (size_t)B * nc * k * H;
    float *qe = randn((size_t)k * d, 37, 1), *kh = randn(n, 38, ks), *vh = randn(n, 39, 1),
          *u = randn((size_t)k * d, 40, 1), *pb = randn((size_t)k * H, 41, 1),
          *dP = randn(np, 42, 1);
    float *P = malloc(np * 4), *lse = malloc(nl * 4), *dqe = calloc((size_t)k * d, 4),
          *dkh = calloc(n, 4), *dvh = calloc(n, 4), *du = calloc((size_t)k * d, 4),
          *dpb = calloc((size_t)k * H, 4);
    int32_t* Dpad = dev_alloc(sizeof pad);
    dev_to_device(Dpad, pad, sizeof pad);
    float *Dqe = up(qe, (size_t)k * d), *Dkh = up(kh, n), *Dvh = up(vh, n),
          *Du = up(u, (size_t)k * d), *Dpb = up(pb, (size_t)k * H), *DdP = up(dP, np),
          *DP = dev_alloc(np * 4), *Dlse = dev_alloc(nl * 4), *Ddqe = up(dqe, (size_t)k * d),
          *Ddkh = up(dkh, n), *Ddvh = up(dvh, n), *Ddu = up(du, (size_t)k * d),
          *Ddpb = up(dpb, (size_t)k * H);
    on("cpu");
    interest_aggregate_forward(P, lse, qe, kh, vh, u, pb, pad, B, L, d, H, k, C);
    interest_aggregate_backward(dqe, dkh, dvh, du, dpb, dP, P, lse, qe, kh, vh, u, pb, pad, B, L, d,
                                H, k, C);
    on("cuda");
    interest_aggregate_forward(DP, Dlse, Dqe, Dkh, Dvh, Du, Dpb, Dpad, B, L, d, H, k, C);
    interest_aggregate_backward(Ddqe, Ddkh, Ddvh, Ddu, Ddpb, DdP, DP, Dlse, Dqe, Dkh, Dvh, Du, Dpb,
                                Dpad, B, L, d, H, k, C);
    CHECK("aggregate P", DP, P, np, 1e-5);
    CHECK("aggregate lse", Dlse, lse, nl, 1e-5);
    CHECK("aggregate dqe", Ddqe, dqe, (size_t)k * d, 1e-4);
    CHECK("aggregate dkh", Ddkh, dkh, n, 1e-4);
    CHECK("aggregate dvh", Ddvh, dvh, n, 1e-4);
    CHECK("aggregate du", Ddu, du, (size_t)k * d, 1e-4);
    CHECK("aggregate dpb", Ddpb, dpb, (size_t)k * H, 1e-4);
    void* all[] = {Dpad, Dqe, Dkh, Dvh, Du, Dpb, DdP, DP, Dlse, Ddqe, Ddkh, Ddvh, Ddu, Ddpb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(qe), free(kh), free(vh), free(u), free(pb), free(dP), free(P), free(lse), free(dqe);
    free(dkh), free(dvh), free(du), free(dpb);
}

static void test_interest_aggregate(void** state) {
    need_gpu();
    aggregate_case(45, 32, 2, 3, 8, 10, 44, 1);     // none, into chunk 1, the last position only
    aggregate_case(300, 32, 2, 4, 16, 37, 299, 4);  // many chunks, large scores
    aggregate_case(130, 64, 1, 2, 64, 64, 129, 1);  // padding to a chunk's edge, a short tail
}

// One case of the dispatch against the CPU: rows padded 0, p1 and p2.
static void dispatch_case(int L, int d, int H, int k, int C, int p1, int p2) {
    const int B = 3, nc = (L + C - 1) / C;
    printf("# case L %d d %d H %d k %d C %d pad 0,%d,%d\n", L, d, H, k, C, p1, p2);
    const int32_t pad[3] = {0, p1, p2};
    const size_t n = (size_t)B * L * d, ni = (size_t)B * nc * k * d, nl = (size_t)B * H * L;
    float *q = randn(n, 43, 1), *kl = randn(n, 44, 1), *vl = randn(n, 45, 1),
          *ki = randn(ni, 46, 1), *vi = randn(ni, 47, 1), *g = randn(n, 48, 1);
    float *out = malloc(n * 4), *lse = malloc(nl * 4);
    float* gr[5] = {calloc(n, 4), calloc(n, 4), calloc(n, 4), calloc(ni, 4), calloc(ni, 4)};
    const size_t sz[5] = {n, n, n, ni, ni};
    int32_t* Dpad = dev_alloc(sizeof pad);
    dev_to_device(Dpad, pad, sizeof pad);
    float *Dq = up(q, n), *Dkl = up(kl, n), *Dvl = up(vl, n), *Dki = up(ki, ni), *Dvi = up(vi, ni),
          *Dg = up(g, n), *Dout = dev_alloc(n * 4), *Dlse = dev_alloc(nl * 4);
    float* Dgr[5];
    for (int i = 0; i < 5; i++) Dgr[i] = up(gr[i], sz[i]);
    on("cpu");
    dispatch_forward(out, lse, q, kl, vl, ki, vi, pad, B, L, d, H, k, C);
    dispatch_backward(gr[0], gr[1], gr[2], gr[3], gr[4], g, out, lse, q, kl, vl, ki, vi, pad, B, L,
                      d, H, k, C);
    on("cuda");
    dispatch_forward(Dout, Dlse, Dq, Dkl, Dvl, Dki, Dvi, Dpad, B, L, d, H, k, C);
    dispatch_backward(Dgr[0], Dgr[1], Dgr[2], Dgr[3], Dgr[4], Dg, Dout, Dlse, Dq, Dkl, Dvl, Dki,
                      Dvi, Dpad, B, L, d, H, k, C);
    CHECK("dispatch out", Dout, out, n, 1e-5);
    CHECK("dispatch lse", Dlse, lse, nl, 1e-5);
    const char* names[5] = {"dispatch dq", "dispatch dkl", "dispatch dvl", "dispatch dki",
                            "dispatch dvi"};
    for (int i = 0; i < 5; i++) CHECK(names[i], Dgr[i], gr[i], sz[i], 1e-4);
    void* all[] = {Dpad, Dq, Dkl, Dvl, Dki, Dvi, Dg, Dout, Dlse};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    for (int i = 0; i < 5; i++) dev_free(Dgr[i]), free(gr[i]);
    free(q), free(kl), free(vl), free(ki), free(vi), free(g), free(out), free(lse);
}

static void test_dispatch(void** state) {
    need_gpu();
    // the tiles (T rows: 64 for heads up to 64 wide, 32 up to 256; less for a
    // small chunk) in every arrangement the kernels have
    dispatch_case(45, 32, 2, 3, 8, 10, 44);  // hd 16, one tile a chunk (T 8)
    dispatch_case(200, 32, 2, 5, 80, 70,
                  133);  // hd 16, C 80: 2 query and local tiles, pad mid-tile
    dispatch_case(100, 256, 2, 40, 48, 37, 99);  // hd 128, T 32: 2 interest tiles, 2 tiles a chunk
    dispatch_case(70, 128, 2, 64, 64, 3, 70);    // hd 64, a chunk of padding only (pad = L)
    dispatch_case(45, 18, 2, 3, 5, 11, 20);      // odd hd 9, C 5
    dispatch_case(60, 512, 2, 7, 20, 5, 30);     // hd 256
}

static void test_pkm(void** state) {
    need_gpu();
    const int R = 40, Hm = 2, dk = 16, n = 30, kk = 4, d = 24, V = n * n;
    const size_t nl = (size_t)R * Hm * kk;
    float *q = randn((size_t)R * Hm * dk, 49, 1), *K = randn((size_t)Hm * n * dk, 50, 1),
          *Vt = randn((size_t)V * d, 51, 1), *g = randn((size_t)R * d, 52, 1);
    int32_t* idx = malloc(nl * 4);
    float *w = malloc(nl * 4), *out = malloc((size_t)R * d * 4),
          *dq = calloc((size_t)R * Hm * dk, 4), *dK = calloc((size_t)Hm * n * dk, 4),
          *dV = malloc(nl * d * 4);
    float *Dq = up(q, (size_t)R * Hm * dk), *DK = up(K, (size_t)Hm * n * dk),
          *DV = up(Vt, (size_t)V * d), *Dg = up(g, (size_t)R * d), *Dw = dev_alloc(nl * 4),
          *Dout = dev_alloc((size_t)R * d * 4), *Ddq = up(dq, (size_t)R * Hm * dk),
          *DdK = up(dK, (size_t)Hm * n * dk), *DdV = dev_alloc(nl * d * 4);
    int32_t* Didx = dev_alloc(nl * 4);
    on("cpu");
    pkm_select(idx, w, q, K, R, Hm, dk, n, kk);
    pkm_read(out, idx, w, Vt, R, Hm, kk, d);
    pkm_backward(dq, dK, dV, g, idx, idx, w, q, K, Vt, R, Hm, dk, n, kk, d);
    on("cuda");
    pkm_select(Didx, Dw, Dq, DK, R, Hm, dk, n, kk);
    int32_t* got = malloc(nl * 4);
    dev_to_host(got, Didx, nl * 4);
    size_t differ = 0;
    for (size_t i = 0; i < nl; i++) differ += got[i] != idx[i];
    printf("# pkm_select: %zu of %zu slots differ\n", differ, nl);
    assert_true(differ == 0);
    CHECK("pkm weights", Dw, w, nl, 1e-5);
    pkm_read(Dout, Didx, Dw, DV, R, Hm, kk, d);
    pkm_backward(Ddq, DdK, DdV, Dg, Didx, Didx, Dw, Dq, DK, DV, R, Hm, dk, n, kk, d);
    CHECK("pkm read", Dout, out, (size_t)R * d, 1e-5);
    CHECK("pkm dq", Ddq, dq, (size_t)R * Hm * dk, 1e-4);
    CHECK("pkm dK", DdK, dK, (size_t)Hm * n * dk, 1e-4);
    CHECK("pkm value rows", DdV, dV, nl * d, 1e-5);
    // the sparse Adam on distinct rows
    int32_t rows[8] = {3, 70, 71, 200, 512, 600, 899, 1};
    float *table = randn((size_t)V * d, 53, 1), *m = randn((size_t)V * d, 54, 0.01f),
          *v = calloc((size_t)V * d, 4), *gr = randn((size_t)8 * d, 55, 0.1f);
    int32_t* Drows = dev_alloc(sizeof rows);
    dev_to_device(Drows, rows, sizeof rows);
    float *Dt = up(table, (size_t)V * d), *Dm = up(m, (size_t)V * d), *Dv = up(v, (size_t)V * d),
          *Dgr = up(gr, (size_t)8 * d);
    on("cpu");
    adam_sparse_update(table, m, v, rows, gr, 8, d, 1e-2f, 0.9f, 0.98f, 1e-8f, 3);
    on("cuda");
    adam_sparse_update(Dt, Dm, Dv, Drows, Dgr, 8, d, 1e-2f, 0.9f, 0.98f, 1e-8f, 3);
    CHECK("sparse adam rows", Dt, table, (size_t)V * d, 1e-6);
    CHECK("sparse adam moments", Dv, v, (size_t)V * d, 1e-6);
    void* all[] = {Dq, DK, DV, Dg, Dw, Dout, Ddq, DdK, DdV, Didx, Drows, Dt, Dm, Dv, Dgr};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(q), free(K), free(Vt), free(g), free(idx), free(w), free(out), free(dq), free(dK),
        free(dV);
    free(got), free(table), free(m), free(v), free(gr);
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

// test_cuda [PATTERN]: only the tests whose names match (jobs/gpu_check.sh
// runs each in its own process, so one that kills the GPU context hides no
// other).
int main(int argc, char** argv) {
    if (argc > 1) cmocka_set_test_filter(argv[1]);
    have_gpu = device_init("cuda", 0, why) == 0;
    char name[256];
    if (have_gpu) printf("# device %s\n", device_name(name, sizeof name));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peak_bytes),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_rows_and_norm),
        cmocka_unit_test(test_bank_plan),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_wide_heads),
        cmocka_unit_test(test_recgrela_parts),
        cmocka_unit_test(test_linear_attention),
        cmocka_unit_test(test_interest_aggregate),
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_pkm),
        cmocka_unit_test(test_nccl_one_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
