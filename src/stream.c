// stream.c: users' states carried event by event (stream.h).
#include "stream.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval.h"
#include "fingerprint.h"
#include "ids.h"
#include "kernels.h"
#include "util.h"

#define ERRLEN 512
#define MAGIC "elastic-stream-states 1"

typedef struct {
    char* id;   // the user's original id
    int64_t t;  // events so far: the next one's position
    real* state;
} user_state;

typedef struct {
    user_state* u;
    int64_t n, cap;
    size_t floats;
    int64_t* slot;  // open addressing over the ids: index into u, or -1
    int64_t nslot;  // a power of two, at least twice n
} users;

static uint64_t hash_id(const char* s) {  // FNV-1a (fingerprint.h's constants)
    uint64_t h = FNV_OFFSET;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * FNV_PRIME;
    return h;
}

// The slot of id: where it is, or the empty one where it would go.
static int64_t slot_of(const users* us, const char* id) {
    int64_t i = (int64_t)(hash_id(id) & (uint64_t)(us->nslot - 1));
    while (us->slot[i] >= 0 && strcmp(us->u[us->slot[i]].id, id)) i = (i + 1) & (us->nslot - 1);
    return i;
}

static user_state* find(users* us, const char* id) {
    if (!us->nslot) return NULL;
    const int64_t i = us->slot[slot_of(us, id)];
    return i >= 0 ? &us->u[i] : NULL;
}

// The table of slots rebuilt at twice the size: O(1) per user on average.
static int rehash(users* us) {
    const int64_t n = us->nslot ? 2 * us->nslot : 128;
    int64_t* slot = malloc((size_t)n * sizeof *slot);
    if (!slot) return -1;
    for (int64_t i = 0; i < n; i++) slot[i] = -1;
    free(us->slot);
    us->slot = slot, us->nslot = n;
    for (int64_t i = 0; i < us->n; i++) us->slot[slot_of(us, us->u[i].id)] = i;
    return 0;
}

static user_state* add(users* us, const char* id) {
    if (us->n == us->cap) {
        const int64_t cap = us->cap ? 2 * us->cap : 64;
        user_state* u = realloc(us->u, (size_t)cap * sizeof *u);
        if (!u) return NULL;
        us->u = u, us->cap = cap;
    }
    if (2 * (us->n + 1) > us->nslot && rehash(us)) return NULL;
    user_state* s = &us->u[us->n];
    s->id = strdup(id), s->t = 0, s->state = calloc(us->floats, sizeof(real));
    if (!s->id || !s->state) return free(s->id), free(s->state), NULL;
    us->slot[slot_of(us, id)] = us->n++;
    return s;
}

static int load_states(users* us, const char* path, char* err) {
    FILE* f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : (snprintf(err, ERRLEN, "%s: %s", path, strerror(errno)), -1);
    char head[64] = "";
    long long floats = 0, n = 0;
    int rc = -1;
    if (!fgets(head, sizeof head, f) || strncmp(head, MAGIC, strlen(MAGIC)) ||
        fscanf(f, "%lld %lld\n", &floats, &n) != 2 || floats != (long long)us->floats) {
        snprintf(err, ERRLEN, "%s: not a states file of this model (%lld floats a user, want %zu)",
                 path, floats, us->floats);
        goto done;
    }
    for (long long i = 0; i < n; i++) {
        char id[1024];
        long long t;
        if (fscanf(f, "%1023s %lld", id, &t) != 2 || fgetc(f) != '\n') goto bad;
        user_state* s = add(us, id);
        if (!s || fread(s->state, sizeof(real), us->floats, f) != us->floats) goto bad;
        s->t = t;
    }
    rc = 0;
    goto done;
bad:
    snprintf(err, ERRLEN, "%s: truncated or damaged", path);
done:
    fclose(f);
    return rc;
}

