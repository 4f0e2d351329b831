// bench_main.c: elastic_bench, step time and peak memory of the models by
// sequence length (and memory-bank size), one child process per
// configuration so each peak RSS is that configuration's alone.
//   elastic_bench --models sasrec-plain,sasrec-fused,elastic --L 256,1024,4096
// Prints a table and, with --json FILE, one JSON object per configuration.
// --sgemm N measures the device's GEMM (and on CUDA copy) peaks instead; --infer
// one user's request; --stream the streamed user state.
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "blas.h"
#include "config.h"
#include "device.h"
#include "bank.h"
#include "model.h"
#include "step.h"
#include "util.h"

typedef struct {
    char models[256], Ls[256], slots[256], json[256], device[16], stream[256], precision[8];
    int batch, items, steps, d, threads, experts, chunk, recompute, sgemm, profile, infer;
    int ce_block;
} bench_opts;

static device_precision precision_of(const bench_opts* o) {
    return !strcmp(o->precision, "bf16")   ? PRECISION_BF16
           : !strcmp(o->precision, "fp32") ? PRECISION_FP32
                                           : PRECISION_TF32;
}

static int cmp_double(const void* a, const void* b) {
    const double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static void usage(FILE* f) {
    fprintf(f,
            "usage: elastic_bench [options]\n"
            "Times training steps (forward, tied full-softmax loss, backward, Adam) of each\n"
            "model at each length on random data; reports ms/step, tokens/s and peak RSS.\n"
            "  --models LIST     sasrec-plain,sasrec-fused,elastic,elastic-nomem,recgrela\n"
            "                    (default sasrec-plain,sasrec-fused,elastic,recgrela)\n"
            "  --L LIST          sequence lengths (default 256,1024,4096,16384)\n"
            "  --mem-slots LIST  ELASTIC bank sizes, each a square (default 65536)\n"
            "  --batch B         sequences per step (default 2)\n"
            "  --items N         catalogue size (default 10000)\n"
            "  --steps S         timed steps after one warm-up step (default 3)\n"
            "  --d D             width (default 64)\n"
            "  --experts K, --chunk C   ELASTIC (defaults 8, 64)\n"
            "  --threads T       OpenMP/BLAS threads (default: all cores)\n"
            "  --precision P     on CUDA, the matrix products: tf32 (default), bf16 or fp32\n"
            "  --device D        cpu or cuda (the peak of the model's\n"
            "                    device memory is reported as dev MB)\n"
            "  --recompute 0|1|all  rebuild activations in backward: 1 ELASTIC and RecGRELA\n"
            "                    (SASRec stays the plain reference), all SASRec's FFN too\n"
            "  --ce-block R      the loss's logits rows a block (elastic_train's --ce-block;\n"
            "                    default 0: automatic)\n"
            "  --json FILE       append one JSON line per configuration\n"
            "  --profile         with --device cuda: after each configuration, the GPU's time\n"
            "                    in every kernel and copy per step (timing events around each\n"
            "                    call, nothing waits; the parts of a few calls below); with\n"
            "                    --infer, per request (without graphs)\n"
            "  --sgemm N         instead: the device's measured peaks: an N x N x N matrix\n"
            "                    product, GFLOP/s (OpenBLAS's sgemm on the CPU; cuBLAS in bf16,\n"
            "                    TF32 and fp32 on CUDA, with a copy of 16 N^2 floats, GB/s;\n"
            "                    bf16 as the trainer runs it: its fp32 operands converted\n"
            "                    to bf16 on every product, the conversions timed too)\n"
            "  --infer 1         instead: one user's request at each --L (batch 1, on --device):\n"
            "                    a forward over L items and the scores of every item, median ms\n"
            "  --stream LIST     instead: the streamed user state of --models' ELASTIC and\n"
            "                    RecGRELA (SASRec has none) at these history lengths:\n"
            "                    the time per event (the state carried) against one forward over\n"
            "                    the whole history (what recomputing at each event costs)\n"
            "The BLAS core in use is printed first and recorded in every JSON line (blas_core);\n"
            "a core weaker than the CPU supports is corrected unless OPENBLAS_CORETYPE is set\n"
            "or ELASTIC_BLAS_FIX=0.\n");
}

static int parse(bench_opts* o, int argc, char** argv) {
    *o = (bench_opts){.batch = 2, .items = 10000, .steps = 3, .d = 64, .experts = 8, .chunk = 64};
    strcpy(o->models, "sasrec-plain,sasrec-fused,elastic,recgrela");
    strcpy(o->Ls, "256,1024,4096,16384");
    strcpy(o->slots, "65536");
    strcpy(o->device, "cpu");
    strcpy(o->precision, "tf32");
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--profile")) {
            o->profile = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "elastic_bench: %s needs a value (see --help)\n", a);
            return -1;
        }
        const char* v = argv[++i];
        char* end = NULL;
        long x = strtol(v, &end, 10);
        int is_num = end && *end == 0 && end != v && x > 0;
        if (!strcmp(a, "--models"))
            snprintf(o->models, sizeof o->models, "%s", v);
        else if (!strcmp(a, "--L"))
            snprintf(o->Ls, sizeof o->Ls, "%s", v);
        else if (!strcmp(a, "--mem-slots"))
            snprintf(o->slots, sizeof o->slots, "%s", v);
        else if (!strcmp(a, "--json"))
            snprintf(o->json, sizeof o->json, "%s", v);
        else if (!strcmp(a, "--precision") &&
                 (!strcmp(v, "fp32") || !strcmp(v, "tf32") || !strcmp(v, "bf16")))
            snprintf(o->precision, sizeof o->precision, "%s", v);
        else if (!strcmp(a, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            snprintf(o->device, sizeof o->device, "%s", v);
        else if (is_num && !strcmp(a, "--batch"))
            o->batch = (int)x;
        else if (is_num && !strcmp(a, "--items"))
            o->items = (int)x;
        else if (is_num && !strcmp(a, "--steps"))
            o->steps = (int)x;
        else if (is_num && !strcmp(a, "--d"))
            o->d = (int)x;
        else if (is_num && !strcmp(a, "--threads"))
            o->threads = (int)x;
        else if (is_num && !strcmp(a, "--experts"))
            o->experts = (int)x;
        else if (is_num && !strcmp(a, "--chunk"))
            o->chunk = (int)x;
        else if (!strcmp(a, "--ce-block") && (is_num || !strcmp(v, "0")))
            o->ce_block = (int)x;
        else if (!strcmp(a, "--stream"))
            snprintf(o->stream, sizeof o->stream, "%s", v);
        else if (!strcmp(a, "--infer") && (!strcmp(v, "0") || !strcmp(v, "1")))
            o->infer = *v == '1';
        else if (is_num && !strcmp(a, "--sgemm"))
            o->sgemm = (int)x;
        else if (!strcmp(a, "--recompute") &&
                 (!strcmp(v, "0") || !strcmp(v, "1") || !strcmp(v, "all")))
            o->recompute = *v == 'a' ? 2 : *v == '1';
        else {
            fprintf(stderr, "elastic_bench: unknown option or bad value: %s %s (see --help)\n", a,
                    v);
            return -1;
        }
    }
    return 0;
}

