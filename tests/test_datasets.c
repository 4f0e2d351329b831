// test_datasets.c: the dataset layout, its validation, fingerprint and
// repeat counts, writing on a full disk, the training loader, the evaluation
// batches and the synthetic generator (datasets/).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dataset.h"
#include "h5util.h"
#include "loader.h"
#include "perm.h"
#include "synth.h"
#include "writer.h"

static char dir[] = "/tmp/elastic_test_datasets_XXXXXX";
static char err[DS_ERRLEN];

static const char* tmp_path(const char* name) {
    static char buf[8][256];
    static int k;
    char* p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

#define CHECK_OK(expr)                                  \
    do {                                                \
        if ((expr) < 0) fail_msg("%s: %s", #expr, err); \
    } while (0)

// The hand example: user 0 = 1..8, user 1 = 9 10 11, user 2 = 1..5.
static const int32_t H_ITEMS[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2, 3, 4, 5};
static const int64_t H_OFFS[] = {0, 8, 11, 16};
static const int64_t H_TIMES[] = {10, 20, 30, 40, 50, 60, 70, 80, 5, 6, 7, 1, 1, 2, 3, 5};
static const char* const H_ITEM_IDS[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"};
static const char* const H_USER_IDS[] = {"alice", "bob", "carol"};

static const char* write_hand(void) {
    const char* p = tmp_path("hand.h5");
    ds_contents c = {.items = H_ITEMS,
                     .offsets = H_OFFS,
                     .timestamps = H_TIMES,
                     .item_ids = H_ITEM_IDS,
                     .user_ids = H_USER_IDS,
                     .n_users = 3,
                     .n_items = 11,
                     .source = "hand",
                     .filter = "none"};
    CHECK_OK(ds_write(p, &c, err));
    return p;
}

// A layout written with raw HDF5 calls, to plant faults ds_write refuses.
typedef struct {
    int items_as_i64;  // wrong type for /items
    int no_offsets;    // missing dataset
} raw_faults;

static void write_raw(const char* path, const int32_t* items, int64_t n, const int64_t* offs,
                      int64_t nu, int64_t n_items, raw_faults fl) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t dn[1] = {(hsize_t)n}, du[1] = {(hsize_t)(nu + 1)};
    hid_t s = H5Screate_simple(1, dn, NULL);
    hid_t d = H5Dcreate2(f, "items", fl.items_as_i64 ? H5T_STD_I64LE : H5T_STD_I32LE, s,
                         H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, items) >= 0);
    H5Dclose(d);
    H5Sclose(s);
    if (!fl.no_offsets) {
        s = H5Screate_simple(1, du, NULL);
        d = H5Dcreate2(f, "offsets", H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(d >= 0);
        assert_true(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offs) >= 0);
        H5Dclose(d);
        H5Sclose(s);
    }
    assert_int_equal(h5_write_attr_i64(f, "n_users", nu, path, err), 0);
    assert_int_equal(h5_write_attr_i64(f, "n_items", n_items, path, err), 0);
    assert_int_equal(h5_write_attr_str(f, "source", "raw", path, err), 0);
    assert_int_equal(h5_write_attr_str(f, "filter", "none", path, err), 0);
    assert_int_equal(h5_write_attr_i32(f, "format_version", DS_FORMAT_VERSION, path, err), 0);
    assert_true(H5Fclose(f) >= 0);
}

static void expect_open_fails(const char* path, const char* pattern) {
    ds_file* f = ds_open(path, err);
    if (f || !strstr(err, pattern))
        fail_msg("want ds_open to fail with '%s', got '%s'", pattern, f ? "(opened)" : err);
    assert_non_null(strstr(err, path));
}

static void test_roundtrip(void** state) {
    (void)state;
    const char* p = write_hand();
    assert_int_equal(access(tmp_path("hand.h5.tmp"), F_OK), -1);
    ds_file* f = ds_open(p, err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(ds_n_users(f), 3);
    assert_int_equal(ds_n_items(f), 11);
    assert_int_equal(ds_n_interactions(f), 16);
    assert_int_equal(ds_user_len(f, 1), 3);
    assert_string_equal(ds_source(f), "hand");
    assert_true(ds_has_timestamps(f));
    int32_t it[8];
    int64_t ts[8];
    CHECK_OK(ds_read_user(f, 2, 1, 4, it, err));
    assert_memory_equal(it, H_ITEMS + 12, 4 * sizeof *it);
    CHECK_OK(ds_read_timestamps(f, 0, 0, 8, ts, err));
    assert_memory_equal(ts, H_TIMES, 8 * sizeof *ts);
    assert_int_equal(ds_read_user(f, 1, 1, 3, it, err), -1);  // past the end
    assert_non_null(strstr(err, "user 1"));
    char** ids;
    CHECK_OK(ds_item_ids(f, &ids, err));
    for (int i = 0; i < 11; i++) assert_string_equal(ids[i], H_ITEM_IDS[i]);
    free(ids);
    CHECK_OK(ds_user_ids(f, &ids, err));
    assert_string_equal(ids[2], "carol");
    free(ids);
    CHECK_OK(ds_verify(f, err));
    ds_close(f);
}

static void test_item_counts(void** state) {
    (void)state;
    ds_file* f = ds_open(write_hand(), err);
    if (!f) fail_msg("%s", err);
    int64_t c[12];
    CHECK_OK(ds_item_counts(f, 2, c, err));  // training parts: 1..6, 9, 1 2 3
    const int64_t want[12] = {0, 2, 2, 2, 1, 1, 1, 0, 0, 1, 0, 0};
    assert_memory_equal(c, want, sizeof want);
    CHECK_OK(ds_item_counts(f, 0, c, err));
    const int64_t all[12] = {0, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1};
    assert_memory_equal(c, all, sizeof all);
    ds_close(f);
}

static void test_short_user_rejected(void** state) {
    (void)state;
    const int32_t items[] = {1, 2, 3, 4, 5};
    const int64_t offs[] = {0, 3, 5};
    const char* const uids[] = {"x", "abc"};
    ds_contents c = {.items = items,
                     .offsets = offs,
                     .user_ids = uids,
                     .n_users = 2,
                     .n_items = 5,
                     .source = "t",
                     .filter = "none"};
    const char* p = tmp_path("short.h5");
    CHECK_OK(ds_write(p, &c, err));
    expect_open_fails(p,
                      "user 1 (original id 'abc') has 2 items; every user needs at least 3 "
                      "(train, validation, test)");
}

static void test_write_rejects_bad_item(void** state) {
    (void)state;
    const int32_t items[] = {1, 2, 9};
    const int64_t offs[] = {0, 3};
    ds_contents c = {.items = items,
                     .offsets = offs,
                     .n_users = 1,
                     .n_items = 5,
                     .source = "t",
                     .filter = "none"};
    const char* p = tmp_path("badwrite.h5");
    assert_int_equal(ds_write(p, &c, err), -1);
    assert_non_null(strstr(err, "item 9"));
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(access(tmp_path("badwrite.h5.tmp"), F_OK), -1);
    assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);  // the .tmp was closed
}

static void test_item_out_of_range(void** state) {
    (void)state;
    const int32_t items[] = {1, 2, 3, 4, 7, 2};
    const int64_t offs[] = {0, 3, 6};
    const char* p = tmp_path("range.h5");
    write_raw(p, items, 6, offs, 2, 5, (raw_faults){0});
    ds_file* f = ds_open(p, err);
    if (!f) fail_msg("%s", err);
    int32_t out[3];
    CHECK_OK(ds_read_user(f, 0, 0, 3, out, err));
    assert_int_equal(ds_read_user(f, 1, 0, 3, out, err), -1);
    if (!strstr(err, "user 1: item 7 at position 1 is outside 1..5")) fail_msg("%s", err);
    int64_t c[6];
    assert_int_equal(ds_item_counts(f, 0, c, err), -1);
    assert_non_null(strstr(err, "user 1"));
    assert_int_equal(ds_verify(f, err), -1);
    ds_close(f);
}

static void test_structural_faults(void** state) {
    (void)state;
    const int32_t items[] = {1, 2, 3, 4, 5, 2};
    const int64_t offs[] = {0, 3, 6}, bad_offs[] = {0, 4, 3}, short_end[] = {0, 3, 5};
    const char* p = tmp_path("fault.h5");
    write_raw(p, items, 6, offs, 2, 5, (raw_faults){.no_offsets = 1});
    expect_open_fails(p, "dataset /offsets is missing");
    write_raw(p, items, 6, offs, 2, 5, (raw_faults){.items_as_i64 = 1});
    expect_open_fails(p, "/items has the wrong type");
    write_raw(p, items, 6, bad_offs, 2, 5, (raw_faults){0});
    expect_open_fails(p, "not monotone at user 1");
    write_raw(p, items, 6, short_end, 2, 5, (raw_faults){0});
    expect_open_fails(p, "/offsets ends at 5 but /items has 6");
    write_raw(p, items, 6, offs, 2, 0, (raw_faults){0});
    expect_open_fails(p, "n_items=0");
    expect_open_fails(tmp_path("missing.h5"), "cannot open");
    // Truncated: the first 2000 bytes of a good file.
    const char* good = tmp_path("hand.h5");
    write_hand();
    FILE* in = fopen(good, "rb");
    FILE* out = fopen(p, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[2000];
    size_t n = fread(buf, 1, sizeof buf, in);
    assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
    expect_open_fails(p, "truncated");
}

// FNV-1a over v's first nbytes little-endian bytes, apart from
// datasets/fingerprint.h, so the test checks the documented definition.
static uint64_t fnv(uint64_t h, uint64_t v, int nbytes) {
    for (int b = 0; b < nbytes; b++) h = (h ^ ((v >> (8 * b)) & 0xff)) * 0x100000001b3ull;
    return h;
}

static void test_fingerprint(void** state) {
    (void)state;
    const uint64_t B = 0xcbf29ce484222325ull;
    uint64_t o = B, it = B;
    for (int u = 0; u < 4; u++) o = fnv(o, (uint64_t)H_OFFS[u], 8);
    for (int j = 0; j < 16; j++) it = fnv(it, (uint32_t)H_ITEMS[j], 4);
    const char* p = write_hand();
    ds_file* f = ds_open(p, err);
    if (!f) fail_msg("%s", err);
    assert_true(ds_fingerprint_stored(f));
    assert_int_equal(ds_fingerprint(f), fnv(fnv(fnv(fnv(B, 3, 8), 11, 8), o, 8), it, 8));
    uint64_t stored = ds_fingerprint(f);
    ds_close(f);
    // The streaming writer fed in two blocks stores the same value.
    const int64_t lens[] = {8, 3, 5};
    ds_writer* w = ds_writer_open(tmp_path("two.h5"), 11, 0, err);
    if (!w) fail_msg("%s", err);
    CHECK_OK(ds_writer_append(w, 1, lens, H_ITEMS, NULL, err));
    CHECK_OK(ds_writer_append(w, 2, lens + 1, H_ITEMS + 8, NULL, err));
    CHECK_OK(ds_writer_finish(w, NULL, NULL, "two", "none", err));
    ds_file* g = ds_open(tmp_path("two.h5"), err);
    if (!g) fail_msg("%s", err);
    assert_int_equal(ds_fingerprint(g), stored);
    ds_close(g);
    // Items changed behind the stored value: ds_open (which never reads
    // /items) still opens, ds_verify refuses.
    hid_t h = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT), d = H5Dopen2(h, "items", H5P_DEFAULT);
    int32_t changed[16];
    memcpy(changed, H_ITEMS, sizeof changed);
    changed[9] = 3;
    assert_true(d >= 0 &&
                H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, changed) >= 0);
    assert_true(H5Dclose(d) >= 0 && H5Fclose(h) >= 0);
    f = ds_open(p, err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(ds_verify(f, err), -1);
    if (!strstr(err, "fingerprint")) fail_msg("%s", err);
    ds_close(f);
    // A file without the attribute: the fallback from n_users, n_items,
    // n_interactions and /offsets.
    write_raw(p, H_ITEMS, 16, H_OFFS, 3, 11, (raw_faults){0});
    f = ds_open(p, err);
    if (!f) fail_msg("%s", err);
    assert_false(ds_fingerprint_stored(f));
    assert_int_equal(ds_fingerprint(f), fnv(fnv(fnv(fnv(B, 3, 8), 11, 8), 16, 8), o, 8));
    CHECK_OK(ds_verify(f, err));
    ds_close(f);
}

// Repeats count within a history only (item 1 of user 3 is not a repeat of
// user 0's).
static void test_repeats(void** state) {
    (void)state;
    const int32_t items[] = {1, 2, 1, 3, 1, 4, 5, 6, 4, 7, 8, 7, 9, 1, 1, 2};
    const int64_t offs[] = {0, 5, 9, 13, 16};
    ds_contents c = {.items = items, .offsets = offs, .n_users = 4, .n_items = 9};
    const char* p = tmp_path("repeats.h5");
    CHECK_OK(ds_write(p, &c, err));
    ds_file* f = ds_open(p, err);
    if (!f) fail_msg("%s", err);
    ds_repeats r;
    CHECK_OK(ds_verify_stats(f, &r, err));
    assert_int_equal(r.repeats, 5);
    assert_int_equal(r.test_repeats, 2);   // users 0 and 1
    assert_int_equal(r.valid_repeats, 2);  // users 2 and 3
    ds_close(f);
}

// Child of test_full_disk: writes under a file-size limit (EFBIG, as on a
// full disk), then exits through exit() so HDF5 shuts down as it would.
static int full_disk_child(const synth_config* s, const rlim_t* limits, int n) {
    const int deadly[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
    for (int i = 0; i < 5; i++)  // die of them (cmocka catches them to go on)
        if (signal(deadly[i], SIG_DFL) == SIG_ERR) return 9;
    if (signal(SIGXFSZ, SIG_IGN) == SIG_ERR) return 10;
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) != 0) return 11;
    for (int i = 0; i < n; i++) {
        const char* p = tmp_path("full.h5");
        rl.rlim_cur = limits[i];
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 12;
        if (synth_write(p, s, err) != -1) return 20 + i;
        fprintf(stderr, "# limit %llu: %s\n", (unsigned long long)limits[i], err);
        if (!strstr(err, p) || !strstr(err, "File too large") || strchr(err, '\n')) return 30 + i;
        if (access(p, F_OK) == 0 || access(tmp_path("full.h5.tmp"), F_OK) == 0) return 40 + i;
        if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0) return 50 + i;  // all closed
    }
    return 0;
}

