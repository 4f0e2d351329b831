// ckpt_h5.c: the HDF5 files of a checkpoint (ckpt_h5.h).
#include "ckpt_h5.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "h5util.h"

#define ERRLEN 512
#define CKPT_FORMAT 2

// Every HDF5 call goes through h5Check (datasets/h5util.h): on failure err
// names the file (and tensor), the call and HDF5's reason, the system call's
// where there is one ("No space left on device"), and the function jumps to
// `fail`.

// An n-dimensional array (file type ftype, memory type mtype) as a dataset,
// in chunks of at most ~1M elements along the first dimension, each with
// HDF5's Fletcher32 checksum (an empty one unchunked: it holds no data).
static int write_array(hid_t loc, const char* name, int ndim, const int64_t* shape, hid_t ftype,
                       hid_t mtype, const void* data, const char* where, char* err) {
    hid_t space = -1, dcpl = -1, ds = -1;
    hsize_t dims[MODEL_MAX_DIMS] = {0}, chunk[MODEL_MAX_DIMS] = {0};
    size_t elems = 1, total = 1;
    for (int i = 0; i < ndim; i++) dims[i] = chunk[i] = (hsize_t)shape[i], total *= dims[i];
    for (int i = 1; i < ndim; i++) elems *= dims[i];
    if (chunk[0] * elems > (1u << 20)) chunk[0] = (1u << 20) / elems ? (1u << 20) / elems : 1;
    h5Check(space = H5Screate_simple(ndim, dims, NULL), where, "checkpoint");
    h5Check(dcpl = H5Pcreate(H5P_DATASET_CREATE), where, "checkpoint");
    if (total) {
        h5Check(H5Pset_chunk(dcpl, ndim, chunk), where, "checkpoint");
        h5Check(H5Pset_fletcher32(dcpl), where, "checkpoint");
    }
    h5Check(ds = H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), where,
            "checkpoint");
    if (total)
        h5Check(H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where, "checkpoint");
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    return 0;
fail:
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return -1;
}

static int write_tensor(hid_t loc, const char* name, const tensor_spec* t, const real* data,
                        const char* where, char* err) {
    return write_array(loc, name, t->ndim, t->shape, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, where,
                       err);
}

static int read_tensor(hid_t loc, const char* name, const tensor_spec* t, real* data,
                       const char* file, char* err) {
    char where[700];
    char group[200] = "";
    if (H5Iget_name(loc, group, sizeof group) < 0) group[0] = 0;
    snprintf(where, sizeof where, "%s, tensor %s/%s", file, group, name);
    hid_t ds = -1, space = -1;
    hsize_t dims[8];
    h5Check(ds = H5Dopen2(loc, name, H5P_DEFAULT), where, "checkpoint");
    h5Check(space = H5Dget_space(ds), where, "checkpoint");
    int nd = H5Sget_simple_extent_ndims(space);
    int same = nd == t->ndim && nd <= 8;
    if (same) {
        H5Sget_simple_extent_dims(space, dims, NULL);
        for (int i = 0; i < nd; i++) same &= dims[i] == (hsize_t)t->shape[i];
    }
    if (!same) {
        snprintf(err, ERRLEN,
                 "%s: a different shape than this model's (check --d, --layers, --heads, --L and "
                 "the dataset)",
                 where);
        goto fail;
    }
    h5Check(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where,
            "checkpoint");
    H5Sclose(space);
    H5Dclose(ds);
    return 0;
fail:
    if (space >= 0) H5Sclose(space);
    if (ds >= 0) H5Dclose(ds);
    return -1;
}

// The dense tensors of m, stored at base, as one group of datasets: written
// (write) or read back and checked against the tensor table.
static int dense_group(hid_t file, const char* group, const model* m, real* base, int write,
                       const char* where, char* err) {
    hid_t g = -1;
    if (write)
        h5Check(g = H5Gcreate2(file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), where,
                "checkpoint");
    else
        h5Check(g = H5Gopen2(file, group, H5P_DEFAULT), where, "checkpoint");
    for (int i = 0; i < m->n_tensors; i++) {
        const tensor_spec* t = &m->tensors[i];
        if (write ? write_tensor(g, t->name, t, base + t->offset, where, err)
                  : read_tensor(g, t->name, t, base + t->offset, where, err))
            goto fail;
    }
    H5Gclose(g);
    return 0;
fail:
    if (g >= 0) H5Gclose(g);
    return -1;
}

static int attr_write(hid_t loc, const char* name, hid_t type, const void* v, const char* where,
                      char* err) {
    hid_t sp = -1, a = -1;
    h5Check(sp = H5Screate(H5S_SCALAR), where, "checkpoint");
    h5Check(a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT), where, "checkpoint");
    h5Check(H5Awrite(a, type, v), where, "checkpoint");
    H5Aclose(a);
    H5Sclose(sp);
    return 0;
