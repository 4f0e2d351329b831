// eval_main.c: elastic_eval, a trained model evaluated or asked for
// recommendations (DESIGN §2): a checkpoint written at any rank count, on any
// dataset with the same items, under any protocol, on one rank or several
// (mpirun: the users split over the ranks, the memory bank over them too).
// Exit status: 0 success, 1 failure, 2 bad command line.
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "blas.h"
#include "ckpt.h"
#include "ckpt_h5.h"
#include "config.h"
#include "dataset.h"
#include "device.h"
#include "eval.h"
#include "loader.h"
#include "ids.h"
#include "stream.h"
#include "util.h"

static const char* USAGE =
    "usage: elastic_eval --ckpt CHECKPOINT --data DATA.h5 [options]\n"
    "Evaluates a trained model, or writes each user's recommendations; under mpirun\n"
    "the users (and an ELASTIC memory bank) are split over the ranks.\n"
    "  --ckpt PATH           a checkpoint folder, or a --ckpt-dir (its newest)\n"
    "  --data FILE           a dataset (.h5) with the items the model was trained on\n"
    "  --split S             test (default) or valid: each user's history up to its test\n"
    "                        or validation item, ranked against it; all: the whole\n"
    "                        history (with --recommend only)\n"
    "  --mask-history B      true|false: the protocol (default: the run's)\n"
    "  --sampled-negatives N 0: rank among all items (default: the run's)\n"
    "  --users N             only users 0..N-1 (default all)\n"
    "  --user-ids FILE       only these users: their original ids, one a line, in order\n"
    "  --params P            best (default: the kept best model) or last (the last step's)\n"
    "  --recommend K         instead of metrics: each user's K best items, as CSV lines\n"
    "                        user,rank,item,score (the dataset's original ids)\n"
    "  --exclude-seen        leave a user's history out of its recommendations\n"
    "  -o FILE               where recommendations go (default: standard output)\n"
    "  --stream EVENTS       ELASTIC or RecGRELA: read `user item` lines in time order and\n"
    "                        carry each user's state in O(1) an event (a user of DATA\n"
    "                        starts from its history there); with --recommend K, its K\n"
    "                        best items after each event as lines\n"
    "                        event,user,rank,item,score\n"
    "  --states FILE         with --stream: users' states loaded from FILE if it exists,\n"
    "                        saved there at the end\n"
    "  --batch B             users per forward (default 64)\n"
    "  --device D            cpu (default) or cuda\n"
    "  --threads T           OpenMP/BLAS threads (default: all cores)\n";

typedef struct {
    const char *ckpt, *data, *out, *split, *mask, *params, *device, *stream, *states, *user_ids;
    long negatives, users, recommend, batch, threads;
    int exclude_seen;
} opts;

// --user-ids FILE: the evaluation limited to those users, in the file's order.
static int only_users(evaler* ev, ds_file* ds, const char* path, char* err) {
    FILE* f = fopen(path, "r");
    if (!f) return snprintf(err, 512, "%s: %s", path, strerror(errno)), -1;
    ds_ids* ids = ds_ids_open(ds, 1, err);
    int64_t *list = NULL, n = 0, cap = 0;
    char* line = NULL;
    size_t lcap = 0;
    int rc = ids ? 0 : -1;
    for (long no = 1; !rc && getline(&line, &lcap, f) > 0; no++) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        const int64_t u = ds_ids_find(ids, line);
        if (u < 0) {
            snprintf(err, 512, "%s:%ld: user '%.200s' is not in the dataset's users", path, no,
                     line);
            rc = -1;
        } else if (n == cap) {
            int64_t* grown = realloc(list, (size_t)(cap = cap ? 2 * cap : 256) * sizeof *list);
            if (!grown) rc = -1, snprintf(err, 512, "out of memory for --user-ids");
            list = grown ? grown : list;
        }
        if (!rc) list[n++] = u;
    }
    if (!rc && !n) rc = -1, snprintf(err, 512, "%s: no user ids", path);
    if (!rc) rc = evaler_only(ev, list, n, err);
    fclose(f), free(line), free(list), ds_ids_close(ids);
    return rc;
}