static void test_full_disk(void** state) {
    (void)state;
    synth_config s = synth_defaults();
    s.users = 20000;
    s.items = 5000;
    CHECK_OK(synth_write(tmp_path("fits.h5"), &s, err));
    struct stat sb;
    assert_int_equal(stat(tmp_path("fits.h5"), &sb), 0);
    // Early in the data; just under the full size (the final flush fails).
    const rlim_t limits[] = {64 << 10, (rlim_t)sb.st_size - 4096};
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) exit(full_disk_child(&s, limits, 2));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status)) fail_msg("the writer died of signal %d", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status)) fail_msg("full-disk check %d failed", WEXITSTATUS(status));
}

static loader* open_loader(const char* p, int L, int stride, int rows, int rank, int world,
                           uint64_t seed, int prefetch) {
    loader_config c = {.L = L,
                       .stride = stride,
                       .batch = rows,
                       .rank = rank,
                       .world = world,
                       .seed = seed,
                       .prefetch = prefetch};
    loader* ld = loader_open(p, &c, err);
    if (!ld) fail_msg("%s", err);
    return ld;
}

static void expect_window(loader* ld, int64_t w, const int32_t* in, const int32_t* tg, int pad) {
    int32_t a[3], b[3];
    int got = loader_window(ld, w, a, b, err);
    if (got < 0) fail_msg("%s", err);
    assert_int_equal(got, pad);
    assert_memory_equal(a, in, sizeof a);
    assert_memory_equal(b, tg, sizeof b);
}

