// convert_read.c: the format readers; each turns lines into rows of a
// conv_table and rejects a malformed line with "file:line: what".
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <strings.h>

#include "conv_table.h"
#include "dataset.h"
#include "h5util.h"

#define MAX_FIELDS 64

typedef struct {
    int user, item, ts, rating;  // column indices, -1 = absent
    int nf;                      // fields per line
} columns;

typedef struct {
    const char* path;
    FILE* fp;
    char* line;
    size_t cap;
    int64_t no;  // current line number, from 1
    // progress on stderr (conv_options.progress): bytes read of total, rows
    // kept so far (the table's count), when it started and last reported
    int progress;
    int64_t bytes, total;
    const int64_t* rows;
    double t0, last;
} reader;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// "convert: PATH: 120 of 980 MB (12%), 4.1M rows, 1.2M rows/s, ETA 0:31"
// every 2 s, and a last line with the totals (done != 0).
static void report(reader* r, int done) {
    const double now = mono_s(), dt = now - r->t0;
    if (!done && now - r->last < 2) return;
    r->last = now;
    const double mb = r->bytes / 1048576.0, rows = (double)*r->rows;
    if (done) {
        fprintf(stderr, "convert: %s: %.0f MB, %.0f rows in %.1f s (%.0f rows/s)\n", r->path, mb,
                rows, dt, dt > 0 ? rows / dt : 0);
        return;
    }
    const double frac = r->total > 0 ? (double)r->bytes / (double)r->total : 0;
    const double eta = frac > 0 ? dt * (1 - frac) / frac : 0;
    fprintf(stderr, "convert: %s: %.0f of %.0f MB (%.0f%%), %.0f rows, %.0f rows/s, ETA %d:%02d\n",
            r->path, mb, r->total / 1048576.0, 100 * frac, rows, dt > 0 ? rows / dt : 0,
            (int)(eta / 60), (int)eta % 60);
}

static int line_err(char* err, const reader* r, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int line_err(char* err, const reader* r, const char* fmt, ...) {
    int n = snprintf(err, DS_ERRLEN, "%s:%lld: ", r->path, (long long)r->no);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < DS_ERRLEN) vsnprintf(err + n, DS_ERRLEN - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

// Next non-blank line without its line ending: 1, 0 at the end, -1 on error.
static int next_line(reader* r, char* err) {
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->line, &r->cap, r->fp);
        if (n < 0) {
            if (ferror(r->fp)) return ds_err(err, "%s: read error: %s", r->path, strerror(errno));
            return 0;
        }
        r->no++;
        r->bytes += n;
        if (r->progress && (r->no & 4095) == 0) report(r, 0);
        while (n > 0 && (r->line[n - 1] == '\n' || r->line[n - 1] == '\r')) r->line[--n] = 0;
        if (r->no == 1 && n >= 3 && !memcmp(r->line, "\xEF\xBB\xBF", 3)) {  // UTF-8 BOM
            memmove(r->line, r->line + 3, (size_t)n - 2);
            n -= 3;
        }
        if ((size_t)n != strlen(r->line)) return line_err(err, r, "contains a NUL byte");
        const char* p = r->line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p) return 1;
    }
}

static char* trim(char* s) {
    while (*s == ' ') s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ') s[--n] = 0;
    return s;
}

// Splits s in place at every `sep`; returns the number of fields (the first
// MAX_FIELDS are stored, trimmed of spaces).
static int split(char* s, const char* sep, char** f) {
    size_t sl = strlen(sep);
    int n = 0;
    for (;;) {
        char* e = strstr(s, sep);
        if (e) *e = 0;
        if (n < MAX_FIELDS) f[n] = trim(s);
        n++;
        if (!e) return n;
        s = e + sl;
    }
}

// Splits at runs of spaces and tabs (the sequence format).
static int split_ws(char* s, char*** f, int* cap) {
    int n = 0;
    for (char* p = strtok(s, " \t"); p; p = strtok(NULL, " \t")) {
        if (n == *cap) {
            int c = *cap ? 2 * *cap : 256;
            char** q = realloc(*f, (size_t)c * sizeof *q);
            if (!q) return -1;
            *f = q;
            *cap = c;
        }
        (*f)[n++] = p;
    }
    return n;
}

// 0: a finite number; -1: not a number; -2: outside double's range.
static int parse_number(const char* s, double* v) {
    char* end;
    if (!*s) return -1;
    errno = 0;
    *v = strtod(s, &end);
    if (*end || isnan(*v)) return -1;
    if (errno == ERANGE) return -2;
    return isfinite(*v) ? 0 : -1;  // "inf" is written out, not an overflow
}

