// test_kernels_cpu.c: the CPU kernels, built with real = double, against
// central finite differences (every backward), naive references (every
// forward), and each other (fused vs materialised attention, rb blockings).
// Each backward starts from random gradients, so the checks also cover
// accumulation (+=).
// cmocka needs these first, in this order
// clang-format off
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

_Static_assert(sizeof(real) == sizeof(double), "the kernel tests need the -DKERNELS_F64 build");

// eps 1e-5 balances truncation (eps^2) against rounding (ulp(loss) / eps)
#define FD_EPS 1e-5
#define FD_TOL 1e-6
#define FD_SAMPLE 1000  // tensors larger than this are checked at random elements

#define FD_CHECK_GRAD
#include "fd.h"

// ---- rng

// the splitmix64 finaliser, written out again so that the documented formula
// (which every backend must follow) is checked
static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void test_rng(void** state) {
    const uint64_t seeds[3] = {0, 7, 0xDEADBEEFCAFEull};
    for (int k = 0; k < 3; k++)
        for (uint64_t i = 0; i < 1000; i += 37) {
            uint64_t z = mix(mix(seeds[k]) + (i + 1) * 0x9E3779B97F4A7C15ull);
            assert_true(rng_hash64(seeds[k], i) == z);
            assert_true(rng_uniform(seeds[k], i) == (double)(z >> 11) * 0x1.0p-53);
        }
    assert_true(rng_hash64(7, 3) == rng_hash64(7, 3));
    assert_true(rng_hash64(7, 3) != rng_hash64(8, 3));
    assert_true(rng_hash64(7, 3) != rng_hash64(7, 4));
    double s = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        double u = rng_uniform(42, i);
        assert_true(u >= 0 && u < 1);
        s += u;
    }
    assert_true(fabs(s / n - 0.5) < 0.005);
}

// ---- embedding

typedef struct {
    int B, L, d;
    int32_t* inp;
    real *wte, *wpe, *out, *G;
} emb_ctx;

static double emb_loss(void* p) {
    emb_ctx* c = p;
    embedding_forward(c->out, c->inp, c->wte, c->wpe, c->B, c->L, c->d);
    return dotp(c->out, c->G, (int64_t)c->B * c->L * c->d);
}

static void test_embedding(void** state) {
    seed(1);
    const int B = 3, L = 5, d = 4, V = 6, n = B * L * d;
    // ids repeat across and within rows, so the scatter must add, not assign
    int32_t inp[15] = {1, 2, 2, 5, 0, 3, 1, 1, 4, 5, 0, 0, 2, 5, 5};
    emb_ctx c = {B, L, d, inp, rnd(V * d, -1, 1), rnd(L * d, -1, 1), rnd(n, 0, 0), rnd(n, -1, 1)};
    emb_loss(&c);
    for (int bt = 0; bt < B * L; bt++)
        for (int k = 0; k < d; k++)
            assert_true(c.out[bt * d + k] == c.wte[inp[bt] * d + k] + c.wpe[(bt % L) * d + k]);
    real *g0w = rnd(V * d, -1, 1), *g0p = rnd(L * d, -1, 1);
    real *gw = dup(g0w, V * d), *gp = dup(g0p, L * d);
    embedding_backward(gw, gp, c.G, inp, B, L, d);
    check_grad("embedding dwte", c.wte, g0w, gw, V * d, emb_loss, &c);
    check_grad("embedding dwpe", c.wpe, g0p, gp, L * d, emb_loss, &c);
    // dwpe may be NULL
    real* gw2 = dup(g0w, V * d);
    embedding_backward(gw2, NULL, c.G, inp, B, L, d);
    assert_true(max_abs_diff(gw, gw2, V * d) == 0);
    free(c.wte), free(c.wpe), free(c.out), free(c.G);
    free(g0w), free(g0p), free(gw), free(gp), free(gw2);
}

// ---- layernorm

typedef struct {
    int R, d;
    real *inp, *w, *b, *out, *mean, *rstd, *G;
} ln_ctx;