static void test_windows(void** state) {
    (void)state;
    const char* p = write_hand();
    // Stride L=3: user 0 (train 1..6) ends at 6 and 3; user 1 (train 9) none;
    // user 2 (train 1 2 3) ends at 3.
    loader* ld = open_loader(p, 3, 0, 1, 0, 1, 7, 0);
    assert_int_equal(loader_windows(ld), 3);
    assert_int_equal(loader_batches_per_epoch(ld), 3);
    expect_window(ld, 0, (int32_t[]){3, 4, 5}, (int32_t[]){4, 5, 6}, 0);
    expect_window(ld, 1, (int32_t[]){0, 1, 2}, (int32_t[]){0, 2, 3}, 1);
    expect_window(ld, 2, (int32_t[]){0, 1, 2}, (int32_t[]){0, 2, 3}, 1);
    int32_t a[3], b[3];
    assert_int_equal(loader_window(ld, 3, a, b, err), -1);
    loader_close(ld);
    // Stride 1: user 0 ends 6 5 4 3 2, user 2 ends 3 2.
    ld = open_loader(p, 3, 1, 2, 0, 1, 7, 0);
    assert_int_equal(loader_windows(ld), 7);
    assert_int_equal(loader_batches_per_epoch(ld), 3);
    expect_window(ld, 0, (int32_t[]){3, 4, 5}, (int32_t[]){4, 5, 6}, 0);
    expect_window(ld, 1, (int32_t[]){2, 3, 4}, (int32_t[]){3, 4, 5}, 0);
    expect_window(ld, 2, (int32_t[]){1, 2, 3}, (int32_t[]){2, 3, 4}, 0);
    expect_window(ld, 3, (int32_t[]){0, 1, 2}, (int32_t[]){0, 2, 3}, 1);
    expect_window(ld, 4, (int32_t[]){0, 0, 1}, (int32_t[]){0, 0, 2}, 2);
    expect_window(ld, 5, (int32_t[]){0, 1, 2}, (int32_t[]){0, 2, 3}, 1);
    expect_window(ld, 6, (int32_t[]){0, 0, 1}, (int32_t[]){0, 0, 2}, 2);
    // A batch: rows are the permuted windows, n_targets counts non-padding.
    const batch* bt = loader_next(ld, err);
    if (!bt) fail_msg("%s", err);
    perm pm;
    perm_init(&pm, 7, 7, 0);
    int64_t nt = 0;
    for (int r = 0; r < 2; r++) {
        int32_t in[3], tg[3];
        int pad = loader_window(ld, (int64_t)perm_apply(&pm, (uint64_t)r), in, tg, err);
        assert_int_equal(bt->pad[r], pad);
        assert_memory_equal(bt->inputs + 3 * r, in, sizeof in);
        assert_memory_equal(bt->targets + 3 * r, tg, sizeof tg);
        nt += 3 - pad;
    }
    assert_int_equal(bt->n_targets, nt);
    assert_int_equal(bt->B, 2);
    loader_close(ld);
    // L=1 on the hand file: every window is [x, y] with no padding.
    ld = open_loader(p, 1, 0, 1, 0, 1, 7, 0);
    assert_int_equal(loader_windows(ld), 5 + 2);
    loader_close(ld);
}

