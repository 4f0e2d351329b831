// convert.c: the one conversion pipeline (convert.h): filter, k-core, drop
// short users, order, remap, write.
#include "convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_table.h"
#include "dataset.h"
#include "h5util.h"
#include "outpath.h"

#define MIN_LEN 3  // train + validation + test target

static const char* const FORMAT_NAMES[] = {"movielens-csv", "movielens-dat", "recbole", "seq",
                                           "csv"};

int conv_format_parse(const char* name, conv_format* f) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, FORMAT_NAMES[i])) {
            *f = (conv_format)i;
            return 0;
        }
    return -1;
}

const char* conv_format_name(conv_format f) {
    return (unsigned)f < 5 ? FORMAT_NAMES[f] : "unknown";
}

// Per-user and per-item counts of alive rows.
static void count_alive(const conv_table* t, const uint8_t* alive, int64_t* uc, int64_t* ic) {
    memset(uc, 0, (size_t)t->users.n * sizeof *uc);
    memset(ic, 0, (size_t)t->items.n * sizeof *ic);
    for (int64_t r = 0; r < t->n; r++)
        if (alive[r]) {
            uc[t->user[r]]++;
            ic[t->item[r]]++;
        }
}

static void kcore(const conv_table* t, uint8_t* alive, int k, int64_t* uc, int64_t* ic,
                  conv_stats* st) {
    for (;;) {
        count_alive(t, alive, uc, ic);
        int64_t dropped = 0;
        for (int64_t r = 0; r < t->n; r++)
            if (alive[r] && (uc[t->user[r]] < k || ic[t->item[r]] < k)) {
                alive[r] = 0;
                dropped++;
            }
        if (!dropped) return;
        st->kcore_dropped += dropped;
        st->kcore_rounds++;
    }
}

// Rows sort by user, then timestamp (the exact value: ts, then its
// fraction), then row number: files without timestamps keep their order.
typedef struct {
    int64_t ts;
    int64_t row;
    int32_t user;
    float frac;
} sort_key;

static int cmp_key(const void* a, const void* b) {
    const sort_key *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->frac != y->frac) return x->frac < y->frac ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

typedef struct {
    int32_t item;
    int64_t row;
} item_row;

