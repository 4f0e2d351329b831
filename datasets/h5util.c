// h5util.c: HDF5 error capture, attributes and fixed-length string datasets.
#include "h5util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"

void h5_quiet(void) {
    static _Thread_local int done;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = 1;
    }
}

int ds_err(char* err, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, DS_ERRLEN, fmt, ap);
    va_end(ap);
    return -1;
}

typedef struct {
    char inner[200];  // the most specific message (first one walking upward)
    char outer[200];  // the API-level message
    int os_errno;     // the system call's errno when a message carries one, else 0
} walk_msgs;

static herr_t walk_cb(unsigned n, const H5E_error2_t* e, void* data) {
    walk_msgs* m = data;
    if (n == 0 && e->desc) snprintf(m->inner, sizeof m->inner, "%s", e->desc);
    if (e->desc) snprintf(m->outer, sizeof m->outer, "%s", e->desc);
    const char* p = e->desc ? strstr(e->desc, "errno = ") : NULL;
    if (p && !m->os_errno) m->os_errno = atoi(p + 8);
    return 0;
}

// "H5Fopen" out of "fid = H5Fopen(path, ...)".
static void call_name(const char* call, char* out, size_t cap) {
    const char* p = strstr(call, "H5");
    if (!p) p = call;
    size_t n = strcspn(p, "( ");
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
}

void h5_error(char* err, const char* file, int line, const char* call, const char* path,
              const char* what) {
    walk_msgs m = {{0}, {0}, 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &m);
    char fn[64];
    call_name(call, fn, sizeof fn);
    const char* base = strrchr(file, '/');
    base = base ? base + 1 : file;
    // A failed system call: its reason ("No space left on device") says it
    // all; HDF5's message around it holds times and buffer addresses.
    if (m.os_errno > 0)
        ds_err(err, "%s: %s: %s failed: %s [%s:%d]", path, what, fn, strerror(m.os_errno), base,
               line);
    else if (m.inner[0] && strcmp(m.inner, m.outer) != 0)
        ds_err(err, "%s: %s: %s failed: %s (%s) [%s:%d]", path, what, fn, m.outer, m.inner, base,
               line);
    else if (m.inner[0])
        ds_err(err, "%s: %s: %s failed: %s [%s:%d]", path, what, fn, m.inner, base, line);
    else
        ds_err(err, "%s: %s: %s failed [%s:%d]", path, what, fn, base, line);
    for (char* c = err; *c; c++)  // one line
        if (*c == '\n' || *c == '\r') *c = ' ';
    H5Eclear2(H5E_DEFAULT);
}

static int write_attr(hid_t obj, const char* name, hid_t type, const void* v, const char* path,
                      char* err) {
    hid_t space = -1, attr = -1;
    h5Check(space = H5Screate(H5S_SCALAR), path, name);
    h5Check(attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), path, name);
    h5Check(H5Awrite(attr, type, v), path, name);
    h5Check(H5Aclose(attr), path, name);
    h5Check(H5Sclose(space), path, name);
    return 0;
fail:
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    return -1;
}

int h5_write_attr_i64(hid_t obj, const char* name, int64_t v, const char* path, char* err) {
    return write_attr(obj, name, H5T_NATIVE_INT64, &v, path, err);
}

int h5_write_attr_i32(hid_t obj, const char* name, int32_t v, const char* path, char* err) {
    return write_attr(obj, name, H5T_NATIVE_INT32, &v, path, err);
}

int h5_write_attr_str(hid_t obj, const char* name, const char* s, const char* path, char* err) {
    hid_t type = -1;
    size_t n = strlen(s);
    h5Check(type = H5Tcopy(H5T_C_S1), path, name);
    h5Check(H5Tset_size(type, n ? n : 1), path, name);
    h5Check(H5Tset_strpad(type, H5T_STR_NULLPAD), path, name);
    if (write_attr(obj, name, type, n ? s : "", path, err) < 0) goto fail;
    H5Tclose(type);
    return 0;
fail:
    if (type >= 0) H5Tclose(type);
    return -1;
}

int h5_write_attr_u64(hid_t obj, const char* name, uint64_t v, const char* path, char* err) {
    return write_attr(obj, name, H5T_NATIVE_UINT64, &v, path, err);
}

