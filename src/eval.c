// eval.c: full-ranking (or sampled) evaluation: HR, NDCG, MRR at 5/10/20.
#include "eval.h"

#include "bank.h"
#include "device.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

const int EVAL_KS[EVAL_NK] = {5, 10, 20};

void metrics_add_rank(metrics* m, int64_t rank) {
    for (int i = 0; i < EVAL_NK; i++) {
        if (rank < EVAL_KS[i]) {
            m->hr[i] += 1;
            m->ndcg[i] += 1.0 / log2((double)rank + 2.0);
            m->mrr[i] += 1.0 / ((double)rank + 1.0);
        }
    }
    m->n += 1;
}

void metrics_finish(metrics* m) {
    if (m->n <= 0) return;
    for (int i = 0; i < EVAL_NK; i++) {
        m->hr[i] /= m->n;
        m->ndcg[i] /= m->n;
        m->mrr[i] /= m->n;
    }
}

const char* eval_protocol_str(const eval_protocol* p, int64_t n_items, char* buf) {
    const char* hist = p->mask_history ? "masked" : "excluded from negatives";
    // target_rank clamps the draw to the items there are: say so, not the request
    if (p->sampled_negatives && p->sampled_negatives >= n_items - 1)
        snprintf(buf, 160,
                 "ranked against all %lld other items (%d sampled negatives requested), history %s",
                 (long long)(n_items - 1), p->sampled_negatives, hist);
    else if (p->sampled_negatives)
        snprintf(buf, 160, "ranked against %d sampled negatives of %lld items, history %s",
                 p->sampled_negatives, (long long)n_items, hist);
    else
        snprintf(buf, 160, "full ranking over %lld items, history %s", (long long)n_items,
                 p->mask_history ? "masked" : "not masked");
    return buf;
}

int64_t target_rank(const real* scores, int64_t N, int32_t target, const int32_t* hist, int64_t nh,
                    const eval_protocol* p, int64_t user, uint8_t* mark) {
    const real st = scores[target - 1];
    int64_t rank = 0;
    if (p->sampled_negatives) {
        for (int64_t j = 0; j < nh; j++) mark[hist[j]] = 1;
        mark[target] = 1;
        int64_t allowed = N;
        for (int64_t i = 1; i <= N; i++) allowed -= mark[i];
        int64_t want = p->sampled_negatives < allowed ? p->sampled_negatives : allowed;
        uint64_t key = rng_hash64(p->seed, (uint64_t)user), ctr = 0;
        for (int64_t got = 0; got < want;) {
            int64_t item = 1 + (int64_t)(rng_uniform(key, ctr++) * (double)N);
            if (item > N || mark[item]) continue;
            mark[item] = 2;  // drawn: not again
            got++;
            if (scores[item - 1] >= st) rank++;
        }
        for (int64_t i = 1; i <= N; i++) mark[i] = 0;
        return rank;
    }
    if (p->mask_history) {
        for (int64_t j = 0; j < nh; j++) mark[hist[j]] = 1;
        if (mark[target]) rank = EVAL_MISS;  // a masked target can never be recommended
    }
    if (rank != EVAL_MISS) {
        for (int64_t i = 1; i <= N; i++)
            if (i != target && !mark[i] && scores[i - 1] >= st) rank++;
    }
    if (p->mask_history)
        for (int64_t j = 0; j < nh; j++) mark[hist[j]] = 0;
    return rank;
}

int popularity_scores(ds_file* f, real* scores, char* err) {
    const int64_t N = ds_n_items(f);
    int64_t* counts = calloc((size_t)N + 1, sizeof *counts);
    if (!counts) {
        snprintf(err, 512, "out of memory for popularity counts");
        return -1;
    }
    if (ds_item_counts(f, 2, counts, err)) {
        free(counts);
        return -1;
    }
    for (int64_t i = 1; i <= N; i++)
        scores[i - 1] = (real)counts[i] + (real)(0.5 * rng_uniform(0x9e3779b9ull, (uint64_t)i));
    free(counts);
    return 0;
}

// Calls each(ctx, eb, scores, stride, err) for every batch of this rank's
// users of ev: row b of the scores (scores + b * stride, N items, host
// memory) is the model's for user b, or pop_scores for all (stride 0). Every
// rank makes the same number of forwards (the memory bank's exchanges are
// collective): one with no rows where this rank has run out of users.
typedef int (*batch_fn)(void* ctx, const eval_batch* eb, const real* scores, size_t stride,
                        char* err);