static int parse(opts* o, int argc, char** argv) {
    *o = (opts){.split = "test", .params = "best", .device = "cpu", .negatives = -1, .batch = 64};
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            exit(0);
        }
        if (!strcmp(a, "--exclude-seen")) {
            o->exclude_seen = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "elastic_eval: %s needs a value (see --help)\n", a);
            return -1;
        }
        const char* v = argv[++i];
        char* end;
        const long x = strtol(v, &end, 10);
        const int num = *v && !*end && x >= 0;
        if (!strcmp(a, "--ckpt"))
            o->ckpt = v;
        else if (!strcmp(a, "--data"))
            o->data = v;
        else if (!strcmp(a, "-o"))
            o->out = v;
        else if (!strcmp(a, "--stream"))
            o->stream = v;
        else if (!strcmp(a, "--states"))
            o->states = v;
        else if (!strcmp(a, "--split") &&
                 (!strcmp(v, "test") || !strcmp(v, "valid") || !strcmp(v, "all")))
            o->split = v;
        else if (!strcmp(a, "--mask-history") && (!strcmp(v, "true") || !strcmp(v, "false")))
            o->mask = v;
        else if (!strcmp(a, "--params") && (!strcmp(v, "best") || !strcmp(v, "last")))
            o->params = v;
        else if (!strcmp(a, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            o->device = v;
        else if (num && !strcmp(a, "--sampled-negatives"))
            o->negatives = x;
        else if (!strcmp(a, "--user-ids"))
            o->user_ids = v;
        else if (num && !strcmp(a, "--users"))
            o->users = x;
        else if (num && x > 0 && !strcmp(a, "--recommend"))
            o->recommend = x;
        else if (num && x > 0 && !strcmp(a, "--batch"))
            o->batch = x;
        else if (num && x > 0 && !strcmp(a, "--threads"))
            o->threads = x;
        else {
            fprintf(stderr, "elastic_eval: unknown option or bad value: %s %s (see --help)\n", a,
                    v);
            return -1;
        }
    }
    if (!o->ckpt || !o->data) {
        fprintf(stderr, "elastic_eval: --ckpt and --data are required (see --help)\n");
        return -1;
    }
    if (o->stream && strcmp(o->device, "cpu")) {
        fprintf(stderr, "elastic_eval: --stream runs on the CPU (one user's event at a time)\n");
        return -1;
    }
    if (o->states && !o->stream) {
        fprintf(stderr, "elastic_eval: --states goes with --stream\n");
        return -1;
    }
    if (!strcmp(o->split, "all") && !o->recommend && !o->stream) {
        fprintf(stderr,
                "elastic_eval: --split all has no held-out item to rank: it goes with "
                "--recommend K\n");
        return -1;
    }
    return 0;
}

// The ranks' parts of the recommendations (OUT.partR) into OUT, rank 0 first.
static void gather_parts(const comm* c, const char* out) {
    char err[512];
    if (comm_barrier(c, err)) die("%s", err);
    if (c->rank == 0) {
        FILE* all = fopen(out, "w");
        if (!all) die("cannot write %s: %s", out, strerror(errno));
        for (int q = 0; q < c->world; q++) {
            char part[4200], buf[1 << 16];
            snprintf(part, sizeof part, "%s.part%d", out, q);
            FILE* f = fopen(part, "r");
            if (!f) die("cannot read %s: %s", part, strerror(errno));
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0)
                if (fwrite(buf, 1, n, all) != n) die("cannot write %s: %s", out, strerror(errno));
            fclose(f);
            unlink(part);
        }
        if (fclose(all)) die("cannot write %s: %s", out, strerror(errno));
    }
}