static double ln_loss(void* p) {
    ln_ctx* c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->R, c->d);
    return dotp(c->out, c->G, (int64_t)c->R * c->d);
}

static void test_layernorm(void** state) {
    seed(2);
    const int R = 6, d = 10, n = R * d;
    ln_ctx c = {.R = R, .d = d, .inp = rnd(n, -2, 3), .w = rnd(d, 0.5, 1.5), .b = rnd(d, -1, 1)};
    c.out = rnd(n, 0, 0), c.mean = rnd(R, 0, 0), c.rstd = rnd(R, 0, 0), c.G = rnd(n, -1, 1);
    ln_loss(&c);
    for (int r = 0; r < R; r++) {
        double m = 0, v = 0;
        for (int k = 0; k < d; k++) m += c.inp[r * d + k] / d;
        for (int k = 0; k < d; k++) v += (c.inp[r * d + k] - m) * (c.inp[r * d + k] - m) / d;
        for (int k = 0; k < d; k++) {
            double ref = (c.inp[r * d + k] - m) / sqrt(v + 1e-5) * c.w[k] + c.b[k];
            assert_true(fabs(c.out[r * d + k] - ref) < 1e-12);
        }
    }
    real *g0x = rnd(n, -1, 1), *g0w = rnd(d, -1, 1), *g0b = rnd(d, -1, 1);
    real *gx = dup(g0x, n), *gw = dup(g0w, d), *gb = dup(g0b, d);
    layernorm_backward(gx, gw, gb, c.G, c.inp, c.w, c.mean, c.rstd, R, d);
    check_grad("layernorm dinp", c.inp, g0x, gx, n, ln_loss, &c);
    check_grad("layernorm dw", c.w, g0w, gw, d, ln_loss, &c);
    check_grad("layernorm db", c.b, g0b, gb, d, ln_loss, &c);
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.mean), free(c.rstd), free(c.G);
    free(g0x), free(g0w), free(g0b), free(gx), free(gw), free(gb);
}

// ---- matmul

typedef struct {
    int R, IC, OC;
    real *inp, *w, *bias, *out, *G;
} mm_ctx;

static double mm_loss(void* p) {
    mm_ctx* c = p;
    matmul_forward(c->out, c->inp, c->w, c->bias, c->R, c->IC, c->OC);
    return dotp(c->out, c->G, (int64_t)c->R * c->OC);
}

static void check_matmul(int with_bias) {
    seed(3 + with_bias);
    const int R = 5, IC = 7, OC = 19;
    mm_ctx c = {.R = R, .IC = IC, .OC = OC, .inp = rnd(R * IC, -1, 1), .w = rnd(OC * IC, -1, 1)};
    c.bias = with_bias ? rnd(OC, -1, 1) : NULL, c.out = rnd(R * OC, 5, 5), c.G = rnd(R * OC, -1, 1);
    mm_loss(&c);
    for (int r = 0; r < R; r++)
        for (int o = 0; o < OC; o++) {
            double ref = with_bias ? c.bias[o] : 0;
            for (int i = 0; i < IC; i++) ref += c.inp[r * IC + i] * c.w[o * IC + i];
            assert_true(fabs(c.out[r * OC + o] - ref) < 1e-13);
        }
    real *g0x = rnd(R * IC, -1, 1), *g0w = rnd(OC * IC, -1, 1), *g0b = rnd(OC, -1, 1);
    real *gx = dup(g0x, R * IC), *gw = dup(g0w, OC * IC), *gb = dup(g0b, OC);
    matmul_backward(gx, gw, with_bias ? gb : NULL, c.G, c.inp, c.w, R, IC, OC);
    check_grad("matmul dinp", c.inp, g0x, gx, R * IC, mm_loss, &c);
    check_grad("matmul dw", c.w, g0w, gw, OC * IC, mm_loss, &c);
    if (with_bias)
        check_grad("matmul dbias", c.bias, g0b, gb, OC, mm_loss, &c);
    else
        assert_true(max_abs_diff(g0b, gb, OC) == 0);
    // NULL gradients are skipped
    real* gw2 = dup(g0w, OC * IC);
    matmul_backward(NULL, gw2, NULL, c.G, c.inp, c.w, R, IC, OC);
    assert_true(max_abs_diff(gw, gw2, OC * IC) == 0);
    free(c.inp), free(c.w), free(c.bias), free(c.out), free(c.G);
    free(g0x), free(g0w), free(g0b), free(gx), free(gw), free(gb), free(gw2);
}

