// config.c: one table of options drives parsing, the config file, --help,
// printing and checkpoint serialisation, so they never disagree.
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define ERRLEN 512

typedef enum { T_INT, T_I64, T_U64, T_DBL, T_STR, T_BOOL } opt_type;

// What a resumed run may change (config_resume_check): SAME options shape the
// model or its trajectory and must equal the checkpoint's; NOTE options may
// change, but the run says so; FREE options (paths, logging, threads) may
// change silently. The dataset is compared by its fingerprint, not its path.
typedef enum { FREE, NOTE, SAME } resume_rule;

typedef struct {
    const char* name;
    opt_type type;
    size_t off;
    size_t size;  // for strings
    const char* def;
    const char* choices;  // "a|b|c" or NULL
    const char* help;
    resume_rule resume;
    const char* models;  // "elastic|recgrela": applies to these models only (NULL: all)
} option;

#define O(field) offsetof(config, field), sizeof(((config*)0)->field)
static const option OPTS[] = {
    {"data", T_STR, O(data), "", NULL, "dataset file (.h5, from elastic_prep) [required]", FREE,
     NULL},
    {"model", T_STR, O(model), "sasrec", "sasrec|elastic|recgrela", "model to train", SAME, NULL},
    {"L", T_INT, O(L), "200", NULL, "sequence length (positions per training window)", SAME, NULL},
    {"stride", T_INT, O(stride), "0", NULL, "distance between training windows (0: L)", SAME, NULL},
    {"batch", T_INT, O(batch), "128", NULL, "global batch size in sequences", SAME, NULL},
    {"d", T_INT, O(d), "64", NULL, "model width", SAME, NULL},
    {"layers", T_INT, O(layers), "2", NULL, "number of blocks", SAME, NULL},
    {"heads", T_INT, O(heads), "2", NULL, "attention heads", SAME, NULL},
    {"dropout", T_DBL, O(dropout), "0.2", NULL, "dropout probability", SAME, NULL},
    {"attention", T_STR, O(attention), "fused", "fused|plain",
     "softmax attention kernel: fused (flash-style, O(L) memory) or plain (materialised L x L)",
     NOTE, "sasrec"},
    {"experts", T_INT, O(experts), "8", NULL, "ELASTIC: interest experts per layer (k)", SAME,
     "elastic"},
    {"chunk", T_INT, O(chunk), "64", NULL,
     "ELASTIC: chunk size C of the dispatch; RecGRELA: of the chunked linear attention", SAME,
     "elastic|recgrela"},
    {"mem-slots", T_I64, O(mem_slots), "65536", NULL,
     "ELASTIC: memory bank rows, a perfect square n*n", SAME, "elastic"},
    {"mem-topk", T_INT, O(mem_topk), "8", NULL, "ELASTIC: slots read per memory lookup", SAME,
     "elastic"},
    {"mem-heads", T_INT, O(mem_heads), "2", NULL, "ELASTIC: memory heads sharing the bank", SAME,
     "elastic"},
    {"mem-dk", T_INT, O(mem_dk), "32", NULL, "ELASTIC: memory key width (even)", SAME, "elastic"},
    {"no-memory", T_BOOL, O(no_memory), "false", NULL, "ELASTIC: no memory bank (ablation)", SAME,
     "elastic"},
    {"mem-budget", T_DBL, O(mem_budget), "0", NULL,
     "ELASTIC: MB of memory per rank for the bank's shard (its rows and Adam moments); a bank "
     "over it is refused, saying how many ranks it needs (0: no limit)",
     FREE, "elastic"},
    {"conv-kernel", T_INT, O(conv_kernel), "4", NULL,
     "RecGRELA: causal depthwise convolution width of the local branch", SAME, "recgrela"},
    {"no-local", T_BOOL, O(no_local), "false", NULL, "RecGRELA: no local branch (ablation)", SAME,
     "recgrela"},
    {"no-gate", T_BOOL, O(no_gate), "false", NULL, "RecGRELA: no SiLU gate (ablation)", SAME,
     "recgrela"},
    {"recompute", T_BOOL, O(recompute), "false", NULL,
     "rebuild each block's FFN half (ELASTIC: also LN1, its keys, q/k/v and the dispatch) in "
     "backward instead of keeping it (less memory, a few % more time)",
     NOTE, NULL},
    {"lr", T_DBL, O(lr), "1e-3", NULL, "peak learning rate", NOTE, NULL},
    {"beta1", T_DBL, O(beta1), "0.9", NULL, "Adam beta1", NOTE, NULL},
    {"beta2", T_DBL, O(beta2), "0.98", NULL, "Adam beta2", NOTE, NULL},
    {"eps", T_DBL, O(eps), "1e-8", NULL, "Adam epsilon", NOTE, NULL},
    {"weight-decay", T_DBL, O(weight_decay), "0", NULL, "decoupled weight decay (AdamW)", NOTE,
     NULL},
    {"warmup", T_INT, O(warmup), "0", NULL, "linear warm-up steps", NOTE, NULL},
    {"schedule", T_STR, O(schedule), "const", "const|cosine",
     "learning-rate schedule after warm-up", NOTE, NULL},
    {"steps", T_I64, O(steps), "0", NULL, "training steps (0: use --epochs)", NOTE, NULL},
    {"epochs", T_INT, O(epochs), "20", NULL, "training epochs when --steps is 0", NOTE, NULL},
    {"seed", T_U64, O(seed), "42", NULL, "seed of initialisation, data order and dropout", SAME,
     NULL},
    {"ce-block", T_INT, O(ce_block), "0", NULL,
     "rows of logits computed at once by the loss (0: 256 on the CPU, 512 MB of logits on CUDA)",
     NOTE, NULL},
    {"allreduce-overlap", T_BOOL, O(allreduce_overlap), "true", NULL,
     "over several ranks, start each layer's dense-gradient all-reduce (non-blocking) as soon as "
     "its backward is done, instead of all of them after backward",
     NOTE, NULL},
    {"eval-every", T_I64, O(eval_every), "0", NULL, "validate every N steps (0: once per epoch)",
     NOTE, NULL},
    {"eval-users", T_I64, O(eval_users), "0", NULL, "validate on the first N users only (0: all)",
     SAME, NULL},
    {"patience", T_INT, O(patience), "5", NULL,
     "stop after N validations without a better NDCG@10 (0: never stop early)", NOTE, NULL},
    {"mask-history", T_BOOL, O(mask_history), "false", NULL,
     "exclude the user's history items from the ranking", SAME, NULL},
    {"sampled-negatives", T_INT, O(sampled_negatives), "0", NULL,
     "rank against N sampled negatives instead of all items (papers' protocol; 0: full ranking)",
     SAME, NULL},
    {"test", T_BOOL, O(test), "true", NULL, "evaluate the best model on the test split at the end",
     FREE, NULL},
    {"log-every", T_INT, O(log_every), "50", NULL, "print a progress line every N steps", FREE,
     NULL},
    {"comm-stats", T_BOOL, O(comm_stats), "false", NULL,
     "print (and write to the metrics file) per progress line what the exchanges moved: bank ids, "
     "rows and gradients, the dense all-reduce, deduplication, owner load, waiting time",
     FREE, NULL},
    {"metrics", T_STR, O(metrics), "", NULL, "JSON-lines metrics file (appended)", FREE, NULL},
    {"ckpt-dir", T_STR, O(ckpt_dir), "", NULL, "checkpoint directory (empty: no checkpoints)", FREE,
     NULL},
    {"keep-last", T_INT, O(keep_last), "0", NULL,
     "keep only the newest N checkpoints, deleting older ones (0: keep all); each one holds the "
     "best model too",
     FREE, NULL},
    {"resume-fallback", T_BOOL, O(resume_fallback), "false", NULL,
     "with --resume latest, when the newest checkpoint fails verification, resume from the newest "
     "one that passes (the failed ones are renamed *.corrupt and kept) instead of stopping",
     FREE, NULL},
    {"max-loss", T_DBL, O(max_loss), "0", NULL,
     "divergence guard: a loss above this (0: 10 x ln(items), 10x a uniform guess's) or a gradient "
     "norm above --max-grad-norm counts as diverged",
     FREE, NULL},
    {"max-grad-norm", T_DBL, O(max_grad_norm), "1e4", NULL,
     "divergence guard on the global gradient norm (0: off)", FREE, NULL},
    {"on-divergence", T_STR, O(on_divergence), "stop", "stop|warn",
     "stop the run (non-zero exit) or warn at every progress line and go on", FREE, NULL},
    {"ckpt-every", T_I64, O(ckpt_every), "0", NULL, "checkpoint every N steps (0: at evaluations)",
     FREE, NULL},
    {"resume", T_STR, O(resume), "", NULL,
     "resume from a checkpoint directory, 'latest' in --ckpt-dir, or 'auto': latest if "
     "--ckpt-dir has one, else a fresh start (job scripts that are requeued)",
     FREE, NULL},
    {"device", T_STR, O(device), "cpu", "cpu|cuda",
     "where the kernels run: the CPU (OpenMP + OpenBLAS) or one CUDA GPU per rank (the local "
     "rank's)",
     FREE, NULL},
    {"precision", T_STR, O(precision), "tf32", "fp32|tf32|bf16",
     "matrix products on a GPU: fp32 numbers multiplied by the tensor cores in TF32 or bf16 "
     "(fp32 accumulation and weights; the fused attention in TF32 and the loss's logits in "
     "half either way), or in full fp32 (the CPU computes in fp32)",
     NOTE, NULL},
    {"threads", T_INT, O(threads), "0", NULL, "OpenMP/BLAS threads (0: all cores)", FREE, NULL},
    {"comm", T_STR, O(comm), "auto", "auto|local|mpi|nccl",
     "communication backend (auto: nccl on GPUs of their own, mpi under a launcher, else local)",
     FREE, NULL},
    {"config", T_STR, O(config), "", NULL, "read options from a `key = value` file first", FREE,
     NULL},
};
#define NOPTS (int)(sizeof OPTS / sizeof OPTS[0])

