// writer.c: the streaming writer (writer.h) and ds_write (dataset.h).
#define _GNU_SOURCE  // memfd_create
#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dataset.h"
#include "fingerprint.h"
#include "h5util.h"
#include "outpath.h"

// One extendible 1-D dataset filled through a one-chunk buffer, so every
// chunk is compressed and written exactly once.
typedef struct {
    const char* name;
    hid_t dset, memtype;
    size_t esize;
    hsize_t chunk, written, buffered;
    char* buf;
} column;

struct ds_writer {
    char* path;
    char* tmp;
    hid_t file;
    column items, offsets, times;
    int with_times;
    int64_t n_items, n_users, total;
    uint64_t hash_items, hash_offsets;  // FNV-1a of what was appended (fingerprint.h)
};

static int column_create(ds_writer* w, column* c, const char* name, hid_t filetype, hid_t memtype,
                         size_t esize, hsize_t chunk, char* err) {
    hid_t space = -1, dcpl = -1, dapl = -1;
    hsize_t dims[1] = {0}, maxd[1] = {H5S_UNLIMITED};
    c->name = name;
    c->dset = -1;
    c->memtype = memtype;
    c->esize = esize;
    c->chunk = chunk;
    if (!(c->buf = malloc(chunk * esize))) return ds_err(err, "%s: out of memory", w->path);
    h5Check(space = H5Screate_simple(1, dims, maxd), w->path, name);
    h5Check(dcpl = H5Pcreate(H5P_DATASET_CREATE), w->path, name);
    h5Check(H5Pset_chunk(dcpl, 1, &chunk), w->path, name);
    h5Check(H5Pset_shuffle(dcpl), w->path, name);
    h5Check(H5Pset_deflate(dcpl, 4), w->path, name);
    h5Check(H5Pset_fletcher32(dcpl), w->path, name);
    h5Check(dapl = H5Pcreate(H5P_DATASET_ACCESS), w->path, name);
    h5Check(H5Pset_chunk_cache(dapl, 521, 4 * chunk * esize, 1.0), w->path, name);
    h5Check(c->dset = H5Dcreate2(w->file, name, filetype, space, H5P_DEFAULT, dcpl, dapl), w->path,
            name);
    H5Pclose(dapl);
    H5Pclose(dcpl);
    H5Sclose(space);
    return 0;
fail:
    if (dapl >= 0) H5Pclose(dapl);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return -1;
}

static int column_flush(ds_writer* w, column* c, char* err) {
    hid_t fspace = -1, mspace = -1;
    if (c->buffered == 0) return 0;
    hsize_t size[1] = {c->written + c->buffered}, start[1] = {c->written}, count[1] = {c->buffered};
    h5Check(H5Dset_extent(c->dset, size), w->path, c->name);
    h5Check(fspace = H5Dget_space(c->dset), w->path, c->name);
    h5Check(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL), w->path,
            c->name);
    h5Check(mspace = H5Screate_simple(1, count, NULL), w->path, c->name);
    h5Check(H5Dwrite(c->dset, c->memtype, mspace, fspace, H5P_DEFAULT, c->buf), w->path, c->name);
    H5Sclose(mspace);
    H5Sclose(fspace);
    c->written += c->buffered;
    c->buffered = 0;
    return 0;
fail:
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    return -1;
}

static int column_push(ds_writer* w, column* c, const void* data, int64_t n, char* err) {
    const char* p = data;
    while (n > 0) {
        hsize_t take = c->chunk - c->buffered;
        if ((int64_t)take > n) take = (hsize_t)n;
        memcpy(c->buf + c->buffered * c->esize, p, take * c->esize);
        c->buffered += take;
        p += take * c->esize;
        n -= (int64_t)take;
        if (c->buffered == c->chunk && column_flush(w, c, err) < 0) return -1;
    }
    return 0;
}

static void column_close(column* c) {
    if (c->dset >= 0) H5Dclose(c->dset);
    c->dset = -1;
    free(c->buf);
    c->buf = NULL;
}

// Points the file's descriptor elsewhere, so that closing a file being
// discarded does not fail: HDF5 1.10 flushes and truncates on close, and a
// close that fails (disk full) leaves a freed file in its table, which
// crashes the process at exit. An anonymous memory file takes the writes
// (sparse: only cached chunks and metadata) and the truncate. Under a
// file-size limit below the file's size that would fail too; /dev/null takes
// the writes then (it cannot truncate, but after a write failed at the end of
// the file, the flush rewrites up to that end and none is needed).
// -1 when the descriptor could not be moved (the close may then fail).
static int discard_writes(hid_t file) {
    void* handle = NULL;
    hsize_t size = 0;
    struct rlimit rl;
    int rc = -1;
    hid_t fapl = H5Fget_access_plist(file);
    if (fapl < 0) return -1;
    if (H5Pget_driver(fapl) == H5FD_SEC2 && H5Fget_vfd_handle(file, fapl, &handle) >= 0 && handle &&
        H5Fget_filesize(file, &size) >= 0) {
        int fits = getrlimit(RLIMIT_FSIZE, &rl) == 0 &&
                   (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)size);
        int fd = fits ? memfd_create("discarded", MFD_CLOEXEC) : -1;
        if (fd < 0) fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            rc = dup2(fd, *(int*)handle) < 0 ? -1 : 0;
            close(fd);
        }
    }
    H5Pclose(fapl);
    return rc;
}