static void test_matmul_bias(void** state) { check_matmul(1); }
static void test_matmul_nobias(void** state) { check_matmul(0); }

// ---- gelu

typedef struct {
    int64_t n;
    real *inp, *out, *G;
} ew_ctx;

static double gelu_loss(void* p) {
    ew_ctx* c = p;
    gelu_forward(c->out, c->inp, c->n);
    return dotp(c->out, c->G, c->n);
}

static void test_gelu(void** state) {
    seed(5);
    const int n = 300;
    ew_ctx c = {n, rnd(n, -6, 6), rnd(n, 0, 0), rnd(n, -1, 1)};
    c.inp[0] = 0, c.inp[1] = -40, c.inp[2] = 40;
    gelu_loss(&c);
    for (int i = 0; i < n; i++) {
        double x = c.inp[i];
        double ref = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        assert_true(fabs(c.out[i] - ref) < 1e-14 * fmax(1, fabs(x)));
    }
    real *g0 = rnd(n, -1, 1), *g = dup(g0, n);
    gelu_backward(g, c.inp, c.G, n);
    check_grad("gelu dinp", c.inp, g0, g, n, gelu_loss, &c);
    free(c.inp), free(c.out), free(c.G), free(g0), free(g);
}

// ---- dropout

static void test_dropout(void** state) {
    const int64_t n = 1000000;
    const real p = 0.3;
    const uint64_t s = 1234;
    real *ones = rnd(n, 1, 1), *out = rnd(n, 0, 0), *g = rnd(n, 0, 0);
    dropout_forward(out, ones, p, s, 0, n);
    double dropped = 0, mean = 0;
    for (int64_t i = 0; i < n; i++) {
        dropped += out[i] == 0;
        mean += out[i] / n;
    }
    assert_true(fabs(dropped / n - p) < 0.005);
    assert_true(fabs(mean - 1) < 0.005);
    // the mask is exactly rng_uniform(seed, i) >= p, kept values scaled by 1/(1-p)
    for (int64_t i = 0; i < 5000; i++)
        assert_true(out[i] == (rng_uniform(s, i) >= p ? 1 / (1 - p) : 0));
    // the gradient is the same scaled mask (and accumulates)
    dropout_backward(g, ones, p, s, 0, n);
    dropout_backward(g, ones, p, s, 0, n);
    for (int64_t i = 0; i < n; i++) assert_true(g[i] == 2 * out[i]);
    // in place gives the same; p == 0 copies
    real* x = rnd(n, -1, 1);
    real* y = dup(x, n);
    dropout_forward(out, x, p, s, 0, n);
    dropout_forward(y, y, p, s, 0, n);
    assert_true(max_abs_diff(out, y, n) == 0);
    dropout_forward(out, x, 0, s, 0, n);
    assert_true(max_abs_diff(out, x, n) == 0);
    // another seed draws another mask
    dropout_forward(y, ones, p, s + 1, 0, n);
    dropout_forward(out, ones, p, s, 0, n);
    assert_true(max_abs_diff(out, y, n) > 0);
    // a slice placed at `first` draws the whole tensor's mask there (a rank's
    // rows of the global batch), forward and backward
    const int64_t k = n / 3;
    dropout_forward(y, ones, p, s, k, n - k);
    assert_true(max_abs_diff(out + k, y, n - k) == 0);
    memset(g, 0, (size_t)n * sizeof *g);
    dropout_backward(g, ones, p, s, k, n - k);
    assert_true(max_abs_diff(out + k, g, n - k) == 0);
    free(ones), free(out), free(g), free(x), free(y);
}

// ---- residual

typedef struct {
    int64_t n;
    real *a, *b, *out, *G;
} res_ctx;