static const option* find(const char* key) {
    char norm[64];
    size_t n = strlen(key);
    if (n >= sizeof norm) return NULL;
    for (size_t i = 0; i <= n; i++) norm[i] = key[i] == '_' ? '-' : key[i];
    for (int i = 0; i < NOPTS; i++)
        if (!strcmp(OPTS[i].name, norm)) return &OPTS[i];
    return NULL;
}

static int set(config* c, const option* o, const char* v, const char* origin, char* err) {
    char* field = (char*)c + o->off;
    char* end = NULL;
    errno = 0;
    switch (o->type) {
        case T_INT: {
            long x = strtol(v, &end, 10);
            if (errno || end == v || *end || x < -2147483647L || x > 2147483647L) goto bad;
            *(int*)field = (int)x;
            break;
        }
        case T_I64: {
            long long x = strtoll(v, &end, 10);
            if (errno || end == v || *end) goto bad;
            *(int64_t*)field = x;
            break;
        }
        case T_U64: {
            unsigned long long x = strtoull(v, &end, 10);
            if (errno || end == v || *end || *v == '-') goto bad;
            *(uint64_t*)field = x;
            break;
        }
        case T_DBL: {
            double x = strtod(v, &end);
            if (errno || end == v || *end) goto bad;
            memcpy(field, &x, sizeof x);
            break;
        }
        case T_BOOL:
            if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
                *(int*)field = 1;
            else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") ||
                     !strcmp(v, "off"))
                *(int*)field = 0;
            else
                goto bad;
            break;
        case T_STR:
            if (strlen(v) >= o->size) {
                snprintf(err, ERRLEN, "%s: value of --%s is longer than %zu characters", origin,
                         o->name, o->size - 1);
                return -1;
            }
            if (o->choices) {
                char buf[128];
                snprintf(buf, sizeof buf, "|%s|", o->choices);
                char want[80];
                snprintf(want, sizeof want, "|%s|", v);
                if (!*v || !strstr(buf, want)) {
                    snprintf(err, ERRLEN, "%s: --%s must be one of %s, got '%s'", origin, o->name,
                             o->choices, v);
                    return -1;
                }
            }
            strcpy(field, v);
            break;
    }
    return 0;
