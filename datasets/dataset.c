// dataset.c: opening, validating and reading the HDF5 dataset layout
// (dataset.h). Only /offsets is held in memory; /items is read by hyperslab.
#include "dataset.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fingerprint.h"
#include "h5util.h"

// Chunk cache per dataset, at most 32 MiB. HDF5 evicts in two ways: a slot
// collision drops one chunk, a full cache walks its whole LRU list. With
// fewer slots than fit in the bytes, only the cheap one happens (measured:
// 20 us per random window read vs 70-100 us once the walk kicks in).
#define CACHE_BYTES (32u << 20)
#define SCAN_BLOCK (1 << 20)

struct ds_file {
    char* path;
    hid_t file, items, times, items_space, times_space;
    int64_t n_users, n_items, n_inter;
    int64_t* offsets;  // [n_users+1]
    int has_user_ids, has_item_ids;
    uint64_t fingerprint;
    int fingerprint_stored;
    char* source;
    char* filter;
};

// HDF5 is thread-safe on Debian, but one dataspace is shared by all reads.
static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

// Checks that /name is a 1-D integer dataset of `bytes`-wide elements and
// returns its length.
static int check_int_dataset(ds_file* f, hid_t d, const char* name, size_t bytes, int64_t* len,
                             char* err) {
    hid_t type = -1, space = -1;
    hsize_t dims[1];
    const char* path = f->path;
    h5Check(type = H5Dget_type(d), path, name);
    h5Check(space = H5Dget_space(d), path, name);
    if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != bytes ||
        H5Tget_sign(type) != H5T_SGN_2) {
        ds_err(err, "%s: /%s has the wrong type (want a %zu-bit signed integer)", path, name,
               bytes * 8);
        goto fail;
    }
    if (H5Sget_simple_extent_ndims(space) != 1) {
        ds_err(err, "%s: /%s is not one-dimensional", path, name);
        goto fail;
    }
    h5Check(H5Sget_simple_extent_dims(space, dims, NULL), path, name);
    *len = (int64_t)dims[0];
    H5Sclose(space);
    H5Tclose(type);
    return 0;
fail:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return -1;
}

static int open_dataset(ds_file* f, const char* name, int required, hid_t* d, char* err) {
    hid_t dapl = -1, dcpl = -1, type = -1;
    htri_t ex;
    const char* path = f->path;
    *d = -1;
    h5Check(ex = H5Lexists(f->file, name, H5P_DEFAULT), path, name);
    if (!ex) return required ? ds_err(err, "%s: dataset /%s is missing", path, name) : 0;
    size_t slots = 521, chunk_bytes = 0;
    h5Check(*d = H5Dopen2(f->file, name, H5P_DEFAULT), path, name);
    h5Check(dcpl = H5Dget_create_plist(*d), path, name);
    h5Check(type = H5Dget_type(*d), path, name);
    if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t chunk[H5S_MAX_RANK];
        int rank;
        h5Check(rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk), path, name);
        chunk_bytes = H5Tget_size(type);
        for (int i = 0; i < rank; i++) chunk_bytes *= chunk[i];
    }
    if (chunk_bytes > 0) slots = (CACHE_BYTES / chunk_bytes) | 1;  // odd, <= bytes/chunk
    if (slots > 2) slots -= 2;
    H5Tclose(type);
    H5Pclose(dcpl);
    type = dcpl = -1;
    H5Dclose(*d);
    *d = -1;
    h5Check(dapl = H5Pcreate(H5P_DATASET_ACCESS), path, name);
    h5Check(H5Pset_chunk_cache(dapl, slots, CACHE_BYTES, 1.0), path, name);
    h5Check(*d = H5Dopen2(f->file, name, dapl), path, name);
    H5Pclose(dapl);
    return 0;
fail:
    if (type >= 0) H5Tclose(type);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (dapl >= 0) H5Pclose(dapl);
    if (*d >= 0) H5Dclose(*d);
    *d = -1;
    return -1;
}

// "user 17 (original id 'abc')" or "user 17" into buf.
static void user_label(ds_file* f, int64_t u, char* buf, size_t cap) {
    char id[128], scratch[DS_ERRLEN];
    if (f->has_user_ids &&
        h5_read_string_at(f->file, "user_ids", u, id, sizeof id, f->path, scratch) == 0)
        snprintf(buf, cap, "user %lld (original id '%s')", (long long)u, id);
    else
        snprintf(buf, cap, "user %lld", (long long)u);
}

