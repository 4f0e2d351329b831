// ckpt.c: HDF5 checkpoints written atomically, with checksums at two levels.
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_bank.h"
#include "ckpt_h5.h"
#include "device.h"
#include "fingerprint.h"

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

int ckpt_remove(const char* path) {
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

// Removes the .tmp.step_*.HOST.PID folders (checkpoints being written) and
// .del.step_*.HOST.PID ones (being deleted) that a killed run of this host
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
        if ((strncmp(e->d_name, ".tmp.step_", 10) && strncmp(e->d_name, ".del.step_", 10)) || !dot)
            continue;
        const char* h = strchr(e->d_name + 10, '.');  // after the step number
        if (!h || h + 1 + hl != dot || strncmp(h + 1, host, hl)) continue;
        const long pid = strtol(dot + 1, NULL, 10);
        if (pid <= 0 || pid == (long)getpid() || !(kill((pid_t)pid, 0) && errno == ESRCH)) continue;
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        ckpt_remove(sub);
    }
    closedir(d);
}

// Deletes the checkpoint folder `name` of dir: first renamed out of the final
// names (.del.step_*.HOST.PID), then removed, so a run killed while deleting
// never leaves a partial folder under a final name (the next run removes the
// rest).
static int remove_checkpoint(const char* dir, const char* name) {
    char from[4200], to[4500], host[256];
    host_name(host, sizeof host);
    snprintf(from, sizeof from, "%s/%s", dir, name);
    snprintf(to, sizeof to, "%s/.del.%s.%s.%d", dir, name, host, (int)getpid());
    if (rename(from, to)) return -1;
    return ckpt_remove(to);
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
int ckpt_set_aside(const char* path, char* out, size_t n) {
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
        char p[4096], name[64];
        snprintf(name, sizeof name, "step_%08lld", steps[i]);
        snprintf(p, sizeof p, "%s/%s", dir, name);
        if (remove_checkpoint(dir, name)) {
            snprintf(err, ERRLEN, "--keep-last: cannot remove %s: %s", p, strerror(errno));
            rc = -1;
            break;
        }
    }
    free(steps);
    return rc;
}

#define SHARD_BLOCK 65536  // bank rows staged between the host and a GPU at a time

static int manifest_check(const char* path, const char* only, int hash, char* err);

// Every rank's outcome of its part of a save or load, so that all agree: 0
// when every rank succeeded; else -1 with the first failure's message in err
// (prefixed by its rank when there are several) on every rank.
typedef struct {
    int ok;
    int64_t size[2];
    uint64_t sum[2];
    char msg[ERRLEN];
} part;

static int agree(const comm* c, const part* mine, part* all, char* err) {
    char cerr[COMM_ERRLEN];
    if (comm_allgather(c, mine, all, sizeof *mine, cerr)) {
        snprintf(err, ERRLEN, "%s", cerr);
        return -1;
    }
    for (int r = 0; r < c->world; r++) {
        if (all[r].ok) continue;
        if (c->world > 1)
            snprintf(err, ERRLEN, "rank %d: %.480s", r, all[r].msg);
        else
            snprintf(err, ERRLEN, "%s", all[r].msg);
        return -1;
    }
    return 0;
}

// Writes file (by write(file, ctx, err)), syncs it and records its size and
// checksum in p->size[i], p->sum[i]; on failure p->ok = 0 with p->msg.
static void write_synced(part* p, int i, const char* file,
                         int (*write)(const char* file, const void* ctx, char* err),
                         const void* ctx) {
    if (!p->ok) return;
    if (write(file, ctx, p->msg)) {
        p->ok = 0;
        return;
    }
    if (fsync_path(file, 0)) {
        snprintf(p->msg, ERRLEN, "cannot sync %s: %s", file, strerror(errno));
        p->ok = 0;
        return;
    }
    p->sum[i] = fnv1a_file(file, FNV_OFFSET, &p->size[i]);
    if (p->size[i] < 0) {
        snprintf(p->msg, ERRLEN, "cannot read back %s: %s", file, strerror(errno));
        p->ok = 0;
    }
}

typedef struct {
    const model* m;
    const real *adam_m, *adam_v, *best;
    const train_state* st;
    const char* config_text;
    int world;
} dense_args;