typedef struct {
    double ms, tok_s, rss_mb, act_mb, bank_mb, dev_mb;
    int ok;
    char err[200];
} result;

// The configuration of a benchmarked model by its name in --models; -1 for
// an unknown name.
static int bench_config(config* cfg, const bench_opts* o, const char* name, int L, long slots) {
    config_defaults(cfg);
    cfg->L = L, cfg->d = o->d, cfg->dropout = 0.2, cfg->experts = o->experts;
    cfg->chunk = o->chunk, cfg->mem_slots = slots, cfg->ce_block = o->ce_block;
    cfg->recompute = o->recompute == 2 || (o->recompute && strncmp(name, "sasrec", 6));
    if (!strncmp(name, "sasrec", 6)) {
        strcpy(cfg->model, "sasrec");
        strcpy(cfg->attention, strstr(name, "plain") ? "plain" : "fused");
    } else if (!strcmp(name, "recgrela")) {
        strcpy(cfg->model, "recgrela");
    } else if (!strncmp(name, "elastic", 7)) {
        strcpy(cfg->model, "elastic");
        cfg->no_memory = strstr(name, "nomem") != NULL;
    } else {
        return -1;
    }
    return 0;
}

// Runs in the child: builds the model, times the steps.
static result run_one(const bench_opts* o, const char* name, int L, long slots) {
    result r = {0};
    config cfg;
    if (bench_config(&cfg, o, name, L, slots)) {
        snprintf(r.err, sizeof r.err, "unknown model %s", name);
        return r;
    }
    char err[512];
    if (device_init(o->device, 0, err)) {  // in the child: CUDA starts after the fork
        snprintf(r.err, sizeof r.err, "%s", err);
        return r;
    }
    device_set_precision(precision_of(o));
    model* m = model_create(&cfg, o->items, o->batch, NULL, err);
    if (!m) {
        snprintf(r.err, sizeof r.err, "%s", err);
        return r;
    }
    model_init(m, 1);
    const int B = o->batch, BL = B * L, d = m->d;
    int32_t* inp = malloc((size_t)BL * sizeof *inp);
    int32_t* tg = malloc((size_t)BL * sizeof *tg);
    int32_t* pad = calloc((size_t)B, sizeof *pad);
    if (!inp || !tg || !pad) {
        snprintf(r.err, sizeof r.err, "out of memory");
        return r;
    }
    for (int i = 0; i < BL; i++) {
        inp[i] = 1 + (int32_t)(rng_hash64(7, (uint64_t)i) % (uint64_t)o->items);
        tg[i] = 1 + (int32_t)(rng_hash64(8, (uint64_t)i) % (uint64_t)o->items);
    }
    // the trainer's own step: loss, both optimizers (the bank's sparse update
    // included), on one rank
    stepper sp;
    stepper_init(&sp, m, &cfg);
    const comm local = {.rank = 0, .world = 1, .backend = COMM_LOCAL};
    double t0 = 0;
    for (int s = 0; s <= o->steps; s++) {
        if (s == 1) {  // step 0 warms up
            dev_sync();
            device_profile(o->profile);
            t0 = now_sec();
        }
        step_result sr;
        if (stepper_run(&sp, &local, inp, pad, tg, B, 0, (uint64_t)s + 1, cfg.lr, s + 1, &sr,
                        err)) {
            snprintf(r.err, sizeof r.err, "step %d: %s", s, err);
            return r;
        }
    }
    dev_sync();  // the last step's updates too
    double dt = (now_sec() - t0) / o->steps;
    if (o->profile && device_current() == DEVICE_CUDA) {
        printf("%s L=%d, per step (%.3f ms, each call between timing events):\n", name, L,
               1e3 * dt);
        device_profile_report(stdout, o->steps, dt * o->steps);
        fflush(stdout);
        device_profile(0);
    }
    r.ms = 1e3 * dt;
    r.tok_s = BL / dt;
    r.rss_mb = peak_rss_mb();
    r.act_mb = m->act_bytes / 1048576.0;
    r.bank_mb = m->bank ? (double)m->bank->rows * d * sizeof(real) / 1048576.0 : 0;
    dev_sync();
    r.dev_mb = (double)dev_peak_bytes() / 1048576.0;
    r.ok = 1;
    return r;
}