bad:
    snprintf(err, ERRLEN, "%s: bad value '%s' for --%s (%s)", origin, v, o->name,
             o->type == T_DBL    ? "a number"
             : o->type == T_BOOL ? "true or false"
             : o->type == T_U64  ? "a non-negative integer"
             : o->type == T_I64  ? "a 64-bit integer"
                                 : "an integer");
    return -1;
}

void config_defaults(config* c) {
    memset(c, 0, sizeof *c);
    char err[ERRLEN];
    for (int i = 0; i < NOPTS; i++) set(c, &OPTS[i], OPTS[i].def, "defaults", err);
}

static char* trim(char* s) {
    while (isspace((unsigned char)*s)) s++;
    char* e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

int config_apply_text(config* c, const char* text, const char* origin, char* err) {
    char* copy = strdup(text);
    if (!copy) {
        snprintf(err, ERRLEN, "%s: out of memory", origin);
        return -1;
    }
    int lineno = 0, rc = 0;
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char* hash = strchr(line, '#');
        if (hash) *hash = 0;
        char* s = trim(line);
        if (!*s) continue;
        char* eq = strchr(s, '=');
        char where[300];
        snprintf(where, sizeof where, "%s:%d", origin, lineno);
        if (!eq) {
            snprintf(err, ERRLEN, "%s: expected `key = value`, got '%s'", where, s);
            rc = -1;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        const option* o = find(key);
        if (!o || !strcmp(o->name, "config")) {
            snprintf(err, ERRLEN, "%s: unknown option '%s'", where, key);
            rc = -1;
            break;
        }
        if ((rc = set(c, o, val, where, err))) break;
    }
    free(copy);
    return rc;
}

static int read_config_file(config* c, const char* path, char* err) {
    FILE* f = fopen(path, "rb");
    if (!f) {
        snprintf(err, ERRLEN, "cannot open config file '%s': %s", path, strerror(errno));
        return -1;
    }
    char* text = NULL;
    size_t len = 0;
    FILE* mem = open_memstream(&text, &len);
    char buf[4096];
    size_t n;
    while (mem && (n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, mem);
    int rd_err = ferror(f);
    fclose(f);
    if (!mem || fclose(mem) != 0 || rd_err) {
        free(text);
        snprintf(err, ERRLEN, "cannot read config file '%s'", path);
        return -1;
    }
    int rc = config_apply_text(c, text, path, err);
    free(text);
    return rc;
}

static int is_bool_word(const char* s) {
    const char* w[] = {"1", "0", "true", "false", "yes", "no", "on", "off"};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        if (!strcmp(s, w[i])) return 1;
    return 0;
}

int config_parse(config* c, int argc, char** argv, char* err) {
    // --config first, so the command line overrides the file whatever the order.
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            config_help(stdout, argv[0]);
            return 1;
        }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                snprintf(err, ERRLEN, "--config needs a file name");
                return -1;
            }
            if (read_config_file(c, argv[i + 1], err)) return -1;
            strcpy(c->config, argv[i + 1]);
        }
    }
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (strncmp(a, "--", 2)) {
            snprintf(err, ERRLEN, "unexpected argument '%s' (options are --name value; see --help)",
                     a);
            return -1;
        }
        char key[64];
        const char* eq = strchr(a + 2, '=');
        size_t klen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (klen >= sizeof key) klen = sizeof key - 1;
        memcpy(key, a + 2, klen);
        key[klen] = 0;
        const option* o = find(key);
        if (!o) {
            snprintf(err, ERRLEN, "unknown option '--%s' (see --help)", key);
            return -1;
        }
        const char* v;
        if (eq)
            v = eq + 1;
        else if (o->type == T_BOOL)  // a flag alone, or followed by its value
            v = (i + 1 < argc && (is_bool_word(argv[i + 1]) || strncmp(argv[i + 1], "--", 2)))
                    ? argv[++i]
                    : "true";
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            snprintf(err, ERRLEN, "--%s needs a value", o->name);
            return -1;
        }
        if (!strcmp(o->name, "config")) continue;
        if (set(c, o, v, "command line", err)) return -1;
    }
    return 0;
}