// The parameters and moments, read on the host (staged from a GPU).
static int write_dense(const char* file, const void* ctx, char* err) {
    const dense_args* a = ctx;
    const size_t n = a->m->n_params, bytes = n * sizeof(real);
    int failed = 0;
    real* stage = dev_host_staging(3 * bytes, &failed);
    if (failed) {
        snprintf(err, ERRLEN, "%s: out of memory staging the parameters", file);
        return -1;
    }
    const real* p = dev_host_view(a->m->params, bytes, stage);
    const real* am = dev_host_view(a->adam_m, bytes, stage ? stage + n : NULL);
    const real* av = dev_host_view(a->adam_v, bytes, stage ? stage + 2 * n : NULL);
    const int rc =
        ckpt_h5_write_dense(file, a->m, p, am, av, a->best, a->st, a->config_text, a->world, err);
    free(stage);
    return rc;
}

// This rank's bank rows and moments, in blocks (through a host copy of each
// block on a GPU; in place on the CPU).
static int write_shard(const char* file, const void* ctx, char* err) {
    const dense_args* a = ctx;
    const bank* b = a->m->bank;
    const size_t row = (size_t)b->d * sizeof(real);
    int failed = 0;
    real* stage = dev_host_staging(3 * SHARD_BLOCK * row, &failed);
    if (failed) {
        snprintf(err, ERRLEN, "%s: out of memory staging the bank's rows", file);
        return -1;
    }
    ckpt_shard_writer w;
    int rc = ckpt_shard_create(&w, file, b->rows, b->d, b->c.rank, b->c.world, a->st->step, err);
    for (int64_t j = 0; !rc && j < b->local_rows; j += SHARD_BLOCK) {
        const int64_t n = b->local_rows - j < SHARD_BLOCK ? b->local_rows - j : SHARD_BLOCK;
        const size_t off = (size_t)j * b->d, bytes = (size_t)n * row,
                     k = SHARD_BLOCK * (size_t)b->d;
        rc = ckpt_shard_write(&w, j, n, dev_host_view(b->values + off, bytes, stage),
                              dev_host_view(b->m + off, bytes, stage ? stage + k : NULL),
                              dev_host_view(b->v + off, bytes, stage ? stage + 2 * k : NULL), err);
    }
    char cerr[ERRLEN];
    if (ckpt_shard_close(&w, cerr) && !rc) {
        snprintf(err, ERRLEN, "%s", cerr);
        rc = -1;
    }
    free(stage);
    return rc;
}

// This rank's bank rows from the shards of a checkpoint written by P ranks
// (this run's count or another): each shard that holds some checked against
// the manifest, then read in blocks (staged to a GPU).
static int load_shards(const char* path, const comm* c, bank* b, int P, int64_t step, char* err) {
    char name[64];
    for (int q = 0; q < P; q++) {
        if (!ckpt_shards_holding(q, P, c->rank, c->world)) continue;
        ckpt_shard_name(name, sizeof name, q, P);
        if (manifest_check(path, name, 1, err)) return -1;
    }
    const size_t row = (size_t)b->d * sizeof(real);
    int failed = 0;
    real* stage = dev_host_staging(3 * SHARD_BLOCK * row, &failed);
    if (failed) {
        snprintf(err, ERRLEN, "%s: out of memory staging the bank's rows", path);
        return -1;
    }
    int rc = 0;
    for (int64_t j = 0; !rc && j < b->local_rows; j += SHARD_BLOCK) {
        const int64_t n = b->local_rows - j < SHARD_BLOCK ? b->local_rows - j : SHARD_BLOCK;
        const size_t off = (size_t)j * b->d, k = SHARD_BLOCK * (size_t)b->d;
        real* dst[3] = {stage ? stage : b->values + off, stage ? stage + k : b->m + off,
                        stage ? stage + 2 * k : b->v + off};
        rc = ckpt_bank_read(path, P, b->rows, b->d, step, c->rank, c->world, j, n, dst[0], dst[1],
                            dst[2], err);
        if (!rc && stage) {
            dev_to_device(b->values + off, dst[0], (size_t)n * row);
            dev_to_device(b->m + off, dst[1], (size_t)n * row);
            dev_to_device(b->v + off, dst[2], (size_t)n * row);
        }
    }
    free(stage);
    return rc;
}

