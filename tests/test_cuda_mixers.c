// test_cuda_mixers.c: the CUDA kernels of the models' mixers (SASRec's
// attention, plain and fused on both the CUDA and the tensor cores;
// RecGRELA's parts and linear attention; ELASTIC's aggregation, dispatch and
// product-key memory) against the CPU backend on fresh random inputs, as
// test_cuda.c does the shared kernels. Without a GPU every test reports
// skipped, never passed.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cuda_check.h"

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
    // the last query alone (fp32 on both: no products on the tensor cores)
    float *last = malloc((size_t)B * d * 4), *Dlast = dev_alloc((size_t)B * d * 4);
    on("cpu");
    attention_last(last, qkv, pad, B, L, d, H);
    on("cuda");
    attention_last(Dlast, Dqkv, Dpad, B, L, d, H);
    CHECK("attention of the last query", Dlast, last, (size_t)B * d, 1e-5);
    void* all[] = {Dpad, Dqkv, Dg, Dout, Dlse, Ddqkv, Dlast};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(qkv), free(g), free(out), free(lse), free(dqkv), free(last);
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
    // second tile, a partial last one and a row of padding only
    const int32_t pad1[3] = {0, 70, 200};
    fused_attention_case(200, 64, 2, pad1);
    // odd head width, a partial last tile: the register tiles' edges
    const int32_t pad2[3] = {0, 7, 74};
    fused_attention_case(75, 18, 2, pad2);
    // the tensor-core form's warps of 16 rows: fewer rows than a warp (heads
    // of 16), heads of 64 with padding ending inside a warp's rows
    const int32_t pad3[3] = {0, 2, 5}, pad4[3] = {0, 20, 36};
    fused_attention_case(5, 32, 2, pad3);
    fused_attention_case(37, 128, 2, pad4);
    // SASRec's heads with the tensor cores' loop tile of 32 (ELASTIC_ATTN_TILE)
    setenv("ELASTIC_ATTN_TILE", "32", 1);
    printf("# ELASTIC_ATTN_TILE=32:\n");
    fused_attention_precision(200, 64, 2, pad1, 1);
    unsetenv("ELASTIC_ATTN_TILE");
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
    // the materialised form's products by cuBLAS: fp32, then TF32
    for (int tf32 = 0; tf32 < 2; tf32++) {
        device_set_precision(tf32 ? PRECISION_TF32 : PRECISION_FP32);
        dev_zero(Ddqkv, nq * 4);
        attention_forward(Dout, Datt, Dqkv, Dpad, B, L, d, H);
        attention_backward(Ddqkv, Ddatt, Dg, Dqkv, Datt, Dpad, B, L, d, H);
        printf("# attention, products in %s\n", tf32 ? "TF32" : "fp32");
        CHECK("attention out", Dout, out, no, tf32 ? 3e-3 : 1e-5);
        CHECK("attention probabilities", Datt, att, na, tf32 ? 3e-3 : 1e-5);
        CHECK("attention dqkv", Ddqkv, dqkv, nq, tf32 ? 5e-3 : 1e-4);
    }
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
    aggregate_case(350, 64, 2, 3, 4, 150, 340, 2);  // 88 chunks: three stages of 32 (the last 24)
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

// The product-key selection alone: the same slots bit for bit and the same
// weights; with ties, sub-keys in equal pairs (scores tie, and so do many
// pair sums): the lower index first, as the CPU's sorted lists have it.
static void pkm_select_case(int R, int Hm, int dk, int n, int kk, int ties, uint64_t seed) {
    const size_t nl = (size_t)R * Hm * kk, nk = (size_t)Hm * 2 * n * (dk / 2);
    float *q = randn((size_t)R * Hm * dk, seed, 1), *K = randn(nk, seed + 1, 1);
    for (size_t row = 0; ties && row + 1 < nk / (dk / 2); row += 2)  // row j + 1 = row j
        memcpy(K + (row + 1) * (dk / 2), K + row * (dk / 2), (dk / 2) * sizeof(float));
    int32_t *idx = malloc(nl * 4), *got = malloc(nl * 4), *Didx = dev_alloc(nl * 4);
    float *w = malloc(nl * 4), *Dq = up(q, (size_t)R * Hm * dk), *DK = up(K, nk),
          *Dw = dev_alloc(nl * 4);
    on("cpu");
    pkm_select(idx, w, q, K, R, Hm, dk, n, kk);
    on("cuda");
    pkm_select(Didx, Dw, Dq, DK, R, Hm, dk, n, kk);
    dev_to_host(got, Didx, nl * 4);
    size_t differ = 0;
    for (size_t i = 0; i < nl; i++) differ += got[i] != idx[i];
    printf("# pkm_select R %d n %d kk %d%s: %zu of %zu slots differ\n", R, n, kk,
           ties ? " (tied sub-keys)" : "", differ, nl);
    assert_true(differ == 0);
    CHECK("pkm_select weights", Dw, w, nl, 1e-5);
    void* all[] = {Didx, Dq, DK, Dw};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(q), free(K), free(idx), free(got), free(w);
}

