// test_ckpt.c: checkpoints on disk: the manifest's hash is the standard
// FNV-1a, a corrupt tensor is named, a corrupt newest checkpoint is reported
// (or set aside, never overwritten), --keep-last prunes the oldest; the bank's
// shards written by P ranks read back by every rank of any M, in blocks.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bank.h"
#include "ckpt.h"
#include "ckpt_bank.h"
#include "config.h"
#include "model.h"

static char dir[256];
static const comm one = {.rank = 0, .world = 1, .backend = COMM_LOCAL};

static model* tiny_model(void) {
    config cfg;
    config_defaults(&cfg);
    cfg.L = 6, cfg.d = 8, cfg.heads = 2, cfg.layers = 1;
    char err[512];
    model* m = model_create(&cfg, 20, 2, NULL, err);
    assert_non_null(m);
    m->init(m, 7);
    return m;
}

static void save(model* m, int64_t step) {
    real* zeros = calloc(m->n_params, sizeof(real));
    train_state st = {.step = step, .best_metric = -1, .best_step = -1};
    char err[512];
    int rc = ckpt_save(dir, &one, m, zeros, zeros, NULL, &st, "model = sasrec\n", err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    free(zeros);
}

// The standard 64-bit FNV-1a, written out here independently of ckpt.c.
static uint64_t fnv1a(const char* path, long* size) {
    FILE* f = fopen(path, "rb");
    assert_non_null(f);
    uint64_t h = 0xcbf29ce484222325ull;
    int c;
    *size = 0;
    while ((c = fgetc(f)) != EOF) h = (h ^ (uint64_t)c) * 0x100000001b3ull, (*size)++;
    fclose(f);
    return h;
}

static void write_manifest(const char* ck) {
    char p[512], q[512];
    long size;
    snprintf(p, sizeof p, "%s/dense.h5", ck);
    uint64_t h = fnv1a(p, &size);
    snprintf(q, sizeof q, "%s/MANIFEST", ck);
    FILE* f = fopen(q, "w");
    fprintf(f, "elastic-checkpoint 2 fnv1a-64\ndense.h5 %ld %016llx\n", size,
            (unsigned long long)h);
    fclose(f);
}

static int setup(void** state) {
    snprintf(dir, sizeof dir, "/tmp/elastic_ckptXXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void** state) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

static void test_manifest_is_standard_fnv1a(void** state) {
    model* m = tiny_model();
    save(m, 3);
    char p[512], line[200];
    snprintf(p, sizeof p, "%s/step_00000003/MANIFEST", dir);
    FILE* f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "elastic-checkpoint 2 fnv1a-64\n");
    long size, got_size;
    unsigned long long sum;
    assert_int_equal(fscanf(f, "dense.h5 %ld %llx", &size, &sum), 2);
    fclose(f);
    snprintf(p, sizeof p, "%s/step_00000003/dense.h5", dir);
    assert_true(sum == fnv1a(p, &got_size));
    assert_int_equal(size, got_size);
    model_free(m);
}

// A byte flipped inside a tensor's data, under a manifest that matches the
// damaged file: HDF5's Fletcher32 catches it, and the error names the tensor.
static void test_fletcher32_failure_names_tensor(void** state) {
    model* m = tiny_model();
    save(m, 4);
    char ck[300], p[400];
    snprintf(ck, sizeof ck, "%s/step_00000004", dir);
    snprintf(p, sizeof p, "%s/dense.h5", ck);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "/params/wte", H5P_DEFAULT);
    assert_true(ds >= 0);
    hsize_t offset[2];
    unsigned mask;
    haddr_t addr;
    hsize_t bytes;
    hid_t space = H5Dget_space(ds);
    assert_true(H5Dget_chunk_info(ds, space, 0, offset, &mask, &addr, &bytes) >= 0);
    H5Sclose(space);
    H5Dclose(ds);
    H5Fclose(f);
    FILE* w = fopen(p, "r+b");
    assert_int_equal(fseek(w, (long)addr + 17, SEEK_SET), 0);
    int c = fgetc(w);
    fseek(w, (long)addr + 17, SEEK_SET);
    fputc(c ^ 0x40, w);
    fclose(w);
    write_manifest(ck);
    assert_int_equal(ckpt_verify(ck, p), 0);  // the manifest no longer sees it
    real* buf = calloc(m->n_params, sizeof(real));
    int has_best;
    train_state st;
    char* text = NULL;
    char err[512];
    assert_int_equal(ckpt_load(ck, &one, m, buf, buf, buf, &has_best, &st, &text, err), -1);
    assert_non_null(strstr(err, "params/wte"));
    assert_non_null(strstr(err, "dense.h5"));
    free(buf);
    model_free(m);
}

static void corrupt(const char* ck) {
    char p[400];
    snprintf(p, sizeof p, "%s/dense.h5", ck);
    FILE* w = fopen(p, "r+b");
    fseek(w, 3000, SEEK_SET);
    fputc('x', w);
    fclose(w);
}

// The newest checkpoint picked from what its manifest records: a flipped
// byte (the same size) is not re-hashed at selection but refused by the
// load, naming the file; an incomplete one (a file cut short) is reported, or
// set aside with fallback.
static void test_latest_reports_or_sets_aside(void** state) {
    model* m = tiny_model();
    save(m, 5);
    save(m, 10);
    char ck10[300], out[4096], report[1024], err[512], dense[400];
    snprintf(ck10, sizeof ck10, "%s/step_00000010", dir);
    corrupt(ck10);
    assert_int_equal(ckpt_latest(dir, 0, out, report, sizeof report, err), 0);
    assert_non_null(strstr(out, "step_00000010"));
    real* adam = calloc(2 * m->n_params, sizeof(real));
    real* best = calloc(m->n_params, sizeof(real));
    train_state st;
    int has_best;
    char* text = NULL;
    assert_int_equal(
        ckpt_load(out, &one, m, adam, adam + m->n_params, best, &has_best, &st, &text, err), -1);
    assert_non_null(strstr(err, "step_00000010/dense.h5: FNV-1a checksum"));
    free(adam), free(best);
    snprintf(dense, sizeof dense, "%s/dense.h5", ck10);
    assert_int_equal(truncate(dense, 2000), 0);
    // no fallback: an error naming the checkpoint and why; nothing changed
    assert_int_equal(ckpt_latest(dir, 0, out, report, sizeof report, err), -1);
    assert_non_null(strstr(err, "step_00000010"));
    assert_non_null(strstr(err, "truncated"));
    assert_non_null(strstr(err, "--resume-fallback"));
    struct stat sb;
    assert_int_equal(stat(ck10, &sb), 0);
    // fallback: the older one, the newer kept as .corrupt and reported
    assert_int_equal(ckpt_latest(dir, 1, out, report, sizeof report, err), 0);
    assert_non_null(strstr(out, "step_00000005"));
    assert_non_null(strstr(report, "step_00000010"));
    char aside[400];
    snprintf(aside, sizeof aside, "%s.corrupt", ck10);
    assert_int_equal(stat(aside, &sb), 0);
    assert_int_equal(stat(ck10, &sb), -1);
    model_free(m);
}

// Saving a step whose folder exists but fails verification keeps the old
// folder as evidence instead of deleting it.
static void test_save_keeps_a_corrupt_folder(void** state) {
    model* m = tiny_model();
    save(m, 7);
    char ck[300], aside[400];
    snprintf(ck, sizeof ck, "%s/step_00000007", dir);
    corrupt(ck);
    save(m, 7);
    snprintf(aside, sizeof aside, "%s.corrupt", ck);
    struct stat sb;
    assert_int_equal(stat(aside, &sb), 0);
    char err[512];
    assert_int_equal(ckpt_verify(ck, err), 0);
    model_free(m);
}

static void test_keep_last(void** state) {
    model* m = tiny_model();
    for (int s = 1; s <= 5; s++) save(m, 10 * s);  // 10 .. 50
    char err[512], p[300];
    assert_int_equal(ckpt_prune(dir, 2, err), 0);
    struct stat sb;
    for (int s = 1; s <= 5; s++) {
        snprintf(p, sizeof p, "%s/step_%08d", dir, 10 * s);
        assert_int_equal(stat(p, &sb) == 0, s >= 4);
    }
    model_free(m);
}

static void test_prepare_dir(void** state) {
    char p[300], err[512];
    snprintf(p, sizeof p, "%s/a/b/c", dir);
    assert_int_equal(ckpt_prepare_dir(p, err), 0);  // parents made
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    snprintf(p, sizeof p, "%s/file", dir);
    FILE* f = fopen(p, "w");
    fclose(f);
    snprintf(p, sizeof p, "%s/file/ck", dir);
    assert_int_equal(ckpt_prepare_dir(p, err), -1);
    assert_non_null(strstr(err, "file"));
}

// The value of column c of bank row i, and its moments (distinct per array).
static float cell(int64_t i, int c, int a) { return (float)(i * 1000 + c) + 0.25f * (float)a; }

// Shards of a bank of `rows` x d written by P ranks (in two blocks each, as a
// checkpoint does on a GPU); then every rank r of M reads its rows, in blocks
// of `block` rows, and gets exactly rows r, r + M, ... with their moments.
static void shards_round_trip(int64_t rows, int d, int P, const int* Ms, int nM, int64_t block) {
    char err[512], file[512], name[64];
    const int64_t step = 7;
    for (int q = 0; q < P; q++) {
        const int64_t n = bank_local_rows(rows, q, P);
        float* a[3];
        for (int k = 0; k < 3; k++) {
            a[k] = malloc((size_t)(n ? n : 1) * d * sizeof(float));
            for (int64_t j = 0; j < n; j++)
                for (int c = 0; c < d; c++) a[k][j * d + c] = cell(q + P * j, c, k);
        }
        ckpt_shard_name(name, sizeof name, q, P);
        snprintf(file, sizeof file, "%s/%s", dir, name);
        ckpt_shard_writer w;
        assert_int_equal(ckpt_shard_create(&w, file, rows, d, q, P, step, err), 0);
        const int64_t h = n / 2;
        assert_int_equal(ckpt_shard_write(&w, 0, h, a[0], a[1], a[2], err), 0);
        assert_int_equal(
            ckpt_shard_write(&w, h, n - h, a[0] + h * d, a[1] + h * d, a[2] + h * d, err), 0);
        assert_int_equal(ckpt_shard_close(&w, err), 0);
        if (ckpt_shard_check(file, P, q, rows, d, step, err)) fail_msg("%s", err);
        for (int k = 0; k < 3; k++) free(a[k]);
    }
    for (int x = 0; x < nM; x++) {
        const int M = Ms[x];
        int64_t seen = 0;
        for (int r = 0; r < M; r++) {
            const int64_t n = bank_local_rows(rows, r, M);
            float* got[3];
            for (int k = 0; k < 3; k++) {
                got[k] = malloc((size_t)(n ? n : 1) * d * sizeof(float));
                memset(got[k], 0xff, (size_t)(n ? n : 1) * d * sizeof(float));
            }
            for (int64_t j = 0; j < n; j += block) {
                const int64_t c = n - j < block ? n - j : block;
                if (ckpt_bank_read(dir, P, rows, d, step, r, M, j, c, got[0] + j * d,
                                   got[1] + j * d, got[2] + j * d, err))
                    fail_msg("%s", err);
            }
            for (int64_t j = 0; j < n; j++)
                for (int c = 0; c < d; c++)
                    for (int k = 0; k < 3; k++)
                        if (got[k][j * d + c] != cell(r + M * j, c, k))
                            fail_msg("P %d -> M %d: rank %d row %lld col %d array %d: %g, want %g",
                                     P, M, r, (long long)j, c, k, got[k][j * d + c],
                                     cell(r + M * j, c, k));
            seen += n;
            for (int k = 0; k < 3; k++) free(got[k]);
        }
        assert_int_equal(seen, rows);
    }
}

static void test_bank_shards_any_rank_count(void** state) {
    const int Ms[] = {1, 2, 3, 4, 5, 6, 8, 12};
    shards_round_trip(1000, 3, 4, Ms, 8, 1000);  // whole shares at once
    shards_round_trip(1001, 2, 6, Ms, 8, 37);    // blocks that cut the strides anywhere
    shards_round_trip(5, 4, 3, Ms, 8, 2);        // more ranks than rows: empty shares
}

// A shard of another step, rank or bank, or one with a wrong id, is named.
static void test_bank_shard_mismatch_named(void** state) {
    char err[512], file[512];
    const int Ms[] = {2};
    shards_round_trip(100, 2, 2, Ms, 1, 100);
    float buf[400];
    // read as step 8: every shard says 7
    assert_int_equal(ckpt_bank_read(dir, 2, 100, 2, 8, 0, 1, 0, 100, buf, NULL, NULL, err), -1);
    assert_non_null(strstr(err, "bank-00000-of-00002.h5: a shard of rank 0 of 2"));
    // as a bank of 101 rows
    assert_int_equal(ckpt_shard_check(strcat(strcpy(file, dir), "/bank-00001-of-00002.h5"), 2, 1,
                                      101, 2, 7, err),
                     -1);
    assert_non_null(strstr(err, "bank 100 x 2"));
    // a shard whose ids are not its rank's: rank 1's file under rank 0's name
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/bank-00000-of-00002.h5", dir);
    snprintf(b, sizeof b, "%s/bank-00001-of-00002.h5", dir);
    assert_int_equal(rename(b, a), 0);
    assert_int_equal(ckpt_bank_read(dir, 2, 100, 2, 7, 0, 2, 0, 50, buf, NULL, NULL, err), -1);
    assert_non_null(strstr(err, "bank-00000-of-00002.h5: a shard of rank 1 of 2"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_manifest_is_standard_fnv1a, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fletcher32_failure_names_tensor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_latest_reports_or_sets_aside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_keeps_a_corrupt_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_last, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bank_shards_any_rank_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bank_shard_mismatch_named, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