// C = A B with N x N matrices: one warm-up, then o->steps timed; GFLOP/s.
// OpenBLAS's sgemm on N x N x N host matrices (what matmul_forward calls on
// the CPU); kept apart from the device path so that it runs where the
// program's own -march code cannot (tests/cli/blas.sh runs it under qemu).
static int bench_sgemm_cpu(const bench_opts* o, FILE* js) {
    const int N = o->sgemm;
    float* a = malloc((size_t)N * N * sizeof *a);
    float* b = malloc((size_t)N * N * sizeof *b);
    float* c = malloc((size_t)N * N * sizeof *c);
    if (!a || !b || !c) {
        fprintf(stderr, "elastic_bench: out of memory for three %d x %d matrices\n", N, N);
        free(a), free(b), free(c);
        return 1;
    }
    for (size_t i = 0; i < (size_t)N * N; i++) {
        a[i] = (float)(rng_hash64(1, i) % 1000) * 1e-3f - 0.5f;
        b[i] = (float)(rng_hash64(2, i) % 1000) * 1e-3f - 0.5f;
    }
    double t0 = 0;
    for (int s = 0; s <= o->steps; s++) {
        if (s == 1) t0 = now_sec();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c,
                    N);
    }
    double dt = (now_sec() - t0) / o->steps, gf = 2.0 * N * N * N / dt * 1e-9;
    printf("sgemm %d x %d x %d: %.1f ms, %.1f GFLOP/s\n", N, N, N, 1e3 * dt, gf);
    if (js)
        fprintf(js,
                "{\"sgemm\":%d,\"threads\":%d,\"ms\":%.3f,\"gflops\":%.2f,\"blas_core\":\"%s\"}\n",
                N, o->threads, 1e3 * dt, gf, blas_core_name());
    free(a), free(b), free(c);
    return 0;
}

