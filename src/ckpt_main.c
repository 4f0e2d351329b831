// ckpt_main.c: elastic_ckpt, the checkpoint utilities (DESIGN §5): what a
// checkpoint holds, a full verification, the memory bank's shards rewritten
// for another rank count (or merged into one), and an export for serving.
// One process, offline. Exit status: 0 success, 1 failure, 2 bad command line.
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bank.h"
#include "ckpt.h"
#include "ckpt_bank.h"
#include "h5util.h"
#include "util.h"

#define ERRLEN 512
#define BLOCK_ROWS 65536  // bank rows in memory at a time, whatever the bank's size

static const char* USAGE =
    "usage: elastic_ckpt COMMAND CHECKPOINT [options]\n"
    "Inspects and rewrites elastic_train's checkpoints. CHECKPOINT is a checkpoint\n"
    "folder (step_NNNNNNNN) or a --ckpt-dir (then its newest complete checkpoint).\n"
    "commands:\n"
    "  info     step, model, config, rank count, files, parameter and bank sizes\n"
    "  verify   every file against the manifest (size and checksum), every HDF5\n"
    "           checksum, the bank's row ids covering 0..rows-1 once\n"
    "  reshard  --ranks M -o OUT: the same checkpoint for M ranks (the bank's rows\n"
    "           and moments rewritten, in blocks: memory stays bounded)\n"
    "  merge    -o OUT: the bank in one shard (reshard --ranks 1)\n"
    "  export   -o FILE.h5: the item embeddings, the bank's rows and the config in\n"
    "           one HDF5 file (h5py reads it)\n"
    "OUT is written under a temporary name and renamed when complete.\n";

// What dense.h5 and the manifest say.
typedef struct {
    char path[4096];  // the checkpoint folder
    char model[64];
    char* config;
    int64_t step, epoch, index, best_step, params;
    double best_metric;
    int32_t world;
    int shards;  // bank shards in the manifest
    int64_t rows;
    int32_t d;
    int legacy;  // the bank inside dense.h5 (a single-process checkpoint of format 2)
} ckpt_info;

static void fail_with(const char* cmd, const char* err) {
    fprintf(stderr, "elastic_ckpt %s: %s\n", cmd, err);
    exit(1);
}

// The elements of every dataset of group g (parameters when g is "params").
static int64_t group_elements(hid_t f, const char* g, const char* file, char* err) {
    hid_t grp = -1;
    int64_t total = 0;
    H5G_info_t gi;
    h5Check(grp = H5Gopen2(f, g, H5P_DEFAULT), file, g);
    h5Check(H5Gget_info(grp, &gi), file, g);
    for (hsize_t i = 0; i < gi.nlinks; i++) {
        char name[256];
        if (H5Lget_name_by_idx(grp, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                               H5P_DEFAULT) < 0)
            continue;
        hid_t ds = H5Dopen2(grp, name, H5P_DEFAULT), sp = ds >= 0 ? H5Dget_space(ds) : -1;
        const hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
        if (sp >= 0) H5Sclose(sp);
        if (ds >= 0) H5Dclose(ds);
        if (n < 0) {
            snprintf(err, ERRLEN, "%s: %s/%s: unreadable", file, g, name);
            goto fail;
        }
        total += n;
    }
    H5Gclose(grp);
    return total;
fail:
    if (grp >= 0) H5Gclose(grp);
    return -1;
}