int config_validate(const config* c, char* err) {
#define NEED(cond, ...)                     \
    if (!(cond)) {                          \
        snprintf(err, ERRLEN, __VA_ARGS__); \
        return -1;                          \
    }
    NEED(c->data[0], "--data is required (a dataset file made by elastic_prep)");
    NEED(c->L > 0, "--L must be at least 1, got %d", c->L);
    NEED(c->batch > 0, "--batch must be at least 1, got %d", c->batch);
    NEED(c->stride >= 0, "--stride must be >= 0, got %d", c->stride);
    NEED(c->d > 0 && c->layers > 0 && c->heads > 0, "--d, --layers and --heads must be positive");
    NEED(c->d % c->heads == 0, "--d (%d) must be a multiple of --heads (%d)", c->d, c->heads);
    NEED(c->d % 2 == 0, "--d must be even, got %d", c->d);
    NEED(c->dropout >= 0 && c->dropout < 1, "--dropout must be in [0, 1), got %g", c->dropout);
    NEED(c->experts > 0 && c->experts <= 64, "--experts must be in 1..64, got %d", c->experts);
    NEED(c->chunk > 0 && c->chunk <= 1024, "--chunk must be in 1..1024, got %d", c->chunk);
    {
        int64_t n = 1;
        while (n * n < c->mem_slots) n++;
        NEED(c->mem_slots > 0 && n * n == c->mem_slots && n <= 4096,
             "--mem-slots must be a perfect square n*n with n <= 4096, got %lld",
             (long long)c->mem_slots);
        NEED(c->mem_topk > 0 && c->mem_topk <= 64 && c->mem_topk <= n,
             "--mem-topk must be in 1..min(64, sqrt(--mem-slots)), got %d", c->mem_topk);
    }
    NEED(c->mem_heads > 0, "--mem-heads must be positive");
    NEED(c->conv_kernel > 0 && c->conv_kernel <= 64, "--conv-kernel must be in 1..64, got %d",
         c->conv_kernel);
    NEED(
        (strcmp(c->model, "elastic") && strcmp(c->model, "recgrela")) || (c->d / c->heads) % 2 == 0,
        "--model %s needs an even head width d/heads for RoPE, got %d", c->model, c->d / c->heads);
    NEED(c->mem_dk > 0 && c->mem_dk % 2 == 0, "--mem-dk must be positive and even");
    NEED(c->lr > 0, "--lr must be positive, got %g", c->lr);
    NEED(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1,
         "--beta1 and --beta2 must be in [0, 1)");
    NEED(c->eps > 0, "--eps must be positive");
    NEED(c->weight_decay >= 0, "--weight-decay must be >= 0");
    NEED(c->warmup >= 0, "--warmup must be >= 0");
    NEED(c->steps >= 0, "--steps must be >= 0");
    NEED(c->steps > 0 || c->epochs > 0, "give --steps or --epochs (> 0)");
    NEED(c->ce_block >= 0, "--ce-block must be 0 (automatic) or positive");
    NEED(c->eval_every >= 0 && c->eval_users >= 0, "--eval-every and --eval-users must be >= 0");
    NEED(c->patience >= 0, "--patience must be >= 0");
    NEED(c->sampled_negatives >= 0, "--sampled-negatives must be >= 0");
    NEED(c->log_every > 0, "--log-every must be positive");
    NEED(c->ckpt_every >= 0, "--ckpt-every must be >= 0");
    NEED(c->threads >= 0, "--threads must be >= 0");
    NEED(c->keep_last >= 0, "--keep-last must be >= 0");
    NEED(c->max_loss >= 0 && c->max_grad_norm >= 0, "--max-loss and --max-grad-norm must be >= 0");
    NEED(!c->resume[0] || (strcmp(c->resume, "latest") && strcmp(c->resume, "auto")) ||
             c->ckpt_dir[0],
         "--resume latest (and auto) needs --ckpt-dir");
#undef NEED
    return 0;
}