// The matrix unit's and the memory's measured peaks on --device cuda, for the
// kernels' achieved rates to be read against: the trainer's own
// matmul_forward (cuBLAS, in bf16, TF32 and full fp32) on N x N x N, and a
// device-to-device copy of N*N*16 floats (bytes read plus written). bf16's
// time includes converting both fp32 operands to bf16, as in training.
static int bench_sgemm(const bench_opts* o, FILE* js) {
    if (!strcmp(o->device, "cpu")) return bench_sgemm_cpu(o, js);
    const int N = o->sgemm;
    char err[512], dev[256];
    if (device_init(o->device, 0, err)) {
        fprintf(stderr, "elastic_bench: %s\n", err);
        return 1;
    }
    const size_t nn = (size_t)N * N, nb = 16 * nn;
    float *h = malloc(nn * sizeof *h), *a = dev_alloc(nn * sizeof *a),
          *b = dev_alloc(nn * sizeof *b);
    float *c = dev_alloc(nn * sizeof *c), *x = dev_alloc(nb * sizeof *x),
          *y = dev_alloc(nb * sizeof *y);
    if (!h || !a || !b || !c || !x || !y) {
        fprintf(stderr, "elastic_bench: out of memory for %d x %d matrices\n", N, N);
        return 1;
    }
    for (size_t i = 0; i < nn; i++) h[i] = (float)(rng_hash64(1, i) % 1000) * 1e-3f - 0.5f;
    dev_to_device(a, h, nn * sizeof *h);
    for (size_t i = 0; i < nn; i++) h[i] = (float)(rng_hash64(2, i) % 1000) * 1e-3f - 0.5f;
    dev_to_device(b, h, nn * sizeof *h);
    dev_zero(x, nb * sizeof *x);
    printf("device %s\n", device_name(dev, sizeof dev));
    for (int prec = PRECISION_BF16; prec >= PRECISION_FP32; prec--) {
        device_set_precision((device_precision)prec);
        double t0 = 0;
        for (int s = 0; s <= o->steps; s++) {
            if (s == 1) dev_sync(), t0 = now_sec();
            matmul_forward(c, a, b, NULL, N, N, N);
        }
        dev_sync();
        const double dt = (now_sec() - t0) / o->steps, gf = 2.0 * N * N * N / dt * 1e-9;
        const char* kind = prec == PRECISION_BF16   ? "bf16 gemm"
                           : prec == PRECISION_TF32 ? "tf32 gemm"
                                                    : "fp32 gemm";
        // bf16's operands are fp32 matrices converted on every call
        const char* operands = prec == PRECISION_BF16 ? "fp32 converted to bf16" : "fp32";
        printf("%s %d x %d x %d%s: %.3f ms, %.1f GFLOP/s\n", kind, N, N, N,
               prec == PRECISION_BF16 ? " (fp32 operands converted)" : "", 1e3 * dt, gf);
        if (js)
            fprintf(js,
                    "{\"sgemm\":%d,\"kind\":\"%s\",\"operands\":\"%s\",\"device\":\"%s\","
                    "\"threads\":%d,\"ms\":%.3f,\"gflops\":%.2f,\"blas_core\":\"%s\"}\n",
                    N, kind, operands, dev, o->threads, 1e3 * dt, gf, blas_core_name());
    }
    double t0 = 0;
    for (int s = 0; s <= o->steps; s++) {
        if (s == 1) dev_sync(), t0 = now_sec();
        dev_copy(y, x, nb * sizeof *x);
    }
    dev_sync();
    const double dt = (now_sec() - t0) / o->steps, gbs = 2.0 * nb * sizeof *x / dt * 1e-9;
    printf("copy %.0f MB: %.3f ms, %.1f GB/s (read + written)\n", nb * sizeof *x / 1e6, 1e3 * dt,
           gbs);
    if (js)
        fprintf(js, "{\"copy_mb\":%.1f,\"device\":\"%s\",\"ms\":%.3f,\"gbs\":%.2f}\n",
                nb * sizeof *x / 1e6, dev, 1e3 * dt, gbs);
    free(h), dev_free(a), dev_free(b), dev_free(c), dev_free(x), dev_free(y);
    return 0;
}