static int save_states(const users* us, const char* path, char* err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE* f = fopen(tmp, "wb");
    int bad = !f || fprintf(f, "%s\n%zu %lld\n", MAGIC, us->floats, (long long)us->n) < 0;
    for (int64_t i = 0; !bad && i < us->n; i++)
        bad = fprintf(f, "%s %lld\n", us->u[i].id, (long long)us->u[i].t) < 0 ||
              fwrite(us->u[i].state, sizeof(real), us->floats, f) != us->floats;
    if (f && fclose(f)) bad = 1;
    if (bad || rename(tmp, path)) {
        snprintf(err, ERRLEN, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int stream_events(model* m, ds_file* ds, const char* events, const char* states, int k, FILE* out,
                  char* err) {
    if (!m->stream_step) {
        snprintf(err, ERRLEN,
                 "--stream: %s has no state to carry (its attention looks at the whole history; "
                 "ELASTIC and RecGRELA do)",
                 m->name);
        return -1;
    }
    users us = {.floats = m->stream_floats(m)};
    char* line = NULL;
    size_t cap = 0;
    int32_t* best = malloc((size_t)(k > 0 ? k : 1) * sizeof *best);
    const int64_t N = m->V - 1;  // items 1..N: their scores h . wte[1..N]
    real *score = malloc((size_t)N * sizeof *score), *h = malloc((size_t)m->d * sizeof *h);
    int32_t* hist = NULL;
    ds_ids *items = NULL, *people = NULL;
    FILE* f = NULL;
    int rc = -1;
    if (!best || !score || !h) {
        snprintf(err, ERRLEN, "out of memory");
        goto done;
    }
    if (!(items = ds_ids_open(ds, 0, err)) || !(people = ds_ids_open(ds, 1, err))) goto done;
    if (states && load_states(&us, states, err)) goto done;
    if (!(f = fopen(events, "r"))) {
        snprintf(err, ERRLEN, "%s: %s", events, strerror(errno));
        goto done;
    }
    char ub[1024], ib[1024];
    for (int64_t no = 1, ev = 0; getline(&line, &cap, f) > 0; no++) {
        for (char* c = line; *c; c++)
            if (*c == ',' || *c == '\t') *c = ' ';
        if (sscanf(line, "%1023s %1023s", ub, ib) != 2) {
            if (strspn(line, " \r\n") == strlen(line)) continue;
            snprintf(err, ERRLEN, "%s:%lld: want `user item`", events, (long long)no);
            goto done;
        }
        const int64_t item = ds_ids_find(items, ib);
        if (item < 0) {
            snprintf(err, ERRLEN, "%s:%lld: item '%s' is not in the dataset's items", events,
                     (long long)no, ib);
            goto done;
        }
        user_state* s = find(&us, ub);
        if (!s) {  // new here: its history in the dataset first, if it has one
            if (!(s = add(&us, ub))) {
                snprintf(err, ERRLEN, "out of memory for user states");
                goto done;
            }
            const int64_t u = ds_ids_find(people, ub);
            if (u >= 0) {
                const int64_t n = ds_user_len(ds, u);
                int32_t* grown = realloc(hist, (size_t)(n ? n : 1) * sizeof *hist);
                if (!grown) {
                    snprintf(err, ERRLEN, "out of memory for a history");
                    goto done;
                }
                hist = grown;
                if (ds_read_user(ds, u, 0, n, hist, err) < 0) goto done;
                for (int64_t t = 0; t < n; t++) m->stream_step(m, s->state, s->t++, hist[t], h);
            }
        }
        m->stream_step(m, s->state, s->t++, (int32_t)item, h);
        ev++;
        if (k > 0) {
            const real* wte = m->params + model_tensor(m, "wte")->offset;
            matmul_forward(score, h, wte + m->d, NULL, 1, m->d, (int)N);
            const int n = top_items(score, N, k, NULL, best);
            for (int r = 0; r < n; r++)
                fprintf(out, "%lld,%s,%d,%s,%.6g\n", (long long)ev, ub, r + 1,
                        ds_ids_name(items, best[r], ib, sizeof ib), (double)score[best[r] - 1]);
        }
    }
    if (ferror(f)) {
        snprintf(err, ERRLEN, "%s: read error: %s", events, strerror(errno));
        goto done;
    }
    rc = states ? save_states(&us, states, err) : 0;
done:
    if (f) fclose(f);
    for (int64_t i = 0; i < us.n; i++) free(us.u[i].id), free(us.u[i].state);
    free(us.u), free(us.slot), ds_ids_close(items), ds_ids_close(people);
    free(line), free(best), free(score), free(h), free(hist);
    return rc;
}