// A timestamp as int64: integers exactly (strtod would round those past
// 2^53), other numbers rounded with the remainder in *frac. 0, -1 or -2 as
// parse_number; -2 also for anything outside int64.
static int parse_timestamp(const char* s, int64_t* v, double* frac) {
    const char* d = s + (*s == '-' || *s == '+');
    *frac = 0;
    if (*d && strspn(d, "0123456789") == strlen(d)) {
        errno = 0;
        long long x = strtoll(s, NULL, 10);
        if (errno == ERANGE) return -2;
        *v = x;
        return 0;
    }
    double x;
    int rc = parse_number(s, &x);
    if (rc < 0) return rc;
    const double two63 = 9223372036854775808.0;  // doubles in [-2^63, 2^63) fit int64
    if (!(x >= -two63 && x < two63)) return -2;
    double r = round(x);  // a double below 2^63 rounds to one below 2^63 too
    *v = (int64_t)r;
    *frac = x - r;
    return 0;
}

static const char* sep_name(const char* sep) {
    if (!strcmp(sep, ",")) return "comma-separated";
    if (!strcmp(sep, "\t")) return "tab-separated";
    if (!strcmp(sep, ";")) return "semicolon-separated";
    if (!strcmp(sep, " ")) return "space-separated";
    if (!strcmp(sep, "::")) return "'::'-separated";
    return "separated";
}

static int add_row(conv_table* t, const reader* r, const char* user, const char* item, int64_t ts,
                   double frac, float rating, char* err) {
    if (!*user) return line_err(err, r, "empty user id");
    if (!*item) return line_err(err, r, "empty item id");
    if (t->n == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 65536;
        int32_t* u = realloc(t->user, (size_t)cap * sizeof *u);
        if (u) t->user = u;
        int32_t* i = realloc(t->item, (size_t)cap * sizeof *i);
        if (i) t->item = i;
        int64_t* s = t->has_ts ? realloc(t->ts, (size_t)cap * sizeof *s) : NULL;
        if (s) t->ts = s;
        float* fr = t->ts_frac ? realloc(t->ts_frac, (size_t)cap * sizeof *fr) : NULL;
        if (fr) t->ts_frac = fr;
        float* g = t->has_rating ? realloc(t->rating, (size_t)cap * sizeof *g) : NULL;
        if (g) t->rating = g;
        if (!u || !i || (t->has_ts && !s) || (t->ts_frac && !fr) || (t->has_rating && !g))
            return ds_err(err, "%s: out of memory after %lld rows", r->path, (long long)t->n);
        t->cap = cap;
    }
    int64_t ui = strtab_intern(&t->users, user, strlen(user));
    int64_t ii = strtab_intern(&t->items, item, strlen(item));
    if (ui < 0 || ii < 0)
        return ds_err(err, "%s: out of memory after %lld rows", r->path, (long long)t->n);
    if (ui >= INT32_MAX || ii >= INT32_MAX)
        return line_err(err, r, "more than %d distinct users or items", INT32_MAX - 1);
    if (frac != 0 && !t->ts_frac) {  // rows so far were integral
        if (!(t->ts_frac = calloc((size_t)t->cap, sizeof *t->ts_frac)))
            return ds_err(err, "%s: out of memory after %lld rows", r->path, (long long)t->n);
    }
    t->user[t->n] = (int32_t)ui;
    t->item[t->n] = (int32_t)ii;
    if (t->has_ts) t->ts[t->n] = ts;
    if (t->ts_frac) t->ts_frac[t->n] = (float)frac;
    if (t->has_rating) t->rating[t->n] = rating;
    t->n++;
    return 0;
}

// One delimited data line -> one row, with the columns in c.
static int read_fields(conv_table* t, reader* r, const char* sep, const columns* c, char* err) {
    char* f[MAX_FIELDS];
    int n = split(r->line, sep, f);
    if (n != c->nf)
        return line_err(err, r, "expected %d %s fields, got %d", c->nf, sep_name(sep), n);
    int64_t ts = 0;
    double frac = 0, rating = 0;
    int rc = c->ts >= 0 ? parse_timestamp(f[c->ts], &ts, &frac) : 0;
    if (rc == -1) return line_err(err, r, "timestamp '%s' is not a number", f[c->ts]);
    if (rc == -2)
        return line_err(err, r,
                        "timestamp '%s' is out of range (it must fit a signed 64-bit integer)",
                        f[c->ts]);
    rc = c->rating >= 0 ? parse_number(f[c->rating], &rating) : 0;
    if (rc == -1) return line_err(err, r, "rating '%s' is not a number", f[c->rating]);
    if (rc == -2 || fabs(rating) > FLT_MAX)
        return line_err(err, r, "rating '%s' is out of range (it must fit a 32-bit float)",
                        f[c->rating]);
    return add_row(t, r, f[c->user], f[c->item], ts, frac, (float)rating, err);
}

