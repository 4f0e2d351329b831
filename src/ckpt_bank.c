// ckpt_bank.c: the memory bank's shards in a checkpoint (ckpt_bank.h).
#include "ckpt_bank.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bank.h"
#include "h5util.h"

#define ERRLEN 512
#define BLOCK_ROWS 65536  // rows checked at a time
static const char* ARRAYS[3] = {"values", "adam_m", "adam_v"};

void ckpt_shard_name(char* out, size_t n, int q, int P) {
    snprintf(out, n, "bank-%05d-of-%05d.h5", q, P);
}

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        const int64_t t = a % b;
        a = b, b = t;
    }
    return a;
}

int ckpt_shards_holding(int q, int P, int r, int M) { return (r - q) % gcd64(P, M) == 0; }

// A shard's attributes against what the reader expects.
static int check_attrs(hid_t f, const char* file, int P, int q, int64_t rows, int d, int64_t step,
                       char* err) {
    int64_t at_rows = 0, at_step = 0;
    int32_t at_d = 0, at_rank = 0, at_world = 0;
    tryCheck(h5_read_attr_i64(f, "rows", &at_rows, file, err));
    tryCheck(h5_read_attr_i32(f, "d", &at_d, file, err));
    tryCheck(h5_read_attr_i32(f, "rank", &at_rank, file, err));
    tryCheck(h5_read_attr_i32(f, "world", &at_world, file, err));
    tryCheck(h5_read_attr_i64(f, "step", &at_step, file, err));
    if (at_rows != rows || at_d != d || at_rank != q || at_world != P || at_step != step) {
        snprintf(err, ERRLEN,
                 "%s: a shard of rank %d of %d, bank %lld x %d, step %lld; the checkpoint wants "
                 "rank %d of %d, bank %lld x %d, step %lld (a shard of another run or rank "
                 "count?)",
                 file, at_rank, at_world, (long long)at_rows, at_d, (long long)at_step, q, P,
                 (long long)rows, d, (long long)step);
        return -1;
    }
    return 0;
fail:
    return -1;
}

// Opens dataset name of f with a chunk cache large enough for strided reads
// (each chunk is then read once however many runs cross it).
static hid_t open_array(hid_t f, const char* name) {
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl < 0) return -1;
    H5Pset_chunk_cache(dapl, 521, (size_t)64 << 20, 1.0);
    const hid_t ds = H5Dopen2(f, name, dapl);
    H5Pclose(dapl);
    return ds;
}

// n rows (extent check) of dataset ds, 1-D or [n, d].
static int extent_is(hid_t ds, int ndim, int64_t n, int d) {
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 0};
    const int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == ndim &&
                   H5Sget_simple_extent_dims(sp, dims, NULL) >= 0 && dims[0] == (hsize_t)n &&
                   (ndim == 1 || dims[1] == (hsize_t)d);
    if (sp >= 0) H5Sclose(sp);
    return ok;
}