fail:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return -1;
}

static int attr_read(hid_t loc, const char* name, hid_t type, void* v, const char* where,
                     char* err) {
    hid_t a = -1;
    h5Check(a = H5Aopen(loc, name, H5P_DEFAULT), where, "checkpoint");
    h5Check(H5Aread(a, type, v), where, "checkpoint");
    H5Aclose(a);
    return 0;
fail:
    if (a >= 0) H5Aclose(a);
    return -1;
}

static int attr_write_str(hid_t loc, const char* name, const char* s, const char* where,
                          char* err) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0 || H5Tset_size(t, strlen(s) + 1) < 0) {
        snprintf(err, ERRLEN, "%s: cannot make a string type", where);
        return -1;
    }
    int rc = attr_write(loc, name, t, s, where, err);
    H5Tclose(t);
    return rc;
}

static char* attr_read_str(hid_t loc, const char* name, const char* where, char* err) {
    hid_t a = -1, t = -1;
    char* s = NULL;
    h5Check(a = H5Aopen(loc, name, H5P_DEFAULT), where, "checkpoint");
    h5Check(t = H5Aget_type(a), where, "checkpoint");
    size_t n = H5Tget_size(t);
    s = calloc(n + 1, 1);
    if (!s) goto fail;
    h5Check(H5Aread(a, t, s), where, "checkpoint");
    H5Tclose(t);
    H5Aclose(a);
    return s;
fail:
    free(s);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return NULL;
}

// Closes f, checked (a full disk shows here); the handle is gone either way.
static int close_file(hid_t f, const char* where, char* err) {
    if (H5Fclose(f) < 0) {
        h5_error(err, __FILE__, __LINE__, "H5Fclose", where, "closing the file");
        return -1;
    }
    return 0;
}

int ckpt_h5_write_dense(const char* file, const model* m, const real* params, const real* adam_m,
                        const real* adam_v, const real* best, const train_state* st,
                        const char* config_text, int world, char* err) {
    const char* where = file;
    hid_t f = -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h5Check(f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), where, "checkpoint");
    if (dense_group(f, "params", m, (real*)params, 1, where, err) ||
        dense_group(f, "adam_m", m, (real*)adam_m, 1, where, err) ||
        dense_group(f, "adam_v", m, (real*)adam_v, 1, where, err) ||
        (best && dense_group(f, "best", m, (real*)best, 1, where, err)))
        goto fail;
    int fmt = CKPT_FORMAT;
    if (attr_write(f, "format_version", H5T_NATIVE_INT, &fmt, where, err) ||
        attr_write(f, "world", H5T_NATIVE_INT, &world, where, err) ||
        attr_write(f, "step", H5T_NATIVE_INT64, &st->step, where, err) ||
        attr_write(f, "epoch", H5T_NATIVE_INT64, &st->epoch, where, err) ||
        attr_write(f, "index", H5T_NATIVE_INT64, &st->index, where, err) ||
        attr_write(f, "best_metric", H5T_NATIVE_DOUBLE, &st->best_metric, where, err) ||
        attr_write(f, "best_step", H5T_NATIVE_INT64, &st->best_step, where, err) ||
        attr_write(f, "bad_evals", H5T_NATIVE_INT64, &st->bad_evals, where, err) ||
        attr_write(f, "train_seconds", H5T_NATIVE_DOUBLE, &st->train_seconds, where, err) ||
        attr_write(f, "log_loss_sum", H5T_NATIVE_DOUBLE, &st->log_loss_sum, where, err) ||
        attr_write(f, "log_loss_n", H5T_NATIVE_INT64, &st->log_loss_n, where, err) ||
        attr_write(f, "data_fingerprint", H5T_NATIVE_UINT64, &st->data_fingerprint, where, err) ||
        attr_write_str(f, "model", m->name, where, err) ||
        attr_write_str(f, "config", config_text, where, err))
        goto fail;
    const hid_t g = f;
    f = -1;  // closed or not, the handle is gone: never close it twice
    return close_file(g, where, err);
fail:
    if (f >= 0) H5Fclose(f);
    return -1;
}