// Each model of --models with a streamed state (ELASTIC, RecGRELA; SASRec
// has none) at each history length N of o->stream: N events streamed
// through the carried state (mean time per event), against one forward over
// all N (no padding), which recomputing at an event would cost.
static int bench_stream(const bench_opts* o, FILE* js) {
    char models[256], err[512];
    snprintf(models, sizeof models, "%s", o->models);
    printf("%-14s %10s %14s %16s %10s\n", "model", "history", "us/event", "whole forward ms",
           "ratio");
    for (char *ms = NULL, *name = strtok_r(models, ",", &ms); name;
         name = strtok_r(NULL, ",", &ms)) {
        char list[256];
        snprintf(list, sizeof list, "%s", o->stream);
        for (char *sv = NULL, *x = strtok_r(list, ",", &sv); x; x = strtok_r(NULL, ",", &sv)) {
            const int N = atoi(x);
            config cfg;
            if (bench_config(&cfg, o, name, N, atol(o->slots))) {
                fprintf(stderr, "elastic_bench: unknown model %s\n", name);
                return 1;
            }
            cfg.dropout = 0;
            model* m = N > 0 ? model_create(&cfg, o->items, 1, NULL, err) : NULL;
            if (!m) {
                fprintf(stderr, "elastic_bench --stream %s: %s\n", x, N > 0 ? err : "bad length");
                return 1;
            }
            if (!m->stream_step) {  // quadratic: nothing to carry
                model_free(m);
                break;
            }
            model_init(m, 1);
            int32_t* items = malloc((size_t)N * sizeof *items);
            const size_t ns = m->stream_floats(m);
            real *st = calloc(ns, sizeof *st), *h = malloc((size_t)m->d * sizeof *h);
            if (!items || !st || !h) return fprintf(stderr, "elastic_bench: out of memory\n"), 1;
            for (int t = 0; t < N; t++)
                items[t] = 1 + (int32_t)(rng_hash64(9, (uint64_t)t) % o->items);
            const int32_t pad = 0;
            double t0 = now_sec();
            model_forward(m, items, &pad, 1, 0);
            const double whole = now_sec() - t0;
            t0 = now_sec();
            for (int t = 0; t < N; t++) m->stream_step(m, st, t, items[t], h);
            const double per = (now_sec() - t0) / N;
            printf("%-14s %10d %14.1f %16.2f %10.0f\n", name, N, 1e6 * per, 1e3 * whole,
                   whole / per);
            if (js)
                fprintf(js,
                        "{\"stream\":\"%s\",\"history\":%d,\"d\":%d,\"state_floats\":%zu,"
                        "\"us_per_event\":%.2f,\"whole_forward_ms\":%.3f}\n",
                        name, N, o->d, ns, 1e6 * per, 1e3 * whole);
            free(items), free(st), free(h);
            model_free(m);
        }
    }
    return 0;
}

// One user's request: the forward over L items (the last position read) and
// the scores of every item, copied to the host.
static void request(model* m, const int32_t* items, const int32_t* pad, const real* wte,
                    real* scores, float* host, int L) {
    model_forward(m, items, pad, 1, 0);
    matmul_forward(scores, m->out + (size_t)(L - 1) * m->d, wte, NULL, 1, m->d, m->V);
    dev_to_host(host, scores, (size_t)m->V * sizeof *host);
}