// From shard q of P: the rows of rank r of M among its local rows [first,
// first + count), into buffers [count, d].
static int read_from_shard(const char* file, int P, int q, int64_t rows, int d, int64_t step, int r,
                           int M, int64_t first, int64_t count, real* out[3], char* err) {
    const int64_t g = gcd64(P, M), lcm = (int64_t)P / g * M;
    // x0: the first global row held by both (q mod P, r mod M)
    int64_t x0 = -1;
    for (int64_t t = 0; t < M / g; t++)
        if ((q + (int64_t)P * t) % M == r) {
            x0 = q + (int64_t)P * t;
            break;
        }
    const int64_t lo = r + (int64_t)M * first;
    int64_t hi = r + (int64_t)M * (first + count - 1);
    if (hi > rows - 1) hi = rows - 1;
    if (x0 < 0 || lo > hi) return 0;
    const int64_t i0 = lo + (((x0 - lo) % lcm) + lcm) % lcm;  // first such row >= lo
    if (i0 > hi) return 0;
    const int64_t k = (hi - i0) / lcm + 1;
    hid_t f = -1, ds = -1, fs = -1, ms = -1;
    int64_t* ids = malloc((size_t)k * sizeof *ids);
    if (!ids) {
        snprintf(err, ERRLEN, "%s: out of memory for %lld row ids", file, (long long)k);
        return -1;
    }
    h5_quiet();
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), file, "bank shard");
    tryCheck(check_attrs(f, file, P, q, rows, d, step, err));
    const int64_t n = bank_local_rows(rows, q, P);
    // in the file: rows j0, j0 + lcm/P, ...; in memory: a0, a0 + lcm/M, ...
    const hsize_t j0 = (hsize_t)((i0 - q) / P), sf = (hsize_t)(lcm / P), kk = (hsize_t)k;
    const hsize_t a0 = (hsize_t)((i0 - r) / M - first), sm = (hsize_t)(lcm / M);
    h5Check(ds = open_array(f, "ids"), file, "bank shard ids");
    if (!extent_is(ds, 1, n, d)) {
        snprintf(err, ERRLEN, "%s: not %lld row ids (rank %d of %d of %lld rows)", file,
                 (long long)n, q, P, (long long)rows);
        goto fail;
    }
    h5Check(fs = H5Dget_space(ds), file, "bank shard ids");
    h5Check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, &j0, &sf, &kk, NULL), file, "bank shard ids");
    h5Check(ms = H5Screate_simple(1, &kk, NULL), file, "bank shard ids");
    h5Check(H5Dread(ds, H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT, ids), file, "bank shard ids");
    for (int64_t t = 0; t < k; t++)
        if (ids[t] != i0 + lcm * t) {
            snprintf(err, ERRLEN, "%s: local row %lld has id %lld, want %lld", file,
                     (long long)(j0 + sf * t), (long long)ids[t], (long long)(i0 + lcm * t));
            goto fail;
        }
    H5Sclose(ms), H5Sclose(fs), H5Dclose(ds);
    ms = fs = ds = -1;
    const hsize_t fstart[2] = {j0, 0}, fstride[2] = {sf, 1}, cnt[2] = {kk, 1},
                  blk[2] = {1, (hsize_t)d};
    const hsize_t mdims[2] = {(hsize_t)count, (hsize_t)d}, mstart[2] = {a0, 0},
                  mstride[2] = {sm, 1};
    for (int a = 0; a < 3; a++) {
        if (!out[a]) continue;
        h5Check(ds = open_array(f, ARRAYS[a]), file, ARRAYS[a]);
        if (!extent_is(ds, 2, n, d)) {
            snprintf(err, ERRLEN, "%s: %s is not [%lld, %d]", file, ARRAYS[a], (long long)n, d);
            goto fail;
        }
        h5Check(fs = H5Dget_space(ds), file, ARRAYS[a]);
        h5Check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, fstart, fstride, cnt, blk), file,
                ARRAYS[a]);
        h5Check(ms = H5Screate_simple(2, mdims, NULL), file, ARRAYS[a]);
        h5Check(H5Sselect_hyperslab(ms, H5S_SELECT_SET, mstart, mstride, cnt, blk), file,
                ARRAYS[a]);
        h5Check(H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out[a]), file, ARRAYS[a]);
        H5Sclose(ms), H5Sclose(fs), H5Dclose(ds);
        ms = fs = ds = -1;
    }
    free(ids);
    H5Fclose(f);
    return 0;
fail:
    free(ids);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    return -1;
}

int ckpt_bank_read(const char* dir, int P, int64_t rows, int d, int64_t step, int r, int M,
                   int64_t first, int64_t count, real* values, real* m, real* v, char* err) {
    real* out[3] = {values, m, v};
    if (count <= 0) return 0;
    for (int q = 0; q < P; q++) {
        if (!ckpt_shards_holding(q, P, r, M)) continue;
        char name[64], file[4200];
        ckpt_shard_name(name, sizeof name, q, P);
        snprintf(file, sizeof file, "%s/%s", dir, name);
        if (read_from_shard(file, P, q, rows, d, step, r, M, first, count, out, err)) return -1;
    }
    return 0;
}

