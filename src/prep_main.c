// prep_main.c: elastic_prep, the datasets' command line: convert public files
// to the HDF5 layout, generate synthetic data, summarise and export a file.
// Exit status: 0 success, 1 failure (bad input, I/O), 2 bad command line.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convert.h"
#include "dataset.h"
#include "synth.h"

static const char* USAGE =
    "usage: elastic_prep COMMAND [options]\n"
    "Prepares datasets for elastic (HDF5 layout of DESIGN.md section 2).\n"
    "commands:\n"
    "  convert  a public interaction file -> dataset .h5\n"
    "  synth    a synthetic dataset with planted structure -> .h5\n"
    "  info     summary and full integrity check of a dataset .h5\n"
    "  export   dataset .h5 -> text (one user per line, or user,item,timestamp CSV)\n"
    "Run 'elastic_prep COMMAND --help' for a command's options.\n";

static const char* CONVERT_USAGE =
    "usage: elastic_prep convert --format FMT INPUT -o OUT.h5 [options]\n"
    "  --format F        movielens-csv (ratings.csv: userId,movieId,rating,timestamp)\n"
    "                    movielens-dat (ratings.dat: user::item::rating::timestamp)\n"
    "                    recbole       (.inter: tab-separated, header name:type)\n"
    "                    seq           (one user per line: user item item ..., in time order)\n"
    "                    csv           (user,item[,timestamp]; a header may name columns)\n"
    "  -o, --output F    output .h5 (written to F.tmp, renamed when complete)\n"
    "  --min-rating R    keep interactions with rating >= R (formats with a rating)\n"
    "  --kcore K         keep users and items with >= K interactions, repeated until stable\n"
    "  --delimiter C     csv: one character, or tab|comma|semicolon|space (default: detect)\n"
    "  --header yes|no   csv: whether the first line is a header (default: detect)\n"
    "  --duplicates drop|keep\n"
    "                    rows repeating an earlier row's (user, item, timestamp) are counted\n"
    "                    and dropped (default; the first row in the file stays) or kept.\n"
    "                    Formats without timestamps (seq, csv without one) are not checked:\n"
    "                    there a repeated (user, item) is a repeat in time and stays.\n"
    "  --progress auto|always|never\n"
    "                    MB read, rows and rows/s, and an ETA on stderr every 2 s, then the\n"
    "                    totals (auto, the default: for inputs of 64 MB or more)\n"
    "Pipeline: rating filter, duplicates, k-core, drop users with fewer than 3 items; each\n"
    "history sorted by timestamp (ties by row order); users in order of first appearance,\n"
    "items renumbered 1..N by first appearance in that order; original ids kept.\n"
    "A timestamp beyond int64 or a rating beyond float is an error (file:line), as is an\n"
    "output that is the input file.\n";

static const char* SYNTH_USAGE =
    "usage: elastic_prep synth -o OUT.h5 --users U --items N [options]\n"
    "  -o, --output F    output .h5\n"
    "  --users U         number of users (default 1000)\n"
    "  --items N         number of items (default 1000)\n"
    "  --clusters K      long-term interest clusters (default: one per 100 items)\n"
    "  --min-len A       shortest history, >= 3 (default 3)\n"
    "  --max-len B       longest history (default 50); lengths are log-uniform in [A,B]\n"
    "  --len N           every history exactly N items\n"
    "  --seed S          (default 1)\n"
    "  --p-burst P       probability of continuing a burst (default 0.5)\n"
    "  --p-long P        probability of a long-term-interest draw (default 0.4)\n"
    "  --zipf A          popularity exponent (default 1)\n";

static const char* INFO_USAGE =
    "usage: elastic_prep info FILE.h5\n"
    "Prints users, items, interactions, source, filter, fingerprint, history-length\n"
    "statistics and repeated items (interactions whose item occurs earlier in the same\n"
    "history; test and validation targets that do, which --mask-history counts as\n"
    "misses), after reading every dataset through (checksums, item ranges, fingerprint).\n";

static const char* EXPORT_USAGE =
    "usage: elastic_prep export FILE.h5 --format seq|csv -o OUT\n"
    "  --format seq      one user per line: user item item ... (original ids)\n"
    "  --format csv      header user,item,timestamp then one interaction per line\n"
    "  -o, --output F    output text file (written to F.tmp, renamed when complete)\n";