static int read_offsets(ds_file* f, hid_t d, char* err) {
    const char* path = f->path;
    int64_t n;
    if (check_int_dataset(f, d, "offsets", 8, &n, err) < 0) return -1;
    if (n != f->n_users + 1)
        return ds_err(err, "%s: /offsets has %lld entries, expected n_users+1 = %lld", path,
                      (long long)n, (long long)(f->n_users + 1));
    if (!(f->offsets = malloc((size_t)n * sizeof(int64_t))))
        return ds_err(err, "%s: out of memory for %lld offsets", path, (long long)n);
    h5Check(H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, f->offsets), path,
            "read /offsets");
    if (f->offsets[0] != 0)
        return ds_err(err, "%s: /offsets[0] is %lld, not 0", path, (long long)f->offsets[0]);
    for (int64_t u = 0; u < f->n_users; u++) {
        int64_t len = f->offsets[u + 1] - f->offsets[u];
        if (len < 0)
            return ds_err(err, "%s: /offsets is not monotone at user %lld (%lld then %lld)", path,
                          (long long)u, (long long)f->offsets[u], (long long)f->offsets[u + 1]);
    }
    if (f->offsets[f->n_users] != f->n_inter)
        return ds_err(err, "%s: /offsets ends at %lld but /items has %lld entries", path,
                      (long long)f->offsets[f->n_users], (long long)f->n_inter);
    for (int64_t u = 0; u < f->n_users; u++) {
        int64_t len = f->offsets[u + 1] - f->offsets[u];
        if (len < 3) {
            char who[256];
            user_label(f, u, who, sizeof who);
            return ds_err(err,
                          "%s: %s has %lld items; every user needs at least 3 (train, "
                          "validation, test)",
                          path, who, (long long)len);
        }
    }
    return 0;
fail:
    return -1;
}

static int check_ids(ds_file* f, const char* name, int64_t want, int* has, char* err) {
    hid_t d = -1, type = -1, space = -1;
    hsize_t dims[1];
    htri_t ex;
    const char* path = f->path;
    *has = 0;
    h5Check(ex = H5Lexists(f->file, name, H5P_DEFAULT), path, name);
    if (!ex) return 0;
    h5Check(d = H5Dopen2(f->file, name, H5P_DEFAULT), path, name);
    h5Check(type = H5Dget_type(d), path, name);
    h5Check(space = H5Dget_space(d), path, name);
    if (H5Tget_class(type) != H5T_STRING || H5Sget_simple_extent_ndims(space) != 1) {
        ds_err(err, "%s: /%s is not a 1-D string dataset", path, name);
        goto fail;
    }
    h5Check(H5Sget_simple_extent_dims(space, dims, NULL), path, name);
    if ((int64_t)dims[0] != want) {
        ds_err(err, "%s: /%s has %llu entries, expected %lld", path, name,
               (unsigned long long)dims[0], (long long)want);
        goto fail;
    }
    *has = 1;
    H5Sclose(space);
    H5Tclose(type);
    H5Dclose(d);
    return 0;
fail:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (d >= 0) H5Dclose(d);
    return -1;
}