// Serving one user on --device: at each L of --L, each model of --models
// with batch 1 and L items of history: one forward (no dropout), the last
// position's scores over every item (a [1,d] x [d,N] product) and their copy
// to the host, timed after a warm-up; the median and the best of --steps
// (with --profile on CUDA, then each call's share of a request).
static int bench_infer(const bench_opts* o, FILE* js) {
    char err[512], dev[256], models[256];
    if (device_init(o->device, 0, err)) {
        fprintf(stderr, "elastic_bench: %s\n", err);
        return 1;
    }
    device_set_precision(precision_of(o));
    device_name(dev, sizeof dev);
    printf("one user's request on %s: forward over L items, then scores of %d items\n", dev,
           o->items);
    printf("%-14s %7s %12s %12s %8s\n", "model", "L", "median ms", "best ms", "replayed");
    snprintf(models, sizeof models, "%s", o->models);
    for (char *ms = NULL, *name = strtok_r(models, ",", &ms); name;
         name = strtok_r(NULL, ",", &ms)) {
        char Ls[256];
        snprintf(Ls, sizeof Ls, "%s", o->Ls);
        for (char *ls = NULL, *l = strtok_r(Ls, ",", &ls); l; l = strtok_r(NULL, ",", &ls)) {
            const int L = atoi(l), steps = o->steps > 0 ? o->steps : 1;
            config cfg;
            if (L <= 0 || bench_config(&cfg, o, name, L, atol(o->slots))) {
                fprintf(stderr, "elastic_bench --infer: bad model %s or length %s\n", name, l);
                return 1;
            }
            model* m = model_create(&cfg, o->items, 1, NULL, err);
            if (!m) {
                fprintf(stderr, "elastic_bench --infer %s L=%d: %s\n", name, L, err);
                return 1;
            }
            model_init(m, 1);
            m->last_only = 1;                             // a request reads the last position only
            if (m->bank) bank_count_lookups(m->bank, 0);  // serving, not training's exchanges
            const int V = m->V;
            int32_t* items = malloc((size_t)L * sizeof *items);
            float *scores = dev_alloc((size_t)V * sizeof *scores), *host = malloc((size_t)V * 4);
            if (!items || !scores || !host) return fprintf(stderr, "out of memory\n"), 1;
            for (int t = 0; t < L; t++)
                items[t] = 1 + (int32_t)(rng_hash64(9, (uint64_t)t) % o->items);
            const int32_t pad = 0;
            const real* wte = m->params + model_tensor(m, "wte")->offset;
            double* t = malloc((size_t)(steps + 1) * sizeof *t);
            for (int s = 0; s <= steps; s++) {  // s = 0: the warm-up
                dev_sync();
                const double t0 = now_sec();
                request(m, items, &pad, wte, scores, host, L);
                t[s] = now_sec() - t0;
            }
            qsort(t + 1, (size_t)steps, sizeof *t, cmp_double);
            const double med = t[1 + steps / 2], best = t[1];
            // requests replayed as a graph (CUDA; ELASTIC_CUDA_GRAPHS=0: none)
            const long replayed = m->graph_replays;
            printf("%-14s %7d %12.3f %12.3f %8ld\n", name, L, 1e3 * med, 1e3 * best, replayed);
            if (o->profile && device_current() == DEVICE_CUDA) {  // where a request goes
                device_profile(1);
                const double t0 = now_sec();
                for (int s = 0; s < steps; s++) request(m, items, &pad, wte, scores, host, L);
                const double dt = now_sec() - t0;
                printf("%s L=%d, per request (%.3f ms, each call between timing events):\n", name,
                       L, 1e3 * dt / steps);
                device_profile_report(stdout, steps, dt);
                device_profile(0);
            }
            if (js)
                fprintf(
                    js,
                    "{\"infer\":\"%s\",\"L\":%d,\"device\":\"%s\",\"items\":%d,\"median_ms\":%.4f,"
                    "\"best_ms\":%.4f,\"replayed\":%ld}\n",
                    name, L, dev, o->items, 1e3 * med, 1e3 * best, replayed);
            free(items), free(host), free(t), dev_free(scores);
            model_free(m);
        }
    }
    return 0;
}