static int read_attr_int(hid_t obj, const char* name, hid_t memtype, void* v, const char* path,
                         char* err) {
    hid_t attr = -1, ftype = -1;
    htri_t ex;
    h5Check(ex = H5Aexists(obj, name), path, name);
    if (!ex) return ds_err(err, "%s: attribute '%s' is missing", path, name);
    h5Check(attr = H5Aopen(obj, name, H5P_DEFAULT), path, name);
    h5Check(ftype = H5Aget_type(attr), path, name);
    if (H5Tget_class(ftype) != H5T_INTEGER) {
        ds_err(err, "%s: attribute '%s' is not an integer", path, name);
        goto fail;
    }
    h5Check(H5Aread(attr, memtype, v), path, name);
    H5Tclose(ftype);
    H5Aclose(attr);
    return 0;
fail:
    if (ftype >= 0) H5Tclose(ftype);
    if (attr >= 0) H5Aclose(attr);
    return -1;
}

int h5_read_attr_i64(hid_t obj, const char* name, int64_t* v, const char* path, char* err) {
    return read_attr_int(obj, name, H5T_NATIVE_INT64, v, path, err);
}

int h5_read_attr_i32(hid_t obj, const char* name, int32_t* v, const char* path, char* err) {
    return read_attr_int(obj, name, H5T_NATIVE_INT32, v, path, err);
}

int h5_read_attr_u64(hid_t obj, const char* name, uint64_t* v, const char* path, char* err) {
    return read_attr_int(obj, name, H5T_NATIVE_UINT64, v, path, err);
}

int h5_read_attr_str(hid_t obj, const char* name, char** s, const char* path, char* err) {
    hid_t attr = -1, ftype = -1, mtype = -1;
    char* buf = NULL;
    htri_t ex;
    *s = NULL;
    h5Check(ex = H5Aexists(obj, name), path, name);
    if (!ex) return ds_err(err, "%s: attribute '%s' is missing", path, name);
    h5Check(attr = H5Aopen(obj, name, H5P_DEFAULT), path, name);
    h5Check(ftype = H5Aget_type(attr), path, name);
    if (H5Tget_class(ftype) != H5T_STRING || H5Tis_variable_str(ftype) != 0) {
        ds_err(err, "%s: attribute '%s' is not a fixed-length string", path, name);
        goto fail;
    }
    size_t n = H5Tget_size(ftype);
    if (!(buf = calloc(n + 1, 1))) {
        ds_err(err, "%s: out of memory reading attribute '%s'", path, name);
        goto fail;
    }
    h5Check(mtype = H5Tcopy(H5T_C_S1), path, name);
    h5Check(H5Tset_size(mtype, n), path, name);
    h5Check(H5Tset_strpad(mtype, H5T_STR_NULLPAD), path, name);
    h5Check(H5Aread(attr, mtype, buf), path, name);
    H5Tclose(mtype);
    H5Tclose(ftype);
    H5Aclose(attr);
    *s = buf;
    return 0;
fail:
    free(buf);
    if (mtype >= 0) H5Tclose(mtype);
    if (ftype >= 0) H5Tclose(ftype);
    if (attr >= 0) H5Aclose(attr);
    return -1;
}

int h5_write_strings(hid_t file, const char* name, const char* const* s, int64_t n,
                     const char* path, char* err) {
    hid_t type = -1, space = -1, dcpl = -1, dset = -1;
    char* buf = NULL;
    size_t w = 1;
    if (n < 0) return ds_err(err, "%s: /%s: negative count", path, name);
    for (int64_t i = 0; i < n; i++) {
        size_t l = strlen(s[i]);
        if (l > w) w = l;
    }
    if (!(buf = calloc(n > 0 ? (size_t)n : 1, w))) {
        ds_err(err, "%s: out of memory writing /%s", path, name);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) memcpy(buf + (size_t)i * w, s[i], strlen(s[i]));
    hsize_t dims[1] = {(hsize_t)n};
    hsize_t chunk[1] = {(hsize_t)(n < 4096 ? (n ? n : 1) : 4096)};
    h5Check(type = H5Tcopy(H5T_C_S1), path, name);
    h5Check(H5Tset_size(type, w), path, name);
    h5Check(H5Tset_strpad(type, H5T_STR_NULLPAD), path, name);
    h5Check(space = H5Screate_simple(1, dims, NULL), path, name);
    h5Check(dcpl = H5Pcreate(H5P_DATASET_CREATE), path, name);
    h5Check(H5Pset_chunk(dcpl, 1, chunk), path, name);
    h5Check(H5Pset_deflate(dcpl, 4), path, name);
    h5Check(H5Pset_fletcher32(dcpl), path, name);
    h5Check(dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), path, name);
    if (n) h5Check(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), path, name);
    h5Check(H5Dclose(dset), path, name);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(type);
    free(buf);
    return 0;