static int read_info(const char* arg, ckpt_info* ci, char* err) {
    memset(ci, 0, sizeof *ci);
    ci->world = 1;
    if (ckpt_resolve(arg, ci->path, err)) return -1;
    char file[4200], line[512], first[256] = "";
    snprintf(file, sizeof file, "%s/MANIFEST", ci->path);
    FILE* mf = fopen(file, "r");
    if (!mf) return snprintf(err, ERRLEN, "%s: %s", file, strerror(errno)), -1;
    while (fgets(line, sizeof line, mf))
        if (!strncmp(line, "bank-", 5) && !ci->shards++) sscanf(line, "%255s", first);
    fclose(mf);
    snprintf(file, sizeof file, "%s/dense.h5", ci->path);
    hid_t f = -1;
    char* mname = NULL;
    h5_quiet();
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), file, "checkpoint");
    tryCheck(h5_read_attr_str(f, "model", &mname, file, err));
    snprintf(ci->model, sizeof ci->model, "%s", mname);
    free(mname);
    tryCheck(h5_read_attr_str(f, "config", &ci->config, file, err));
    tryCheck(h5_read_attr_i64(f, "step", &ci->step, file, err));
    tryCheck(h5_read_attr_i64(f, "epoch", &ci->epoch, file, err));
    tryCheck(h5_read_attr_i64(f, "index", &ci->index, file, err));
    tryCheck(h5_read_attr_i64(f, "best_step", &ci->best_step, file, err));
    hid_t a = -1;
    h5Check(a = H5Aopen(f, "best_metric", H5P_DEFAULT), file, "best_metric");
    h5Check(H5Aread(a, H5T_NATIVE_DOUBLE, &ci->best_metric), file, "best_metric");
    H5Aclose(a);
    if (H5Aexists(f, "world") > 0) tryCheck(h5_read_attr_i32(f, "world", &ci->world, file, err));
    ci->legacy = H5Lexists(f, "bank", H5P_DEFAULT) > 0;
    tryCheck(ci->params = group_elements(f, "params", file, err));
    H5Fclose(f);
    f = -1;
    if (ci->shards) {  // the bank's size from the first shard (verify checks each against it)
        snprintf(file, sizeof file, "%s/%s", ci->path, first);
        h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), file, "bank shard");
        tryCheck(h5_read_attr_i64(f, "rows", &ci->rows, file, err));
        tryCheck(h5_read_attr_i32(f, "d", &ci->d, file, err));
        H5Fclose(f);
    }
    return 0;
fail:
    if (f >= 0) H5Fclose(f);
    return -1;
}

static double file_mb(const char* dir, const char* name) {
    char p[4400];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) ? -1 : sb.st_size / 1048576.0;
}