int ckpt_h5_read_dense(const char* file, const model* m, real* params, real* adam_m, real* adam_v,
                       real* best, int* has_best, train_state* st, char** config_text, int* world,
                       int* legacy_bank, char* err) {
    const char* where = file;
    hid_t f = -1;
    char* name = NULL;
    *config_text = NULL;
    *world = 1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), where, "checkpoint");
    name = attr_read_str(f, "model", where, err);
    if (!name) goto fail;
    if (strcmp(name, m->name)) {
        snprintf(err, ERRLEN, "%s: checkpoint of model %s, but --model is %s", where, name,
                 m->name);
        goto fail;
    }
    if (dense_group(f, "params", m, params, 0, where, err) ||
        dense_group(f, "adam_m", m, adam_m, 0, where, err) ||
        dense_group(f, "adam_v", m, adam_v, 0, where, err))
        goto fail;
    *has_best = H5Lexists(f, "best", H5P_DEFAULT) > 0;
    if (*has_best && dense_group(f, "best", m, best, 0, where, err)) goto fail;
    *legacy_bank = H5Lexists(f, "bank", H5P_DEFAULT) > 0;
    if (attr_read(f, "step", H5T_NATIVE_INT64, &st->step, where, err) ||
        attr_read(f, "epoch", H5T_NATIVE_INT64, &st->epoch, where, err) ||
        attr_read(f, "index", H5T_NATIVE_INT64, &st->index, where, err) ||
        attr_read(f, "best_metric", H5T_NATIVE_DOUBLE, &st->best_metric, where, err) ||
        attr_read(f, "best_step", H5T_NATIVE_INT64, &st->best_step, where, err) ||
        attr_read(f, "bad_evals", H5T_NATIVE_INT64, &st->bad_evals, where, err) ||
        attr_read(f, "train_seconds", H5T_NATIVE_DOUBLE, &st->train_seconds, where, err) ||
        attr_read(f, "log_loss_sum", H5T_NATIVE_DOUBLE, &st->log_loss_sum, where, err) ||
        attr_read(f, "log_loss_n", H5T_NATIVE_INT64, &st->log_loss_n, where, err))
        goto fail;
    if (H5Aexists(f, "world") > 0 && attr_read(f, "world", H5T_NATIVE_INT, world, where, err))
        goto fail;
    st->data_fingerprint = 0;  // older checkpoints have none
    if (H5Aexists(f, "data_fingerprint") > 0 &&
        attr_read(f, "data_fingerprint", H5T_NATIVE_UINT64, &st->data_fingerprint, where, err))
        goto fail;
    *config_text = attr_read_str(f, "config", where, err);
    if (!*config_text) goto fail;
    free(name);
    H5Fclose(f);
    return 0;
fail:
    free(name);
    if (f >= 0) H5Fclose(f);
    return -1;
}

// values, adam_m, adam_v of b's rows [n, d] in loc.
static int bank_arrays(hid_t loc, bank* b, int64_t n, int write, const char* where, char* err) {
    tensor_spec t = {.name = "bank", .ndim = 2, .shape = {n, b->d}};
    t.size = (size_t)n * b->d;
    const char* names[3] = {"values", "adam_m", "adam_v"};
    real* data[3] = {b->values, b->m, b->v};
    if (n == 0) return 0;  // an empty shard: no rows to keep (more ranks than rows)
    // on CUDA through a host copy of one array at a time
    const size_t bytes = (size_t)n * b->d * sizeof(real);
    int failed;
    real* stage = dev_host_staging(bytes, &failed);
    if (failed) {
        snprintf(err, ERRLEN, "%s: out of memory for a host copy of the bank's rows", where);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (write) {
            rc = write_tensor(loc, names[i], &t, dev_host_view(data[i], bytes, stage), where, err);
        } else {
            rc = read_tensor(loc, names[i], &t, stage ? stage : data[i], where, err);
            if (!rc && stage) dev_to_device(data[i], stage, bytes);
        }
    }
    free(stage);
    return rc ? -1 : 0;
}

int ckpt_h5_read_legacy_bank(const char* file, bank* b, char* err) {
    const char* where = file;
    hid_t f = -1, g = -1;
    if (b->c.world != 1 || b->local_rows != b->rows) {
        snprintf(err, ERRLEN, "%s: a single-process checkpoint's bank, read by one rank only",
                 file);
        return -1;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), where, "checkpoint");
    h5Check(g = H5Gopen2(f, "bank", H5P_DEFAULT), where, "checkpoint");
    if (bank_arrays(g, b, b->rows, 0, where, err)) goto fail;
    H5Gclose(g);
    H5Fclose(f);
    return 0;
fail:
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    return -1;
}

int ckpt_h5_read_config(const char* file, char** config_text, char* err) {
    const char* where = file;
    hid_t f = -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), where, "checkpoint");
    *config_text = attr_read_str(f, "config", where, err);
    if (!*config_text) goto fail;
    H5Fclose(f);
    return 0;
fail:
    if (f >= 0) H5Fclose(f);
    return -1;
}
