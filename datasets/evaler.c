// evaler.c: evaluation batches, one row per user of this rank (loader.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "loader.h"

struct evaler {
    ds_file* f;
    int L, batch, rank, world;
    split_kind split;
    int64_t limit;  // users 0..limit-1 are evaluated (or list[0..limit-1])
    int64_t next;   // next user (list position) of this rank
    int64_t* list;  // evaler_only's users, or NULL
    int64_t hist_cap;
    eval_batch b;
};

evaler* evaler_open(const char* path, int L, int rows, split_kind split, int rank, int world,
                    int64_t max_users, char* err) {
    err[0] = 0;
    if (L < 1 || rows < 1 || world < 1 || rank < 0 || rank >= world ||
        (split != SPLIT_VALID && split != SPLIT_TEST && split != SPLIT_ALL)) {
        ds_err(err, "%s: bad evaluation config L=%d batch=%d rank=%d world=%d split=%d", path, L,
               rows, rank, world, (int)split);
        return NULL;
    }
    evaler* ev = calloc(1, sizeof *ev);
    if (!ev) {
        ds_err(err, "%s: out of memory", path);
        return NULL;
    }
    if (!(ev->f = ds_open(path, err))) {
        free(ev);
        return NULL;
    }
    ev->L = L;
    ev->batch = rows;
    ev->rank = rank;
    ev->world = world;
    ev->split = split;
    int64_t nu = ds_n_users(ev->f);
    ev->limit = max_users > 0 && max_users < nu ? max_users : nu;
    ev->next = rank;
    ev->hist_cap = (int64_t)rows * L;
    ev->b.L = L;
    size_t nb = (size_t)rows;
    if (!(ev->b.inputs = malloc(nb * (size_t)L * sizeof(int32_t))) ||
        !(ev->b.pad = malloc(nb * sizeof(int32_t))) ||
        !(ev->b.target = malloc(nb * sizeof(int32_t))) ||
        !(ev->b.user = malloc(nb * sizeof(int64_t))) ||
        !(ev->b.hist_off = malloc((nb + 1) * sizeof(int64_t))) ||
        !(ev->b.hist = malloc((size_t)ev->hist_cap * sizeof(int32_t)))) {
        ds_err(err, "%s: out of memory", path);
        evaler_close(ev);
        return NULL;
    }
    return ev;
}

int evaler_only(evaler* ev, const int64_t* users, int64_t n, char* err) {
    const int64_t nu = ds_n_users(ev->f);
    for (int64_t i = 0; i < n; i++)
        if (users[i] < 0 || users[i] >= nu) {
            ds_err(err, "%s: user %lld out of range (%lld users)", ds_path(ev->f),
                   (long long)users[i], (long long)nu);
            return -1;
        }
    int64_t* list = malloc((size_t)(n ? n : 1) * sizeof *list);
    if (!list) {
        ds_err(err, "%s: out of memory", ds_path(ev->f));
        return -1;
    }
    memcpy(list, users, (size_t)n * sizeof *list);
    free(ev->list);
    ev->list = list, ev->limit = n, ev->next = ev->rank;
    return 0;
}

void evaler_close(evaler* ev) {
    if (!ev) return;
    free(ev->list);
    free(ev->b.inputs);
    free(ev->b.pad);
    free(ev->b.target);
    free(ev->b.user);
    free(ev->b.hist_off);
    free(ev->b.hist);
    ds_close(ev->f);
    free(ev);
}

void evaler_rewind(evaler* ev) { ev->next = ev->rank; }

int64_t evaler_rounds(const evaler* ev) {
    const int64_t most = (ev->limit + ev->world - 1) / ev->world;  // rank 0's users
    return (most + ev->batch - 1) / ev->batch;
}

const eval_batch* evaler_next(evaler* ev, char* err) {
    err[0] = 0;
    eval_batch* b = &ev->b;
    int L = ev->L;
    b->B = 0;
    b->hist_off[0] = 0;
    while (b->B < ev->batch && ev->next < ev->limit) {
        int64_t u = ev->list ? ev->list[ev->next] : ev->next;
        int64_t n = ds_user_len(ev->f, u);
        // the history before the target (all of it for SPLIT_ALL, which has none)
        const int has_target = ev->split != SPLIT_ALL;
        int64_t h = ev->split == SPLIT_VALID ? n - 2 : ev->split == SPLIT_TEST ? n - 1 : n;
        int64_t at = b->hist_off[b->B];
        if (at + h + 1 > ev->hist_cap) {
            int64_t cap = 2 * ev->hist_cap > at + h + 1 ? 2 * ev->hist_cap : at + h + 1;
            int32_t* p = realloc(b->hist, (size_t)cap * sizeof *p);
            if (!p) {
                ds_err(err, "%s: out of memory for evaluation histories", ds_path(ev->f));
                return NULL;
            }
            b->hist = p;
            ev->hist_cap = cap;
        }
        // History and target in one read; the target is then dropped from hist.
        if (ds_read_user(ev->f, u, 0, h + has_target, b->hist + at, err) < 0) return NULL;
        int r = b->B;
        b->target[r] = has_target ? b->hist[at + h] : 0;
        b->user[r] = u;
        int keep = h < L ? (int)h : L;
        int pad = L - keep;
        int32_t* row = b->inputs + (size_t)r * L;
        memset(row, 0, (size_t)pad * sizeof *row);
        memcpy(row + pad, b->hist + at + h - keep, (size_t)keep * sizeof *row);
        b->pad[r] = pad;
        b->hist_off[r + 1] = at + h;
        b->B++;
        ev->next += ev->world;
    }
    return b->B > 0 ? b : NULL;
}