static double res_loss(void* p) {
    res_ctx* c = p;
    residual_forward(c->out, c->a, c->b, c->n);
    return dotp(c->out, c->G, c->n);
}

static void test_residual(void** state) {
    seed(6);
    const int n = 100;
    res_ctx c = {n, rnd(n, -1, 1), rnd(n, -1, 1), rnd(n, 0, 0), rnd(n, -1, 1)};
    res_loss(&c);
    for (int i = 0; i < n; i++) assert_true(c.out[i] == c.a[i] + c.b[i]);
    real *g0a = rnd(n, -1, 1), *g0b = rnd(n, -1, 1), *ga = dup(g0a, n), *gb = dup(g0b, n);
    residual_backward(ga, gb, c.G, n);
    check_grad("residual da", c.a, g0a, ga, n, res_loss, &c);
    check_grad("residual db", c.b, g0b, gb, n, res_loss, &c);
    free(c.a), free(c.b), free(c.out), free(c.G), free(g0a), free(g0b), free(ga), free(gb);
}

// ---- attention

typedef struct {
    int B, L, d, H;
    const int32_t* pad;
    real *qkv, *out, *att, *G;
} att_ctx;

static double att_loss(void* p) {
    att_ctx* c = p;
    attention_forward(c->out, c->att, c->qkv, c->pad, c->B, c->L, c->d, c->H);
    return dotp(c->out, c->G, (int64_t)c->B * c->L * c->d);
}

// out of the naive formula, one query at a time
static void attention_naive(real* out, const real* qkv, const int32_t* pad, int B, int L, int d,
                            int H) {
    int hd = d / H;
    double s[512];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < L; t++) {
                real* o = out + ((int64_t)b * L + t) * d + h * hd;
                for (int k = 0; k < hd; k++) o[k] = 0;
                if (t < pad[b]) continue;
                const real* q = qkv + ((int64_t)b * L + t) * 3 * d + h * hd;
                double mx = -INFINITY, sum = 0;
                for (int j = pad[b]; j <= t; j++) {
                    const real* k = qkv + ((int64_t)b * L + j) * 3 * d + d + h * hd;
                    s[j] = dotp(q, k, hd) / sqrt(hd);
                    mx = fmax(mx, s[j]);
                }
                for (int j = pad[b]; j <= t; j++) sum += exp(s[j] - mx);
                for (int j = pad[b]; j <= t; j++) {
                    const real* v = qkv + ((int64_t)b * L + j) * 3 * d + 2 * d + h * hd;
                    for (int k = 0; k < hd; k++) o[k] += exp(s[j] - mx) / sum * v[k];
                }
            }
}

static void check_attention_grad(int L, int d, int H) {
    const int B = 3, n = B * L * 3 * d;
    const int32_t pad[3] = {0, 2, L - 1};
    att_ctx c = {.B = B, .L = L, .d = d, .H = H, .pad = pad, .qkv = rnd(n, -1.5, 1.5)};
    c.out = rnd(B * L * d, 0, 0), c.att = rnd(B * H * L * L, 9, 9), c.G = rnd(B * L * d, -1, 1);
    att_loss(&c);
    real* ref = rnd(B * L * d, 0, 0);
    attention_naive(ref, c.qkv, pad, B, L, d, H);
    assert_true(max_abs_diff(c.out, ref, B * L * d) < 1e-14);
    // probabilities: allowed keys sum to 1, everything else is exactly 0
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < L; t++) {
                const real* a = c.att + (((int64_t)b * H + h) * L + t) * L;
                double sum = 0;
                for (int j = 0; j < L; j++) {
                    if (j < pad[b] || j > t || t < pad[b]) assert_true(a[j] == 0);
                    sum += a[j];
                }
                assert_true(fabs(sum - (t < pad[b] ? 0 : 1)) < 1e-14);
            }
    real *g0 = rnd(n, -1, 1), *g = dup(g0, n), *datt = rnd(B * H * L * L, 0, 0);
    attention_backward(g, datt, c.G, c.qkv, c.att, pad, B, L, d, H);
    check_grad("attention dqkv", c.qkv, g0, g, n, att_loss, &c);
    free(c.qkv), free(c.out), free(c.att), free(c.G), free(ref), free(g0), free(g), free(datt);
}

