// train.c: the training loop: stream batches, forward, tied-embedding loss,
// backward, all-reduce, Adam; progress lines, validation with early stopping,
// checkpoints, and the final test beside a popularity baseline.
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "eval.h"
#include "loader.h"
#include "model.h"
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

static void print_metrics(const run_ctx* x, const char* what, int64_t step, const metrics* m,
                          const eval_protocol* p, const char* extra) {
    if (x->c->rank) return;
    char proto[160];
    eval_protocol_str(p, x->n_items, proto);
    printf(
        "%-10s step %lld | HR@5 %.4f HR@10 %.4f HR@20 %.4f | NDCG@5 %.4f NDCG@10 %.4f "
        "NDCG@20 %.4f | MRR@10 %.4f | %.0f users | %s%s\n",
        what, (long long)step, m->hr[0], m->hr[1], m->hr[2], m->ndcg[0], m->ndcg[1], m->ndcg[2],
        m->mrr[1], m->n, proto, extra ? extra : "");
    if (x->metrics) {
        fprintf(x->metrics, "{\"type\":\"%s\",\"step\":%lld,\"users\":%.0f,\"protocol\":\"%s\"",
                what, (long long)step, m->n, proto);
        for (int i = 0; i < EVAL_NK; i++)
            fprintf(x->metrics, ",\"hr@%d\":%.6f,\"ndcg@%d\":%.6f,\"mrr@%d\":%.6f", EVAL_KS[i],
                    m->hr[i], EVAL_KS[i], m->ndcg[i], EVAL_KS[i], m->mrr[i]);
        fprintf(x->metrics, "}\n");
        fflush(x->metrics);
    }
    fflush(stdout);
}

// Names the first setting that must match for a resumed run to continue the
// interrupted one exactly, or NULL.
static const char* resume_mismatch(const config* now, const config* then) {
    if (strcmp(now->model, then->model)) return "model";
    if (now->L != then->L) return "L";
    if (now->stride != then->stride) return "stride";
    if (now->batch != then->batch) return "batch";
    if (now->d != then->d) return "d";
    if (now->layers != then->layers) return "layers";
    if (now->heads != then->heads) return "heads";
    if (now->seed != then->seed) return "seed";
    if (now->dropout != then->dropout) return "dropout";
    return NULL;
}