static void format_value(const config* c, const option* o, char* buf, size_t n) {
    const char* field = (const char*)c + o->off;
    switch (o->type) {
        case T_INT:
            snprintf(buf, n, "%d", *(const int*)field);
            break;
        case T_I64:
            snprintf(buf, n, "%lld", (long long)*(const int64_t*)field);
            break;
        case T_U64:
            snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t*)field);
            break;
        case T_DBL: {
            double x;
            memcpy(&x, field, sizeof x);
            snprintf(buf, n, "%.17g", x);
            break;
        }
        case T_BOOL:
            snprintf(buf, n, "%s", *(const int*)field ? "true" : "false");
            break;
        case T_STR:
            snprintf(buf, n, "%s", field);
            break;
    }
}

void config_print(const config* c, FILE* f, const char* prefix) {
    for (int i = 0; i < NOPTS; i++) {
        char v[CFG_STR + 32];
        format_value(c, &OPTS[i], v, sizeof v);
        if (OPTS[i].type == T_DBL) snprintf(v, sizeof v, "%g", strtod(v, NULL));  // short form
        fprintf(f, "%s%-18s = %s\n", prefix, OPTS[i].name, v);
    }
}

static int applies(const option* o, const char* model) {
    if (!o->models) return 1;
    char want[40], list[64];
    snprintf(want, sizeof want, "|%s|", model);
    snprintf(list, sizeof list, "|%s|", o->models);
    return strstr(list, want) != NULL;
}