static void test_attention_grad(void** state) {
    seed(7);
    // head widths that exercise every tile shape (2 vectors, 1 vector, scalar rest)
    check_attention_grad(7, 12, 3);
    check_attention_grad(9, 48, 2);
    check_attention_grad(37, 80, 2);
}

// att holds the probabilities (materialised) or lse (fused)
static void attention_any(int fused, real* out, real* att, const real* qkv, const int32_t* pad,
                          int B, int L, int d, int H) {
    if (fused)
        attention_fused_forward(out, att, qkv, pad, B, L, d, H);
    else
        attention_forward(out, att, qkv, pad, B, L, d, H);
}

static void check_padding_causality(int fused) {
    const int B = 3, L = 70, d = 32, H = 2, n = B * L * 3 * d;
    const int32_t pad[3] = {0, 2, L - 1};
    real *qkv = rnd(n, -1, 1), *out = rnd(B * L * d, 0, 0), *att = rnd(B * H * L * L, 0, 0);
    real *out2 = rnd(B * L * d, 0, 0), *G = rnd(B * L * d, -1, 1);
    attention_any(fused, out, att, qkv, pad, B, L, d, H);
    // padding queries output exactly 0
    for (int b = 0; b < B; b++)
        for (int t = 0; t < pad[b]; t++)
            for (int k = 0; k < d; k++) assert_true(out[((int64_t)b * L + t) * d + k] == 0);
    // no gradient reaches or leaves a padding position
    real *g = rnd(n, 0, 0), *datt = rnd(B * H * L * L, 0, 0);
    if (fused)
        attention_fused_backward(g, G, out, att, qkv, pad, B, L, d, H);
    else
        attention_backward(g, datt, G, qkv, att, pad, B, L, d, H);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < pad[b]; t++)
            for (int k = 0; k < 3 * d; k++) assert_true(g[((int64_t)b * L + t) * 3 * d + k] == 0);
    // changing a padding position (q, k and v) changes no output
    real* q2 = dup(qkv, n);
    for (int k = 0; k < 3 * d; k++) q2[(1 * L + 1) * 3 * d + k] += 3;
    attention_any(fused, out2, att, q2, pad, B, L, d, H);
    assert_true(max_abs_diff(out, out2, B * L * d) == 0);
    // changing position s of sequence 0 changes no output before s
    const int s = 40;
    memcpy(q2, qkv, sizeof(real) * n);
    for (int k = 0; k < 3 * d; k++) q2[(0 * L + s) * 3 * d + k] -= 2;
    attention_any(fused, out2, att, q2, pad, B, L, d, H);
    assert_true(max_abs_diff(out, out2, (int64_t)s * d) == 0);
    assert_true(max_abs_diff(out + s * d, out2 + s * d, (int64_t)(L - s) * d) > 0);
    assert_true(max_abs_diff(out + L * d, out2 + L * d, (int64_t)(B - 1) * L * d) == 0);
    free(qkv), free(out), free(att), free(out2), free(G), free(g), free(datt), free(q2);
}

static void test_attention_padding_causality(void** state) {
    seed(8);
    check_padding_causality(0);
    check_padding_causality(1);
}