ds_file* ds_open(const char* path, char* err) {
    h5_quiet();
    err[0] = 0;
    hid_t offs = -1;
    int32_t version;
    int64_t n;
    ds_file* f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        ds_err(err, "%s: out of memory", path);
        free(f);
        return NULL;
    }
    f->file = f->items = f->times = f->items_space = f->times_space = -1;
    FILE* probe = fopen(path, "rb");
    if (!probe) {
        ds_err(err, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    fclose(probe);
    h5Check(f->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), path,
            "cannot open as an HDF5 file");
    tryCheck(h5_read_attr_i32(f->file, "format_version", &version, path, err));
    if (version != DS_FORMAT_VERSION) {
        ds_err(err, "%s: format_version %d, this build reads %d", path, version, DS_FORMAT_VERSION);
        goto fail;
    }
    tryCheck(h5_read_attr_i64(f->file, "n_users", &f->n_users, path, err));
    tryCheck(h5_read_attr_i64(f->file, "n_items", &f->n_items, path, err));
    if (f->n_users < 0 || f->n_items < 1 || f->n_items > INT32_MAX) {
        ds_err(err, "%s: bad attributes n_users=%lld n_items=%lld (need n_items >= 1)", path,
               (long long)f->n_users, (long long)f->n_items);
        goto fail;
    }
    tryCheck(h5_read_attr_str(f->file, "source", &f->source, path, err));
    tryCheck(h5_read_attr_str(f->file, "filter", &f->filter, path, err));
    tryCheck(open_dataset(f, "items", 1, &f->items, err));
    tryCheck(check_int_dataset(f, f->items, "items", 4, &f->n_inter, err));
    h5Check(f->items_space = H5Dget_space(f->items), path, "items");
    tryCheck(check_ids(f, "user_ids", f->n_users, &f->has_user_ids, err));
    tryCheck(check_ids(f, "item_ids", f->n_items, &f->has_item_ids, err));
    tryCheck(open_dataset(f, "offsets", 1, &offs, err));
    tryCheck(read_offsets(f, offs, err));
    H5Dclose(offs);
    offs = -1;
    h5Check(f->fingerprint_stored = H5Aexists(f->file, "fingerprint"), path, "fingerprint");
    if (f->fingerprint_stored)
        tryCheck(h5_read_attr_u64(f->file, "fingerprint", &f->fingerprint, path, err));
    else
        f->fingerprint = fp_combine(f->n_users, f->n_items, (uint64_t)f->n_inter,
                                    fnv1a_i64(FNV_OFFSET, f->offsets, f->n_users + 1));
    tryCheck(open_dataset(f, "timestamps", 0, &f->times, err));
    if (f->times >= 0) {
        tryCheck(check_int_dataset(f, f->times, "timestamps", 8, &n, err));
        if (n != f->n_inter) {
            ds_err(err, "%s: /timestamps has %lld entries, /items %lld", path, (long long)n,
                   (long long)f->n_inter);
            goto fail;
        }
        h5Check(f->times_space = H5Dget_space(f->times), path, "timestamps");
    }
    return f;
fail:
    if (offs >= 0) H5Dclose(offs);
    ds_close(f);
    return NULL;
}

void ds_close(ds_file* f) {
    if (!f) return;
    if (f->times_space >= 0) H5Sclose(f->times_space);
    if (f->items_space >= 0) H5Sclose(f->items_space);
    if (f->times >= 0) H5Dclose(f->times);
    if (f->items >= 0) H5Dclose(f->items);
    if (f->file >= 0) H5Fclose(f->file);
    free(f->offsets);
    free(f->source);
    free(f->filter);
    free(f->path);
    free(f);
}

const char* ds_path(const ds_file* f) { return f->path; }
int64_t ds_n_users(const ds_file* f) { return f->n_users; }
int64_t ds_n_items(const ds_file* f) { return f->n_items; }
int64_t ds_n_interactions(const ds_file* f) { return f->n_inter; }
int64_t ds_user_len(const ds_file* f, int64_t u) { return f->offsets[u + 1] - f->offsets[u]; }
int ds_has_timestamps(const ds_file* f) { return f->times >= 0; }
const char* ds_source(const ds_file* f) { return f->source; }
const char* ds_filter(const ds_file* f) { return f->filter; }
uint64_t ds_fingerprint(const ds_file* f) { return f->fingerprint; }
int ds_fingerprint_stored(const ds_file* f) { return f->fingerprint_stored; }

// Reads global positions [start, start+count) of /items or /timestamps;
// user >= 0 names the user in an error.
static int read_range(ds_file* f, hid_t d, hid_t space, hid_t memtype, const char* name,
                      int64_t user, int64_t start, int64_t count, void* out, char* err) {
    hid_t mspace = -1;
    hsize_t s[1] = {(hsize_t)start}, c[1] = {(hsize_t)count};
    char what[128];
    if (count == 0) return 0;
    if (user >= 0)
        snprintf(what, sizeof what, "user %lld: reading /%s[%lld:%lld]", (long long)user, name,
                 (long long)start, (long long)(start + count));
    else
        snprintf(what, sizeof what, "reading /%s[%lld:%lld]", name, (long long)start,
                 (long long)(start + count));
    h5Check(H5Sselect_hyperslab(space, H5S_SELECT_SET, s, NULL, c, NULL), f->path, what);
    h5Check(mspace = H5Screate_simple(1, c, NULL), f->path, what);
    h5Check(H5Dread(d, memtype, mspace, space, H5P_DEFAULT, out), f->path, what);
    H5Sclose(mspace);
    return 0;
fail:
    if (mspace >= 0) H5Sclose(mspace);
    return -1;
}