static void test_loader_config_errors(void** state) {
    (void)state;
    const char* p = write_hand();
    loader_config c = {.L = 3, .batch = 4, .rank = 0, .world = 1, .seed = 1};
    assert_null(loader_open(p, &c, err));  // 3 windows < one batch of 4
    assert_non_null(strstr(err, "fewer than one global batch"));
    c.batch = 2;
    c.world = 3;
    assert_null(loader_open(p, &c, err));  // batch < world
    c.world = 1;
    c.rank = 1;
    assert_null(loader_open(p, &c, err));
    c.rank = 0;
    c.L = 0;
    assert_null(loader_open(p, &c, err));
}

static void test_perm(void** state) {
    (void)state;
    const uint64_t ns[] = {1, 2, 3, 5, 16, 17, 100, 1000, 4097};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        uint64_t n = ns[k];
        uint8_t* seen = calloc(n, 1);
        perm p;
        perm_init(&p, n, 42, 3);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t y = perm_apply(&p, i);
            assert_true(y < n);
            assert_int_equal(seen[y], 0);
            seen[y] = 1;
        }
        free(seen);
    }
    const uint64_t n = 1000;
    perm a, b, c, d;
    perm_init(&a, n, 1, 0);
    perm_init(&b, n, 1, 1);
    perm_init(&c, n, 2, 0);
    perm_init(&d, n, 1, 0);
    int diff_epoch = 0, diff_seed = 0, fixed = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t x = perm_apply(&a, i);
        diff_epoch += x != perm_apply(&b, i);
        diff_seed += x != perm_apply(&c, i);
        fixed += x == i;
        assert_int_equal(x, perm_apply(&d, i));
    }
    assert_true(diff_epoch > 900);
    assert_true(diff_seed > 900);
    assert_true(fixed < 20);  // ~1 expected for a random permutation
}