static int score_batches(model* m, const real* pop_scores, evaler* ev, batch_fn each, void* ctx,
                         char* err) {
    const int64_t N = m->V - 1;
    const int d = m->d;
    // the last position's state of each row and the scores on the backend's
    // memory; the callback reads the scores on the host
    const size_t score_bytes = (size_t)m->B * N * sizeof(real);
    real* states = dev_alloc((size_t)m->B * d * sizeof(real));
    real* scores = pop_scores ? NULL : dev_alloc(score_bytes);
    int32_t* last_h = malloc((size_t)m->B * sizeof(int32_t));
    int32_t* last = dev_alloc((size_t)m->B * sizeof(int32_t));
    int no_staging = 0;
    real* scores_h = pop_scores ? NULL : dev_host_staging(score_bytes, &no_staging);
    int rc = 0;
    if (!states || (!pop_scores && !scores) || !last_h || !last || no_staging) {
        snprintf(err, 512, "out of memory for evaluation (batch %d x %lld items)", m->B,
                 (long long)N);
        rc = -1;
        goto done;
    }
    evaler_rewind(ev);
    if (m->bank) bank_count_lookups(m->bank, 0);  // not the training step's exchanges
    m->last_only = 1;                             // only each row's last position is scored
    err[0] = 0;
    const int64_t rounds = evaler_rounds(ev);
    for (int64_t round = 0; round < rounds && !rc; round++) {
        const eval_batch* eb = evaler_next(ev, err);
        if (!eb && err[0]) {
            rc = -1;
            break;
        }
        const int B = eb ? eb->B : 0;
        if (B > m->B) {
            snprintf(err, 512, "evaluation batch %d exceeds the model's %d", B, m->B);
            rc = -1;
            break;
        }
        if (!pop_scores) model_forward(m, eb ? eb->inputs : NULL, eb ? eb->pad : NULL, B, 0);
        if (!B) continue;
        const real* scored = pop_scores;
        if (!pop_scores) {
            for (int b = 0; b < eb->B; b++) last_h[b] = b * m->L + m->L - 1;
            dev_to_device(last, last_h, (size_t)eb->B * sizeof(int32_t));
            rows_gather(states, m->out, last, eb->B, d);
            matmul_forward(scores, states, m->params + model_tensor(m, "wte")->offset + d, NULL,
                           eb->B, d, (int)N);
            scored = dev_host_view(scores, (size_t)eb->B * N * sizeof(real), scores_h);
        }
        rc = each(ctx, eb, scored, pop_scores ? 0 : (size_t)N, err);
    }
done:
    m->last_only = 0;
    if (m->bank) bank_count_lookups(m->bank, 1);
    dev_free(states);
    dev_free(scores);
    dev_free(last);
    free(last_h);
    free(scores_h);
    return rc;
}

typedef struct {
    int64_t N;
    const eval_protocol* p;
    int nthreads;
    uint8_t* mark;  // [nthreads, N+1]
    metrics* part;  // [nthreads]
    metrics* out;
} rank_ctx;

// The target's rank of each user, into the metrics.
static int rank_batch(void* ctx, const eval_batch* eb, const real* scores, size_t stride,
                      char* err) {
    rank_ctx* x = ctx;
    memset(x->part, 0, (size_t)x->nthreads * sizeof *x->part);
#pragma omp parallel for schedule(dynamic, 4)
    for (int b = 0; b < eb->B; b++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        int64_t r = target_rank(scores + (size_t)b * stride, x->N, eb->target[b],
                                eb->hist + eb->hist_off[b], eb->hist_off[b + 1] - eb->hist_off[b],
                                x->p, eb->user[b], x->mark + (size_t)t * (x->N + 1));
        metrics_add_rank(&x->part[t], r);
    }
    for (int t = 0; t < x->nthreads; t++) {
        for (int i = 0; i < EVAL_NK; i++) {
            x->out->hr[i] += x->part[t].hr[i];
            x->out->ndcg[i] += x->part[t].ndcg[i];
            x->out->mrr[i] += x->part[t].mrr[i];
        }
        x->out->n += x->part[t].n;
    }
    return 0;
}

