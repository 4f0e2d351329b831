// train.c: the training loop: stream batches, forward, tied-embedding loss,
// backward, all-reduce, Adam; progress lines, validation with early stopping,
// checkpoints, and the final test beside a popularity baseline.
#include "train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bank.h"
#include "ckpt.h"
#include "device.h"
#include "eval.h"
#include "loader.h"
#include "model.h"
#include "step.h"
#include "util.h"

typedef struct {
    const config* cfg;
    const comm* c;
    FILE* metrics;  // JSON lines, rank 0 only
    int64_t n_items;
} run_ctx;

double lr_at(const config* cfg, int64_t step, int64_t total) {
    if (cfg->warmup > 0 && step < cfg->warmup) return cfg->lr * (double)(step + 1) / cfg->warmup;
    if (!strcmp(cfg->schedule, "cosine") && total > cfg->warmup) {
        double t = (double)(step - cfg->warmup) / (double)(total - cfg->warmup);
        return cfg->lr * 0.5 * (1.0 + cos(M_PI * (t > 1 ? 1 : t)));
    }
    return cfg->lr;
}

// Ends a JSON record of the metrics file with the wall clock (Unix seconds)
// and checks that it reached the file: a write error (a full disk) stops the run.
static void metrics_end(const run_ctx* x) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fprintf(x->metrics, ",\"time\":%.3f}\n", (double)ts.tv_sec + ts.tv_nsec * 1e-9);
    if (fflush(x->metrics) || ferror(x->metrics))
        die("cannot write metrics file %s: %s", x->cfg->metrics, strerror(errno));
}

// One evaluation line; json adds fields (",\"epoch\":2.5") to its metrics record.
static void print_metrics(const run_ctx* x, const char* what, int64_t step, const metrics* m,
                          const eval_protocol* p, const char* extra, const char* json) {
    if (x->c->rank) return;
    char proto[160];
    eval_protocol_str(p, x->n_items, proto);
    printf(
        "%-10s step %lld | HR@5 %.4f HR@10 %.4f HR@20 %.4f | NDCG@5 %.4f NDCG@10 %.4f "
        "NDCG@20 %.4f | MRR@10 %.4f | %.0f users | %s%s\n",
        what, (long long)step, m->hr[0], m->hr[1], m->hr[2], m->ndcg[0], m->ndcg[1], m->ndcg[2],
        m->mrr[1], m->n, proto, extra ? extra : "");
    if (x->metrics) {
        fprintf(x->metrics, "{\"type\":\"%s\",\"step\":%lld%s,\"users\":%.0f,\"protocol\":\"%s\"",
                what, (long long)step, json ? json : "", m->n, proto);
        for (int i = 0; i < EVAL_NK; i++)
            fprintf(x->metrics, ",\"hr@%d\":%.6f,\"ndcg@%d\":%.6f,\"mrr@%d\":%.6f", EVAL_KS[i],
                    m->hr[i], EVAL_KS[i], m->ndcg[i], EVAL_KS[i], m->mrr[i]);
        metrics_end(x);
    }
    fflush(stdout);
}

static void print_memory(const model* m, size_t loss_scratch, size_t eval_scores) {
    const double MB = 1024.0 * 1024.0, pb = (double)m->n_params * sizeof(real);
    printf(
        "memory: params %.1f MB | grads %.1f MB | adam %.1f MB | activations %.1f MB | "
        "loss blocks %.1f MB (beyond the activations) | eval scores %.1f MB\n",
        pb / MB, pb / MB, 2 * pb / MB, m->act_bytes / MB, loss_scratch / MB, eval_scores / MB);
    if (m->bank) {
        const bank* b = m->bank;
        const double bb = (double)b->rows * m->d * sizeof(real);
        printf(
            "memory bank: %lld rows x %d = %.1f MB values + %.1f MB Adam moments (sparse "
            "row-wise updates, not in the dense parameters)",
            (long long)b->rows, m->d, bb / MB, 2 * bb / MB);
        if (b->c.world > 1)
            printf("; sharded over %d ranks: %.1f MB per rank", b->c.world,
                   bank_shard_bytes(b->rows, m->d, b->c.world) / MB);
        printf("\n");
    }
    printf("parameters: %zu (", m->n_params);
    for (int i = 0; i < m->n_tensors; i++) {
        const tensor_spec* t = &m->tensors[i];
        printf("%s%s[", i ? " " : "", t->name);
        for (int j = 0; j < t->ndim; j++) printf("%s%lld", j ? "," : "", (long long)t->shape[j]);
        printf("]");
    }
    printf(")\n");
}