static int cmd_info(int argc, char** argv) {
    char err[ERRLEN];
    if (argc != 1 || !strcmp(argv[0], "--help")) {
        printf("usage: elastic_ckpt info CHECKPOINT\n");
        return argc == 1 ? 0 : 2;
    }
    ckpt_info ci;
    if (read_info(argv[0], &ci, err)) fail_with("info", err);
    printf("checkpoint %s\n", ci.path);
    printf("  model %s, step %lld (epoch %lld, next batch %lld), written by %d rank%s\n", ci.model,
           (long long)ci.step, (long long)ci.epoch + 1, (long long)ci.index, ci.world,
           ci.world > 1 ? "s" : "");
    if (ci.best_step >= 0)
        printf("  best validation NDCG@10 %.4f at step %lld\n", ci.best_metric,
               (long long)ci.best_step);
    else
        printf("  no validation yet\n");
    printf("  parameters: %lld (with their Adam moments in dense.h5)\n", (long long)ci.params);
    if (ci.shards)
        printf(
            "  memory bank: %lld rows x %d, %.3g MB of rows (%.3g MB with moments) in %d "
            "shard%s\n",
            (long long)ci.rows, ci.d, ci.rows * ci.d * 4.0 / 1048576.0,
            ci.rows * ci.d * 12.0 / 1048576.0, ci.shards, ci.shards > 1 ? "s" : "");
    else if (ci.legacy)
        printf("  memory bank: inside dense.h5 (a single-process checkpoint of format 2)\n");
    printf("  files:\n    %-26s %10.3f MB\n", "dense.h5", file_mb(ci.path, "dense.h5"));
    for (int q = 0; q < ci.shards; q++) {
        char name[64];
        ckpt_shard_name(name, sizeof name, q, ci.shards);
        printf("    %-26s %10.3f MB\n", name, file_mb(ci.path, name));
    }
    printf("  config:\n");
    for (char *save = NULL, *line = strtok_r(ci.config, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
        printf("    %s\n", line);
    free(ci.config);
    return 0;
}

// Every dataset of dense.h5's groups read whole (HDF5 checks each chunk's
// Fletcher32 checksum on the way).
static int read_dense_all(const char* file, char* err) {
    hid_t f = -1, grp = -1;
    float* buf = NULL;
    const char* groups[4] = {"params", "adam_m", "adam_v", "best"};
    h5_quiet();
    h5Check(f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT), file, "checkpoint");
    for (int g = 0; g < 4; g++) {
        if (H5Lexists(f, groups[g], H5P_DEFAULT) <= 0) {
            if (g == 3) continue;  // no best model yet
            snprintf(err, ERRLEN, "%s: no group %s", file, groups[g]);
            goto fail;
        }
        H5G_info_t gi;
        h5Check(grp = H5Gopen2(f, groups[g], H5P_DEFAULT), file, groups[g]);
        h5Check(H5Gget_info(grp, &gi), file, groups[g]);
        for (hsize_t i = 0; i < gi.nlinks; i++) {
            char name[256], where[600];
            h5Check(H5Lget_name_by_idx(grp, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                       H5P_DEFAULT),
                    file, groups[g]);
            snprintf(where, sizeof where, "%s, tensor %s/%s", file, groups[g], name);
            hid_t ds = -1, sp = -1;
            h5Check(ds = H5Dopen2(grp, name, H5P_DEFAULT), where, "checkpoint");
            sp = H5Dget_space(ds);
            const hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : 0;
            if (sp >= 0) H5Sclose(sp);
            free(buf);
            buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *buf);
            const herr_t rc =
                buf && n > 0 ? H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf)
                             : 0;
            if (rc < 0) h5_error(err, __FILE__, __LINE__, "H5Dread", where, "checkpoint");
            H5Dclose(ds);
            if (rc < 0 || !buf) {
                if (!buf) snprintf(err, ERRLEN, "%s: out of memory", where);
                goto fail;
            }
        }
        H5Gclose(grp);
        grp = -1;
    }
    free(buf);
    H5Fclose(f);
    return 0;
fail:
    free(buf);
    if (grp >= 0) H5Gclose(grp);
    if (f >= 0) H5Fclose(f);
    return -1;
}

static int verify(const ckpt_info* ci, char* err) {
    char file[4400];
    if (ckpt_verify(ci->path, err)) return -1;
    snprintf(file, sizeof file, "%s/dense.h5", ci->path);
    if (read_dense_all(file, err)) return -1;
    if (ci->shards && ci->shards != ci->world) {
        snprintf(err, ERRLEN,
                 "%s: the manifest lists %d bank shards, dense.h5 says %d ranks wrote it (files "
                 "of another run or rank count?)",
                 ci->path, ci->shards, ci->world);
        return -1;
    }
    for (int q = 0; q < ci->shards; q++) {
        char name[64];
        ckpt_shard_name(name, sizeof name, q, ci->shards);
        snprintf(file, sizeof file, "%s/%s", ci->path, name);
        if (ckpt_shard_check(file, ci->shards, q, ci->rows, ci->d, ci->step, err)) return -1;
    }
    return 0;
}

static int cmd_verify(int argc, char** argv) {
    char err[ERRLEN];
    if (argc != 1 || !strcmp(argv[0], "--help")) {
        printf("usage: elastic_ckpt verify CHECKPOINT\n");
        return argc == 1 ? 0 : 2;
    }
    ckpt_info ci;
    char path[4096];
    const double t0 = now_sec();
    // the manifest's files first (a missing or damaged one is named as such)
    if (ckpt_resolve(argv[0], path, err) || ckpt_verify(path, err) || read_info(path, &ci, err) ||
        verify(&ci, err))
        fail_with("verify", err);
    printf("ok: %s: step %lld, every file as its manifest records, every HDF5 checksum", ci.path,
           (long long)ci.step);
    if (ci.shards)
        printf(", bank rows 0..%lld each once in %d shard%s", (long long)ci.rows - 1, ci.shards,
               ci.shards > 1 ? "s" : "");
    printf(" (%.1f s, peak RSS %.0f MB)\n", now_sec() - t0, peak_rss_mb());
    free(ci.config);
    return 0;
}