// A command line of `--name value` options (also `--name=value`) and
// positional arguments; anything unexpected is a usage error (exit 2).
typedef struct {
    const char* cmd;
    const char* const* names;  // accepted option names, without "--"
    const char** values;       // parallel to names
    const char* positional[4];
    int n_positional, max_positional;
} cmdline;

static int usage_error(const char* cmd, const char* fmt, const char* arg) {
    fprintf(stderr, "elastic_prep %s: ", cmd);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see 'elastic_prep %s --help')\n", cmd);
    return 2;
}

// 0 ok, 1 --help printed, 2 usage error.
static int parse(cmdline* c, int argc, char** argv, const char* usage) {
    for (int i = 0; i < argc; i++) {
        const char* a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return 1;
        }
        if (a[0] == '-' && a[1] != 0) {
            const char* name = !strcmp(a, "-o") ? "output" : a + (a[1] == '-' ? 2 : 1);
            if (a[1] != '-' && strcmp(a, "-o"))
                return usage_error(c->cmd, "unknown option '%s'", a);
            size_t len = strcspn(name, "=");
            int k = 0;
            while (c->names[k] && (strlen(c->names[k]) != len || strncmp(c->names[k], name, len)))
                k++;
            if (!c->names[k]) return usage_error(c->cmd, "unknown option '%s'", a);
            if (name[len] == '=') {
                c->values[k] = name + len + 1;
            } else {
                if (i + 1 >= argc) return usage_error(c->cmd, "option '%s' needs a value", a);
                c->values[k] = argv[++i];
            }
        } else {
            if (c->n_positional >= c->max_positional)
                return usage_error(c->cmd, "unexpected argument '%s'", a);
            c->positional[c->n_positional++] = a;
        }
    }
    return 0;
}

static int parse_i64(const char* cmd, const char* opt, const char* s, int64_t min, int64_t* v) {
    char* end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || errno || x < min) {
        fprintf(stderr, "elastic_prep %s: --%s '%s' is not an integer >= %lld\n", cmd, opt, s,
                (long long)min);
        return 2;
    }
    *v = x;
    return 0;
}

static int parse_f64(const char* cmd, const char* opt, const char* s, double* v) {
    char* end;
    errno = 0;
    *v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(*v)) {
        fprintf(stderr, "elastic_prep %s: --%s '%s' is not a number\n", cmd, opt, s);
        return 2;
    }
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmd_convert(int argc, char** argv) {
    static const char* const names[] = {"format", "output",     "min-rating", "kcore", "delimiter",
                                        "header", "duplicates", "progress",   NULL};
    const char* v[8] = {0};
    cmdline c = {.cmd = "convert", .names = names, .values = v, .max_positional = 1};
    int rc = parse(&c, argc, argv, CONVERT_USAGE);
    if (rc) return rc == 1 ? 0 : rc;
    if (!v[0]) return usage_error("convert", "%s", "--format is required");
    if (!v[1]) return usage_error("convert", "%s", "-o OUT.h5 is required");
    if (c.n_positional != 1) return usage_error("convert", "%s", "one INPUT file is required");
    conv_options o = {.delimiter = 0, .header = -1, .progress = 1};
    if (conv_format_parse(v[0], &o.format) < 0)
        return usage_error("convert", "unknown --format '%s'", v[0]);
    if (v[2]) {
        o.use_min_rating = 1;
        if (parse_f64("convert", "min-rating", v[2], &o.min_rating)) return 2;
    }
    if (v[3]) {
        int64_t k;
        if (parse_i64("convert", "kcore", v[3], 0, &k)) return 2;
        o.kcore = (int)k;
    }
    if ((v[4] || v[5]) && o.format != CONV_CSV)
        return usage_error("convert", "%s", "--delimiter and --header apply to --format csv only");
    if (v[4]) {
        const char* d = v[4];
        if (!strcmp(d, "tab") || !strcmp(d, "\\t"))
            o.delimiter = '\t';
        else if (!strcmp(d, "comma"))
            o.delimiter = ',';
        else if (!strcmp(d, "semicolon"))
            o.delimiter = ';';
        else if (!strcmp(d, "space"))
            o.delimiter = ' ';
        else if (strlen(d) == 1)
            o.delimiter = d[0];
        else
            return usage_error("convert", "--delimiter '%s' is not one character", d);
    }
    if (v[5]) {
        if (!strcmp(v[5], "yes"))
            o.header = 1;
        else if (!strcmp(v[5], "no"))
            o.header = 0;
        else if (!strcmp(v[5], "auto"))
            o.header = -1;
        else
            return usage_error("convert", "--header '%s' is not yes, no or auto", v[5]);
    }
    if (v[6] && !strcmp(v[6], "keep"))
        o.keep_duplicates = 1;
    else if (v[6] && strcmp(v[6], "drop"))
        return usage_error("convert", "--duplicates '%s' is not drop or keep", v[6]);
    if (v[7] && !strcmp(v[7], "always"))
        o.progress = 2;
    else if (v[7] && !strcmp(v[7], "never"))
        o.progress = 0;
    else if (v[7] && strcmp(v[7], "auto"))
        return usage_error("convert", "--progress '%s' is not auto, always or never", v[7]);
    char err[DS_ERRLEN];
    conv_stats st;
    double t0 = now();
    if (convert_file(c.positional[0], v[1], &o, &st, err) < 0) {
        fprintf(stderr, "elastic_prep convert: %s\n", err);
        return 1;
    }
    printf("wrote %s: %lld users, %lld items, %lld interactions, timestamps %s (%.2f s)\n", v[1],
           (long long)st.users, (long long)st.items, (long long)st.interactions,
           st.has_timestamps ? "yes" : "no", now() - t0);
    printf(
        "read %lld rows; dropped %lld below min rating, %lld by %d-core in %lld rounds, "
        "%lld users (%lld rows) with fewer than 3 items\n",
        (long long)st.rows, (long long)st.rating_dropped, (long long)st.kcore_dropped, o.kcore,
        (long long)st.kcore_rounds, (long long)st.short_users, (long long)st.short_rows);
    if (!st.has_timestamps)
        printf("duplicates: not checked (no timestamps: a repeated item is a repeat in time)\n");
    else
        printf("duplicates: %lld rows repeat an earlier (user, item, timestamp), %s\n",
               (long long)st.duplicates,
               o.keep_duplicates ? "kept (--duplicates keep)" : "dropped");
    return 0;
}

