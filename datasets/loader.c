// loader.c: training windows in a seeded per-epoch order, sliced per rank,
// prefetched by one thread into a ring of batches (loader.h).
#include "loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"
#include "perm.h"

struct loader {
    ds_file* f;
    int L, stride, batch, rank, world;
    uint64_t seed;
    int64_t W, per_epoch;
    int64_t* wprefix;  // [n_users+1]: windows of users before u
    int row0, B;       // this rank's rows [row0, row0+B) of a global batch

    // Ring of nslots = prefetch+1 batches: slots head.. are in use, the first
    // one held by the consumer when `held`, then `ready` filled ones.
    batch* slots;
    int nslots, head, held, ready;
    int64_t epoch, index;  // cursor of the next batch the producer fills
    int running, stop, failed;
    char perr[DS_ERRLEN];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv_space, cv_ready;
    int32_t* scratch;  // producer's [L+1]
};

static int64_t user_windows(int64_t len, int stride) {
    int64_t m = len - 2;  // training history
    return m >= 2 ? (m - 2) / stride + 1 : 0;
}

static int64_t window_user(const loader* ld, int64_t w) {
    int64_t lo = 0, hi = ds_n_users(ld->f);  // wprefix[lo] <= w < wprefix[hi]
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ld->wprefix[mid] <= w)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

// Window w into inputs/targets [L]; returns the padding count.
static int read_window(loader* ld, int64_t w, int32_t* inputs, int32_t* targets, int32_t* scratch,
                       char* err) {
    int L = ld->L;
    if (w < 0 || w >= ld->W)
        return ds_err(err, "%s: window %lld outside 0..%lld", ds_path(ld->f), (long long)w,
                      (long long)ld->W - 1);
    int64_t u = window_user(ld, w);
    int64_t k = w - ld->wprefix[u];
    int64_t end = ds_user_len(ld->f, u) - 2 - k * ld->stride;
    int64_t start = end - (L + 1) > 0 ? end - (L + 1) : 0;
    int pad = (int)(L + 1 - (end - start));
    memset(scratch, 0, (size_t)pad * sizeof *scratch);
    if (ds_read_user(ld->f, u, start, end - start, scratch + pad, err) < 0) return -1;
    memcpy(inputs, scratch, (size_t)L * sizeof *inputs);
    memcpy(targets, scratch + 1, (size_t)L * sizeof *targets);
    memset(targets, 0, (size_t)pad * sizeof *targets);
    return pad;
}

int loader_window(loader* ld, int64_t w, int32_t* inputs, int32_t* targets, char* err) {
    int32_t* scratch = malloc((size_t)(ld->L + 1) * sizeof *scratch);
    if (!scratch) return ds_err(err, "%s: out of memory", ds_path(ld->f));
    int pad = read_window(ld, w, inputs, targets, scratch, err);
    free(scratch);
    return pad;
}

static int fill_batch(loader* ld, batch* b, int64_t epoch, int64_t index, char* err) {
    perm p;
    perm_init(&p, (uint64_t)ld->W, ld->seed, (uint64_t)epoch);
    b->epoch = epoch;
    b->index = index;
    b->n_targets = 0;
    for (int r = 0; r < ld->B; r++) {
        uint64_t pos = (uint64_t)(index * ld->batch + ld->row0 + r);
        int64_t w = (int64_t)perm_apply(&p, pos);
        int pad = read_window(ld, w, b->inputs + (size_t)r * ld->L, b->targets + (size_t)r * ld->L,
                              ld->scratch, err);
        if (pad < 0) return -1;
        b->pad[r] = pad;
        b->n_targets += ld->L - pad;
    }
    return 0;
}