static int copy_file(const char* from, const char* to, char* err) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char buf[1 << 16];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
    if (in && ferror(in)) rc = -1;
    if (out && fclose(out)) rc = -1;
    if (in) fclose(in);
    if (rc) snprintf(err, ERRLEN, "cannot copy %s to %s: %s", from, to, strerror(errno));
    return rc;
}

// The bank of ci for M ranks into folder tmp (dense.h5 copied, its world M).
static int reshard_into(const ckpt_info* ci, int M, const char* tmp, char* err) {
    char from[4400], to[4400], name[64];
    snprintf(from, sizeof from, "%s/dense.h5", ci->path);
    snprintf(to, sizeof to, "%s/dense.h5", tmp);
    if (copy_file(from, to, err)) return -1;
    hid_t f = -1;
    h5_quiet();
    h5Check(f = H5Fopen(to, H5F_ACC_RDWR, H5P_DEFAULT), to, "checkpoint");
    if (H5Aexists(f, "world") > 0) h5Check(H5Adelete(f, "world"), to, "world");
    tryCheck(h5_write_attr_i32(f, "world", M, to, err));
    h5Check(H5Fclose(f), to, "closing the file");
    f = -1;
    const size_t blk = (size_t)BLOCK_ROWS * ci->d;
    real* buf = malloc(3 * blk * sizeof *buf);
    if (!buf) return snprintf(err, ERRLEN, "out of memory for a block of bank rows"), -1;
    int rc = 0;
    for (int r = 0; r < M && !rc; r++) {
        ckpt_shard_name(name, sizeof name, r, M);
        snprintf(to, sizeof to, "%s/%s", tmp, name);
        ckpt_shard_writer w;
        rc = ckpt_shard_create(&w, to, ci->rows, ci->d, r, M, ci->step, err);
        for (int64_t j = 0; !rc && j < w.n; j += BLOCK_ROWS) {
            const int64_t n = w.n - j < BLOCK_ROWS ? w.n - j : BLOCK_ROWS;
            rc = ckpt_bank_read(ci->path, ci->shards, ci->rows, ci->d, ci->step, r, M, j, n, buf,
                                buf + blk, buf + 2 * blk, err) ||
                 ckpt_shard_write(&w, j, n, buf, buf + blk, buf + 2 * blk, err);
        }
        char cerr[ERRLEN];
        if (ckpt_shard_close(&w, cerr) && !rc) rc = -1, snprintf(err, ERRLEN, "%s", cerr);
        if (!rc) printf("  %s: %lld rows\n", name, (long long)w.n);
    }
    free(buf);
    return rc ? -1 : 0;
fail:
    if (f >= 0) H5Fclose(f);
    return -1;
}