static const char* write_synth(const char* name, int64_t users) {
    const char* p = tmp_path(name);
    synth_config s = synth_defaults();
    s.users = users;
    s.items = 300;
    s.min_len = 3;
    s.max_len = 40;
    s.seed = 5;
    CHECK_OK(synth_write(p, &s, err));
    return p;
}

// The union of the ranks' rows of global batch i equals the world=1 batch.
static void test_rank_union(void** state) {
    (void)state;
    const char* p = write_synth("union.h5", 200);
    const int nb = 12, L = 5, steps = 7;
    loader* one = open_loader(p, L, 0, nb, 0, 1, 9, 0);
    int32_t* want_in = malloc((size_t)steps * nb * L * sizeof(int32_t));
    int32_t* want_tg = malloc((size_t)steps * nb * L * sizeof(int32_t));
    int32_t want_pad[7 * 12];
    for (int s = 0; s < steps; s++) {
        const batch* b = loader_next(one, err);
        if (!b) fail_msg("%s", err);
        assert_int_equal(b->B, nb);
        memcpy(want_in + (size_t)s * nb * L, b->inputs, (size_t)nb * L * sizeof(int32_t));
        memcpy(want_tg + (size_t)s * nb * L, b->targets, (size_t)nb * L * sizeof(int32_t));
        memcpy(want_pad + s * nb, b->pad, (size_t)nb * sizeof(int32_t));
    }
    loader_close(one);
    for (int world = 2; world <= 3; world++) {
        for (int rank = 0; rank < world; rank++) {
            loader* ld = open_loader(p, L, 0, nb, rank, world, 9, 1 + rank);
            int row0 = rank * nb / world, B = (rank + 1) * nb / world - row0;
            for (int s = 0; s < steps; s++) {
                const batch* b = loader_next(ld, err);
                if (!b) fail_msg("%s", err);
                assert_int_equal(b->B, B);
                assert_int_equal(b->index, s);
                size_t at = ((size_t)s * nb + row0) * L;
                assert_memory_equal(b->inputs, want_in + at, (size_t)B * L * sizeof(int32_t));
                assert_memory_equal(b->targets, want_tg + at, (size_t)B * L * sizeof(int32_t));
                assert_memory_equal(b->pad, want_pad + s * nb + row0, (size_t)B * sizeof(int32_t));
            }
            loader_close(ld);
        }
    }
    free(want_in);
    free(want_tg);
}