// Rank 0's part once every rank has written and synced its files: the
// manifest (every file with its size and checksum), synced, then the rename
// of the folder and the sync of its parent.
static int publish(const char* dir, const char* tmp, const char* final, const part* all, int world,
                   int has_bank, char* err) {
    char file[4500], name[64];
    snprintf(file, sizeof file, "%s/MANIFEST", tmp);
    FILE* mf = fopen(file, "w");
    int bad =
        !mf || fprintf(mf, "elastic-checkpoint %d fnv1a-64\ndense.h5 %lld %016llx\n", CKPT_FORMAT,
                       (long long)all[0].size[0], (unsigned long long)all[0].sum[0]) < 0;
    for (int r = 0; has_bank && r < world && !bad; r++) {
        ckpt_shard_name(name, sizeof name, r, world);
        bad = fprintf(mf, "%s %lld %016llx\n", name, (long long)all[r].size[1],
                      (unsigned long long)all[r].sum[1]) < 0;
    }
    if (bad || fflush(mf) || fsync(fileno(mf))) {
        snprintf(err, ERRLEN, "cannot write %s: %s", file, strerror(errno));
        if (mf) fclose(mf);
        return -1;
    }
    if (fclose(mf) || fsync_path(tmp, 1)) {
        snprintf(err, ERRLEN, "cannot write %s: %s", file, strerror(errno));
        return -1;
    }
    // The same step written again (a run resumed from an earlier checkpoint)
    // replaces an intact folder; one that fails verification is kept as
    // evidence under another name.
    struct stat sb;
    if (!stat(final, &sb)) {
        char why[ERRLEN], aside[4200];
        const char* base = strrchr(final, '/') ? strrchr(final, '/') + 1 : final;
        if (!ckpt_verify(final, why) ? remove_checkpoint(dir, base)
                                     : ckpt_set_aside(final, aside, sizeof aside)) {
            snprintf(err, ERRLEN, "cannot replace %s: %s", final, strerror(errno));
            return -1;
        }
    }
    if (rename(tmp, final) || fsync_path(dir, 1)) {
        snprintf(err, ERRLEN, "cannot move %s to %s: %s", tmp, final, strerror(errno));
        return -1;
    }
    remove_stale_tmp(dir);
    return 0;
}

int ckpt_save(const char* dir, const comm* c, const model* m, const real* adam_m,
              const real* adam_v, const real* best, const train_state* st, const char* config_text,
              char* err) {
    char final[4096], file[4600], host[256], cerr[COMM_ERRLEN];
    struct {
        int ok;
        char text[4400];  // the temporary folder, or why there is none
    } head = {1, ""};
    snprintf(final, sizeof final, "%s/step_%08lld", dir, (long long)st->step);
    if (c->rank == 0) {  // one temporary folder, named by rank 0, for every rank
        host_name(host, sizeof host);
        snprintf(head.text, sizeof head.text, "%s/.tmp.step_%08lld.%s.%d", dir, (long long)st->step,
                 host, (int)getpid());
        if (mkdir(dir, 0777) && errno != EEXIST) {
            snprintf(head.text, sizeof head.text, "cannot create checkpoint directory %s: %s", dir,
                     strerror(errno));
            head.ok = 0;
        } else if (ckpt_remove(head.text), mkdir(head.text, 0777)) {
            const int e = errno;
            char tmp[4400];
            snprintf(tmp, sizeof tmp, "%s", head.text);
            snprintf(head.text, sizeof head.text, "cannot create %.4300s: %s", tmp, strerror(e));
            head.ok = 0;
        }
    }
    if (comm_bcast(c, &head, sizeof head, 0, cerr)) {
        snprintf(err, ERRLEN, "%s", cerr);
        return -1;
    }
    if (!head.ok) {
        snprintf(err, ERRLEN, "%s", head.text);
        return -1;
    }
    const char* tmp = head.text;
    // every rank its shard, rank 0 the dense state too, each synced and hashed
    const dense_args a = {m, adam_m, adam_v, best, st, config_text, c->world};
    part mine = {.ok = 1};
    if (c->rank == 0) {
        snprintf(file, sizeof file, "%s/dense.h5", tmp);
        write_synced(&mine, 0, file, write_dense, &a);
    }
    if (m->bank) {
        char name[64];
        ckpt_shard_name(name, sizeof name, c->rank, c->world);
        snprintf(file, sizeof file, "%s/%s", tmp, name);
        write_synced(&mine, 1, file, write_shard, &a);
    }
    part* all = malloc((size_t)c->world * sizeof *all);
    if (!all) {
        snprintf(err, ERRLEN, "out of memory gathering the checkpoint's parts");
        return -1;
    }
    char inner[ERRLEN] = "";
    struct {
        int ok;
        char msg[ERRLEN];
    } done = {1, ""};
    int rc = agree(c, &mine, all, inner);
    if (c->rank == 0) {
        if (!rc) rc = publish(dir, tmp, final, all, c->world, m->bank != NULL, inner);
        if (rc) {
            ckpt_remove(tmp);  // a partial checkpoint must not keep filling the disk
            done.ok = 0;
            snprintf(done.msg, sizeof done.msg,
                     "cannot write checkpoint %s (nothing of it is kept; earlier ones are "
                     "intact): %s",
                     final, inner);
        }
    }
    free(all);
    if (comm_bcast(c, &done, sizeof done, 0, cerr)) {
        snprintf(err, ERRLEN, "%s", cerr);
        return -1;
    }
    if (!done.ok) snprintf(err, ERRLEN, "%s", done.msg);
    return done.ok ? 0 : -1;
}