// fsync, so that a delayed write error (ENOSPC on some file systems) shows
// before the rename, and the renamed file is on disk.
static int sync_file(ds_writer* w, char* err) {
    void* handle = NULL;
    hid_t fapl = -1;
    h5Check(fapl = H5Fget_access_plist(w->file), w->path, "sync");
    if (H5Pget_driver(fapl) == H5FD_SEC2) {
        h5Check(H5Fget_vfd_handle(w->file, fapl, &handle), w->path, "sync");
        if (fsync(*(int*)handle) != 0) {
            ds_err(err, "%s: writing %s: fsync failed: %s", w->path, w->tmp, strerror(errno));
            goto fail;
        }
    }
    H5Pclose(fapl);
    return 0;
fail:
    if (fapl >= 0) H5Pclose(fapl);
    return -1;
}

static void writer_free(ds_writer* w, int remove_tmp) {
    if (remove_tmp && w->file >= 0) (void)discard_writes(w->file);  // nothing better on -1
    column_close(&w->items);
    column_close(&w->offsets);
    column_close(&w->times);
    if (w->file >= 0) H5Fclose(w->file);
    if (remove_tmp && w->tmp) unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
}

ds_writer* ds_writer_open(const char* path, int64_t n_items, int with_timestamps, char* err) {
    h5_quiet();
    err[0] = 0;
    if (n_items < 1 || n_items > INT32_MAX) {
        ds_err(err, "%s: n_items %lld outside 1..%d", path, (long long)n_items, INT32_MAX);
        return NULL;
    }
    char* target;
    int special;
    if (out_resolve(path, &target, &special, err) < 0) return NULL;
    if (special) {
        ds_err(err, "%s: not a regular file; an HDF5 dataset needs one", path);
        free(target);
        return NULL;
    }
    hid_t fapl = -1;
    ds_writer* w = calloc(1, sizeof *w);
    if (!w) {
        ds_err(err, "%s: out of memory", path);
        free(target);
        return NULL;
    }
    w->file = -1;
    w->items.dset = w->offsets.dset = w->times.dset = -1;
    w->n_items = n_items;
    w->with_times = with_timestamps;
    w->hash_items = w->hash_offsets = FNV_OFFSET;
    size_t n = strlen(target);
    w->path = target;  // a symbolic link's target: the link itself stays
    if (!(w->tmp = malloc(n + 5))) {
        ds_err(err, "%s: out of memory", path);
        writer_free(w, 0);
        return NULL;
    }
    snprintf(w->tmp, n + 5, "%s.tmp", target);
    // HDF5 1.10 format: extensible-array chunk indices make a random chunk
    // lookup O(1) instead of a B-tree walk (h5py and h5dump of 1.10+ read it).
    h5Check(fapl = H5Pcreate(H5P_FILE_ACCESS), w->path, "create file");
    h5Check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110), w->path, "create file");
    h5Check(w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), w->path,
            "create the .tmp file");
    H5Pclose(fapl);
    fapl = -1;
    tryCheck(column_create(w, &w->items, "items", H5T_STD_I32LE, H5T_NATIVE_INT32, sizeof(int32_t),
                           DS_ITEMS_CHUNK, err));
    tryCheck(column_create(w, &w->offsets, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64,
                           sizeof(int64_t), DS_OFFSETS_CHUNK, err));
    if (with_timestamps)
        tryCheck(column_create(w, &w->times, "timestamps", H5T_STD_I64LE, H5T_NATIVE_INT64,
                               sizeof(int64_t), DS_OFFSETS_CHUNK, err));
    int64_t zero = 0;
    tryCheck(column_push(w, &w->offsets, &zero, 1, err));
    w->hash_offsets = fnv1a_i64(w->hash_offsets, &zero, 1);
    return w;
fail:
    if (fapl >= 0) H5Pclose(fapl);
    writer_free(w, 1);
    return NULL;
}