// Streaming across epochs, then seeking anywhere, gives the same batches.
static void test_seek(void** state) {
    (void)state;
    const char* p = write_synth("seek.h5", 60);
    const int nb = 16, L = 4;
    loader* ld = open_loader(p, L, 0, nb, 0, 1, 3, 3);
    int64_t per = loader_batches_per_epoch(ld);
    int total = (int)(2 * per + 2);
    size_t cells = (size_t)nb * L;
    int32_t* rec = malloc((size_t)total * cells * sizeof(int32_t));
    for (int s = 0; s < total; s++) {
        const batch* b = loader_next(ld, err);
        if (!b) fail_msg("%s", err);
        assert_int_equal(b->epoch, s / per);
        assert_int_equal(b->index, s % per);
        memcpy(rec + s * cells, b->inputs, cells * sizeof(int32_t));
    }
    // Epochs differ.
    assert_true(memcmp(rec, rec + per * cells, cells * sizeof(int32_t)) != 0);
    const int at[] = {0, 1, (int)per - 1, (int)per, total - 1, 2};
    for (size_t k = 0; k < sizeof at / sizeof *at; k++) {
        int s = at[k];
        CHECK_OK(loader_seek(ld, s / per, s % per, err));
        for (int j = s; j < s + 2 && j < total; j++) {
            const batch* b = loader_next(ld, err);
            if (!b) fail_msg("%s", err);
            assert_int_equal(b->epoch * per + b->index, j);
            assert_memory_equal(b->inputs, rec + j * cells, cells * sizeof(int32_t));
        }
    }
    assert_int_equal(loader_seek(ld, 0, per, err), -1);
    // A fresh loader with another seed gives another order.
    loader* other = open_loader(p, L, 0, nb, 0, 1, 4, 0);
    const batch* b = loader_next(other, err);
    assert_non_null(b);
    assert_true(memcmp(b->inputs, rec, cells * sizeof(int32_t)) != 0);
    loader_close(other);
    loader_close(ld);
    free(rec);
}