// Column name without a RecBole ":type" suffix, compared case-insensitively.
static int name_is(const char* field, const char* const* names) {
    size_t n = strcspn(field, ":");
    for (; *names; names++)
        if (strlen(*names) == n && strncasecmp(field, *names, n) == 0) return 1;
    return 0;
}

static const char* const USER_NAMES[] = {"user", "user_id", "userid", "uid", NULL};
static const char* const ITEM_NAMES[] = {"item",     "item_id", "itemid", "movieid",
                                         "movie_id", "iid",     NULL};
static const char* const TS_NAMES[] = {"timestamp", "time", "ts", NULL};
static const char* const RATING_NAMES[] = {"rating", "score", NULL};

// Finds columns by name in a header; returns how many of user/item were found.
static int header_columns(char** f, int n, columns* c) {
    c->user = c->item = c->ts = c->rating = -1;
    c->nf = n;
    for (int i = 0; i < n && i < MAX_FIELDS; i++) {
        if (c->user < 0 && name_is(f[i], USER_NAMES))
            c->user = i;
        else if (c->item < 0 && name_is(f[i], ITEM_NAMES))
            c->item = i;
        else if (c->ts < 0 && name_is(f[i], TS_NAMES))
            c->ts = i;
        else if (c->rating < 0 && name_is(f[i], RATING_NAMES))
            c->rating = i;
    }
    return (c->user >= 0) + (c->item >= 0);
}

static int read_movielens_csv(conv_table* t, reader* r, char* err) {
    char* f[MAX_FIELDS];
    int rc = next_line(r, err);
    if (rc <= 0) return rc < 0 ? -1 : ds_err(err, "%s: empty file", r->path);
    columns c;
    int n = split(r->line, ",", f);
    static const char *const ML_USER[] = {"userId", NULL}, *const ML_ITEM[] = {"movieId", NULL};
    c.nf = n;
    c.user = c.item = c.ts = c.rating = -1;
    for (int i = 0; i < n && i < MAX_FIELDS; i++) {
        if (name_is(f[i], ML_USER))
            c.user = i;
        else if (name_is(f[i], ML_ITEM))
            c.item = i;
        else if (name_is(f[i], TS_NAMES))
            c.ts = i;
        else if (name_is(f[i], RATING_NAMES))
            c.rating = i;
    }
    if (c.user < 0 || c.item < 0 || c.ts < 0 || c.rating < 0 || n > MAX_FIELDS)
        return line_err(err, r, "expected the MovieLens header userId,movieId,rating,timestamp");
    t->has_ts = t->has_rating = 1;
    while ((rc = next_line(r, err)) > 0)
        if (read_fields(t, r, ",", &c, err) < 0) return -1;
    return rc;
}

static int read_movielens_dat(conv_table* t, reader* r, char* err) {
    columns c = {.user = 0, .item = 1, .rating = 2, .ts = 3, .nf = 4};
    int rc;
    t->has_ts = t->has_rating = 1;
    while ((rc = next_line(r, err)) > 0)
        if (read_fields(t, r, "::", &c, err) < 0) return -1;
    return rc;
}

static int read_recbole(conv_table* t, reader* r, char* err) {
    char* f[MAX_FIELDS];
    int rc = next_line(r, err);
    if (rc <= 0) return rc < 0 ? -1 : ds_err(err, "%s: empty file", r->path);
    columns c;
    int n = split(r->line, "\t", f);
    static const char *const U[] = {"user_id", NULL}, *const I[] = {"item_id", NULL},
                             *const T[] = {"timestamp", NULL}, *const R[] = {"rating", NULL};
    c.nf = n;
    c.user = c.item = c.ts = c.rating = -1;
    for (int i = 0; i < n && i < MAX_FIELDS; i++) {
        if (name_is(f[i], U))
            c.user = i;
        else if (name_is(f[i], I))
            c.item = i;
        else if (name_is(f[i], T))
            c.ts = i;
        else if (name_is(f[i], R))
            c.rating = i;
    }
    if (c.user < 0 || c.item < 0 || n > MAX_FIELDS)
        return line_err(err, r,
                        "expected a RecBole header naming user_id and item_id columns "
                        "(tab-separated, e.g. user_id:token\\titem_id:token\\ttimestamp:float)");
    t->has_ts = c.ts >= 0;
    t->has_rating = c.rating >= 0;
    while ((rc = next_line(r, err)) > 0)
        if (read_fields(t, r, "\t", &c, err) < 0) return -1;
    return rc;
}