static int cmd_reshard(int argc, char** argv, int merge) {
    const char* cmd = merge ? "merge" : "reshard";
    char err[ERRLEN];
    const char *src = NULL, *out = NULL;
    long M = merge ? 1 : 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: elastic_ckpt %s CHECKPOINT %s-o OUT\n", cmd, merge ? "" : "--ranks M ");
            return 0;
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            out = argv[++i];
        } else if (!merge && !strcmp(argv[i], "--ranks") && i + 1 < argc) {
            char* end;
            M = strtol(argv[++i], &end, 10);
            if (*end || M < 1 || M > 1 << 20) {
                fprintf(stderr, "elastic_ckpt %s: bad --ranks '%s' (want 1 or more)\n", cmd,
                        argv[i]);
                return 2;
            }
        } else if (argv[i][0] != '-' && !src) {
            src = argv[i];
        } else {
            fprintf(stderr, "elastic_ckpt %s: unknown or incomplete option '%s' (see --help)\n",
                    cmd, argv[i]);
            return 2;
        }
    }
    if (!src || !out || !M) {
        fprintf(stderr, "elastic_ckpt %s: needs CHECKPOINT%s and -o OUT (see --help)\n", cmd,
                merge ? "" : ", --ranks M");
        return 2;
    }
    ckpt_info ci;
    char path[4096];
    const double t0 = now_sec();
    if (ckpt_resolve(src, path, err) || ckpt_verify(path, err) || read_info(path, &ci, err))
        fail_with(cmd, err);
    if (ci.legacy)
        fail_with(cmd,
                  "a single-process checkpoint with the bank inside dense.h5 (format 2): "
                  "resume it with elastic_train on one rank and checkpoint again");
    if (!ci.shards)
        fail_with(cmd, "this checkpoint has no memory bank: it resumes at any rank count as it is");
    if (verify(&ci, err)) fail_with(cmd, err);  // everything read is checked first
    struct stat sb;
    if (!stat(out, &sb)) {
        snprintf(err, ERRLEN, "%s exists: refusing to replace it", out);
        fail_with(cmd, err);
    }
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", out, (int)getpid());
    if (mkdir(tmp, 0777)) {
        snprintf(err, ERRLEN, "cannot create %s: %s", tmp, strerror(errno));
        fail_with(cmd, err);
    }
    printf("%s %s: %lld bank rows x %d, %d shard%s -> %ld\n", cmd, ci.path, (long long)ci.rows,
           ci.d, ci.shards, ci.shards > 1 ? "s" : "", M);
    if (reshard_into(&ci, (int)M, tmp, err) || ckpt_seal(tmp, out, (int)M, err)) {
        ckpt_remove(tmp);
        fail_with(cmd, err);
    }
    printf("wrote %s (%.1f s, peak RSS %.0f MB)\n", out, now_sec() - t0, peak_rss_mb());
    free(ci.config);
    return 0;
}

// params/wte's rows 1..V-1 (the items; row 0 is padding) into out as
// item_embeddings.
static int export_items(const char* dense, hid_t out, char* err) {
    hid_t f = -1, ds = -1, fs = -1, ms = -1, ods = -1;
    float* buf = NULL;
    hsize_t dims[2];
    h5Check(f = H5Fopen(dense, H5F_ACC_RDONLY, H5P_DEFAULT), dense, "checkpoint");
    h5Check(ds = H5Dopen2(f, "params/wte", H5P_DEFAULT), dense, "params/wte");
    h5Check(fs = H5Dget_space(ds), dense, "params/wte");
    if (H5Sget_simple_extent_ndims(fs) != 2 || H5Sget_simple_extent_dims(fs, dims, NULL) < 0 ||
        dims[0] < 2) {
        snprintf(err, ERRLEN, "%s: params/wte is not an item table", dense);
        goto fail;
    }
    const hsize_t start[2] = {1, 0}, cnt[2] = {dims[0] - 1, dims[1]};
    buf = malloc(cnt[0] * cnt[1] * sizeof *buf);
    if (!buf) {
        snprintf(err, ERRLEN, "out of memory for the item table");
        goto fail;
    }
    h5Check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL), dense, "params/wte");
    h5Check(ms = H5Screate_simple(2, cnt, NULL), dense, "params/wte");
    h5Check(H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf), dense, "params/wte");
    h5Check(ods = H5Dcreate2(out, "item_embeddings", H5T_IEEE_F32LE, ms, H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT),
            "export", "item_embeddings");
    h5Check(H5Dwrite(ods, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), "export",
            "item_embeddings");
    H5Dclose(ods), H5Sclose(ms), H5Sclose(fs), H5Dclose(ds), H5Fclose(f);
    free(buf);
    return 0;
fail:
    free(buf);
    if (ods >= 0) H5Dclose(ods);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    return -1;
}

