// ids.c: a dataset's ids looked up by value (ids.h).
#define _GNU_SOURCE  // qsort_r
#include "ids.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ds_ids {
    char** ids;  // NULL: the numbers first..first+n-1
    int64_t* order;
    int64_t n, first;
};

static int by_id(const void* a, const void* b, void* ids) {
    char** s = ids;
    return strcmp(s[*(const int64_t*)a], s[*(const int64_t*)b]);
}

ds_ids* ds_ids_open(ds_file* f, int users, char* err) {
    ds_ids* x = calloc(1, sizeof *x);
    if (!x) {
        snprintf(err, 512, "%s: out of memory for its ids", ds_path(f));
        return NULL;
    }
    x->n = users ? ds_n_users(f) : ds_n_items(f);
    x->first = users ? 0 : 1;
    if ((users ? ds_user_ids(f, &x->ids, err) : ds_item_ids(f, &x->ids, err))) {
        free(x);
        return NULL;
    }
    if (!x->ids) return x;
    if (!(x->order = malloc((size_t)(x->n ? x->n : 1) * sizeof *x->order))) {
        snprintf(err, 512, "%s: out of memory for its ids", ds_path(f));
        ds_ids_close(x);
        return NULL;
    }
    for (int64_t i = 0; i < x->n; i++) x->order[i] = i;
    qsort_r(x->order, (size_t)x->n, sizeof *x->order, by_id, x->ids);
    return x;
}

int64_t ds_ids_find(const ds_ids* x, const char* id) {
    if (!x->ids) {
        char* end;
        errno = 0;
        const long long v = strtoll(id, &end, 10);
        return errno || end == id || *end || v < x->first || v >= x->first + x->n ? -1 : v;
    }
    for (int64_t lo = 0, hi = x->n; lo < hi;) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(x->ids[x->order[mid]], id);
        if (!c) return x->order[mid] + x->first;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

const char* ds_ids_name(const ds_ids* x, int64_t i, char* buf, size_t n) {
    if (x->ids) return x->ids[i - x->first];
    snprintf(buf, n, "%lld", (long long)i);
    return buf;
}

void ds_ids_close(ds_ids* x) {
    if (!x) return;
    free(x->ids), free(x->order), free(x);
}
