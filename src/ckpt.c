// ckpt.c: HDF5 checkpoints written atomically, with checksums at two levels.
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fingerprint.h"
#include "h5util.h"

#define ERRLEN 512
// Manifest format 2: "elastic-checkpoint 2 fnv1a-64", then "FILE SIZE HASH" lines,
// HASH the standard 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime
// 0x100000001b3) of the file's bytes. Format 1 used a wrong offset basis
// (1469598103934665603); it is still read.
#define CKPT_FORMAT 2
#define FNV_OFFSET_V1 1469598103934665603ull

// Every HDF5 call goes through h5Check (datasets/h5util.h): on failure err
// names the file (and tensor), the call and HDF5's reason, the system call's
// where there is one ("No space left on device"), and the function jumps to
// `fail`.

static uint64_t fnv1a_file(const char* path, uint64_t basis, int64_t* size) {
    FILE* f = fopen(path, "rb");
    *size = -1;
    if (!f) return 0;
    uint64_t h = basis;
    unsigned char buf[1 << 16];
    size_t n;
    *size = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * FNV_PRIME;
        *size += (int64_t)n;
    }
    if (ferror(f)) *size = -1;
    fclose(f);
    return h;
}

static int write_tensor(hid_t loc, const char* name, const tensor_spec* t, const real* data,
                        const char* where, char* err) {
    hid_t space = -1, dcpl = -1, ds = -1;
    hsize_t dims[MODEL_MAX_DIMS] = {0}, chunk[MODEL_MAX_DIMS] = {0};
    size_t elems = 1;
    for (int i = 0; i < t->ndim; i++) dims[i] = chunk[i] = (hsize_t)t->shape[i];
    // chunks of at most ~1M elements along the first dimension
    for (int i = 1; i < t->ndim; i++) elems *= dims[i];
    if (chunk[0] * elems > (1u << 20)) chunk[0] = (1u << 20) / elems ? (1u << 20) / elems : 1;
    h5Check(space = H5Screate_simple(t->ndim, dims, NULL), where, "checkpoint");
    h5Check(dcpl = H5Pcreate(H5P_DATASET_CREATE), where, "checkpoint");
    h5Check(H5Pset_chunk(dcpl, t->ndim, chunk), where, "checkpoint");
    h5Check(H5Pset_fletcher32(dcpl), where, "checkpoint");
    h5Check(ds = H5Dcreate2(loc, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
            where, "checkpoint");
    h5Check(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where,
            "checkpoint");
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

static int remove_tree(const char* path) {
    DIR* d = opendir(path);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent* e;
    char sub[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (unlink(sub)) {
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    return rmdir(path);
}

// fsync of a file or a folder (a folder's entries: a rename in it is durable).
static int fsync_path(const char* path, int is_dir) {
    int fd = open(path, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    if (close(fd) && !rc) return -1;
    errno = e;
    return rc;
}

// This host's name, for temporary folders on a file system that several
// nodes share: ".tmp.step_NNNNNNNN.HOST.PID".
static void host_name(char* out, size_t n) {
    if (gethostname(out, n) || !out[0]) snprintf(out, n, "localhost");
    out[n - 1] = 0;
    for (char* c = out; *c; c++)
        if (*c == '/' || *c == ' ') *c = '_';
}

// Removes the .tmp.step_*.HOST.PID folders that a killed run of this host
// left in dir: those whose process is gone (a live one may be another run
// writing; another host's are never touched, its processes are not visible).
static void remove_stale_tmp(const char* dir) {
    DIR* d = opendir(dir);
    if (!d) return;
    char host[256];
    host_name(host, sizeof host);
    const size_t hl = strlen(host);
    struct dirent* e;
    char sub[4096];
    while ((e = readdir(d))) {
        const char* dot = strrchr(e->d_name, '.');
        if (strncmp(e->d_name, ".tmp.step_", 10) || !dot) continue;
        const char* h = strchr(e->d_name + 10, '.');  // after the step number
        if (!h || h + 1 + hl != dot || strncmp(h + 1, host, hl)) continue;
        const long pid = strtol(dot + 1, NULL, 10);
        if (pid <= 0 || pid == (long)getpid() || !(kill((pid_t)pid, 0) && errno == ESRCH)) continue;
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        remove_tree(sub);
    }
    closedir(d);
}

int ckpt_prepare_dir(const char* dir, char* err) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char* c = path + 1;; c++) {  // mkdir -p
        if (*c != '/' && *c) continue;
        const char keep = *c;
        *c = 0;
        if (mkdir(path, 0777) && errno != EEXIST) {
            snprintf(err, ERRLEN, "cannot create checkpoint directory %s: %s", path,
                     strerror(errno));
            return -1;
        }
        *c = keep;
        if (!keep) break;
    }
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
        snprintf(err, ERRLEN, "checkpoint directory %s is not a directory", dir);
        return -1;
    }
    char host[256];
    host_name(host, sizeof host);
    snprintf(path, sizeof path, "%s/.probe.%s.%d", dir, host, (int)getpid());
    FILE* f = fopen(path, "w");
    if (!f || fputs("probe\n", f) < 0 || fclose(f)) {
        snprintf(err, ERRLEN, "cannot write in checkpoint directory %s: %s", dir, strerror(errno));
        if (f) unlink(path);
        return -1;
    }
    unlink(path);
    return 0;
}

// Step numbers of the step_NNNNNNNN folders in dir, newest first, into a
// malloc'ed array (*n of them); -1 if dir cannot be read.
static int list_steps(const char* dir, long long** steps, int* n) {
    *steps = NULL;
    *n = 0;
    DIR* d = opendir(dir);
    if (!d) return -1;
    int cap = 0;
    struct dirent* e;
    while ((e = readdir(d))) {
        long long s;
        char rest;
        if (sscanf(e->d_name, "step_%lld%c", &s, &rest) != 1 || s < 0) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            long long* grown = realloc(*steps, (size_t)cap * sizeof **steps);
            if (!grown) {
                closedir(d);
                return -1;
            }
            *steps = grown;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++)  // insertion sort, newest first
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            long long t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return 0;
}

// Renames a checkpoint that failed verification to PATH.corrupt (or
// .corrupt.N), so it is kept as evidence and no later save writes over it.
static int set_aside(const char* path, char* out, size_t n) {
    for (int i = 0; i < 100; i++) {
        if (i)
            snprintf(out, n, "%s.corrupt.%d", path, i);
        else
            snprintf(out, n, "%s.corrupt", path);
        struct stat sb;
        if (stat(out, &sb) && errno == ENOENT) return rename(path, out);
    }
    errno = EEXIST;
    return -1;
}

int ckpt_prune(const char* dir, int keep, char* err) {
    long long* steps;
    int n;
    if (keep <= 0) return 0;
    if (list_steps(dir, &steps, &n)) {
        snprintf(err, ERRLEN, "cannot read checkpoint directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = keep; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/step_%08lld", dir, steps[i]);
        if (remove_tree(p)) {
            snprintf(err, ERRLEN, "--keep-last: cannot remove %s: %s", p, strerror(errno));
            rc = -1;
            break;
        }
    }
    free(steps);
    return rc;
}

// The memory bank as a group of three [rows, d] tensors.
static int bank_group(hid_t file, const model* m, real* bank_m, real* bank_v, int write,
                      const char* where, char* err) {
    tensor_spec t = {.name = "bank", .ndim = 2, .shape = {m->bank_rows, m->d}};
    t.size = (size_t)m->bank_rows * m->d;
    hid_t g = -1;
    const char* names[3] = {"values", "adam_m", "adam_v"};
    real* data[3] = {m->bank, bank_m, bank_v};
    if (write)
        h5Check(g = H5Gcreate2(file, "bank", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), where,
                "checkpoint");
    else
        h5Check(g = H5Gopen2(file, "bank", H5P_DEFAULT), where, "checkpoint");
    for (int i = 0; i < 3; i++)
        if (write ? write_tensor(g, names[i], &t, data[i], where, err)
                  : read_tensor(g, names[i], &t, data[i], where, err))
            goto fail;
    H5Gclose(g);
    return 0;
fail:
    if (g >= 0) H5Gclose(g);
    return -1;
}

int ckpt_save(const char* dir, const model* m, const real* adam_m, const real* adam_v,
              const real* best, const real* bank_m, const real* bank_v, const train_state* st,
              const char* config_text, char* err) {
    char final[4096], tmp[4400], file[4500], where[4600], host[256], inner[ERRLEN] = "";
    char* const outer = err;  // h5Check writes its detail to `err`: inner, until the end
    hid_t f = -1;
    FILE* mf = NULL;
    if (mkdir(dir, 0777) && errno != EEXIST) {
        snprintf(err, ERRLEN, "cannot create checkpoint directory %s: %s", dir, strerror(errno));
        return -1;
    }
    host_name(host, sizeof host);
    snprintf(final, sizeof final, "%s/step_%08lld", dir, (long long)st->step);
    snprintf(tmp, sizeof tmp, "%s/.tmp.step_%08lld.%s.%d", dir, (long long)st->step, host,
             (int)getpid());
    remove_tree(tmp);
    if (mkdir(tmp, 0777)) {
        snprintf(err, ERRLEN, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    {
        err = inner;
        snprintf(file, sizeof file, "%s/dense.h5", tmp);
        snprintf(where, sizeof where, "%s", file);
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        h5Check(f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), where, "checkpoint");
        if (dense_group(f, "params", m, m->params, 1, where, err) ||
            dense_group(f, "adam_m", m, (real*)adam_m, 1, where, err) ||
            dense_group(f, "adam_v", m, (real*)adam_v, 1, where, err) ||
            (best && dense_group(f, "best", m, (real*)best, 1, where, err)) ||
            (m->bank && bank_group(f, m, (real*)bank_m, (real*)bank_v, 1, where, err)))
            goto fail;
        int fmt = CKPT_FORMAT;
        if (attr_write(f, "format_version", H5T_NATIVE_INT, &fmt, where, err) ||
            attr_write(f, "step", H5T_NATIVE_INT64, &st->step, where, err) ||
            attr_write(f, "epoch", H5T_NATIVE_INT64, &st->epoch, where, err) ||
            attr_write(f, "index", H5T_NATIVE_INT64, &st->index, where, err) ||
            attr_write(f, "best_metric", H5T_NATIVE_DOUBLE, &st->best_metric, where, err) ||
            attr_write(f, "best_step", H5T_NATIVE_INT64, &st->best_step, where, err) ||
            attr_write(f, "bad_evals", H5T_NATIVE_INT64, &st->bad_evals, where, err) ||
            attr_write(f, "train_seconds", H5T_NATIVE_DOUBLE, &st->train_seconds, where, err) ||
            attr_write(f, "log_loss_sum", H5T_NATIVE_DOUBLE, &st->log_loss_sum, where, err) ||
            attr_write(f, "log_loss_n", H5T_NATIVE_INT64, &st->log_loss_n, where, err) ||
            attr_write(f, "data_fingerprint", H5T_NATIVE_UINT64, &st->data_fingerprint, where,
                       err) ||
            attr_write_str(f, "model", m->name, where, err) ||
            attr_write_str(f, "config", config_text, where, err))
            goto fail;
        // closed or not, the handle is gone: never close it twice
        const herr_t closed = H5Fclose(f);
        f = -1;
        if (closed < 0) {
            h5_error(err, __FILE__, __LINE__, "H5Fclose", where, "closing the file");
            goto fail;
        }
        err = outer;
    }
    // durable before it is visible: the data, the manifest, the folder, then
    // the rename and the parent folder
    if (fsync_path(file, 0)) {
        snprintf(inner, sizeof inner, "cannot sync %s: %s", file, strerror(errno));
        goto fail;
    }
    int64_t size = 0;
    const uint64_t sum = fnv1a_file(file, FNV_OFFSET, &size);
    if (size < 0) {
        snprintf(inner, sizeof inner, "cannot read back %s: %s", file, strerror(errno));
        goto fail;
    }
    snprintf(file, sizeof file, "%s/MANIFEST", tmp);
    if (!(mf = fopen(file, "w")) ||
        fprintf(mf, "elastic-checkpoint %d fnv1a-64\ndense.h5 %lld %016llx\n", CKPT_FORMAT,
                (long long)size, (unsigned long long)sum) < 0 ||
        fflush(mf) || fsync(fileno(mf))) {
        snprintf(inner, sizeof inner, "cannot write %s: %s", file, strerror(errno));
        goto fail;
    }
    const int mf_closed = fclose(mf);
    mf = NULL;
    if (mf_closed || fsync_path(tmp, 1)) {
        snprintf(inner, sizeof inner, "cannot write %s: %s", file, strerror(errno));
        goto fail;
    }
    // The same step written again (a run resumed from an earlier checkpoint)
    // replaces an intact folder; one that fails verification is kept as
    // evidence under another name.
    struct stat sb;
    if (!stat(final, &sb)) {
        char why[ERRLEN], aside[4200];
        if (!ckpt_verify(final, why) ? remove_tree(final) : set_aside(final, aside, sizeof aside)) {
            snprintf(inner, sizeof inner, "cannot replace %s: %s", final, strerror(errno));
            goto fail;
        }
    }
    if (rename(tmp, final) || fsync_path(dir, 1)) {
        snprintf(inner, sizeof inner, "cannot move %s to %s: %s", tmp, final, strerror(errno));
        goto fail;
    }
    remove_stale_tmp(dir);
    return 0;
fail:
    if (f >= 0) H5Fclose(f);
    if (mf) fclose(mf);
    remove_tree(tmp);  // a partial checkpoint must not keep filling the disk
    err = outer;
    snprintf(err, ERRLEN,
             "cannot write checkpoint %s (nothing of it is kept; earlier ones are "
             "intact): %s",
             final, inner);
    return -1;
}

int ckpt_verify(const char* path, char* err) {
    char file[4200];
    snprintf(file, sizeof file, "%s/MANIFEST", path);
    FILE* mf = fopen(file, "r");
    if (!mf) {
        snprintf(err, ERRLEN, "%s: no MANIFEST (%s): not a complete checkpoint", path,
                 strerror(errno));
        return -1;
    }
    int fmt = 0, rc = 0, nfiles = 0;
    char head[64] = "", hash[32] = "";
    if (!fgets(head, sizeof head, mf) ||
        sscanf(head, "elastic-checkpoint %d %31s", &fmt, hash) < 1 ||
        !(fmt == 1 || (fmt == CKPT_FORMAT && !strcmp(hash, "fnv1a-64")))) {
        snprintf(err, ERRLEN, "%s: unreadable or unknown manifest format", file);
        fclose(mf);
        return -1;
    }
    const uint64_t basis = fmt == 1 ? FNV_OFFSET_V1 : FNV_OFFSET;
    char name[256];
    long long size;
    unsigned long long sum;
    while (fscanf(mf, "%255s %lld %llx\n", name, &size, &sum) == 3) {
        char p[4500];
        snprintf(p, sizeof p, "%s/%s", path, name);
        int64_t got = 0;
        uint64_t h = fnv1a_file(p, basis, &got);
        nfiles++;
        if (got < 0) {
            snprintf(err, ERRLEN, "%s: missing or unreadable (%s)", p, strerror(errno));
            rc = -1;
            break;
        }
        if (got != size) {
            snprintf(err, ERRLEN, "%s: size %lld, manifest says %lld (truncated)", p,
                     (long long)got, size);
            rc = -1;
            break;
        }
        if (h != sum) {
            snprintf(err, ERRLEN,
                     "%s: FNV-1a checksum %016llx, manifest says %016llx (corrupt file)", p,
                     (unsigned long long)h, sum);
            rc = -1;
            break;
        }
    }
    fclose(mf);
    if (!rc && nfiles == 0) {
        snprintf(err, ERRLEN, "%s: manifest lists no files", file);
        rc = -1;
    }
    return rc;
}

int ckpt_load(const char* path, model* m, real* adam_m, real* adam_v, real* best, int* has_best,
              real* bank_m, real* bank_v, train_state* st, char** config_text, char* err) {
    char file[4200], where[4300];
    hid_t f = -1;
    char* name = NULL;
    *config_text = NULL;
    if (ckpt_verify(path, err)) return -1;
    snprintf(file, sizeof file, "%s/dense.h5", path);
    snprintf(where, sizeof where, "%s", file);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), where, "checkpoint");
    name = attr_read_str(f, "model", where, err);
    if (!name) goto fail;
    if (strcmp(name, m->name)) {
        snprintf(err, ERRLEN, "%s: checkpoint of model %s, but --model is %s", where, name,
                 m->name);
        goto fail;
    }
    if (dense_group(f, "params", m, m->params, 0, where, err) ||
        dense_group(f, "adam_m", m, adam_m, 0, where, err) ||
        dense_group(f, "adam_v", m, adam_v, 0, where, err))
        goto fail;
    if (m->bank && bank_group(f, m, bank_m, bank_v, 0, where, err)) goto fail;
    *has_best = H5Lexists(f, "best", H5P_DEFAULT) > 0;
    if (*has_best && dense_group(f, "best", m, best, 0, where, err)) goto fail;
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

int ckpt_latest(const char* dir, int fallback, char* out, char* report, size_t report_len,
                char* err) {
    long long* steps;
    int n;
    size_t used = 0;
    if (report_len) report[0] = 0;
    if (list_steps(dir, &steps, &n)) {
        if (errno == ENOENT) return 1;
        snprintf(err, ERRLEN, "cannot read checkpoint directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 1;
    for (int i = 0; i < n; i++) {
        char p[4096], why[ERRLEN], aside[4200];
        snprintf(p, sizeof p, "%s/step_%08lld", dir, steps[i]);
        if (!ckpt_verify(p, why)) {
            snprintf(out, 4096, "%s", p);
            rc = 0;
            break;
        }
        if (!fallback) {
            snprintf(err, ERRLEN,
                     "the newest checkpoint %s fails verification: %s. Nothing was changed; "
                     "rerun with --resume-fallback to set it aside (renamed *.corrupt) and resume "
                     "from the newest one that passes, or --resume PATH to pick one",
                     p, why);
            rc = -1;
            break;
        }
        if (set_aside(p, aside, sizeof aside)) {
            snprintf(err, ERRLEN, "checkpoint %s fails verification (%s) and cannot be renamed: %s",
                     p, why, strerror(errno));
            rc = -1;
            break;
        }
        if (used < report_len)
            used += (size_t)snprintf(report + used, report_len - used,
                                     "checkpoint %s fails verification: %s; kept as %s\n", p, why,
                                     aside);
    }
    free(steps);
    return rc;
}