// The bank's rows in global order (values only), streamed from the shards.
static int export_bank(const ckpt_info* ci, hid_t out, const char* file, char* err) {
    hid_t ds = -1, sp = -1, fs = -1, ms = -1;
    const hsize_t dims[2] = {(hsize_t)ci->rows, (hsize_t)ci->d};
    real* buf = malloc((size_t)BLOCK_ROWS * ci->d * sizeof *buf);
    if (!buf) return snprintf(err, ERRLEN, "out of memory for a block of bank rows"), -1;
    h5Check(sp = H5Screate_simple(2, dims, NULL), file, "bank");
    h5Check(ds = H5Dcreate2(out, "bank", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
            file, "bank");
    for (int64_t j = 0; j < ci->rows; j += BLOCK_ROWS) {
        const hsize_t n = (hsize_t)(ci->rows - j < BLOCK_ROWS ? ci->rows - j : BLOCK_ROWS);
        const hsize_t start[2] = {(hsize_t)j, 0}, cnt[2] = {n, (hsize_t)ci->d};
        tryCheck(ckpt_bank_read(ci->path, ci->shards, ci->rows, ci->d, ci->step, 0, 1, j,
                                (int64_t)n, buf, NULL, NULL, err));
        h5Check(fs = H5Dget_space(ds), file, "bank");
        h5Check(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL), file, "bank");
        h5Check(ms = H5Screate_simple(2, cnt, NULL), file, "bank");
        h5Check(H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf), file, "bank");
        H5Sclose(ms), H5Sclose(fs);
        ms = fs = -1;
    }
    H5Dclose(ds), H5Sclose(sp);
    free(buf);
    return 0;
fail:
    free(buf);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (ds >= 0) H5Dclose(ds);
    if (sp >= 0) H5Sclose(sp);
    return -1;
}

static int cmd_export(int argc, char** argv) {
    char err[ERRLEN];
    const char *src = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf(
                "usage: elastic_ckpt export CHECKPOINT -o FILE.h5\n"
                "FILE.h5: item_embeddings [items, d] (row k is the dataset's item k+1),\n"
                "bank [rows, d] when the model has one, attributes model, step, config.\n");
            return 0;
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] != '-' && !src) {
            src = argv[i];
        } else {
            fprintf(stderr, "elastic_ckpt export: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!src || !out) {
        fprintf(stderr, "elastic_ckpt export: needs CHECKPOINT and -o FILE.h5 (see --help)\n");
        return 2;
    }
    ckpt_info ci;
    if (read_info(src, &ci, err)) fail_with("export", err);
    if (ci.legacy)
        fail_with("export",
                  "a single-process checkpoint of format 2: resume and checkpoint it again first");
    if (ckpt_verify(ci.path, err)) fail_with("export", err);
    char tmp[4400], dense[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", out, (int)getpid());
    snprintf(dense, sizeof dense, "%s/dense.h5", ci.path);
    h5_quiet();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    int rc = f < 0;
    if (rc) h5_error(err, __FILE__, __LINE__, "H5Fcreate", tmp, "export");
    rc = rc || export_items(dense, f, err) || (ci.shards && export_bank(&ci, f, tmp, err)) ||
         h5_write_attr_str(f, "model", ci.model, tmp, err) ||
         h5_write_attr_i64(f, "step", ci.step, tmp, err) ||
         h5_write_attr_str(f, "config", ci.config, tmp, err);
    if (f >= 0 && H5Fclose(f) < 0 && !rc) {
        h5_error(err, __FILE__, __LINE__, "H5Fclose", tmp, "export");
        rc = 1;
    }
    if (!rc && rename(tmp, out)) {
        snprintf(err, ERRLEN, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
        rc = 1;
    }
    if (rc) {
        unlink(tmp);
        fail_with("export", err);
    }
    printf("wrote %s: %s at step %lld, item embeddings%s\n", out, ci.model, (long long)ci.step,
           ci.shards ? " and the bank" : "");
    free(ci.config);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char* c = argv[1];
    if (!strcmp(c, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(c, "verify")) return cmd_verify(argc - 2, argv + 2);
    if (!strcmp(c, "reshard")) return cmd_reshard(argc - 2, argv + 2, 0);
    if (!strcmp(c, "merge")) return cmd_reshard(argc - 2, argv + 2, 1);
    if (!strcmp(c, "export")) return cmd_export(argc - 2, argv + 2);
    fprintf(stderr, "elastic_ckpt: unknown command '%s'\n%s", c, USAGE);
    return 2;
}