int ds_writer_append(ds_writer* w, int64_t n_users, const int64_t* lens, const int32_t* items,
                     const int64_t* timestamps, char* err) {
    h5_quiet();
    if (w->with_times && !timestamps)
        return ds_err(err, "%s: writer expects timestamps, got none", w->path);
    int64_t at = 0;
    for (int64_t u = 0; u < n_users; u++) {
        if (lens[u] < 0)
            return ds_err(err, "%s: user %lld has negative length %lld", w->path,
                          (long long)(w->n_users + u), (long long)lens[u]);
        for (int64_t j = at; j < at + lens[u]; j++)
            if (items[j] < 1 || items[j] > w->n_items)
                return ds_err(err, "%s: user %lld: item %d at position %lld is outside 1..%lld",
                              w->path, (long long)(w->n_users + u), items[j], (long long)(j - at),
                              (long long)w->n_items);
        at += lens[u];
    }
    if (column_push(w, &w->items, items, at, err) < 0) return -1;
    w->hash_items = fnv1a_i32(w->hash_items, items, at);
    if (w->with_times && column_push(w, &w->times, timestamps, at, err) < 0) return -1;
    for (int64_t u = 0; u < n_users; u++) {
        w->total += lens[u];
        if (column_push(w, &w->offsets, &w->total, 1, err) < 0) return -1;
        w->hash_offsets = fnv1a_i64(w->hash_offsets, &w->total, 1);
    }
    w->n_users += n_users;
    return 0;
}

int ds_writer_finish(ds_writer* w, const char* const* item_ids, const char* const* user_ids,
                     const char* source, const char* filter, char* err) {
    h5_quiet();
    tryCheck(column_flush(w, &w->items, err));
    tryCheck(column_flush(w, &w->offsets, err));
    if (w->with_times) tryCheck(column_flush(w, &w->times, err));
    if (item_ids)
        tryCheck(h5_write_strings(w->file, "item_ids", item_ids, w->n_items, w->path, err));
    if (user_ids)
        tryCheck(h5_write_strings(w->file, "user_ids", user_ids, w->n_users, w->path, err));
    tryCheck(h5_write_attr_i64(w->file, "n_users", w->n_users, w->path, err));
    tryCheck(h5_write_attr_i64(w->file, "n_items", w->n_items, w->path, err));
    tryCheck(h5_write_attr_str(w->file, "source", source ? source : "", w->path, err));
    tryCheck(h5_write_attr_str(w->file, "filter", filter ? filter : "", w->path, err));
    tryCheck(h5_write_attr_i32(w->file, "format_version", DS_FORMAT_VERSION, w->path, err));
    tryCheck(h5_write_attr_u64(w->file, "fingerprint",
                               fp_combine(w->n_users, w->n_items, w->hash_offsets, w->hash_items),
                               w->path, err));
    // Everything reaches the disk while the file is open, so a full disk
    // fails here, where the file can still be discarded (see discard_writes).
    h5Check(H5Fflush(w->file, H5F_SCOPE_LOCAL), w->path, "flush");
    tryCheck(sync_file(w, err));
    column_close(&w->items);
    column_close(&w->offsets);
    column_close(&w->times);
    hid_t f = w->file;
    w->file = -1;
    h5Check(H5Fclose(f), w->path, "close file");
    if (rename(w->tmp, w->path) != 0) {
        ds_err(err, "%s: cannot rename %s to it: %s", w->path, w->tmp, strerror(errno));
        goto fail;
    }
    writer_free(w, 0);
    return 0;
fail:
    writer_free(w, 1);
    return -1;
}

void ds_writer_abort(ds_writer* w) {
    if (w) writer_free(w, 1);
}

int64_t ds_writer_users(const ds_writer* w) { return w->n_users; }
int64_t ds_writer_interactions(const ds_writer* w) { return w->total; }

int ds_write(const char* path, const ds_contents* c, char* err) {
    err[0] = 0;
    if (c->n_users < 0 || !c->offsets || c->offsets[0] != 0)
        return ds_err(err, "%s: offsets must start at 0", path);
    int64_t* lens = malloc((size_t)(c->n_users ? c->n_users : 1) * sizeof *lens);
    if (!lens) return ds_err(err, "%s: out of memory", path);
    for (int64_t u = 0; u < c->n_users; u++) {
        lens[u] = c->offsets[u + 1] - c->offsets[u];
        if (lens[u] < 0) {
            free(lens);
            return ds_err(err, "%s: offsets decrease at user %lld", path, (long long)u);
        }
    }
    ds_writer* w = ds_writer_open(path, c->n_items, c->timestamps != NULL, err);
    if (!w) {
        free(lens);
        return -1;
    }
    if (ds_writer_append(w, c->n_users, lens, c->items, c->timestamps, err) < 0) {
        free(lens);
        ds_writer_abort(w);
        return -1;
    }
    free(lens);
    return ds_writer_finish(w, c->item_ids, c->user_ids, c->source, c->filter, err);
}