static void test_pkm_select(void** state) {
    need_gpu();
    pkm_select_case(64, 2, 32, 256, 8, 0, 60);  // ELASTIC's shape: lanes of 8 candidates
    pkm_select_case(64, 2, 32, 256, 8, 1, 61);  // ties
    pkm_select_case(9, 1, 8, 20, 16, 1, 62);    // kk over n / 2, fewer candidates than lanes
    pkm_select_case(5, 2, 16, 100, 64, 0, 63);  // the most kk: 4096 pair sums
}

// The product-key lookup, read and backward at one shape, CUDA against the
// CPU: fp32, then dK again in TF32 (its products through cuda_gemm); R over
// 8192 rows takes the dense sub-key gradient in several blocks of rows.
static void pkm_case(int R, int Hm, int dk, int n, int kk, int d, uint64_t seed) {
    const int V = n * n;
    const size_t nl = (size_t)R * Hm * kk, nK = (size_t)Hm * n * dk;
    printf("# pkm R %d Hm %d dk %d n %d kk %d d %d\n", R, Hm, dk, n, kk, d);
    float *q = randn((size_t)R * Hm * dk, seed, 1), *K = randn(nK, seed + 1, 1),
          *Vt = randn((size_t)V * d, seed + 2, 1), *g = randn((size_t)R * d, seed + 3, 1);
    int32_t* idx = malloc(nl * 4);
    float *w = malloc(nl * 4), *out = malloc((size_t)R * d * 4),
          *dq = calloc((size_t)R * Hm * dk, 4), *dK = calloc(nK, 4), *dV = malloc(nl * d * 4);
    float *Dq = up(q, (size_t)R * Hm * dk), *DK = up(K, nK), *DV = up(Vt, (size_t)V * d),
          *Dg = up(g, (size_t)R * d), *Dw = dev_alloc(nl * 4), *Dout = dev_alloc((size_t)R * d * 4),
          *Ddq = up(dq, (size_t)R * Hm * dk), *DdK = up(dK, nK), *DdV = dev_alloc(nl * d * 4);
    int32_t* Didx = dev_alloc(nl * 4);
    on("cpu");
    pkm_select(idx, w, q, K, R, Hm, dk, n, kk);
    pkm_read(out, idx, w, Vt, R, Hm, kk, d);
    pkm_backward(dq, dK, dV, g, idx, idx, w, q, K, Vt, R, Hm, dk, n, kk, d);
    on("cuda");
    device_set_precision(PRECISION_FP32);
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
    CHECK("pkm dK", DdK, dK, nK, 1e-4);
    CHECK("pkm value rows", DdV, dV, nl * d, 1e-5);
    device_set_precision(PRECISION_TF32);
    dev_zero(DdK, nK * 4);
    pkm_backward(NULL, DdK, NULL, Dg, Didx, Didx, Dw, Dq, DK, DV, R, Hm, dk, n, kk, d);
    CHECK("pkm dK (TF32)", DdK, dK, nK, 3e-3);
    device_set_precision(PRECISION_FP32);
    void* all[] = {Dq, DK, DV, Dg, Dw, Dout, Ddq, DdK, DdV, Didx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(q), free(K), free(Vt), free(g), free(idx), free(w), free(out), free(dq), free(dK),
        free(dV), free(got);
}

static void test_pkm(void** state) {
    need_gpu();
    pkm_case(40, 2, 16, 30, 4, 24, 49);
    pkm_case(8300, 1, 8, 12, 3, 8, 56);  // two blocks of rows for dK
    // the sparse Adam on distinct rows
    const int V = 900, d = 24;
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
    void* all[] = {Drows, Dt, Dm, Dv, Dgr};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(all[i]);
    free(table), free(m), free(v), free(gr);
}

// test_cuda_mixers [PATTERN]: only the tests whose names match (as test_cuda).
int main(int argc, char** argv) {
    cuda_tests_begin(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention),          cmocka_unit_test(test_attention_wide_heads),
        cmocka_unit_test(test_recgrela_parts),     cmocka_unit_test(test_linear_attention),
        cmocka_unit_test(test_interest_aggregate), cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_pkm_select),         cmocka_unit_test(test_pkm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