int main(int argc, char** argv) {
    blas_autocorrect(argc, argv);  // may re-exec: before any thread or output
    bench_opts o;
    if (parse(&o, argc, argv)) return 2;
    if (o.threads > 0) {
#ifdef _OPENMP
        omp_set_num_threads(o.threads);
#endif
        openblas_set_num_threads(o.threads);
    }
    FILE* js = NULL;
    if (o.json[0] && !(js = fopen(o.json, "a"))) {
        fprintf(stderr, "elastic_bench: cannot open %s: %s\n", o.json, strerror(errno));
        return 1;
    }
    char blas[512];
    printf("blas: %s\n", blas_describe(blas, sizeof blas));
    if (o.sgemm || o.stream[0] || o.infer) {
        int rc = o.sgemm   ? bench_sgemm(&o, js)
                 : o.infer ? bench_infer(&o, js)
                           : bench_stream(&o, js);
        if (js && fclose(js)) {
            fprintf(stderr, "elastic_bench: writing %s: %s\n", o.json, strerror(errno));
            return 1;
        }
        return rc;
    }
    printf("batch %d, d %d, %d items, %d timed steps; peak RSS per configuration (own process)\n",
           o.batch, o.d, o.items, o.steps);
    printf("%-14s %7s %9s %10s %11s %10s %10s %9s %9s\n", "model", "L", "slots", "ms/step",
           "tokens/s", "peak MB", "acts MB", "bank MB", "dev MB");
    char models[256];
    snprintf(models, sizeof models, "%s", o.models);
    for (char *ms = NULL, *name = strtok_r(models, ",", &ms); name;
         name = strtok_r(NULL, ",", &ms)) {
        int is_elastic = !strncmp(name, "elastic", 7) && !strstr(name, "nomem");
        char slots[256];
        snprintf(slots, sizeof slots, "%s", is_elastic ? o.slots : "0");
        for (char *ss = NULL, *sl = strtok_r(slots, ",", &ss); sl; sl = strtok_r(NULL, ",", &ss)) {
            char Ls[256];
            snprintf(Ls, sizeof Ls, "%s", o.Ls);
            for (char *ls = NULL, *l = strtok_r(Ls, ",", &ls); l; l = strtok_r(NULL, ",", &ls)) {
                int L = atoi(l);
                long slot = atol(sl);
                int fd[2];
                if (L <= 0 || pipe(fd)) {
                    fprintf(stderr, "elastic_bench: bad length '%s' or pipe failed\n", l);
                    return 1;
                }
                fflush(stdout);
                pid_t pid = fork();
                if (pid < 0) {
                    fprintf(stderr, "elastic_bench: fork failed: %s\n", strerror(errno));
                    return 1;
                }
                if (pid == 0) {
                    close(fd[0]);
                    result r = run_one(&o, name, L, slot ? slot : 65536);
                    ssize_t w = write(fd[1], &r, sizeof r);
                    _exit(w == (ssize_t)sizeof r ? 0 : 1);
                }
                close(fd[1]);
                result r = {0};
                ssize_t got = read(fd[0], &r, sizeof r);
                close(fd[0]);
                int status = 0;
                waitpid(pid, &status, 0);
                if (got != (ssize_t)sizeof r)
                    snprintf(r.err, sizeof r.err, "child died (%s)",
                             WIFSIGNALED(status) ? "killed: out of memory?" : "error");
                if (r.ok)
                    printf("%-14s %7d %9ld %10.1f %11.0f %10.0f %10.1f %9.1f %9.1f\n", name, L,
                           is_elastic ? slot : 0, r.ms, r.tok_s, r.rss_mb, r.act_mb, r.bank_mb,
                           r.dev_mb);
                else
                    printf("%-14s %7d %9ld   %s\n", name, L, is_elastic ? slot : 0, r.err);
                if (js)
                    fprintf(js,
                            "{\"model\":\"%s\",\"L\":%d,\"mem_slots\":%ld,\"batch\":%d,\"d\":%d,"
                            "\"items\":%d,\"ok\":%s,\"ms_per_step\":%.3f,\"tokens_per_s\":%.1f,"
                            "\"peak_rss_mb\":%.1f,\"act_mb\":%.1f,\"bank_mb\":%.1f,"
                            "\"dev_peak_mb\":%.1f,\"device\":\"%s\",\"blas_core\":\"%s\","
                            "\"recompute\":%d,\"ce_block\":%d}\n",
                            name, L, is_elastic ? slot : 0, o.batch, o.d, o.items,
                            r.ok ? "true" : "false", r.ms, r.tok_s, r.rss_mb, r.act_mb, r.bank_mb,
                            r.dev_mb, o.device, blas_core_name(),
                            o.recompute == 2 || (o.recompute && strncmp(name, "sasrec", 6)),
                            o.ce_block);
            }
        }
    }
    if (js && fclose(js)) {
        fprintf(stderr, "elastic_bench: writing %s: %s\n", o.json, strerror(errno));
        return 1;
    }
    return 0;
}