static int cmd_synth(int argc, char** argv) {
    static const char* const names[] = {"output",  "users",   "items", "clusters",
                                        "min-len", "max-len", "len",   "seed",
                                        "p-burst", "p-long",  "zipf",  NULL};
    const char* v[11] = {0};
    cmdline c = {.cmd = "synth", .names = names, .values = v, .max_positional = 0};
    int rc = parse(&c, argc, argv, SYNTH_USAGE);
    if (rc) return rc == 1 ? 0 : rc;
    if (!v[0]) return usage_error("synth", "%s", "-o OUT.h5 is required");
    synth_config s = synth_defaults();
    int64_t seed = (int64_t)s.seed;
    if ((v[1] && parse_i64("synth", "users", v[1], 1, &s.users)) ||
        (v[2] && parse_i64("synth", "items", v[2], 1, &s.items)) ||
        (v[3] && parse_i64("synth", "clusters", v[3], 1, &s.clusters)) ||
        (v[4] && parse_i64("synth", "min-len", v[4], 3, &s.min_len)) ||
        (v[5] && parse_i64("synth", "max-len", v[5], 3, &s.max_len)) ||
        (v[7] && parse_i64("synth", "seed", v[7], 0, &seed)) ||
        (v[8] && parse_f64("synth", "p-burst", v[8], &s.p_burst)) ||
        (v[9] && parse_f64("synth", "p-long", v[9], &s.p_long)) ||
        (v[10] && parse_f64("synth", "zipf", v[10], &s.zipf)))
        return 2;
    if (v[6]) {
        if (v[4] || v[5]) return usage_error("synth", "%s", "--len excludes --min-len/--max-len");
        if (parse_i64("synth", "len", v[6], 3, &s.min_len)) return 2;
        s.max_len = s.min_len;
    } else if (v[4] && !v[5] && s.max_len < s.min_len) {
        s.max_len = s.min_len;
    }
    s.seed = (uint64_t)seed;
    char err[DS_ERRLEN];
    double t0 = now();
    if (synth_write(v[0], &s, err) < 0) {
        fprintf(stderr, "elastic_prep synth: %s\n", err);
        return 1;
    }
    printf("wrote %s: %lld users, %lld items (%.2f s)\n", v[0], (long long)s.users,
           (long long)s.items, now() - t0);
    return 0;
}