// --comm-stats: what the exchanges moved per step since the last progress
// line (steps of them, over dt seconds), from every rank (collective), printed
// and recorded by rank 0.
static void print_comm_stats(const run_ctx* x, model* m, stepper* sp, int64_t step, int64_t steps,
                             double dt) {
    bank_stats bs = {0};
    if (m->bank) bank_stats_collect(m->bank, &bs);
    const double n = steps > 0 ? (double)steps : 1, MB = 1024.0 * 1024.0;
    const double dense_mb = sp->dense_bytes / n / MB, dense_wait = sp->dense_wait_s;
    sp->dense_bytes = sp->dense_wait_s = 0;
    if (x->c->rank) return;
    const double served_mean = (double)bs.served / x->c->world;
    const double wait = bs.wait_s + dense_wait;
    printf("comm       step %lld | ", (long long)step);
    if (m->bank)
        printf(
            "bank lookups %.0f -> %.0f unique (%.2fx) | ids %.3f MB, rows %.3f MB, grads %.3f MB "
            "| rows served per owner: most %.0f, mean %.0f | ",
            bs.lookups / n, bs.unique / n, bs.unique ? (double)bs.lookups / bs.unique : 0,
            bs.id_bytes / n / MB, bs.row_bytes / n / MB, bs.grad_bytes / n / MB, bs.served_max / n,
            served_mean / n);
    printf(
        "dense all-reduce %.3f MB | waiting %.1f ms/step (%.0f%% of the step; bank %.1f, dense "
        "%.1f)\n",
        dense_mb, 1e3 * wait / n, dt > 0 ? 100.0 * wait / dt : 0, 1e3 * bs.wait_s / n,
        1e3 * dense_wait / n);
    if (x->metrics) {
        fprintf(x->metrics,
                "{\"type\":\"comm\",\"step\":%lld,\"steps\":%lld,\"lookups\":%.1f,\"unique\":%.1f,"
                "\"id_bytes\":%.1f,\"row_bytes\":%.1f,\"grad_bytes\":%.1f,\"served_max\":%.1f,"
                "\"served_mean\":%.1f,\"dense_bytes\":%.1f,\"wait_s\":%.6f,\"bank_wait_s\":%.6f,"
                "\"dense_wait_s\":%.6f",
                (long long)step, (long long)steps, bs.lookups / n, bs.unique / n, bs.id_bytes / n,
                bs.row_bytes / n, bs.grad_bytes / n, bs.served_max / n, served_mean / n,
                dense_mb * MB, wait / n, bs.wait_s / n, dense_wait / n);
        metrics_end(x);
    }
}