int main(int argc, char** argv) {
    opts o;
    if (parse(&o, argc, argv)) return 2;
    comm c;
    char err[512];
    if (comm_init(&c, &argc, &argv, "auto", err)) {
        fprintf(stderr, "elastic_eval: %s\n", err);
        return 2;
    }
    util_set_comm(&c);
    const char* lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (!lr) lr = getenv("SLURM_LOCALID");
    device_set_fatal(die_message);
    if (device_init(o.device, lr ? atoi(lr) : 0, err)) die("%s", err);
    char dev[256], how[64];
    if (comm_start_device(&c, device_name(dev, sizeof dev), how, sizeof how, err)) die("%s", err);
    if (o.threads > 0) {
#ifdef _OPENMP
        omp_set_num_threads((int)o.threads);
#endif
        openblas_set_num_threads((int)o.threads);
    }
    // the model as it was trained: the run's own config
    char path[4096], file[4200];
    if (ckpt_resolve(o.ckpt, path, err)) die("%s", err);
    snprintf(file, sizeof file, "%s/dense.h5", path);
    char* text = NULL;
    if (ckpt_h5_read_config(file, &text, err)) die("%s", err);
    config cfg;
    config_defaults(&cfg);
    if (config_apply_text(&cfg, text, path, err)) die("%s", err);
    free(text);
    snprintf(cfg.data, sizeof cfg.data, "%s", o.data);
    ds_file* ds = ds_open(o.data, err);
    if (!ds) die("%s", err);
    const int64_t n_items = ds_n_items(ds);
    model* m = model_create(&cfg, n_items, (int)o.batch, &c, err);
    if (!m) die("%s", err);
    const size_t np = m->n_params;
    real* adam = dev_alloc(2 * np * sizeof(real));
    real* best = malloc(np * sizeof(real));
    if (!adam || !best) die("out of memory for the model's state");
    train_state st;
    int has_best = 0;
    char* then = NULL;
    if (ckpt_load(path, &c, m, adam, adam + np, best, &has_best, &st, &then, err)) die("%s", err);
    free(then);
    dev_free(adam);
    const int use_best = !strcmp(o.params, "best") && has_best && st.best_step >= 0;
    if (use_best) dev_to_device(m->params, best, np * sizeof(real));
    free(best);
    const int64_t step = use_best ? st.best_step : st.step;
    if (o.stream) {  // one rank: the users' states are this process's
        if (c.world > 1) die("--stream runs on one rank");
        FILE* out = o.out ? fopen(o.out, "w") : stdout;
        if (!out) die("cannot write %s: %s", o.out, strerror(errno));
        const double t0 = now_sec();
        if (stream_events(m, ds, o.stream, o.states, (int)o.recommend, out, err)) die("%s", err);
        if (out != stdout && fclose(out)) die("cannot write %s: %s", o.out, strerror(errno));
        fprintf(stderr, "elastic_eval: streamed %s in %.2f s%s%s\n", o.stream, now_sec() - t0,
                o.states ? ", states in " : "", o.states ? o.states : "");
        model_free(m);
        ds_close(ds);
        comm_finalize(&c);
        return 0;
    }
    const split_kind split = !strcmp(o.split, "valid")  ? SPLIT_VALID
                             : !strcmp(o.split, "test") ? SPLIT_TEST
                                                        : SPLIT_ALL;
    evaler* ev = evaler_open(o.data, cfg.L, (int)o.batch, split, c.rank, c.world, o.users, err);
    if (!ev) die("%s", err);
    if (o.user_ids && only_users(ev, ds, o.user_ids, err)) die("%s", err);
    if (c.rank == 0)
        fprintf(stderr, "elastic_eval: %s %s, step %lld (%s), on %s (%lld items), %d rank%s\n",
                cfg.model, path, (long long)step,
                use_best ? "the kept best model" : "the last step's", o.data, (long long)n_items,
                c.world, c.world > 1 ? "s" : "");
    if (o.recommend) {
        char **uids = NULL, **iids = NULL;
        if (ds_user_ids(ds, &uids, err) || ds_item_ids(ds, &iids, err)) die("%s", err);
        char part[4200];
        FILE* out = stdout;
        if (o.out) {
            snprintf(part, sizeof part, "%s.part%d", o.out, c.rank);
            out = fopen(c.world > 1 ? part : o.out, "w");
            if (!out) die("cannot write %s: %s", c.world > 1 ? part : o.out, strerror(errno));
        } else if (c.world > 1) {
            die("--recommend on several ranks writes a file: give -o FILE");
        }
        if (c.rank == 0) fprintf(out, "user,rank,item,score\n");
        if (recommend(m, ev, (int)o.recommend, o.exclude_seen, uids, iids, out, err))
            die("%s", err);
        if (out != stdout && fclose(out)) die("cannot write %s: %s", o.out, strerror(errno));
        if (o.out && c.world > 1) gather_parts(&c, o.out);
        free(uids), free(iids);
    } else {
        eval_protocol p = {.mask_history = cfg.mask_history,
                           .sampled_negatives = cfg.sampled_negatives,
                           .seed = cfg.seed};
        if (o.mask) p.mask_history = !strcmp(o.mask, "true");
        if (o.negatives >= 0) p.sampled_negatives = (int)o.negatives;
        metrics mt;
        if (evaluate(m, NULL, ev, &p, &c, &mt, err)) die("%s", err);
        if (c.rank == 0) {
            char proto[160];
            eval_protocol_str(&p, n_items, proto);
            printf(
                "%-10s step %lld | HR@5 %.4f HR@10 %.4f HR@20 %.4f | NDCG@5 %.4f NDCG@10 %.4f "
                "NDCG@20 %.4f | MRR@10 %.4f | %.0f users | %s\n",
                o.split, (long long)step, mt.hr[0], mt.hr[1], mt.hr[2], mt.ndcg[0], mt.ndcg[1],
                mt.ndcg[2], mt.mrr[1], mt.n, proto);
        }
    }
    if (fflush(stdout) || ferror(stdout)) die("cannot write the standard output");
    evaler_close(ev);
    model_free(m);
    ds_close(ds);
    comm_finalize(&c);
    return 0;
}