// A dataset of n x d (d 0: 1-D) of type ftype, chunked ~1M elements, with
// Fletcher32 checksums (an empty one unchunked: it holds no data).
static hid_t create_array(hid_t f, const char* name, hid_t ftype, int64_t n, int d,
                          const char* file, char* err) {
    hid_t space = -1, dcpl = -1, ds = -1;
    const int nd = d ? 2 : 1;
    hsize_t dims[2] = {(hsize_t)n, (hsize_t)d}, chunk[2] = {(hsize_t)n, (hsize_t)d};
    const hsize_t per = d ? (hsize_t)d : 1;
    if (chunk[0] * per > (1u << 20)) chunk[0] = (1u << 20) / per ? (1u << 20) / per : 1;
    h5Check(space = H5Screate_simple(nd, dims, NULL), file, name);
    h5Check(dcpl = H5Pcreate(H5P_DATASET_CREATE), file, name);
    if (n > 0) {
        h5Check(H5Pset_chunk(dcpl, nd, chunk), file, name);
        h5Check(H5Pset_fletcher32(dcpl), file, name);
    }
    h5Check(ds = H5Dcreate2(f, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), file, name);
    H5Pclose(dcpl);
    H5Sclose(space);
    return ds;
fail:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return -1;
}

int ckpt_shard_create(ckpt_shard_writer* w, const char* file, int64_t rows, int d, int rank,
                      int world, int64_t step, char* err) {
    memset(w, 0, sizeof *w);
    w->f = w->ids = w->arr[0] = w->arr[1] = w->arr[2] = -1;
    snprintf(w->path, sizeof w->path, "%s", file);
    w->n = bank_local_rows(rows, rank, world), w->d = d, w->rank = rank, w->world = world;
    h5_quiet();
    h5Check(w->f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), file, "bank shard");
    tryCheck(w->ids = create_array(w->f, "ids", H5T_STD_I64LE, w->n, 0, file, err));
    for (int a = 0; a < 3; a++)
        tryCheck(w->arr[a] = create_array(w->f, ARRAYS[a], H5T_IEEE_F32LE, w->n, d, file, err));
    tryCheck(h5_write_attr_i64(w->f, "rows", rows, file, err));
    tryCheck(h5_write_attr_i32(w->f, "d", d, file, err));
    tryCheck(h5_write_attr_i32(w->f, "rank", rank, file, err));
    tryCheck(h5_write_attr_i32(w->f, "world", world, file, err));
    tryCheck(h5_write_attr_i64(w->f, "step", step, file, err));
    return 0;
fail:
    return -1;
}

int ckpt_shard_write(ckpt_shard_writer* w, int64_t first, int64_t count, const real* values,
                     const real* m, const real* v, char* err) {
    const char* file = w->path;
    hid_t fs = -1, ms = -1;
    int64_t* ids = NULL;
    if (count <= 0) return 0;
    if (first < 0 || first + count > w->n) {
        snprintf(err, ERRLEN, "%s: rows %lld..%lld of a shard of %lld", file, (long long)first,
                 (long long)(first + count), (long long)w->n);
        return -1;
    }
    ids = malloc((size_t)count * sizeof *ids);
    if (!ids) {
        snprintf(err, ERRLEN, "%s: out of memory for %lld row ids", file, (long long)count);
        return -1;
    }
    for (int64_t j = 0; j < count; j++) ids[j] = (first + j) * w->world + w->rank;
    const hsize_t start[2] = {(hsize_t)first, 0}, dims[2] = {(hsize_t)count, (hsize_t)w->d};
    h5Check(fs = H5Dget_space(w->ids), file, "ids");
    h5Check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, dims, NULL), file, "ids");
    h5Check(ms = H5Screate_simple(1, dims, NULL), file, "ids");
    h5Check(H5Dwrite(w->ids, H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT, ids), file, "ids");
    H5Sclose(ms), H5Sclose(fs);
    ms = fs = -1;
    const real* src[3] = {values, m, v};
    for (int a = 0; a < 3; a++) {
        h5Check(fs = H5Dget_space(w->arr[a]), file, ARRAYS[a]);
        h5Check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, dims, NULL), file, ARRAYS[a]);
        h5Check(ms = H5Screate_simple(2, dims, NULL), file, ARRAYS[a]);
        h5Check(H5Dwrite(w->arr[a], H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, src[a]), file,
                ARRAYS[a]);
        H5Sclose(ms), H5Sclose(fs);
        ms = fs = -1;
    }
    free(ids);
    return 0;