// An item out of range met by the prefetch thread reaches loader_next.
static void test_loader_error_propagates(void** state) {
    (void)state;
    int32_t items[40];
    int64_t offs[5] = {0, 10, 20, 30, 40};
    for (int i = 0; i < 40; i++) items[i] = 1 + i % 5;
    items[25] = 99;  // user 2, position 5, inside its training history
    const char* p = tmp_path("thread.h5");
    write_raw(p, items, 40, offs, 4, 5, (raw_faults){0});
    loader* ld = open_loader(p, 3, 1, 4, 0, 1, 1, 2);
    int failed = 0;
    for (int s = 0; s < 3 * loader_batches_per_epoch(ld) && !failed; s++)
        if (!loader_next(ld, err)) failed = 1;
    assert_true(failed);
    if (!strstr(err, "user 2: item 99 at position 5")) fail_msg("%s", err);
    assert_null(loader_next(ld, err));  // stays failed until a seek
    assert_non_null(strstr(err, "item 99"));
    loader_close(ld);
}

static void test_evaler(void** state) {
    (void)state;
    const char* p = write_hand();
    evaler* ev = evaler_open(p, 3, 2, SPLIT_VALID, 0, 1, 0, err);
    if (!ev) fail_msg("%s", err);
    const eval_batch* b = evaler_next(ev, err);
    assert_non_null(b);
    assert_int_equal(b->B, 2);
    // user 0: history 1..6, target 7; user 1: history 9, target 10.
    assert_memory_equal(b->inputs, ((int32_t[]){4, 5, 6, 0, 0, 9}), 6 * sizeof(int32_t));
    assert_int_equal(b->target[0], 7);
    assert_int_equal(b->target[1], 10);
    assert_int_equal(b->pad[0], 0);
    assert_int_equal(b->pad[1], 2);
    assert_int_equal(b->hist_off[1], 6);
    assert_int_equal(b->hist_off[2], 7);
    assert_memory_equal(b->hist, ((int32_t[]){1, 2, 3, 4, 5, 6, 9}), 7 * sizeof(int32_t));
    b = evaler_next(ev, err);
    assert_non_null(b);
    assert_int_equal(b->B, 1);
    assert_int_equal(b->user[0], 2);
    assert_int_equal(b->target[0], 4);  // user 2: history 1 2 3
    assert_memory_equal(b->inputs, ((int32_t[]){1, 2, 3}), 3 * sizeof(int32_t));
    assert_null(evaler_next(ev, err));
    assert_int_equal(err[0], 0);
    evaler_rewind(ev);
    b = evaler_next(ev, err);
    assert_int_equal(b->user[0], 0);
    evaler_close(ev);

    // Test split, rank 1 of 2: users 1 (history 9 10, target 11).
    ev = evaler_open(p, 3, 8, SPLIT_TEST, 1, 2, 0, err);
    b = evaler_next(ev, err);
    assert_non_null(b);
    assert_int_equal(b->B, 1);
    assert_int_equal(b->user[0], 1);
    assert_int_equal(b->target[0], 11);
    assert_int_equal(b->pad[0], 1);
    assert_memory_equal(b->inputs, ((int32_t[]){0, 9, 10}), 3 * sizeof(int32_t));
    assert_memory_equal(b->hist, ((int32_t[]){9, 10}), 2 * sizeof(int32_t));
    assert_null(evaler_next(ev, err));
    evaler_close(ev);

    // Test split, rank 0 of 2, max_users 2: user 0 only (history 1..7, target 8).
    ev = evaler_open(p, 3, 8, SPLIT_TEST, 0, 2, 2, err);
    b = evaler_next(ev, err);
    assert_int_equal(b->B, 1);
    assert_int_equal(b->target[0], 8);
    assert_memory_equal(b->inputs, ((int32_t[]){5, 6, 7}), 3 * sizeof(int32_t));
    assert_int_equal(b->hist_off[1], 7);
    assert_null(evaler_next(ev, err));
    evaler_close(ev);
}