static int read_seq(conv_table* t, reader* r, char* err) {
    char** f = NULL;
    int cap = 0, rc;
    while ((rc = next_line(r, err)) > 0) {
        int n = split_ws(r->line, &f, &cap);
        if (n < 0) {
            rc = ds_err(err, "%s: out of memory", r->path);
            break;
        }
        if (n < 2) {
            rc = line_err(err, r, "expected a user id followed by at least one item, got %d field",
                          n);
            break;
        }
        for (int i = 1; i < n; i++)
            if (add_row(t, r, f[0], f[i], 0, 0, 0, err) < 0) {
                free(f);
                return -1;
            }
    }
    free(f);
    return rc;
}

static int read_csv(conv_table* t, reader* r, const conv_options* o, char* err) {
    char* f[MAX_FIELDS];
    int rc = next_line(r, err);
    if (rc <= 0) return rc < 0 ? -1 : ds_err(err, "%s: empty file", r->path);
    char sep[2] = {o->delimiter, 0};
    if (!sep[0]) sep[0] = strchr(r->line, '\t') ? '\t' : strchr(r->line, ',') ? ',' : ';';
    char* copy = strdup(r->line);
    if (!copy) return ds_err(err, "%s: out of memory", r->path);
    int n = split(copy, sep, f);
    columns c;
    int named = header_columns(f, n, &c);
    double v;
    int header = o->header;
    if (header < 0) header = named > 0 || (n >= 3 && parse_number(f[2], &v) == -1);
    free(copy);
    if (!header || named < 2) {
        if (n < 2 || (!header && n > 3))
            return line_err(err, r,
                            "expected 2 or 3 %s fields (user,item[,timestamp]), got %d; a "
                            "header line can name the columns instead",
                            sep_name(sep), n);
        c.user = 0;
        c.item = 1;
        c.ts = n >= 3 ? 2 : -1;
        c.rating = -1;
    }
    if (n > MAX_FIELDS) return line_err(err, r, "more than %d fields", MAX_FIELDS);
    t->has_ts = c.ts >= 0;
    t->has_rating = c.rating >= 0;
    if (!header && read_fields(t, r, sep, &c, err) < 0) return -1;
    while ((rc = next_line(r, err)) > 0)
        if (read_fields(t, r, sep, &c, err) < 0) return -1;
    return rc;
}

int conv_read(const char* path, const conv_options* o, conv_table* t, char* err) {
    memset(t, 0, sizeof *t);
    strtab_init(&t->users);
    strtab_init(&t->items);
    reader r = {.path = path, .rows = &t->n};
    if (!(r.fp = fopen(path, "r")))
        return ds_err(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    r.total = fstat(fileno(r.fp), &sb) ? 0 : (int64_t)sb.st_size;
    // on inputs of 64 MB or more (or always with progress 2)
    r.progress = o->progress > 1 || (o->progress == 1 && r.total >= (64 << 20));
    r.t0 = r.last = mono_s();
    int rc;
    switch (o->format) {
        case CONV_MOVIELENS_CSV:
            rc = read_movielens_csv(t, &r, err);
            break;
        case CONV_MOVIELENS_DAT:
            rc = read_movielens_dat(t, &r, err);
            break;
        case CONV_RECBOLE:
            rc = read_recbole(t, &r, err);
            break;
        case CONV_SEQ:
            rc = read_seq(t, &r, err);
            break;
        case CONV_CSV:
            rc = read_csv(t, &r, o, err);
            break;
        default:
            rc = ds_err(err, "%s: unknown format %d", path, (int)o->format);
    }
    if (rc >= 0 && r.progress) report(&r, 1);
    free(r.line);
    fclose(r.fp);
    if (rc == 0 && t->n == 0) rc = ds_err(err, "%s: no interactions found", path);
    return rc < 0 ? -1 : 0;
}

void conv_table_free(conv_table* t) {
    strtab_free(&t->users);
    strtab_free(&t->items);
    free(t->user);
    free(t->item);
    free(t->ts);
    free(t->ts_frac);
    free(t->rating);
    memset(t, 0, sizeof *t);
}