static int check_user_range(ds_file* f, int64_t user, int64_t start, int64_t count, char* err) {
    if (user < 0 || user >= f->n_users)
        return ds_err(err, "%s: user %lld outside 0..%lld", f->path, (long long)user,
                      (long long)f->n_users - 1);
    int64_t len = ds_user_len(f, user);
    if (start < 0 || count < 0 || start + count > len)
        return ds_err(err, "%s: user %lld: positions [%lld, %lld) outside its %lld items", f->path,
                      (long long)user, (long long)start, (long long)(start + count),
                      (long long)len);
    return 0;
}

int ds_read_user(ds_file* f, int64_t user, int64_t start, int64_t count, int32_t* out, char* err) {
    h5_quiet();
    if (check_user_range(f, user, start, count, err) < 0) return -1;
    pthread_mutex_lock(&h5_lock);
    int rc = read_range(f, f->items, f->items_space, H5T_NATIVE_INT32, "items", user,
                        f->offsets[user] + start, count, out, err);
    pthread_mutex_unlock(&h5_lock);
    if (rc < 0) return -1;
    for (int64_t j = 0; j < count; j++) {
        if (out[j] < 1 || out[j] > f->n_items) {
            char who[256];
            pthread_mutex_lock(&h5_lock);
            user_label(f, user, who, sizeof who);
            pthread_mutex_unlock(&h5_lock);
            return ds_err(err, "%s: %s: item %d at position %lld is outside 1..%lld", f->path, who,
                          out[j], (long long)(start + j), (long long)f->n_items);
        }
    }
    return 0;
}

int ds_read_timestamps(ds_file* f, int64_t user, int64_t start, int64_t count, int64_t* out,
                       char* err) {
    h5_quiet();
    if (f->times < 0) return ds_err(err, "%s: the file has no /timestamps", f->path);
    if (check_user_range(f, user, start, count, err) < 0) return -1;
    pthread_mutex_lock(&h5_lock);
    int rc = read_range(f, f->times, f->times_space, H5T_NATIVE_INT64, "timestamps", user,
                        f->offsets[user] + start, count, out, err);
    pthread_mutex_unlock(&h5_lock);
    return rc;
}

// What one pass over /items collects besides the range check; NULL: skip.
typedef struct {
    int holdout;
    int64_t* counts;      // [n_items+1]: the first len-holdout items of every user
    uint64_t* hash;       // FNV-1a of /items (fingerprint.h)
    ds_repeats* repeats;  // needs last
    int64_t* last;        // [n_items+1] scratch: last position of each item, -1 = none
} scan_opts;

// Streams /items in blocks and range-checks every item, collecting o.
static int scan_items(ds_file* f, scan_opts o, char* err) {
    int32_t* buf = malloc(SCAN_BLOCK * sizeof *buf);
    if (!buf) return ds_err(err, "%s: out of memory", f->path);
    int64_t u = 0;
    for (int64_t at = 0; at < f->n_inter; at += SCAN_BLOCK) {
        int64_t n = f->n_inter - at < SCAN_BLOCK ? f->n_inter - at : SCAN_BLOCK;
        pthread_mutex_lock(&h5_lock);
        int rc =
            read_range(f, f->items, f->items_space, H5T_NATIVE_INT32, "items", -1, at, n, buf, err);
        pthread_mutex_unlock(&h5_lock);
        if (rc < 0) {
            free(buf);
            return -1;
        }
        if (o.hash) *o.hash = fnv1a_i32(*o.hash, buf, n);
        for (int64_t j = 0; j < n; j++) {
            int64_t pos = at + j;
            while (pos >= f->offsets[u + 1]) u++;
            int32_t it = buf[j];
            if (it < 1 || it > f->n_items) {
                char who[256];
                free(buf);
                pthread_mutex_lock(&h5_lock);
                user_label(f, u, who, sizeof who);
                pthread_mutex_unlock(&h5_lock);
                return ds_err(err, "%s: %s: item %d at position %lld is outside 1..%lld", f->path,
                              who, it, (long long)(pos - f->offsets[u]), (long long)f->n_items);
            }
            if (o.counts && pos < f->offsets[u + 1] - o.holdout) o.counts[it]++;
            if (o.repeats) {
                if (o.last[it] >= f->offsets[u]) {  // seen earlier in this history
                    o.repeats->repeats++;
                    o.repeats->test_repeats += pos == f->offsets[u + 1] - 1;
                    o.repeats->valid_repeats += pos == f->offsets[u + 1] - 2;
                }
                o.last[it] = pos;
            }
        }
    }
    free(buf);
    return 0;
}