fail:
    free(buf);
    if (dset >= 0) H5Dclose(dset);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return -1;
}

// Opens a 1-D fixed-length string dataset; returns its length and width.
static int open_strings(hid_t file, const char* name, hid_t* dset, int64_t* n, size_t* width,
                        const char* path, char* err) {
    hid_t ftype = -1, space = -1;
    *dset = -1;
    h5Check(*dset = H5Dopen2(file, name, H5P_DEFAULT), path, name);
    h5Check(ftype = H5Dget_type(*dset), path, name);
    h5Check(space = H5Dget_space(*dset), path, name);
    hsize_t dims[1] = {0};
    if (H5Tget_class(ftype) != H5T_STRING || H5Tis_variable_str(ftype) != 0 ||
        H5Sget_simple_extent_ndims(space) != 1) {
        ds_err(err, "%s: /%s is not a 1-D fixed-length string dataset", path, name);
        goto fail;
    }
    h5Check(H5Sget_simple_extent_dims(space, dims, NULL), path, name);
    *n = (int64_t)dims[0];
    *width = H5Tget_size(ftype);
    H5Sclose(space);
    H5Tclose(ftype);
    return 0;
fail:
    if (space >= 0) H5Sclose(space);
    if (ftype >= 0) H5Tclose(ftype);
    if (*dset >= 0) H5Dclose(*dset);
    *dset = -1;
    return -1;
}

static hid_t string_type(size_t w) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, w) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

int h5_read_strings(hid_t file, const char* name, int64_t n, char*** out, const char* path,
                    char* err) {
    hid_t dset = -1, mtype = -1;
    char* raw = NULL;
    char** ptrs = NULL;
    size_t w;
    int64_t have;
    *out = NULL;
    if (open_strings(file, name, &dset, &have, &w, path, err) < 0) return -1;
    if (have != n) {
        ds_err(err, "%s: /%s has %lld entries, expected %lld", path, name, (long long)have,
               (long long)n);
        goto fail;
    }
    // One block: n pointers, then n strings of w+1 bytes each.
    size_t un = (size_t)n;
    if (!(raw = malloc(un * w + 1)) || !(ptrs = malloc(un * sizeof(char*) + un * (w + 1) + 1))) {
        ds_err(err, "%s: out of memory reading /%s", path, name);
        goto fail;
    }
    h5Check(mtype = string_type(w), path, name);
    if (n) h5Check(H5Dread(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw), path, name);
    char* chars = (char*)(ptrs + un);
    for (size_t i = 0; i < un; i++) {
        ptrs[i] = chars + i * (w + 1);
        memcpy(ptrs[i], raw + i * w, w);
        ptrs[i][w] = 0;
    }
    free(raw);
    H5Tclose(mtype);
    H5Dclose(dset);
    *out = ptrs;
    return 0;
fail:
    free(raw);
    free(ptrs);
    if (mtype >= 0) H5Tclose(mtype);
    if (dset >= 0) H5Dclose(dset);
    return -1;
}

int h5_read_string_at(hid_t file, const char* name, int64_t i, char* buf, size_t cap,
                      const char* path, char* err) {
    hid_t dset = -1, mtype = -1, fspace = -1, mspace = -1;
    char* raw = NULL;
    size_t w;
    int64_t n;
    if (open_strings(file, name, &dset, &n, &w, path, err) < 0) return -1;
    if (i < 0 || i >= n) {
        ds_err(err, "%s: /%s has no entry %lld", path, name, (long long)i);
        goto fail;
    }
    if (!(raw = calloc(w + 1, 1))) {
        ds_err(err, "%s: out of memory reading /%s", path, name);
        goto fail;
    }
    hsize_t start[1] = {(hsize_t)i}, count[1] = {1};
    h5Check(mtype = string_type(w), path, name);
    h5Check(fspace = H5Dget_space(dset), path, name);
    h5Check(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL), path, name);
    h5Check(mspace = H5Screate_simple(1, count, NULL), path, name);
    h5Check(H5Dread(dset, mtype, mspace, fspace, H5P_DEFAULT, raw), path, name);
    snprintf(buf, cap, "%s", raw);
    free(raw);
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Tclose(mtype);
    H5Dclose(dset);
    return 0;
fail:
    free(raw);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    if (mtype >= 0) H5Tclose(mtype);
    if (dset >= 0) H5Dclose(dset);
    return -1;
}