int config_resume_check(const config* now, const config* then, char* err, char* notes,
                        size_t notes_len) {
    size_t used = 0;
    if (notes_len) notes[0] = 0;
    for (int i = 0; i < NOPTS; i++) {
        const option* o = &OPTS[i];
        if (o->resume == FREE || !applies(o, now->model)) continue;
        char a[CFG_STR + 32], b[CFG_STR + 32];
        format_value(now, o, a, sizeof a);
        format_value(then, o, b, sizeof b);
        if (!strcmp(a, b)) continue;
        if (o->type == T_DBL) {  // the short forms, as the run prints them
            snprintf(a, sizeof a, "%g", strtod(a, NULL));
            snprintf(b, sizeof b, "%g", strtod(b, NULL));
        }
        if (o->resume == SAME) {
            snprintf(err, ERRLEN,
                     "--%s is %s here but %s in the checkpoint; it changes the model or its "
                     "trajectory, so an exact continuation needs the same value (start a new run "
                     "in another --ckpt-dir to change it)",
                     o->name, a, b);
            return -1;
        }
        if (used < notes_len)
            used +=
                (size_t)snprintf(notes + used, notes_len - used,
                                 "--%s is %s here, %s in the checkpoint: the run goes on with %s\n",
                                 o->name, a, b, a);
    }
    return 0;
}

char* config_to_string(const config* c) {
    char* text = NULL;
    size_t len = 0;
    FILE* mem = open_memstream(&text, &len);
    if (!mem) return NULL;
    for (int i = 0; i < NOPTS; i++) {
        char v[CFG_STR + 32];
        if (!strcmp(OPTS[i].name, "config")) continue;  // already applied; files do not nest
        format_value(c, &OPTS[i], v, sizeof v);
        fprintf(mem, "%s = %s\n", OPTS[i].name, v);
    }
    fclose(mem);
    return text;
}

void config_help(FILE* f, const char* prog) {
    fprintf(
        f,
        "usage: %s --data FILE.h5 [options]\n"
        "Trains a sequential recommender on an elastic dataset (see elastic_prep), validates\n"
        "with full ranking, stops early on validation NDCG@10 and reports test metrics.\n"
        "Options are --name value (or --name=value); --config FILE reads `name = value`\n"
        "lines first and the command line wins. Run under mpirun/srun for data parallelism.\n\n",
        prog);
    for (int i = 0; i < NOPTS; i++) {
        const option* o = &OPTS[i];
        char head[64];
        snprintf(head, sizeof head, "--%s %s", o->name,
                 o->type == T_BOOL  ? "[true|false]"
                 : o->type == T_STR ? (o->choices ? o->choices : "S")
                 : o->type == T_DBL ? "X"
                                    : "N");
        fprintf(f, "  %-28s %s", head, o->help);
        if (o->def[0]) fprintf(f, " (default %s)", o->def);
        fprintf(f, "\n");
    }
}