static int cmp_i64(const void* a, const void* b) {
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

static int cmd_info(int argc, char** argv) {
    static const char* const names[] = {NULL};
    cmdline c = {.cmd = "info", .names = names, .values = NULL, .max_positional = 1};
    int rc = parse(&c, argc, argv, INFO_USAGE);
    if (rc) return rc == 1 ? 0 : rc;
    if (c.n_positional != 1) return usage_error("info", "%s", "one FILE.h5 is required");
    const char* path = c.positional[0];
    char err[DS_ERRLEN];
    ds_repeats rep;
    ds_file* f = ds_open(path, err);
    if (!f || ds_verify_stats(f, &rep, err) < 0) {
        fprintf(stderr, "elastic_prep info: %s\n", err);
        ds_close(f);
        return 1;
    }
    int64_t nu = ds_n_users(f);
    int64_t* len = malloc((size_t)(nu ? nu : 1) * sizeof *len);
    if (!len) {
        fprintf(stderr, "elastic_prep info: %s: out of memory\n", path);
        ds_close(f);
        return 1;
    }
    for (int64_t u = 0; u < nu; u++) len[u] = ds_user_len(f, u);
    qsort(len, (size_t)nu, sizeof *len, cmp_i64);
    printf("file: %s\n", path);
    printf("source: %s\n", ds_source(f));
    printf("filter: %s\n", ds_filter(f));
    printf("users: %lld\n", (long long)nu);
    printf("items: %lld\n", (long long)ds_n_items(f));
    printf("interactions: %lld\n", (long long)ds_n_interactions(f));
    printf("timestamps: %s\n", ds_has_timestamps(f) ? "yes" : "no");
    printf(
        "fingerprint: %016llx%s\n", (unsigned long long)ds_fingerprint(f),
        ds_fingerprint_stored(f) ? "" : " (none stored: computed from n_users, n_items, offsets)");
    if (nu > 0) {
        // Nearest-rank percentiles.
        int64_t p[3];
        const double q[3] = {0.5, 0.9, 0.99};
        for (int i = 0; i < 3; i++) {
            int64_t r = (int64_t)ceil(q[i] * (double)nu);
            p[i] = len[(r < 1 ? 1 : r) - 1];
        }
        printf("history length: min %lld mean %.1f p50 %lld p90 %lld p99 %lld max %lld\n",
               (long long)len[0], (double)ds_n_interactions(f) / (double)nu, (long long)p[0],
               (long long)p[1], (long long)p[2], (long long)len[nu - 1]);
    }
    int64_t ni = ds_n_interactions(f);
    printf("repeated items: %.2f%% of interactions (%lld) repeat an item earlier in the history\n",
           ni ? 100.0 * (double)rep.repeats / (double)ni : 0.0, (long long)rep.repeats);
    printf(
        "repeated targets: test %.2f%% (%lld users), validation %.2f%% (%lld) occur earlier "
        "in the history (--mask-history counts them as misses)\n",
        nu ? 100.0 * (double)rep.test_repeats / (double)nu : 0.0, (long long)rep.test_repeats,
        nu ? 100.0 * (double)rep.valid_repeats / (double)nu : 0.0, (long long)rep.valid_repeats);
    printf("integrity: ok (all datasets read, checksums%s verified)\n",
           ds_fingerprint_stored(f) ? ", item ids and fingerprint" : " and item ids");
    free(len);
    ds_close(f);
    return 0;
}

static int cmd_export(int argc, char** argv) {
    static const char* const names[] = {"format", "output", NULL};
    const char* v[2] = {0};
    cmdline c = {.cmd = "export", .names = names, .values = v, .max_positional = 1};
    int rc = parse(&c, argc, argv, EXPORT_USAGE);
    if (rc) return rc == 1 ? 0 : rc;
    if (c.n_positional != 1) return usage_error("export", "%s", "one FILE.h5 is required");
    if (!v[0]) return usage_error("export", "%s", "--format seq|csv is required");
    if (!v[1]) return usage_error("export", "%s", "-o OUT is required");
    export_format fmt;
    if (!strcmp(v[0], "seq"))
        fmt = EXPORT_SEQ;
    else if (!strcmp(v[0], "csv"))
        fmt = EXPORT_CSV;
    else
        return usage_error("export", "unknown --format '%s' (seq or csv)", v[0]);
    char err[DS_ERRLEN];
    if (export_file(c.positional[0], v[1], fmt, err) < 0) {
        fprintf(stderr, "elastic_prep export: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char* cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (!strcmp(cmd, "convert")) return cmd_convert(argc - 2, argv + 2);
    if (!strcmp(cmd, "synth")) return cmd_synth(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "export")) return cmd_export(argc - 2, argv + 2);
    fprintf(stderr, "elastic_prep: unknown command '%s'\n%s", cmd, USAGE);
    return 2;
}