static void check_fused(int B, int L, int d, int H, const int32_t* pad) {
    const int64_t n = (int64_t)B * L * 3 * d, no = (int64_t)B * L * d;
    real *qkv = rnd(n, -2, 2), *G = rnd(no, -1, 1);
    real *out = rnd(no, 0, 0), *att = rnd((int64_t)B * H * L * L, 0, 0);
    real *outf = rnd(no, 7, 7), *lse = rnd((int64_t)B * H * L, 7, 7);
    attention_forward(out, att, qkv, pad, B, L, d, H);
    attention_fused_forward(outf, lse, qkv, pad, B, L, d, H);
    assert_true(max_abs_diff(out, outf, no) < 1e-10);
    // lse is log sum_j exp(q.k_j / sqrt(hd)) over allowed keys, 0 for padding queries
    int hd = d / H;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < L; t++) {
                double ref = 0;
                if (t >= pad[b]) {
                    double sum = 0;
                    const real* q = qkv + ((int64_t)b * L + t) * 3 * d + h * hd;
                    for (int j = pad[b]; j <= t; j++)
                        sum += exp(dotp(q, qkv + ((int64_t)b * L + j) * 3 * d + d + h * hd, hd) /
                                   sqrt(hd));
                    // cppcheck-suppress invalidFunctionArg ; t >= pad[b], so sum > 0
                    ref = log(sum);
                }
                assert_true(fabs(lse[((int64_t)b * H + h) * L + t] - ref) < 1e-10);
            }
    real *g = rnd(n, -1, 1), *gf = dup(g, n), *datt = rnd((int64_t)B * H * L * L, 0, 0);
    attention_backward(g, datt, G, qkv, att, pad, B, L, d, H);
    attention_fused_backward(gf, G, outf, lse, qkv, pad, B, L, d, H);
    assert_true(max_abs_diff(g, gf, n) < 1e-10);
    // the last query alone (attention_last): the fused output's last rows
    real* last = rnd((int64_t)B * d, 0, 0);
    attention_last(last, qkv, pad, B, L, d, H);
    for (int b = 0; b < B; b++)
        assert_true(max_abs_diff(last + (int64_t)b * d, outf + ((int64_t)b * L + L - 1) * d, d) <
                    1e-12);
    free(last);
    free(qkv), free(G), free(out), free(att), free(outf), free(lse), free(g), free(gf), free(datt);
}

static void test_attention_fused(void** state) {
    seed(9);
    // L is not a multiple of the fused key block (64), and some pads cross it
    const int32_t pad1[3] = {0, 2, 69};
    check_fused(3, 70, 16, 2, pad1);
    const int32_t pad2[4] = {0, 5, 66, 132};
    check_fused(4, 133, 12, 3, pad2);
    const int32_t pad3[2] = {0, 3};
    check_fused(2, 7, 8, 1, pad3);
    const int32_t pad5[2] = {7, 6};  // a row of padding only; one with the last position alone
    check_fused(2, 7, 8, 1, pad5);
    const int32_t pad4[3] = {0, 1, 37};
    check_fused(3, 100, 64, 2, pad4);
    check_fused(3, 77, 120, 3, pad4);
}

// ---- cross-entropy

typedef struct {
    int R, d, V, rb;
    const int32_t* tg;
    real *h, *wte, *scratch;
    real scale;
} ce_ctx;

static double ce_loss(void* p) {
    ce_ctx* c = p;
    return c->scale * crossentropy_tied(NULL, NULL, c->h, c->wte, c->tg, c->R, c->d, c->V, 0,
                                        c->scratch, c->rb);
}

static double ce_naive(const real* h, const real* wte, const int32_t* tg, int R, int d, int V) {
    double loss = 0;
    for (int r = 0; r < R; r++) {
        if (tg[r] == 0) continue;
        double mx = -INFINITY, sum = 0, zt = 0;
        double z[64];
        for (int j = 1; j < V; j++) {
            z[j] = dotp(h + r * d, wte + j * d, d);
            mx = fmax(mx, z[j]);
            if (j == tg[r]) zt = z[j];
        }
        for (int j = 1; j < V; j++) sum += exp(z[j] - mx);
        // cppcheck-suppress invalidFunctionArg ; V > 1, so sum >= 1
        loss += mx + log(sum) - zt;
    }
    return loss;
}