int ds_item_counts(ds_file* f, int holdout, int64_t* counts, char* err) {
    h5_quiet();
    if (holdout < 0) return ds_err(err, "%s: holdout %d < 0", f->path, holdout);
    memset(counts, 0, (size_t)(f->n_items + 1) * sizeof *counts);
    return scan_items(f, (scan_opts){.holdout = holdout, .counts = counts}, err);
}

static int read_ids(ds_file* f, const char* name, int has, int64_t n, char*** ids, char* err) {
    h5_quiet();
    *ids = NULL;
    if (!has) return 0;
    pthread_mutex_lock(&h5_lock);
    int rc = h5_read_strings(f->file, name, n, ids, f->path, err);
    pthread_mutex_unlock(&h5_lock);
    return rc;
}

int ds_item_ids(ds_file* f, char*** ids, char* err) {
    return read_ids(f, "item_ids", f->has_item_ids, f->n_items, ids, err);
}

int ds_user_ids(ds_file* f, char*** ids, char* err) {
    return read_ids(f, "user_ids", f->has_user_ids, f->n_users, ids, err);
}

int ds_verify(ds_file* f, char* err) { return ds_verify_stats(f, NULL, err); }

int ds_verify_stats(ds_file* f, ds_repeats* rep, char* err) {
    h5_quiet();
    uint64_t hash = FNV_OFFSET;
    scan_opts o = {.hash = &hash, .repeats = rep};
    if (rep) {
        memset(rep, 0, sizeof *rep);
        if (!(o.last = malloc((size_t)(f->n_items + 1) * sizeof *o.last)))
            return ds_err(err, "%s: out of memory for %lld items", f->path, (long long)f->n_items);
        memset(o.last, 0xff, (size_t)(f->n_items + 1) * sizeof *o.last);  // -1
    }
    int rc = scan_items(f, o, err);
    free(o.last);
    if (rc < 0) return -1;
    uint64_t fp =
        fp_combine(f->n_users, f->n_items, fnv1a_i64(FNV_OFFSET, f->offsets, f->n_users + 1), hash);
    if (f->fingerprint_stored && fp != f->fingerprint)
        return ds_err(err,
                      "%s: the contents hash to fingerprint %016llx, the file says %016llx: "
                      "/items or /offsets changed after the file was written",
                      f->path, (unsigned long long)fp, (unsigned long long)f->fingerprint);
    if (f->times >= 0) {
        int64_t* buf = malloc(SCAN_BLOCK * sizeof *buf);
        if (!buf) return ds_err(err, "%s: out of memory", f->path);
        for (int64_t at = 0; at < f->n_inter; at += SCAN_BLOCK) {
            int64_t n = f->n_inter - at < SCAN_BLOCK ? f->n_inter - at : SCAN_BLOCK;
            pthread_mutex_lock(&h5_lock);
            rc = read_range(f, f->times, f->times_space, H5T_NATIVE_INT64, "timestamps", -1, at, n,
                            buf, err);
            pthread_mutex_unlock(&h5_lock);
            if (rc < 0) {
                free(buf);
                return -1;
            }
        }
        free(buf);
    }
    char** ids;
    if (ds_item_ids(f, &ids, err) < 0) return -1;
    free(ids);
    if (ds_user_ids(f, &ids, err) < 0) return -1;
    free(ids);
    return 0;
}