int evaluate(model* m, const real* pop_scores, evaler* ev, const eval_protocol* p, const comm* c,
             metrics* out, char* err) {
    memset(out, 0, sizeof *out);
    rank_ctx x = {.N = m->V - 1, .p = p, .nthreads = 1, .out = out};
#ifdef _OPENMP
    x.nthreads = omp_get_max_threads();
#endif
    x.mark = calloc((size_t)x.nthreads * (size_t)(x.N + 1), 1);
    x.part = malloc((size_t)x.nthreads * sizeof *x.part);
    double sums[3 * EVAL_NK + 1];
    int rc = 0;
    if (!x.mark || !x.part) {
        snprintf(err, 512, "out of memory for evaluation (%lld items)", (long long)x.N);
        rc = -1;
    }
    if (!rc) rc = score_batches(m, pop_scores, ev, rank_batch, &x, err);
    if (!rc) {
        for (int i = 0; i < EVAL_NK; i++) {
            sums[i] = out->hr[i];
            sums[EVAL_NK + i] = out->ndcg[i];
            sums[2 * EVAL_NK + i] = out->mrr[i];
        }
        sums[3 * EVAL_NK] = out->n;
        rc = comm_allreduce_sum_f64(c, sums, 3 * EVAL_NK + 1, err);
    }
    if (!rc) {
        for (int i = 0; i < EVAL_NK; i++) {
            out->hr[i] = sums[i];
            out->ndcg[i] = sums[EVAL_NK + i];
            out->mrr[i] = sums[2 * EVAL_NK + i];
        }
        out->n = sums[3 * EVAL_NK];
        metrics_finish(out);
    }
    free(x.mark);
    free(x.part);
    return rc;
}

typedef struct {
    int64_t N;
    int k, exclude_seen;
    char *const *user_ids, *const *item_ids;
    FILE* out;
    int32_t* best;  // [k] item indices 1..N of the current user, best first
    uint8_t* mark;  // [N+1]
} rec_ctx;

// s[a] ranks above s[b]: the higher score, then the lower item index.
static int above(const real* s, int32_t a, int32_t b) {
    return s[a - 1] > s[b - 1] || (s[a - 1] == s[b - 1] && a < b);
}

int top_items(const real* s, int64_t N, int k, const uint8_t* mark, int32_t* best) {
    int n = 0;  // insertion into a sorted list of k (k is small against N)
    for (int32_t it = 1; it <= N; it++) {
        if ((mark && mark[it]) || (n == k && !above(s, it, best[n - 1]))) continue;
        int at = n < k ? n++ : n - 1;
        for (; at > 0 && above(s, it, best[at - 1]); at--) best[at] = best[at - 1];
        best[at] = it;
    }
    return n;
}

// The k best items of each user (its history left out with exclude_seen), as
// lines user,rank,item,score.
static int recommend_batch(void* ctx, const eval_batch* eb, const real* scores, size_t stride,
                           char* err) {
    rec_ctx* x = ctx;
    for (int b = 0; b < eb->B; b++) {
        const real* s = scores + (size_t)b * stride;
        const int32_t* h = eb->hist + eb->hist_off[b];
        const int64_t nh = eb->hist_off[b + 1] - eb->hist_off[b];
        if (x->exclude_seen)
            for (int64_t i = 0; i < nh; i++) x->mark[h[i]] = 1;
        const int n = top_items(s, x->N, x->k, x->mark, x->best);
        if (x->exclude_seen)
            for (int64_t i = 0; i < nh; i++) x->mark[h[i]] = 0;
        for (int r = 0; r < n; r++) {
            const int64_t u = eb->user[b];
            const int32_t it = x->best[r];
            if (x->user_ids)
                fprintf(x->out, "%s,%d,", x->user_ids[u], r + 1);
            else
                fprintf(x->out, "%lld,%d,", (long long)u, r + 1);
            if (x->item_ids)
                fprintf(x->out, "%s,%.6g\n", x->item_ids[it - 1], (double)s[it - 1]);
            else
                fprintf(x->out, "%d,%.6g\n", it, (double)s[it - 1]);
        }
    }
    if (ferror(x->out)) {
        snprintf(err, 512, "cannot write the recommendations: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int recommend(model* m, evaler* ev, int k, int exclude_seen, char* const* user_ids,
              char* const* item_ids, FILE* out, char* err) {
    rec_ctx x = {.N = m->V - 1,
                 .k = k,
                 .exclude_seen = exclude_seen,
                 .user_ids = user_ids,
                 .item_ids = item_ids,
                 .out = out};
    x.best = malloc((size_t)(k > 0 ? k : 1) * sizeof *x.best);
    x.mark = calloc((size_t)x.N + 1, 1);
    int rc = -1;
    if (k < 1)
        snprintf(err, 512, "--recommend needs K of 1 or more");
    else if (!x.best || !x.mark)
        snprintf(err, 512, "out of memory for recommendations");
    else
        rc = score_batches(m, NULL, ev, recommend_batch, &x, err);
    free(x.best);
    free(x.mark);
    return rc;
}