static void test_crossentropy(void** state) {
    seed(10);
    const int R = 11, d = 6, V = 14;
    // ignored rows at both ends and inside
    const int32_t tg[11] = {0, 3, 13, 1, 0, 0, 7, 7, 2, 13, 0};
    ce_ctx c = {R, d, V, 3, tg, rnd(R * d, -1, 1), rnd(V * d, -1, 1), rnd(R * (V - 1), 0, 0), 0.7};
    double ref = ce_naive(c.h, c.wte, tg, R, d, V);
    real *g0h = rnd(R * d, -1, 1), *g0w = rnd(V * d, -1, 1);
    real *gh[3], *gw[3];
    const int rbs[3] = {1, 3, R};
    for (int k = 0; k < 3; k++) {
        gh[k] = dup(g0h, R * d), gw[k] = dup(g0w, V * d);
        double loss =
            crossentropy_tied(gh[k], gw[k], c.h, c.wte, tg, R, d, V, c.scale, c.scratch, rbs[k]);
        assert_true(rel_err(loss, ref, 1) < 1e-13);
        assert_true(rel_err(loss,
                            crossentropy_tied(NULL, NULL, c.h, c.wte, tg, R, d, V, c.scale,
                                              c.scratch, rbs[k]),
                            1) < 1e-15);
    }
    // the blocking changes nothing
    for (int k = 1; k < 3; k++) {
        assert_true(max_abs_diff(gh[0], gh[k], R * d) < 1e-14);
        assert_true(max_abs_diff(gw[0], gw[k], V * d) < 1e-14);
    }
    check_grad("crossentropy dh", c.h, g0h, gh[1], R * d, ce_loss, &c);
    check_grad("crossentropy dwte", c.wte, g0w, gw[1], V * d, ce_loss, &c);
    // row 0 of wte is not a class; ignored rows get no gradient and add no loss
    assert_true(max_abs_diff(g0w, gw[1], d) == 0);
    for (int r = 0; r < R; r++)
        if (tg[r] == 0) assert_true(max_abs_diff(g0h + r * d, gh[1] + r * d, d) == 0);
    real* h2 = dup(c.h, R * d);
    for (int k = 0; k < d; k++) h2[4 * d + k] += 5, h2[10 * d + k] -= 5;
    double l2 = crossentropy_tied(NULL, NULL, h2, c.wte, tg, R, d, V, 1, c.scratch, 3);
    assert_true(rel_err(l2, ref, 1) < 1e-13);
    free(c.h), free(c.wte), free(c.scratch), free(g0h), free(g0w), free(h2);
    for (int k = 0; k < 3; k++) free(gh[k]), free(gw[k]);
}

// ---- adamw

static void check_adamw(double wd) {
    seed(11);
    const int n = 37;
    const double lr = 1e-2, b1 = 0.9, b2 = 0.98, eps = 1e-8;
    real *p = rnd(n, -1, 1), *m = rnd(n, 0, 0), *v = rnd(n, 0, 0);
    real *pr = dup(p, n), *mr = dup(m, n), *vr = dup(v, n);
    for (int t = 1; t <= 3; t++) {
        real* g = rnd(n, -1, 1);
        adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, t);
        for (int i = 0; i < n; i++) {
            pr[i] -= lr * wd * pr[i];
            mr[i] = b1 * mr[i] + (1 - b1) * g[i];
            vr[i] = b2 * vr[i] + (1 - b2) * g[i] * g[i];
            double mhat = mr[i] / (1 - pow(b1, t)), vhat = vr[i] / (1 - pow(b2, t));
            pr[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
        free(g);
        for (int i = 0; i < n; i++) {
            assert_true(rel_err(p[i], pr[i], 1e-3) < 1e-12);
            assert_true(rel_err(m[i], mr[i], 1e-3) < 1e-12);
            assert_true(rel_err(v[i], vr[i], 1e-3) < 1e-12);
        }
    }
    free(p), free(m), free(v), free(pr), free(mr), free(vr);
}

static void test_adamw_decay(void** state) { check_adamw(0.1); }
static void test_adam(void** state) { check_adamw(0); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_matmul_bias),
        cmocka_unit_test(test_matmul_nobias),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_attention_grad),
        cmocka_unit_test(test_attention_padding_causality),
        cmocka_unit_test(test_attention_fused),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_adamw_decay),
        cmocka_unit_test(test_adam),
    };
    return cmocka_run_group_tests_name("kernels_cpu", tests, NULL, NULL);
}