static void* producer(void* arg) {
    loader* ld = arg;
    char err[DS_ERRLEN];
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        while (!ld->stop && ld->held + ld->ready >= ld->nslots)
            pthread_cond_wait(&ld->cv_space, &ld->mu);
        if (ld->stop) break;
        // head + used is unchanged when the consumer releases a slot, so this
        // slot stays ours while we fill it unlocked.
        batch* b = &ld->slots[(ld->head + ld->held + ld->ready) % ld->nslots];
        int64_t e = ld->epoch, i = ld->index;
        pthread_mutex_unlock(&ld->mu);
        err[0] = 0;
        int rc = fill_batch(ld, b, e, i, err);
        pthread_mutex_lock(&ld->mu);
        if (rc < 0) {
            ld->failed = 1;
            snprintf(ld->perr, sizeof ld->perr, "%s", err);
            pthread_cond_broadcast(&ld->cv_ready);
            break;
        }
        ld->ready++;
        if (++ld->index == ld->per_epoch) {
            ld->index = 0;
            ld->epoch++;
        }
        pthread_cond_broadcast(&ld->cv_ready);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

static void stop_producer(loader* ld) {
    if (!ld->running) return;
    pthread_mutex_lock(&ld->mu);
    ld->stop = 1;
    pthread_cond_broadcast(&ld->cv_space);
    pthread_mutex_unlock(&ld->mu);
    pthread_join(ld->thread, NULL);
    ld->running = 0;
    ld->stop = 0;
}

loader* loader_open(const char* path, const loader_config* cfg, char* err) {
    err[0] = 0;
    if (cfg->L < 1 || cfg->batch < 1 || cfg->world < 1 || cfg->rank < 0 ||
        cfg->rank >= cfg->world || cfg->batch < cfg->world || cfg->stride < 0 ||
        cfg->prefetch < 0) {
        ds_err(err,
               "%s: bad loader config L=%d stride=%d batch=%d rank=%d world=%d prefetch=%d "
               "(need L>=1, batch>=world>=1, 0<=rank<world)",
               path, cfg->L, cfg->stride, cfg->batch, cfg->rank, cfg->world, cfg->prefetch);
        return NULL;
    }
    loader* ld = calloc(1, sizeof *ld);
    if (!ld) {
        ds_err(err, "%s: out of memory", path);
        return NULL;
    }
    if (!(ld->f = ds_open(path, err))) {
        free(ld);
        return NULL;
    }
    ld->L = cfg->L;
    ld->stride = cfg->stride ? cfg->stride : cfg->L;
    ld->batch = cfg->batch;
    ld->rank = cfg->rank;
    ld->world = cfg->world;
    ld->seed = cfg->seed;
    ld->nslots = (cfg->prefetch ? cfg->prefetch : 2) + 1;
    ld->row0 = (int)((int64_t)cfg->rank * cfg->batch / cfg->world);
    ld->B = (int)((int64_t)(cfg->rank + 1) * cfg->batch / cfg->world) - ld->row0;
    int64_t nu = ds_n_users(ld->f);
    if (pthread_mutex_init(&ld->mu, NULL) != 0 || pthread_cond_init(&ld->cv_space, NULL) != 0 ||
        pthread_cond_init(&ld->cv_ready, NULL) != 0) {
        ds_err(err, "%s: cannot initialise the loader's locks", path);
        ds_close(ld->f);
        free(ld);
        return NULL;
    }
    if (!(ld->wprefix = malloc((size_t)(nu + 1) * sizeof *ld->wprefix)) ||
        !(ld->scratch = malloc((size_t)(ld->L + 1) * sizeof *ld->scratch)) ||
        !(ld->slots = calloc((size_t)ld->nslots, sizeof *ld->slots))) {
        ds_err(err, "%s: out of memory", path);
        goto fail;
    }
    ld->wprefix[0] = 0;
    for (int64_t u = 0; u < nu; u++)
        ld->wprefix[u + 1] = ld->wprefix[u] + user_windows(ds_user_len(ld->f, u), ld->stride);
    ld->W = ld->wprefix[nu];
    ld->per_epoch = ld->W / ld->batch;
    if (ld->per_epoch < 1) {
        ds_err(err,
               "%s: %lld training windows (L=%d, stride=%d) is fewer than one global batch "
               "of %d",
               path, (long long)ld->W, ld->L, ld->stride, ld->batch);
        goto fail;
    }
    size_t cells = (size_t)ld->B * (size_t)ld->L;
    for (int s = 0; s < ld->nslots; s++) {
        batch* b = &ld->slots[s];
        b->B = ld->B;
        b->row0 = ld->row0;
        b->L = ld->L;
        if (!(b->inputs = malloc(cells * sizeof(int32_t))) ||
            !(b->targets = malloc(cells * sizeof(int32_t))) ||
            !(b->pad = malloc((size_t)ld->B * sizeof(int32_t)))) {
            ds_err(err, "%s: out of memory for %d prefetch batches", path, ld->nslots);
            goto fail;
        }
    }
    return ld;
fail:
    loader_close(ld);
    return NULL;
}

void loader_close(loader* ld) {
    if (!ld) return;
    stop_producer(ld);
    for (int s = 0; ld->slots && s < ld->nslots; s++) {
        free(ld->slots[s].inputs);
        free(ld->slots[s].targets);
        free(ld->slots[s].pad);
    }
    free(ld->slots);
    free(ld->scratch);
    free(ld->wprefix);
    pthread_cond_destroy(&ld->cv_ready);
    pthread_cond_destroy(&ld->cv_space);
    pthread_mutex_destroy(&ld->mu);
    ds_close(ld->f);
    free(ld);
}

int64_t loader_windows(const loader* ld) { return ld->W; }
int64_t loader_batches_per_epoch(const loader* ld) { return ld->per_epoch; }
const ds_file* loader_dataset(const loader* ld) { return ld->f; }

int loader_seek(loader* ld, int64_t epoch, int64_t index, char* err) {
    if (epoch < 0 || index < 0 || index >= ld->per_epoch)
        return ds_err(err, "%s: cannot seek to epoch %lld batch %lld (an epoch has %lld)",
                      ds_path(ld->f), (long long)epoch, (long long)index, (long long)ld->per_epoch);
    stop_producer(ld);
    ld->head = ld->held = ld->ready = 0;
    ld->failed = 0;
    ld->perr[0] = 0;
    ld->epoch = epoch;
    ld->index = index;
    return 0;
}

const batch* loader_next(loader* ld, char* err) {
    err[0] = 0;
    if (!ld->running) {
        int rc = pthread_create(&ld->thread, NULL, producer, ld);
        if (rc != 0) {
            ds_err(err, "%s: cannot start the prefetch thread: %s", ds_path(ld->f), strerror(rc));
            return NULL;
        }
        ld->running = 1;
    }
    pthread_mutex_lock(&ld->mu);
    if (ld->held) {
        ld->head = (ld->head + 1) % ld->nslots;
        ld->held = 0;
        pthread_cond_signal(&ld->cv_space);
    }
    while (ld->ready == 0 && !ld->failed) pthread_cond_wait(&ld->cv_ready, &ld->mu);
    const batch* b = NULL;
    if (ld->ready > 0) {
        ld->ready--;
        ld->held = 1;
        b = &ld->slots[ld->head];
    } else {
        snprintf(err, DS_ERRLEN, "%s", ld->perr);
    }
    pthread_mutex_unlock(&ld->mu);
    return b;
}