static void print_memory(const model* m, size_t loss_scratch, size_t eval_scores) {
    const double MB = 1024.0 * 1024.0, pb = (double)m->n_params * sizeof(real);
    printf(
        "memory: params %.1f MB | grads %.1f MB | adam %.1f MB | activations %.1f MB | "
        "loss blocks %.1f MB | eval scores %.1f MB\n",
        pb / MB, pb / MB, 2 * pb / MB, m->act_bytes / MB, loss_scratch / MB, eval_scores / MB);
    if (m->bank) {
        double bb = (double)m->bank_rows * m->d * sizeof(real);
        printf(
            "memory bank: %lld rows x %d = %.1f MB values + %.1f MB Adam moments (sparse "
            "row-wise updates, not in the dense parameters)\n",
            (long long)m->bank_rows, m->d, bb / MB, 2 * bb / MB);
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

// The memory bank's optimizer state and the scratch of its sparse update; used
// marks the rows read since the last validation, for the usage diagnostic.
typedef struct {
    real *m, *v, *sum;
    int32_t* uniq;
    int64_t* perm;
    uint8_t* used;
} bank_state;

static void bank_alloc(bank_state* bk, const model* m) {
    const size_t rows = (size_t)m->bank_rows, cap = (size_t)m->bank_grad_cap;
    bk->m = xcalloc(rows * m->d, sizeof(real), "memory bank Adam moments");
    bk->v = xcalloc(rows * m->d, sizeof(real), "memory bank Adam moments");
    bk->sum = xmalloc(cap * m->d * sizeof(real), "memory bank gradient rows");
    bk->uniq = xmalloc(cap * sizeof(int32_t), "memory bank row ids");
    bk->perm = xmalloc(cap * sizeof(int64_t), "memory bank sort scratch");
    bk->used = xcalloc(rows, 1, "memory bank usage");
}

static void bank_free(bank_state* bk) {
    free(bk->m), free(bk->v), free(bk->sum), free(bk->uniq), free(bk->perm), free(bk->used);
}

// Sparse (lazy, row-wise) Adam on the rows the step looked up; returns the
// sum of squares of their gradients.
static double bank_update(model* m, bank_state* bk, const config* cfg, real lr, int64_t t) {
    const int d = m->d;
    int64_t nu = sparse_rows_reduce(bk->uniq, bk->sum, m->bank_grad_ids, m->bank_grad_rows,
                                    m->n_bank_grads, d, bk->perm);
    double gsq = 0;
    for (int64_t i = 0; i < nu * d; i++) gsq += (double)bk->sum[i] * bk->sum[i];
    adam_sparse_update(m->bank, bk->m, bk->v, bk->uniq, bk->sum, nu, d, lr, (real)cfg->beta1,
                       (real)cfg->beta2, (real)cfg->eps, t);
    for (int64_t i = 0; i < nu; i++) bk->used[bk->uniq[i]] = 1;
    return gsq;
}

// Fraction of bank rows read since the last call, which clears the marks.
static double bank_usage(const model* m, bank_state* bk) {
    int64_t n = 0;
    for (int64_t i = 0; i < m->bank_rows; i++) n += bk->used[i];
    memset(bk->used, 0, (size_t)m->bank_rows);
    return (double)n / (double)m->bank_rows;
}

// Positions with a target, gathered: with left padding most positions of a
// short-history batch are padding, and the loss costs (rows x items).
typedef struct {
    real *h, *dh, *scratch;   // [B*L,d], [B*L,d], [ce_block, V-1]
    int32_t *rows, *targets;  // [B*L]
} loss_bufs;

static double tied_loss(model* m, const tensor_spec* wte, const batch* b, real scale, loss_bufs* lb,
                        int ce_block) {
    const int d = m->d, BL = b->B * m->L;
    int R = 0;
    for (int i = 0; i < BL; i++)
        if (b->targets[i]) lb->rows[R] = i, lb->targets[R++] = b->targets[i];
    for (int r = 0; r < R; r++)
        memcpy(lb->h + (size_t)r * d, m->out + (size_t)lb->rows[r] * d, d * sizeof(real));
    memset(lb->dh, 0, (size_t)R * d * sizeof(real));
    double loss = crossentropy_tied(lb->dh, m->grads + wte->offset, lb->h, m->params + wte->offset,
                                    lb->targets, R, d, m->V, scale, lb->scratch, ce_block);
    memset(m->dout, 0, (size_t)BL * d * sizeof(real));
    for (int r = 0; r < R; r++)
        memcpy(m->dout + (size_t)lb->rows[r] * d, lb->dh + (size_t)r * d, d * sizeof(real));
    return loss;
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
    loader* ld = loader_open(cfg->data, &lc, err);
    if (!ld) die("%s", err);
    const ds_file* ds = loader_dataset(ld);
    x.n_items = ds_n_items(ds);
    const int Bmax = (cfg->batch + c->world - 1) / c->world;
    const int64_t per_epoch = loader_batches_per_epoch(ld);
    const int64_t total = cfg->steps ? cfg->steps : (int64_t)cfg->epochs * per_epoch;
    const int64_t eval_every = cfg->eval_every ? cfg->eval_every : per_epoch;

    model* m = model_create(cfg, x.n_items, Bmax, err);
    if (!m) die("%s", err);
    m->init(m, cfg->seed);
    const size_t np = m->n_params;
    real* adam_m = xcalloc(np, sizeof(real), "Adam first moments");
    real* adam_v = xcalloc(np, sizeof(real), "Adam second moments");
    real* best = xmalloc(np * sizeof(real), "best parameters");
    memcpy(best, m->params, np * sizeof(real));
    const tensor_spec* wte = model_tensor(m, "wte");
    bank_state bk = {0};
    if (m->bank && c->world > 1)
        die("--model elastic with its memory bank runs on one process for now (the bank is not "
            "sharded across ranks yet); run without mpirun, or with --no-memory");
    if (m->bank) bank_alloc(&bk, m);
    const size_t BLmax = (size_t)Bmax * cfg->L;
    loss_bufs lb = {
        .h = xmalloc(BLmax * cfg->d * sizeof(real), "loss rows"),
        .dh = xmalloc(BLmax * cfg->d * sizeof(real), "loss row gradients"),
        .scratch = xmalloc((size_t)cfg->ce_block * (m->V - 1) * sizeof(real), "loss blocks"),
        .rows = xmalloc(BLmax * sizeof(int32_t), "loss row index"),
        .targets = xmalloc(BLmax * sizeof(int32_t), "loss targets")};

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
    if (cfg->resume[0]) {
        char path[4096];
        if (!strcmp(cfg->resume, "latest")) {
            int r = ckpt_latest(cfg->ckpt_dir, path, err);
            if (r < 0) die("%s", err);
            if (r > 0) die("--resume latest: no complete checkpoint in %s", cfg->ckpt_dir);
        } else {
            snprintf(path, sizeof path, "%s", cfg->resume);
        }
        int has_best = 0;
        char* then_text = NULL;
        if (ckpt_load(path, m, adam_m, adam_v, best, &has_best, bk.m, bk.v, &st, &then_text, err))
            die("cannot resume: %s", err);
        config then;
        config_defaults(&then);
        if (config_apply_text(&then, then_text, path, err)) die("cannot resume: %s", err);
        const char* bad = resume_mismatch(cfg, &then);
        if (bad)
            die("cannot resume from %s: --%s differs from the checkpoint's; an exact "
                "continuation needs the same value",
                path, bad);
        free(then_text);
        if (!has_best) memcpy(best, m->params, np * sizeof(real));
        if (loader_seek(ld, st.epoch, st.index, err)) die("%s", err);
        if (rank0)
            printf("resumed from %s at step %lld (epoch %lld, batch %lld)\n", path,
                   (long long)st.step, (long long)st.epoch + 1, (long long)st.index);
    }

    if (rank0) {
        printf("elastic_train: %s on %s (%lld users, %lld items, %lld interactions), %d rank(s)\n",
               m->name, cfg->data, (long long)ds_n_users(ds), (long long)x.n_items,
               (long long)ds_n_interactions(ds), c->world);
        printf("config:\n");
        config_print(cfg, stdout, "  ");
        printf("data: %lld training windows of %d+1, %lld batches of %d per epoch, %lld steps\n",
               (long long)loader_windows(ld), cfg->L, (long long)per_epoch, cfg->batch,
               (long long)total);
        print_memory(m, (size_t)cfg->ce_block * (m->V - 1) * sizeof(real),
                     (size_t)Bmax * (m->V - 1) * sizeof(real));
        if (cfg->metrics[0]) {
            x.metrics = fopen(cfg->metrics, "a");
            if (!x.metrics) die("cannot open metrics file %s", cfg->metrics);
        }
        fflush(stdout);
    }

    // popularity baseline under the same protocol, for reference
    real* pop = xmalloc((size_t)x.n_items * sizeof(real), "popularity scores");
    ds_file* dsf = (ds_file*)ds;
    if (popularity_scores(dsf, pop, err)) die("%s", err);
    metrics pm;
    if (evaluate(m, pop, valid, &proto, c, &pm, err)) die("%s", err);
    print_metrics(&x, "valid-pop", st.step, &pm, &proto, " (popularity baseline)");

    double t_log = now_sec(), t_start = now_sec();
    double tokens_since_log = 0;
    int64_t steps_since_log = 0, step0 = st.step;
    const double seconds0 = st.train_seconds;
    int stopped_early = 0;
    while (st.step < total) {
        const batch* b = loader_next(ld, err);
        if (!b) die("%s", err);
        double nt = (double)b->n_targets;
        if (comm_allreduce_sum_f64(c, &nt, 1, err)) die("%s", err);
        if (nt <= 0)
            die("batch %lld of epoch %lld has no targets", (long long)b->index,
                (long long)b->epoch + 1);
        memset(m->grads, 0, np * sizeof(real));
        uint64_t seed = rng_hash64(cfg->seed ^ 0xd50bull, (uint64_t)st.step) | 1;
        m->forward(m, b->inputs, b->pad, b->B, seed);
        double loss = tied_loss(m, wte, b, (real)(1.0 / nt), &lb, cfg->ce_block);
        m->backward(m);
        if (comm_allreduce_sum(c, m->grads, (int64_t)np, err) ||
            comm_allreduce_sum_f64(c, &loss, 1, err))
            die("%s", err);
        loss /= nt;
        double gsq = 0;
        for (size_t i = 0; i < np; i++) gsq += (double)m->grads[i] * m->grads[i];
        if (!isfinite(loss) || !isfinite(gsq))
            die("%s at step %lld (epoch %lld, batch %lld): lower --lr (%g) or check the data",
                isfinite(loss) ? "gradient is not finite" : "loss is not finite",
                (long long)st.step + 1, (long long)b->epoch + 1, (long long)b->index, cfg->lr);
        double lr = lr_at(cfg, st.step, total);
        adamw_update(m->params, m->grads, adam_m, adam_v, (int64_t)np, (real)lr, (real)cfg->beta1,
                     (real)cfg->beta2, (real)cfg->eps, (real)cfg->weight_decay, st.step + 1);
        if (m->bank) {
            double bsq = bank_update(m, &bk, cfg, (real)lr, st.step + 1);
            if (!isfinite(bsq))
                die("memory bank gradient is not finite at step %lld: lower --lr (%g)",
                    (long long)st.step + 1, cfg->lr);
            gsq += bsq;
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
                printf(
                    "step %lld/%lld | epoch %lld (%.0f%%) | loss %.6f | lr %.2e | gnorm %.3f | "
                    "%.0f tok/s | %.1f ms/step | rss %.0f MB | eta %s\n",
                    (long long)st.step, (long long)total, (long long)(st.epoch + (st.index > 0)),
                    100.0 * (double)st.step / (double)total,
                    st.log_loss_sum / (double)st.log_loss_n, lr, sqrt(gsq), tokens_since_log / dt,
                    1e3 * dt / (double)steps_since_log, peak_rss_mb(), fmt_duration(eta, eta_s));
                if (x.metrics)
                    fprintf(x.metrics,
                            "{\"type\":\"train\",\"step\":%lld,\"epoch\":%.4f,\"loss\":%.6f,"
                            "\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens_per_s\":%.1f,"
                            "\"ms_per_step\":%.3f,\"peak_rss_mb\":%.1f}\n",
                            (long long)st.step, (double)st.step / (double)per_epoch,
                            st.log_loss_sum / (double)st.log_loss_n, lr, sqrt(gsq),
                            tokens_since_log / dt, 1e3 * dt / (double)steps_since_log,
                            peak_rss_mb());
                fflush(stdout);
            }
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

        int do_eval = st.step % eval_every == 0 || st.step == total;
        if (do_eval) {
            metrics vm;
            if (evaluate(m, NULL, valid, &proto, c, &vm, err)) die("%s", err);
            char extra[96] = "";
            if (vm.ndcg[1] > st.best_metric) {
                st.best_metric = vm.ndcg[1];
                st.best_step = st.step;
                st.bad_evals = 0;
                memcpy(best, m->params, np * sizeof(real));
                snprintf(extra, sizeof extra, " (best)");
            } else {
                st.bad_evals++;
                snprintf(extra, sizeof extra, " (best %.4f at step %lld)", st.best_metric,
                         (long long)st.best_step);
            }
            print_metrics(&x, "valid", st.step, &vm, &proto, extra);
            if (m->diagnostics || m->bank) {
                char diag[512] = "";
                if (m->diagnostics) m->diagnostics(m, diag, sizeof diag);
                double used = m->bank ? bank_usage(m, &bk) : 0;
                if (rank0 && m->bank)
                    printf(
                        "%-10s step %lld | memory slots read since the last validation %.4f "
                        "of %lld | %s\n",
                        "diag", (long long)st.step, used, (long long)m->bank_rows, diag);
                else if (rank0)
                    printf("%-10s step %lld | %s\n", "diag", (long long)st.step, diag);
            }
            if (cfg->patience && st.bad_evals >= cfg->patience) stopped_early = 1;
        }
        int do_ckpt =
            cfg->ckpt_dir[0] && (cfg->ckpt_every ? st.step % cfg->ckpt_every == 0 : do_eval);
        if (do_ckpt && rank0) {
            double t0 = now_sec();
            st.train_seconds = seconds0 + (t0 - t_start);
            if (ckpt_save(cfg->ckpt_dir, m, adam_m, adam_v, best, bk.m, bk.v, &st, cfg_text, err))
                die("checkpoint failed: %s", err);
            printf("checkpoint %s/step_%08lld written (%.2f s)\n", cfg->ckpt_dir,
                   (long long)st.step, now_sec() - t0);
            fflush(stdout);
        }
        if (do_ckpt && comm_barrier(c, err)) die("%s", err);
        if (stopped_early) {
            if (rank0)
                printf("early stop at step %lld: no better validation NDCG@10 in %d evaluations\n",
                       (long long)st.step, cfg->patience);
            break;
        }
    }

    if (cfg->test) {
        if (st.best_step >= 0) memcpy(m->params, best, np * sizeof(real));
        // the configured protocol first, then the other masking convention, so
        // one run gives both numbers that papers report
        eval_protocol both[2] = {proto, proto};
        both[1].mask_history = !proto.mask_history;
        char extra[96];
        snprintf(extra, sizeof extra, " (model of step %lld)",
                 (long long)(st.best_step >= 0 ? st.best_step : st.step));
        for (int i = 0; i < 2; i++) {
            metrics tm;
            if (evaluate(m, NULL, test, &both[i], c, &tm, err)) die("%s", err);
            print_metrics(&x, "test", st.step, &tm, &both[i], extra);
            if (evaluate(m, pop, test, &both[i], c, &tm, err)) die("%s", err);
            print_metrics(&x, "test-pop", st.step, &tm, &both[i], " (popularity baseline)");
        }
    }
    if (rank0) {
        char dur[16];
        printf("done: %lld steps in %s, peak rss %.0f MB\n", (long long)st.step,
               fmt_duration(now_sec() - t_start, dur), peak_rss_mb());
    }
    if (x.metrics) fclose(x.metrics);
    if (m->bank) bank_free(&bk);
    free(pop);
    free(cfg_text);
    free(lb.h);
    free(lb.dh);
    free(lb.scratch);
    free(lb.rows);
    free(lb.targets);
    free(best);
    free(adam_m);
    free(adam_v);
    evaler_close(valid);
    evaler_close(test);
    model_free(m);
    loader_close(ld);
    return 0;
}
