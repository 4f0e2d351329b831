// synth.c: the synthetic generator of synth.h, streamed through ds_writer.
#include "synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "h5util.h"
#include "perm.h"
#include "writer.h"

#define BLOCK_ITEMS (1 << 22)  // items generated before a block is written

typedef struct {
    synth_config c;
    int64_t S;        // largest cluster size
    double* cdf_in;   // [S] Zipf CDF over positions inside a cluster
    double* cdf_all;  // [N] Zipf CDF over global popularity ranks
    perm shuffle;     // global rank -> item-1
} model;

// xoshiro256**, seeded per user so a user's history does not depend on blocks.
typedef struct {
    uint64_t s[4];
} rng;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(rng* r) {
    uint64_t* s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double uniform(rng* r) { return (double)(next_u64(r) >> 11) * 0x1.0p-53; }

static void seed_rng(rng* r, uint64_t seed, uint64_t user) {
    uint64_t x = perm_mix64(seed) ^ perm_mix64(user + 0x51A7ull);
    for (int i = 0; i < 4; i++) r->s[i] = x = perm_mix64(x + (uint64_t)i);
}

synth_config synth_defaults(void) {
    return (synth_config){.users = 1000,
                          .items = 1000,
                          .clusters = 0,
                          .min_len = 3,
                          .max_len = 50,
                          .seed = 1,
                          .p_burst = 0.5,
                          .p_long = 0.4,
                          .zipf = 1.0};
}

static double* zipf_cdf(int64_t n, double a) {
    double* cdf = malloc((size_t)n * sizeof *cdf);
    if (!cdf) return NULL;
    double acc = 0;
    for (int64_t j = 0; j < n; j++) cdf[j] = acc += pow((double)(j + 1), -a);
    return cdf;
}

// Smallest j < n with cdf[j] > u * cdf[n-1].
static int64_t sample_cdf(const double* cdf, int64_t n, double u) {
    double x = u * cdf[n - 1];
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static int64_t cluster_lo(const model* m, int64_t k) {  // first item of cluster k (1-based)
    return 1 + k * m->c.items / m->c.clusters;
}

static int64_t cluster_of(const model* m, int64_t item) {
    int64_t k = (item - 1) * m->c.clusters / m->c.items;  // then correct the rounding
    while (k + 1 < m->c.clusters && cluster_lo(m, k + 1) <= item) k++;
    while (k > 0 && cluster_lo(m, k) > item) k--;
    return k;
}

static int model_init(model* m, const synth_config* c, const char* path, char* err) {
    memset(m, 0, sizeof *m);
    m->c = *c;
    if (m->c.clusters == 0) m->c.clusters = c->items / 100 > 1 ? c->items / 100 : 1;
    if (c->users < 1 || c->items < 1 || c->items > INT32_MAX || m->c.clusters < 1 ||
        m->c.clusters > c->items || c->min_len < 3 || c->max_len < c->min_len || c->p_burst < 0 ||
        c->p_long < 0 || c->p_burst + c->p_long > 1 + 1e-12 || !(c->zipf >= 0))
        return ds_err(err,
                      "%s: bad synthetic config users=%lld items=%lld clusters=%lld len=%lld..%lld "
                      "p_burst=%g p_long=%g zipf=%g (need users, items >= 1, 1 <= clusters <= "
                      "items, 3 <= min_len <= max_len, p_burst + p_long <= 1)",
                      path, (long long)c->users, (long long)c->items, (long long)m->c.clusters,
                      (long long)c->min_len, (long long)c->max_len, c->p_burst, c->p_long, c->zipf);
    m->S = (c->items + m->c.clusters - 1) / m->c.clusters;
    m->cdf_in = zipf_cdf(m->S, c->zipf);
    m->cdf_all = zipf_cdf(c->items, c->zipf);
    if (!m->cdf_in || !m->cdf_all) {
        free(m->cdf_in);
        free(m->cdf_all);
        return ds_err(err, "%s: out of memory for %lld items", path, (long long)c->items);
    }
    perm_init(&m->shuffle, (uint64_t)c->items, c->seed, 0x5A17ull);
    return 0;
}

static void model_free(model* m) {
    free(m->cdf_in);
    free(m->cdf_all);
}

static int64_t user_len(const model* m, rng* r) {
    if (m->c.min_len == m->c.max_len) return m->c.min_len;
    double lo = log((double)m->c.min_len), hi = log((double)m->c.max_len + 1);
    int64_t n = (int64_t)exp(lo + (hi - lo) * uniform(r));
    return n < m->c.min_len ? m->c.min_len : n > m->c.max_len ? m->c.max_len : n;
}

static int32_t draw_in_cluster(const model* m, int64_t k, rng* r) {
    int64_t lo = cluster_lo(m, k), size = cluster_lo(m, k + 1) - lo;
    return (int32_t)(lo + sample_cdf(m->cdf_in, size, uniform(r)));
}

// One user's history into out; returns its length.
static int64_t gen_user(const model* m, int64_t u, int32_t* out) {
    rng r;
    seed_rng(&r, m->c.seed, (uint64_t)u);
    int64_t n = user_len(m, &r);
    int64_t K = m->c.clusters, nk = 1 + (int64_t)(next_u64(&r) % 3);
    if (nk > K) nk = K;
    int64_t ks[3];
    double w[3], wsum = 0;
    for (int64_t i = 0; i < nk; i++) {
        int fresh;
        do {  // distinct clusters
            ks[i] = (int64_t)(next_u64(&r) % (uint64_t)K);
            fresh = 1;
            for (int64_t j = 0; j < i; j++) fresh &= ks[j] != ks[i];
        } while (!fresh);
        wsum += w[i] = 0.2 + uniform(&r);
    }
    for (int64_t t = 0; t < n; t++) {
        double x = uniform(&r);
        if (t > 0 && x < m->c.p_burst) {
            int64_t prev = out[t - 1], k = cluster_of(m, prev);
            int64_t lo = cluster_lo(m, k), size = cluster_lo(m, k + 1) - lo;
            int64_t step = uniform(&r) < 0.75 ? 1 : 2;
            out[t] = (int32_t)(lo + (prev - lo + step) % size);
        } else if (x < m->c.p_burst + m->c.p_long) {
            double y = uniform(&r) * wsum;
            int64_t i = 0;
            while (i + 1 < nk && y >= w[i]) y -= w[i++];
            out[t] = draw_in_cluster(m, ks[i], &r);
        } else {
            int64_t rank = sample_cdf(m->cdf_all, m->c.items, uniform(&r));
            out[t] = (int32_t)(1 + perm_apply(&m->shuffle, (uint64_t)rank));
        }
    }
    return n;
}

int synth_user(const synth_config* c, int64_t u, int32_t* out, int64_t* len, char* err) {
    model m;
    if (model_init(&m, c, "synth", err) < 0) return -1;
    *len = gen_user(&m, u, out);
    model_free(&m);
    return 0;
}

int synth_write(const char* path, const synth_config* c, char* err) {
    err[0] = 0;
    model m;
    if (model_init(&m, c, path, err) < 0) return -1;
    int64_t cap = BLOCK_ITEMS > c->max_len ? BLOCK_ITEMS : c->max_len;
    int64_t max_users = cap / c->min_len + 1;
    int32_t* items = malloc((size_t)cap * sizeof *items);
    int64_t* lens = malloc((size_t)max_users * sizeof *lens);
    ds_writer* w = NULL;
    if (!items || !lens) {
        ds_err(err, "%s: out of memory", path);
        goto fail;
    }
    if (!(w = ds_writer_open(path, c->items, 0, err))) goto fail;
    int64_t nb = 0, used = 0;  // users and items in the current block
    for (int64_t u = 0; u < c->users; u++) {
        if (used + c->max_len > cap) {
            if (ds_writer_append(w, nb, lens, items, NULL, err) < 0) goto fail;
            nb = used = 0;
        }
        lens[nb] = gen_user(&m, u, items + used);
        used += lens[nb++];
    }
    if (ds_writer_append(w, nb, lens, items, NULL, err) < 0) goto fail;
    char source[512];
    snprintf(source, sizeof source,
             "synth seed=%llu users=%lld items=%lld clusters=%lld len=%lld..%lld p_burst=%g "
             "p_long=%g zipf=%g",
             (unsigned long long)c->seed, (long long)c->users, (long long)c->items,
             (long long)m.c.clusters, (long long)c->min_len, (long long)c->max_len, c->p_burst,
             c->p_long, c->zipf);
    int rc = ds_writer_finish(w, NULL, NULL, source, "none", err);
    free(items);
    free(lens);
    model_free(&m);
    return rc;
fail:
    ds_writer_abort(w);
    free(items);
    free(lens);
    model_free(&m);
    return -1;
}