// Checks the files of path's manifest: every file, or only the one named
// `only` (which the manifest must list); their sizes, and with `hash` their
// checksums too. 0 if intact.
static int manifest_check(const char* path, const char* only, int hash, char* err) {
    char file[4200];
    snprintf(file, sizeof file, "%s/MANIFEST", path);
    FILE* mf = fopen(file, "r");
    if (!mf) {
        snprintf(err, ERRLEN, "%s: no MANIFEST (%s): not a complete checkpoint", path,
                 strerror(errno));
        return -1;
    }
    int fmt = 0, rc = 0, nfiles = 0, found = 0;
    char head[64] = "", algo[32] = "";
    if (!fgets(head, sizeof head, mf) ||
        sscanf(head, "elastic-checkpoint %d %31s", &fmt, algo) < 1 ||
        !(fmt == 1 || (fmt == CKPT_FORMAT && !strcmp(algo, "fnv1a-64")))) {
        snprintf(err, ERRLEN, "%s: unreadable or unknown manifest format", file);
        fclose(mf);
        return -1;
    }
    const uint64_t basis = fmt == 1 ? FNV_OFFSET_V1 : FNV_OFFSET;
    char name[256];
    long long size;
    unsigned long long sum;
    while (fscanf(mf, "%255s %lld %llx\n", name, &size, &sum) == 3) {
        nfiles++;
        if (only && strcmp(only, name)) continue;
        found = 1;
        char p[4500];
        snprintf(p, sizeof p, "%s/%s", path, name);
        int64_t got = 0;
        uint64_t h = sum;
        struct stat sb;
        if (hash)
            h = fnv1a_file(p, basis, &got);
        else
            got = stat(p, &sb) ? -1 : (int64_t)sb.st_size;
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
    if (!rc && only && !found) {
        snprintf(err, ERRLEN, "%s/%s: not in the checkpoint's manifest (%s)", path, only, file);
        rc = -1;
    }
    return rc;
}

int ckpt_verify(const char* path, char* err) { return manifest_check(path, NULL, 1, err); }

// This rank's part of a load: dense.h5 and its bank shard, each checked
// against the manifest first.
static int load_part(const char* path, const comm* c, model* m, real* adam_m, real* adam_v,
                     real* best, int* has_best, train_state* st, char** config_text, char* err) {
    char file[4400];
    int world = 1, legacy = 0;
    if (manifest_check(path, "dense.h5", 1, err)) return -1;
    snprintf(file, sizeof file, "%s/dense.h5", path);
    // read on the host, then uploaded where the parameters live on a GPU
    const size_t n = m->n_params, bytes = n * sizeof(real);
    int failed = 0;
    real* stage = dev_host_staging(3 * bytes, &failed);
    if (failed) {
        snprintf(err, ERRLEN, "%s: out of memory staging the parameters", file);
        return -1;
    }
    real *p = stage ? stage : m->params, *am = stage ? stage + n : adam_m,
         *av = stage ? stage + 2 * n : adam_v;
    const int rc = ckpt_h5_read_dense(file, m, p, am, av, best, has_best, st, config_text, &world,
                                      &legacy, err);
    if (!rc && stage) {
        dev_to_device(m->params, p, bytes);
        dev_to_device(adam_m, am, bytes);
        dev_to_device(adam_v, av, bytes);
    }
    free(stage);
    if (rc) return -1;
    if (!m->bank) return 0;  // dense state only: the same whatever the rank count
    if (legacy) {
        if (c->world == 1) return ckpt_h5_read_legacy_bank(file, m->bank, err);
        snprintf(err, ERRLEN,
                 "%s: a single-process checkpoint with the bank inside dense.h5 (format 2): "
                 "resume it on one rank (or reshard it with elastic_ckpt) first",
                 path);
        return -1;
    }
    // the bank's rows of this rank, from the shards of the rank count that wrote them
    return load_shards(path, c, m->bank, world, st->step, err);
}

int ckpt_load(const char* path, const comm* c, model* m, real* adam_m, real* adam_v, real* best,
              int* has_best, train_state* st, char** config_text, char* err) {
    *config_text = NULL;
    part mine = {.ok = 1};
    if (load_part(path, c, m, adam_m, adam_v, best, has_best, st, config_text, mine.msg))
        mine.ok = 0;
    part* all = malloc((size_t)c->world * sizeof *all);
    if (!all) {
        snprintf(err, ERRLEN, "out of memory gathering the checkpoint's parts");
        return -1;
    }
    const int rc = agree(c, &mine, all, err);
    free(all);
    if (rc) {
        free(*config_text);
        *config_text = NULL;
    }
    return rc;
}

int ckpt_seal(const char* tmp, const char* final, int shards, char* err) {
    char file[4500], name[64];
    struct stat sb;
    if (!stat(final, &sb)) {
        snprintf(err, ERRLEN, "%s exists: refusing to replace it", final);
        return -1;
    }
    part* all = calloc((size_t)(shards > 0 ? shards : 1), sizeof *all);
    if (!all) {
        snprintf(err, ERRLEN, "out of memory for %d shards", shards);
        return -1;
    }
    for (int r = 0; r < (shards > 0 ? shards : 1); r++) {
        for (int i = 0; i < 2; i++) {
            if (i == 0 && r > 0) continue;  // dense.h5 goes with rank 0
            if (i == 1 && !shards) continue;
            ckpt_shard_name(name, sizeof name, r, shards);
            snprintf(file, sizeof file, "%s/%s", tmp, i ? name : "dense.h5");
            if (fsync_path(file, 0)) {
                snprintf(err, ERRLEN, "cannot sync %s: %s", file, strerror(errno));
                free(all);
                return -1;
            }
            all[r].sum[i] = fnv1a_file(file, FNV_OFFSET, &all[r].size[i]);
            if (all[r].size[i] < 0) {
                snprintf(err, ERRLEN, "cannot read back %s: %s", file, strerror(errno));
                free(all);
                return -1;
            }
        }
    }
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", final);
    char* slash = strrchr(parent, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(parent, sizeof parent, ".");
    const int rc = publish(parent, tmp, final, all, shards, shards > 0, err);
    free(all);
    return rc;
}

int ckpt_resolve(const char* path, char* out, char* err) {
    char m[4200], report[16];
    struct stat sb;
    snprintf(m, sizeof m, "%s/MANIFEST", path);
    if (!stat(m, &sb)) {
        snprintf(out, 4096, "%s", path);
        return 0;
    }
    if (stat(path, &sb)) {
        snprintf(err, ERRLEN, "%s: %s", path, strerror(errno));
        return -1;
    }
    const int r = ckpt_latest(path, 0, out, report, 0, err);
    if (r > 0)
        snprintf(err, ERRLEN, "%s: neither a checkpoint (no MANIFEST) nor a folder holding one",
                 path);
    return r ? -1 : 0;
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
        if (!manifest_check(p, NULL, 0, why)) {  // complete; loading checks the contents
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
        if (ckpt_set_aside(p, aside, sizeof aside)) {
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