static int cmp_item_row(const void* a, const void* b) {
    const item_row *x = a, *y = b;
    if (x->item != y->item) return x->item < y->item ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

// Counts the rows that repeat an earlier row's (user, item, timestamp): in
// keys (sorted) such rows share a run of equal (user, timestamp); within a
// run, sorted by (item, row), each copy follows the first. With drop, the
// copies (not the first row in the file) are marked dead in alive.
static int64_t duplicates(const conv_table* t, const sort_key* keys, int64_t n, int drop,
                          uint8_t* alive, const char* input, char* err) {
    item_row* run = NULL;
    int64_t cap = 0, found = 0;
    for (int64_t a = 0, b; a < n; a = b) {
        for (b = a + 1; b < n && keys[b].user == keys[a].user && keys[b].ts == keys[a].ts &&
                        keys[b].frac == keys[a].frac;
             b++) {
        }
        if (b - a < 2) continue;
        if (b - a > cap) {
            item_row* r = realloc(run, (size_t)(b - a) * sizeof *r);
            if (!r) {
                free(run);
                return ds_err(err, "%s: out of memory looking for duplicate rows", input);
            }
            run = r;
            cap = b - a;
        }
        for (int64_t j = a; j < b; j++) run[j - a] = (item_row){t->item[keys[j].row], keys[j].row};
        qsort(run, (size_t)(b - a), sizeof *run, cmp_item_row);
        for (int64_t j = 1; j < b - a; j++)
            if (run[j].item == run[j - 1].item) {
                found++;
                if (drop) alive[run[j].row] = 0;
            }
    }
    free(run);
    return found;
}

static const char* base_name(const char* p) {
    const char* s = strrchr(p, '/');
    return s ? s + 1 : p;
}

// Remaps and writes the alive rows of t, in the order of keys[n_keys].
static int write_table(const conv_table* t, const sort_key* keys, int64_t n_keys,
                       const uint8_t* alive, const char* input, const char* output,
                       const conv_options* o, conv_stats* st, char* err) {
    int rc = -1;
    int64_t n = 0;
    for (int64_t r = 0; r < t->n; r++) n += alive[r];
    int32_t* items = malloc((size_t)(n ? n : 1) * sizeof *items);
    int64_t* times = t->has_ts ? malloc((size_t)(n ? n : 1) * sizeof *times) : NULL;
    int32_t* new_item = calloc((size_t)t->items.n, sizeof *new_item);
    const char** item_ids = malloc((size_t)t->items.n * sizeof *item_ids);
    const char** user_ids = malloc((size_t)t->users.n * sizeof *user_ids);
    int64_t* offsets = malloc((size_t)(t->users.n + 1) * sizeof *offsets);
    if (!items || (t->has_ts && !times) || !new_item || !item_ids || !user_ids || !offsets) {
        ds_err(err, "%s: out of memory ordering %lld interactions", input, (long long)n);
        goto done;
    }
    int64_t n_users = 0, n_items = 0, j = 0, last_user = -1;
    offsets[0] = 0;
    for (int64_t k = 0; k < n_keys; k++) {
        const sort_key* q = &keys[k];
        if (!alive[q->row]) continue;
        if (q->user != last_user) {
            user_ids[n_users] = t->users.s[q->user];
            n_users++;
            last_user = q->user;
        }
        offsets[n_users] = j + 1;
        int32_t it = t->item[q->row];
        if (!new_item[it]) {
            item_ids[n_items] = t->items.s[it];
            new_item[it] = (int32_t)++n_items;
        }
        items[j] = new_item[it];
        if (times) times[j] = q->ts;
        j++;
    }
    if (n_users == 0) {
        ds_err(err,
               "%s: no users left after filtering (%lld rows read, %lld below min rating, "
               "%lld removed by k-core, %lld in users with fewer than %d items)",
               input, (long long)t->n, (long long)st->rating_dropped, (long long)st->kcore_dropped,
               (long long)st->short_rows, MIN_LEN);
        goto done;
    }
    char source[512], filter[160], rating[32] = "none";
    snprintf(source, sizeof source, "%s:%s", conv_format_name(o->format), base_name(input));
    if (o->use_min_rating) snprintf(rating, sizeof rating, "%g", o->min_rating);
    snprintf(filter, sizeof filter, "min_rating=%s kcore=%d min_len=%d duplicates=%s", rating,
             o->kcore, MIN_LEN,
             !t->has_ts           ? "unchecked"
             : o->keep_duplicates ? "keep"
                                  : "drop");
    ds_contents c = {.items = items,
                     .offsets = offsets,
                     .timestamps = times,
                     .item_ids = item_ids,
                     .user_ids = user_ids,
                     .n_users = n_users,
                     .n_items = n_items,
                     .source = source,
                     .filter = filter};
    if (ds_write(output, &c, err) < 0) goto done;
    st->users = n_users;
    st->items = n_items;
    st->interactions = n;
    st->has_timestamps = t->has_ts;
    rc = 0;
done:
    free(items);
    free(times);
    free(new_item);
    free(item_ids);
    free(user_ids);
    free(offsets);
    return rc;
}

int convert_file(const char* input, const char* output, const conv_options* o, conv_stats* st,
                 char* err) {
    conv_stats local;
    if (!st) st = &local;
    memset(st, 0, sizeof *st);
    err[0] = 0;
    if (o->kcore < 0) return ds_err(err, "%s: k-core %d < 0", input, o->kcore);
    if (out_is_input(input, output, err) < 0) return -1;
    conv_table t;
    if (conv_read(input, o, &t, err) < 0) {
        conv_table_free(&t);
        return -1;
    }
    st->rows = t.n;
    int rc = -1;
    uint8_t* alive = malloc((size_t)t.n);
    int64_t* uc = malloc((size_t)t.users.n * sizeof *uc);
    int64_t* ic = malloc((size_t)t.items.n * sizeof *ic);
    sort_key* keys = malloc((size_t)t.n * sizeof *keys);
    if (!alive || !uc || !ic || !keys) {
        ds_err(err, "%s: out of memory for %lld rows", input, (long long)t.n);
        goto done;
    }
    memset(alive, 1, (size_t)t.n);
    if (o->use_min_rating) {
        if (!t.has_rating) {
            ds_err(err, "%s: --min-rating needs a rating column, and this %s file has none", input,
                   conv_format_name(o->format));
            goto done;
        }
        for (int64_t r = 0; r < t.n; r++)
            if (t.rating[r] < o->min_rating) {
                alive[r] = 0;
                st->rating_dropped++;
            }
    }
    int64_t n_keys = 0;
    for (int64_t r = 0; r < t.n; r++)
        if (alive[r])
            keys[n_keys++] =
                (sort_key){t.has_ts ? t.ts[r] : 0, r, t.user[r], t.ts_frac ? t.ts_frac[r] : 0};
    qsort(keys, (size_t)n_keys, sizeof *keys, cmp_key);
    // Without timestamps a repeated (user, item) is a repeat in time, kept.
    if (t.has_ts) {
        st->duplicates = duplicates(&t, keys, n_keys, !o->keep_duplicates, alive, input, err);
        if (st->duplicates < 0) goto done;
        st->duplicates_dropped = o->keep_duplicates ? 0 : st->duplicates;
    }
    if (o->kcore > 0) kcore(&t, alive, o->kcore, uc, ic, st);
    count_alive(&t, alive, uc, ic);
    for (int64_t u = 0; u < t.users.n; u++)
        if (uc[u] > 0 && uc[u] < MIN_LEN) {
            st->short_users++;
            st->short_rows += uc[u];
        }
    for (int64_t r = 0; r < t.n; r++)
        if (alive[r] && uc[t.user[r]] < MIN_LEN) alive[r] = 0;
    rc = write_table(&t, keys, n_keys, alive, input, output, o, st, err);
done:
    free(keys);
    free(alive);
    free(uc);
    free(ic);
    conv_table_free(&t);
    return rc;
}