// Picks the checkpoint to resume from (rank 0 chooses, so only it sets a failed
// one aside; every rank loads the same), checks that it continues this run
// (every option that shapes the model or its trajectory, and the dataset by
// its fingerprint), says what else changed, and loads it.
// Returns 1, or 0 for --resume auto with no checkpoint yet (a fresh start).
static int resume_run(const config* cfg, const comm* c, const ds_file* ds, stepper* sp, real* best,
                      train_state* st) {
    model* m = sp->m;
    char err[DS_ERRLEN], path[4096] = "";
    const int autostart = !strcmp(cfg->resume, "auto");
    const int latest = autostart || !strcmp(cfg->resume, "latest");
    int has_best = 0;
    char* then_text = NULL;
    // the newest complete checkpoint; one whose contents fail when loaded is,
    // with --resume-fallback, set aside and the next newest tried
    for (char set_aside[2048] = "";;) {
        if (latest) {
            int r = 0;
            if (c->rank == 0) {
                char report[2048];
                r = ckpt_latest(cfg->ckpt_dir, cfg->resume_fallback, path, report, sizeof report,
                                err);
                if (r < 0) die("cannot resume: %s", err);
                if (r > 0 && !autostart)
                    die("--resume latest: no complete checkpoint in %s", cfg->ckpt_dir);
                if (r > 0) {
                    path[0] = 0;
                    printf("resume auto: no checkpoint in %s yet: a fresh start\n", cfg->ckpt_dir);
                }
                if (report[0] || set_aside[0]) {
                    fprintf(stderr, "elastic: warning: --resume-fallback: %s%s", set_aside, report);
                    printf("warning: --resume-fallback: %s%sresuming from %s instead\n", set_aside,
                           report, path);
                }
            }
            if (comm_bcast(c, path, sizeof path, 0, err)) die("%s", err);
            if (!path[0]) return 0;
        } else {
            snprintf(path, sizeof path, "%s", cfg->resume);
        }
        if (!ckpt_load(path, c, m, sp->adam_m, sp->adam_v, best, &has_best, st, &then_text, err))
            break;
        if (!latest) die("cannot resume: %s", err);
        if (!cfg->resume_fallback)
            die("cannot resume: the newest checkpoint %s fails verification: %s. Nothing was "
                "changed; rerun with --resume-fallback to set it aside (renamed *.corrupt) and "
                "resume from the newest one that passes, or --resume PATH to pick one",
                path, err);
        if (c->rank == 0) {
            char aside[4200];
            if (ckpt_set_aside(path, aside, sizeof aside))
                die("checkpoint %s fails verification (%s) and cannot be renamed: %s", path, err,
                    strerror(errno));
            const size_t used = strlen(set_aside);
            snprintf(set_aside + used, sizeof set_aside - used,
                     "checkpoint %s fails verification: %.300s; kept as %s\n", path, err, aside);
        }
    }
    config then;
    config_defaults(&then);
    if (config_apply_text(&then, then_text, path, err)) die("cannot resume: %s", err);
    free(then_text);
    char notes[2048];
    if (config_resume_check(cfg, &then, err, notes, sizeof notes))
        die("cannot resume from %s: %s", path, err);
    const uint64_t fp = ds_fingerprint(ds);
    if (st->data_fingerprint && st->data_fingerprint != fp)
        die("cannot resume from %s: its run trained on other data (dataset fingerprint "
            "%016llx, %s has %016llx; the dataset's path may differ, its contents may not)",
            path, (unsigned long long)st->data_fingerprint, cfg->data, (unsigned long long)fp);
    if (!has_best) dev_to_host(best, m->params, m->n_params * sizeof(real));
    if (c->rank == 0) {
        printf("resumed from %s at step %lld (epoch %lld, batch %lld)\n", path, (long long)st->step,
               (long long)st->epoch + 1, (long long)st->index);
        if (!st->data_fingerprint)
            printf(
                "resume: the checkpoint records no dataset fingerprint (an older checkpoint): "
                "the data cannot be checked\n");
        for (char *save = NULL, *line = strtok_r(notes, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save))
            printf("resume: %s\n", line);
    }
    return 1;
}

// Graceful stop: SIGTERM (Slurm's preemption, scancel), SIGUSR1 (sbatch
// --signal=USR1@120 before the time limit) and SIGINT (^C) only raise a flag.
// After each step the ranks agree whether any got one; then every rank
// finishes the step, the checkpoint is written, and the run exits with
// TRAIN_EXIT_REQUEUE. A second signal meanwhile changes nothing.
static volatile sig_atomic_t g_signal;
static void on_signal(int signo) {
    if (!g_signal) g_signal = signo;
}

static void catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // a write or a collective interrupted goes on
    const int sigs[] = {SIGTERM, SIGUSR1, SIGINT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
}

static const char* signal_name(int s) {
    return s == SIGTERM   ? "SIGTERM"
           : s == SIGUSR1 ? "SIGUSR1"
           : s == SIGINT  ? "SIGINT"
                          : "a signal";
}