fail:
    free(ids);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return -1;
}

int ckpt_shard_close(ckpt_shard_writer* w, char* err) {
    int rc = 0;
    for (int a = 0; a < 3; a++)
        if (w->arr[a] >= 0 && H5Dclose(w->arr[a]) < 0) rc = -1;
    if (w->ids >= 0 && H5Dclose(w->ids) < 0) rc = -1;
    if (rc) h5_error(err, __FILE__, __LINE__, "H5Dclose", w->path, "closing a bank array");
    if (w->f >= 0 && H5Fclose(w->f) < 0) {
        if (!rc) h5_error(err, __FILE__, __LINE__, "H5Fclose", w->path, "closing the file");
        rc = -1;
    }
    w->f = w->ids = w->arr[0] = w->arr[1] = w->arr[2] = -1;
    return rc;
}

int ckpt_shard_check(const char* file, int P, int q, int64_t rows, int d, int64_t step, char* err) {
    const int64_t n = bank_local_rows(rows, q, P);
    hid_t f = -1, ds[4] = {-1, -1, -1, -1}, fs = -1, ms = -1;
    real* buf = malloc((size_t)BLOCK_ROWS * (d > 0 ? d : 1) * sizeof *buf);
    int64_t* ids = malloc((size_t)BLOCK_ROWS * sizeof *ids);
    if (!buf || !ids) {
        snprintf(err, ERRLEN, "%s: out of memory for a block of rows", file);
        goto fail;
    }
    h5_quiet();
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), file, "bank shard");
    tryCheck(check_attrs(f, file, P, q, rows, d, step, err));
    const char* names[4] = {"ids", ARRAYS[0], ARRAYS[1], ARRAYS[2]};
    for (int a = 0; a < 4; a++) {
        h5Check(ds[a] = open_array(f, names[a]), file, names[a]);
        if (!extent_is(ds[a], a ? 2 : 1, n, d)) {
            snprintf(err, ERRLEN, "%s: %s does not hold the %lld rows of rank %d of %d", file,
                     names[a], (long long)n, q, P);
            goto fail;
        }
    }
    for (int64_t j0 = 0; j0 < n; j0 += BLOCK_ROWS) {
        const hsize_t start[2] = {(hsize_t)j0, 0},
                      dims[2] = {(hsize_t)(n - j0 < BLOCK_ROWS ? n - j0 : BLOCK_ROWS), (hsize_t)d};
        for (int a = 0; a < 4; a++) {
            h5Check(fs = H5Dget_space(ds[a]), file, names[a]);
            h5Check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, dims, NULL), file,
                    names[a]);
            h5Check(ms = H5Screate_simple(a ? 2 : 1, dims, NULL), file, names[a]);
            h5Check(H5Dread(ds[a], a ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT,
                            a ? (void*)buf : (void*)ids),
                    file, names[a]);
            H5Sclose(ms), H5Sclose(fs);
            ms = fs = -1;
            if (a) continue;
            for (hsize_t t = 0; t < dims[0]; t++)
                if (ids[t] != (j0 + (int64_t)t) * P + q) {
                    snprintf(err, ERRLEN, "%s: local row %lld has id %lld, want %lld", file,
                             (long long)(j0 + (int64_t)t), (long long)ids[t],
                             (long long)((j0 + (int64_t)t) * P + q));
                    goto fail;
                }
        }
    }
    for (int a = 0; a < 4; a++) H5Dclose(ds[a]);
    H5Fclose(f);
    free(buf), free(ids);
    return 0;
fail:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    for (int a = 0; a < 4; a++)
        if (ds[a] >= 0) H5Dclose(ds[a]);
    if (f >= 0) H5Fclose(f);
    free(buf), free(ids);
    return -1;
}