// The generator is deterministic, the file holds what synth_user generates,
// and its structure is learnable: predicting a user's last item from the
// previous one (most frequent successor in training) beats popularity.
static void test_synth(void** state) {
    (void)state;
    synth_config s = synth_defaults();
    s.users = 3000;
    s.items = 500;
    s.min_len = 5;
    s.max_len = 30;
    s.seed = 11;
    const char* p = tmp_path("synth.h5");
    CHECK_OK(synth_write(p, &s, err));
    ds_file* f = ds_open(p, err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(ds_n_users(f), 3000);
    int32_t a[30], b[30];
    for (int64_t u = 0; u < 3000; u += 97) {
        int64_t n;
        CHECK_OK(synth_user(&s, u, a, &n, err));
        assert_int_equal(ds_user_len(f, u), n);
        assert_true(n >= 5 && n <= 30);
        CHECK_OK(ds_read_user(f, u, 0, n, b, err));
        assert_memory_equal(a, b, (size_t)n * sizeof *a);
    }
    int64_t N = 500, *pop = calloc((size_t)N + 1, sizeof *pop);
    int32_t* succ = calloc((size_t)(N + 1) * (N + 1), sizeof *succ);
    int64_t nu = ds_n_users(f);
    for (int64_t u = 0; u < nu; u++) {
        int64_t n = ds_user_len(f, u);
        CHECK_OK(ds_read_user(f, u, 0, n, a, err));
        for (int64_t t = 0; t + 1 < n; t++) {
            pop[a[t]]++;
            if (t + 2 < n) succ[(size_t)a[t] * (N + 1) + (size_t)a[t + 1]]++;
        }
    }
    int32_t top = 1;
    for (int32_t i = 1; i <= N; i++)
        if (pop[i] > pop[top]) top = i;
    int64_t hit_pop = 0, hit_markov = 0;
    for (int64_t u = 0; u < nu; u++) {
        int64_t n = ds_user_len(f, u);
        CHECK_OK(ds_read_user(f, u, 0, n, a, err));
        int32_t prev = a[n - 2], best = 1;
        for (int32_t i = 1; i <= N; i++)
            if (succ[(size_t)prev * (N + 1) + (size_t)i] >
                succ[(size_t)prev * (N + 1) + (size_t)best])
                best = i;
        hit_pop += a[n - 1] == top;
        hit_markov += a[n - 1] == best;
    }
    print_message(
        "# synth: last item predicted by most frequent successor %lld/%lld, by popularity %lld\n",
        (long long)hit_markov, (long long)nu, (long long)hit_pop);
    if (hit_markov < 3 * hit_pop + 100)
        fail_msg("markov %lld vs popularity %lld", (long long)hit_markov, (long long)hit_pop);
    free(pop);
    free(succ);
    ds_close(f);
    // Same seed, same bytes of /items; another seed differs.
    const char* q = tmp_path("synth2.h5");
    CHECK_OK(synth_write(q, &s, err));
    ds_file* g = ds_open(q, err);
    CHECK_OK(ds_read_user(g, 1234, 0, ds_user_len(g, 1234), b, err));
    CHECK_OK(synth_user(&s, 1234, a, &(int64_t){0}, err));
    assert_memory_equal(a, b, (size_t)ds_user_len(g, 1234) * sizeof *a);
    ds_close(g);
    s.seed = 12;
    int64_t n1, n2;
    CHECK_OK(synth_user(&s, 1234, b, &n2, err));
    s.seed = 11;
    CHECK_OK(synth_user(&s, 1234, a, &n1, err));
    assert_true(n1 != n2 || memcmp(a, b, (size_t)n1 * sizeof *a) != 0);
    s.min_len = 2;
    assert_int_equal(synth_write(tmp_path("bad.h5"), &s, err), -1);
    assert_int_equal(access(tmp_path("bad.h5"), F_OK), -1);
}

static int setup(void** state) {
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void** state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_item_counts),
        cmocka_unit_test(test_short_user_rejected),
        cmocka_unit_test(test_write_rejects_bad_item),
        cmocka_unit_test(test_item_out_of_range),
        cmocka_unit_test(test_structural_faults),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_repeats),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_loader_config_errors),
        cmocka_unit_test(test_perm),
        cmocka_unit_test(test_rank_union),
        cmocka_unit_test(test_seek),
        cmocka_unit_test(test_loader_error_propagates),
        cmocka_unit_test(test_evaler),
        cmocka_unit_test(test_synth),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