int train_run(const config* cfg, const comm* c) {
    char err[DS_ERRLEN];
    const int rank0 = c->rank == 0;
    run_ctx x = {.cfg = cfg, .c = c};

    loader_config lc = {.L = cfg->L,
                        .stride = cfg->stride,
                        .batch = cfg->batch,
                        .rank = c->rank,
                        .world = c->world,
                        .seed = cfg->seed};
    if (cfg->batch % c->world)
        die("--batch %d is the global batch, split over the %d ranks: it must be a multiple of "
            "%d (%d or %d, say)",
            cfg->batch, c->world, c->world, cfg->batch / c->world * c->world,
            (cfg->batch / c->world + 1) * c->world);
    loader* ld = loader_open(cfg->data, &lc, err);
    if (!ld) die("%s", err);
    const ds_file* ds = loader_dataset(ld);
    x.n_items = ds_n_items(ds);
    const int Bmax = (cfg->batch + c->world - 1) / c->world;
    const int64_t per_epoch = loader_batches_per_epoch(ld);
    const int64_t total = cfg->steps ? cfg->steps : (int64_t)cfg->epochs * per_epoch;
    const int64_t eval_every = cfg->eval_every ? cfg->eval_every : per_epoch;

    model* m = model_create(cfg, x.n_items, Bmax, c, err);
    if (!m) die("%s", err);
    model_init(m, cfg->seed);
    const size_t np = m->n_params;
    stepper sp;
    stepper_init(&sp, m, cfg);
    if (m->bank) bank_count_distinct(m->bank, cfg->comm_stats);
    real* best = xmalloc(np * sizeof(real), "best parameters");
    dev_to_host(best, m->params, np * sizeof(real));

    evaler* valid =
        evaler_open(cfg->data, cfg->L, Bmax, SPLIT_VALID, c->rank, c->world, cfg->eval_users, err);
    if (!valid) die("%s", err);
    evaler* test = evaler_open(cfg->data, cfg->L, Bmax, SPLIT_TEST, c->rank, c->world, 0, err);
    if (!test) die("%s", err);
    eval_protocol proto = {.mask_history = cfg->mask_history,
                           .sampled_negatives = cfg->sampled_negatives,
                           .seed = cfg->seed ^ 0x5eedull};

    train_state st = {.best_metric = -1, .best_step = -1};
    char* cfg_text = config_to_string(cfg);
    if (!cfg_text) die("out of memory serialising the config");
    if (cfg->ckpt_dir[0] && rank0 && ckpt_prepare_dir(cfg->ckpt_dir, err)) die("%s", err);
    if (cfg->resume[0] && resume_run(cfg, c, ds, &sp, best, &st)) {
        if (loader_seek(ld, st.epoch, st.index, err)) die("%s", err);
        if (rank0 && st.step >= total)
            printf(
                "resume: the checkpoint is at step %lld, at or past this run's last step %lld: "
                "nothing to train\n",
                (long long)st.step, (long long)total);
    }
    st.data_fingerprint = ds_fingerprint(ds);

    if (rank0) {
        char dev[256];
        printf(
            "elastic_train: %s on %s (%lld users, %lld items, %lld interactions), %d rank(s), "
            "device %s\n",
            m->name, cfg->data, (long long)ds_n_users(ds), (long long)x.n_items,
            (long long)ds_n_interactions(ds), c->world, device_name(dev, sizeof dev));
        printf("config:\n");
        config_print(cfg, stdout, "  ");
        printf("data: %lld training windows of %d+1, %lld batches of %d per epoch, %lld steps\n",
               (long long)loader_windows(ld), cfg->L, (long long)per_epoch, cfg->batch,
               (long long)total);
        print_memory(m, sp.loss_bytes, (size_t)Bmax * (m->V - 1) * sizeof(real));
        if (cfg->metrics[0]) {
            x.metrics = fopen(cfg->metrics, "a");
            if (!x.metrics) die("cannot open metrics file %s: %s", cfg->metrics, strerror(errno));
        }
        fflush(stdout);
    }

    // popularity baseline under the same protocol, for reference
    real* pop = xmalloc((size_t)x.n_items * sizeof(real), "popularity scores");
    // (rank 0 scans every training item once; the others get its scores)
    ds_file* dsf = (ds_file*)ds;
    if (rank0 && popularity_scores(dsf, pop, err)) die("%s", err);
    if (comm_bcast(c, pop, (size_t)x.n_items * sizeof(real), 0, err)) die("%s", err);
    metrics pm;
    if (evaluate(m, pop, valid, &proto, c, &pm, err)) die("%s", err);
    print_metrics(&x, "valid-pop", st.step, &pm, &proto, " (popularity baseline)", NULL);

    // divergence guard: 10x the loss of a uniform guess over the items, and a
    // gradient norm far above what training ever shows (~0.1-10)
    const double max_loss = cfg->max_loss > 0 ? cfg->max_loss : 10.0 * log((double)x.n_items);
    const int warn_only = !strcmp(cfg->on_divergence, "warn");
    double worst_loss = 0, worst_gnorm = 0;  // diverged steps since the last progress line
    int64_t diverged_steps = 0;
    double t_log = now_sec(), t_start = now_sec();
    double tokens_since_log = 0;
    int64_t steps_since_log = 0, step0 = st.step;
    const double seconds0 = st.train_seconds;
    int stopped_early = 0, stopped_by = 0;
    catch_stop_signals();
    while (st.step < total) {
        const batch* b = loader_next(ld, err);
        if (!b) die("%s", err);
        const uint64_t seed = rng_hash64(cfg->seed ^ 0xd50bull, (uint64_t)st.step) | 1;
        const double lr = lr_at(cfg, st.step, total);
        step_result r;
        if (stepper_run(&sp, c, b->inputs, b->pad, b->targets, b->B, b->row0, seed, lr, st.step + 1,
                        &r, err))
            die("%s at step %lld (epoch %lld, batch %lld): lower --lr (%g) or check the data", err,
                (long long)st.step + 1, (long long)b->epoch + 1, (long long)b->index, cfg->lr);
        const double loss = r.loss, nt = r.n_targets, gsq = r.grad_sq;
        // every rank sees the same loss and dense gradient, so all stop together
        const double gnorm = sqrt(gsq);
        if (loss > max_loss || (cfg->max_grad_norm > 0 && gnorm > cfg->max_grad_norm)) {
            if (!warn_only)
                die("training diverged at step %lld (epoch %lld, batch %lld): loss %.4g (bound "
                    "%.4g), gradient norm %.4g (bound %.4g). Lower --lr (%g), or raise "
                    "--max-loss/--max-grad-norm, or --on-divergence warn to go on",
                    (long long)st.step + 1, (long long)b->epoch + 1, (long long)b->index, loss,
                    max_loss, gnorm, cfg->max_grad_norm, cfg->lr);
            diverged_steps++;
            worst_loss = fmax(worst_loss, loss);
            worst_gnorm = fmax(worst_gnorm, gnorm);
        }
        st.step++;
        st.epoch = b->epoch;
        st.index = b->index + 1;
        if (st.index == per_epoch) st.epoch++, st.index = 0;
        st.log_loss_sum += loss;
        st.log_loss_n++;
        tokens_since_log += nt;
        steps_since_log++;

        // the first-step line only on a fresh start: a resumed run prints what an
        // uninterrupted one would
        if (st.step % cfg->log_every == 0 || st.step == total || st.step == 1) {
            double now = now_sec(), dt = now - t_log;
            double eta = (double)(total - st.step) * (now - t_start) / (double)(st.step - step0);
            char eta_s[16];
            if (rank0) {
                // early stopping usually ends a run sooner: the ETA is then a bound
                printf(
                    "step %lld/%lld | epoch %lld (%.0f%%) | loss %.6f | lr %.2e | gnorm %.3f | "
                    "%.0f tok/s | %.1f ms/step | rss %.0f MB | eta %s%s\n",
                    (long long)st.step, (long long)total, (long long)(st.epoch + (st.index > 0)),
                    100.0 * (double)st.step / (double)total,
                    st.log_loss_sum / (double)st.log_loss_n, lr, gnorm, tokens_since_log / dt,
                    1e3 * dt / (double)steps_since_log, peak_rss_mb(), cfg->patience ? "<=" : "",
                    fmt_duration(eta, eta_s));
                if (diverged_steps) {
                    printf(
                        "WARNING: training diverged on %lld of the last %lld steps: loss up to "
                        "%.4g (bound %.4g), gradient norm up to %.4g (bound %.4g)\n",
                        (long long)diverged_steps, (long long)steps_since_log, worst_loss, max_loss,
                        worst_gnorm, cfg->max_grad_norm);
                    fprintf(stderr,
                            "elastic: warning: training diverged at step %lld (loss %.4g, "
                            "gradient norm %.4g)\n",
                            (long long)st.step, worst_loss, worst_gnorm);
                }
                if (x.metrics) {
                    fprintf(x.metrics,
                            "{\"type\":\"train\",\"step\":%lld,\"epoch\":%.4f,\"loss\":%.6f,"
                            "\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens_per_s\":%.1f,"
                            "\"ms_per_step\":%.3f,\"peak_rss_mb\":%.1f,\"diverged_steps\":%lld",
                            (long long)st.step, (double)st.step / (double)per_epoch,
                            st.log_loss_sum / (double)st.log_loss_n, lr, gnorm,
                            tokens_since_log / dt, 1e3 * dt / (double)steps_since_log,
                            peak_rss_mb(), (long long)diverged_steps);
                    if (device_current() == DEVICE_CUDA)
                        fprintf(x.metrics, ",\"device_peak_mb\":%.1f",
                                (double)dev_peak_bytes() / (1 << 20));
                    metrics_end(&x);
                }
                fflush(stdout);
            }
            if (cfg->comm_stats) print_comm_stats(&x, m, &sp, st.step, steps_since_log, dt);
            diverged_steps = 0, worst_loss = worst_gnorm = 0;
            // a line forced by the end of the run leaves the interval open, so a
            // checkpoint taken now resumes into the same averages
            if (st.step % cfg->log_every == 0 || st.step == 1) {
                st.log_loss_sum = 0;
                st.log_loss_n = 0;
                tokens_since_log = 0;
                steps_since_log = 0;
                t_log = now_sec();
            }
        }

        const double t_pause = now_sec();  // validation and checkpoints are not steps
        int do_eval = st.step % eval_every == 0 || st.step == total;
        if (do_eval) {
            metrics vm;
            if (evaluate(m, NULL, valid, &proto, c, &vm, err)) die("%s", err);
            char extra[96] = "", json[64];
            if (vm.ndcg[1] > st.best_metric) {
                st.best_metric = vm.ndcg[1];
                st.best_step = st.step;
                st.bad_evals = 0;
                dev_to_host(best, m->params, np * sizeof(real));
                snprintf(extra, sizeof extra, " (best)");
            } else {
                st.bad_evals++;
                snprintf(extra, sizeof extra, " (best %.4f at step %lld)", st.best_metric,
                         (long long)st.best_step);
            }
            snprintf(json, sizeof json, ",\"epoch\":%.4f", (double)st.step / (double)per_epoch);
            print_metrics(&x, "valid", st.step, &vm, &proto, extra, json);
            if (m->diagnostics || m->bank) {
                char diag[512] = "";
                if (m->diagnostics) m->diagnostics(m, diag, sizeof diag);
                const int64_t used = m->bank ? bank_rows_read(m->bank) : 0;
                if (rank0 && m->bank)
                    printf(
                        "%-10s step %lld | memory rows read since the last validation: %.2f%% "
                        "(%lld of %lld) | %s\n",
                        "diag", (long long)st.step, 100.0 * (double)used / (double)m->bank->rows,
                        (long long)used, (long long)m->bank->rows, diag);
                else if (rank0)
                    printf("%-10s step %lld | %s\n", "diag", (long long)st.step, diag);
            }
            if (cfg->patience && st.bad_evals >= cfg->patience) stopped_early = 1;
        }
        int do_ckpt =
            cfg->ckpt_dir[0] && (cfg->ckpt_every ? st.step % cfg->ckpt_every == 0 : do_eval);
        if (do_ckpt) {  // every rank: each writes its shard of the bank
            double t0 = now_sec();
            st.train_seconds = seconds0 + (t0 - t_start);
            if (ckpt_save(cfg->ckpt_dir, c, m, sp.adam_m, sp.adam_v, best, &st, cfg_text, err))
                die("%s", err);
            if (rank0) {
                if (ckpt_prune(cfg->ckpt_dir, cfg->keep_last, err)) die("%s", err);
                printf("checkpoint %s/step_%08lld written (%.2f s)\n", cfg->ckpt_dir,
                       (long long)st.step, now_sec() - t0);
                fflush(stdout);
            }
            if (comm_barrier(c, err)) die("%s", err);
        }
        // a stop signal on any rank: all checkpoint this step and stop
        double sig = g_signal;
        if (comm_allreduce_sum_f64(c, &sig, 1, err)) die("%s", err);
        if (sig > 0) {
            stopped_by = g_signal ? g_signal : -1;
            const double t0 = now_sec();
            if (cfg->ckpt_dir[0] && !do_ckpt) {
                st.train_seconds = seconds0 + (t0 - t_start);
                if (ckpt_save(cfg->ckpt_dir, c, m, sp.adam_m, sp.adam_v, best, &st, cfg_text, err))
                    die("%s", err);
                if (rank0 && ckpt_prune(cfg->ckpt_dir, cfg->keep_last, err)) die("%s", err);
            }
            if (rank0) {
                if (cfg->ckpt_dir[0])
                    printf(
                        "stopped by %s at step %lld: checkpoint %s/step_%08lld written (%.2f "
                        "s); exit %d so the job is requeued (resume with --resume latest)\n",
                        stopped_by > 0 ? signal_name(stopped_by) : "a signal on another rank",
                        (long long)st.step, cfg->ckpt_dir, (long long)st.step, now_sec() - t0,
                        TRAIN_EXIT_REQUEUE);
                else
                    printf("stopped by %s at step %lld: no --ckpt-dir, nothing kept; exit %d\n",
                           stopped_by > 0 ? signal_name(stopped_by) : "a signal on another rank",
                           (long long)st.step, TRAIN_EXIT_REQUEUE);
                fflush(stdout);
            }
            break;
        }
        t_log += now_sec() - t_pause;
        if (stopped_early) {
            if (rank0)
                printf("early stop at step %lld: no better validation NDCG@10 in %d evaluations\n",
                       (long long)st.step, cfg->patience);
            break;
        }
    }

    if (cfg->test && !stopped_by) {
        if (st.best_step >= 0) dev_to_device(m->params, best, np * sizeof(real));
        // the configured protocol first, then the other masking convention, so
        // one run gives both numbers that papers report
        eval_protocol both[2] = {proto, proto};
        both[1].mask_history = !proto.mask_history;
        const int64_t tested = st.best_step >= 0 ? st.best_step : st.step;
        char extra[96], json[64];
        // the kept best model is the dense parameters: the bank is the last step's
        if (m->bank && tested != st.step)
            snprintf(extra, sizeof extra, " (model of step %lld, memory bank of step %lld)",
                     (long long)tested, (long long)st.step);
        else
            snprintf(extra, sizeof extra, " (model of step %lld)", (long long)tested);
        snprintf(json, sizeof json, ",\"last_step\":%lld", (long long)st.step);
        for (int i = 0; i < 2; i++) {
            metrics tm;
            if (evaluate(m, NULL, test, &both[i], c, &tm, err)) die("%s", err);
            print_metrics(&x, "test", tested, &tm, &both[i], extra, json);
            if (evaluate(m, pop, test, &both[i], c, &tm, err)) die("%s", err);
            print_metrics(&x, "test-pop", tested, &tm, &both[i], " (popularity baseline)", json);
        }
    }
    // every rank's peak memory: the bank's shard and the exchange buffers differ by rank
    const double rss = peak_rss_mb();
    double* rss_all = xmalloc((size_t)c->world * sizeof(double), "memory readings");
    if (comm_allgather(c, &rss, rss_all, sizeof rss, err)) die("%s", err);
    if (rank0) {
        char dur[16];
        printf("done: %lld steps in %s, peak rss %.0f MB", (long long)st.step,
               fmt_duration(now_sec() - t_start, dur), rss);
        if (c->world > 1) {
            double lo = rss_all[0], hi = rss_all[0];
            for (int q = 1; q < c->world; q++) lo = fmin(lo, rss_all[q]), hi = fmax(hi, rss_all[q]);
            printf(" (rank 0; per rank %.0f to %.0f MB)", lo, hi);
        }
        if (device_current() == DEVICE_CUDA)  // what the model, optimizer and buffers held
            printf(", device peak %.0f MB", (double)dev_peak_bytes() / (1 << 20));
        printf("\n");
        if (fflush(stdout) || ferror(stdout))
            die("cannot write the standard output: %s", strerror(errno));
    }
    if (x.metrics && fclose(x.metrics))
        die("cannot write metrics file %s: %s", cfg->metrics, strerror(errno));
    stepper_free(&sp);
    free(rss_all);
    free(pop);
    free(cfg_text);
    free(best);
    evaler_close(valid);
    evaler_close(test);
    model_free(m);
    loader_close(ld);
    return stopped_by ? TRAIN_EXIT_REQUEUE : 0;
}
