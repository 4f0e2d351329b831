// bank.c: the row-sharded memory bank (bank.h).
#include "bank.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "util.h"

#define MB (1024.0 * 1024.0)

static int bit_width(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }

int64_t bank_local_rows(int64_t rows, int rank, int P) {
    return rows > rank ? (rows - rank + P - 1) / P : 0;
}

double bank_shard_bytes(int64_t rows, int d, int P) {
    const double lr = (double)bank_local_rows(rows, 0, P);  // rank 0 holds the most
    return lr * (3.0 * d * sizeof(real) + 1.0);
}

int bank_ranks_needed(int64_t rows, int d, double budget_mb) {
    for (int P = 1; P < (1 << 20); P++)
        if (bank_shard_bytes(rows, d, P) <= budget_mb * MB) return P;
    return 1 << 20;
}

// device memory of `bytes` (at least one byte), or NULL
static void* dalloc(size_t bytes) { return dev_alloc(bytes ? bytes : 1); }

bank* bank_create(int64_t rows, int d, int calls, int64_t cap, int64_t grad_cap, const comm* c,
                  double budget_mb, char* err) {
    const comm one = {.rank = 0, .world = 1, .backend = COMM_LOCAL};
    if (!c) c = &one;
    const int P = c->world;
    const double shard = bank_shard_bytes(rows, d, P);
    if (budget_mb > 0 && shard > budget_mb * MB) {
        const int need = bank_ranks_needed(rows, d, budget_mb);
        snprintf(err, 512,
                 "the memory bank (%lld rows x %d: %.1f MB with its Adam moments) needs %.1f MB "
                 "per rank on %d rank%s, over --mem-budget %.0f MB: it needs at least %d ranks "
                 "(mpirun -np %d), or a larger --mem-budget, or fewer --mem-slots",
                 (long long)rows, d, bank_shard_bytes(rows, d, 1) / MB, shard / MB, P,
                 P > 1 ? "s" : "", budget_mb, need, need);
        return NULL;
    }
    // the plan's sort keys hold the row (owner-major) above the lookup's position
    const int64_t most = cap > grad_cap ? cap : grad_cap;
    if (bit_width((uint64_t)rows + (uint64_t)P) + bit_width((uint64_t)most) > 63 ||
        rows > INT32_MAX - P) {
        snprintf(err, 512, "memory bank of %lld rows with %lld lookups per call: too large",
                 (long long)rows, (long long)most);
        return NULL;
    }
    bank* b = calloc(1, sizeof *b);
    if (!b) goto oom;
    b->rows = rows, b->d = d, b->c = *c;
    b->local_rows = bank_local_rows(rows, c->rank, P);
    b->calls = calls, b->cap = cap, b->grad_cap = grad_cap;
    const size_t lr = (size_t)b->local_rows, sd = sizeof(real);
    b->values = dalloc(lr * d * sd);
    b->m = dalloc(lr * d * sd);
    b->v = dalloc(lr * d * sd);
    b->read = dalloc(lr);
    if (P > 1) {
        b->fetched = dalloc((size_t)calls * cap * d * sd);
        b->row = dalloc((size_t)calls * cap * sizeof(int32_t));
    }
    b->ids = calloc((size_t)calls + 1, sizeof *b->ids);
    b->fetch_n = calloc((size_t)calls + 1, sizeof(int64_t));
    b->send_n = calloc(5 * (size_t)P, sizeof(int64_t));
    if (!b->values || !b->m || !b->v || !b->read || (P > 1 && (!b->fetched || !b->row)) ||
        !b->fetch_n || !b->send_n || !b->ids)
        goto oom;
    dev_zero(b->m, lr * d * sd), dev_zero(b->v, lr * d * sd), dev_zero(b->read, lr);
    b->send_off = b->send_n + P, b->recv_n = b->send_n + 2 * P, b->recv_off = b->send_n + 3 * P;
    b->own_n = b->send_n + 4 * P;
    return b;
oom:
    bank_free(b);
    snprintf(err, 512, "out of memory for the memory bank (%lld rows x %d, %.1f MB on this rank)",
             (long long)rows, d, shard / MB);
    return NULL;
}

void bank_free(bank* b) {
    if (!b) return;
    void* dev[] = {b->values,     b->m,         b->v,           b->read, b->fetched, b->row,
                   b->gsum,       b->uniq,      b->gmap,        b->perm, b->first,   b->work,
                   b->served_ids, b->served_at, b->served_rows, b->own,  b->own_sum};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) dev_free(dev[i]);
    free(b->fetch_n), free(b->send_n), free(b->ids);
    free(b);
}

void bank_init_rows(bank* b, void (*fill)(real* row, int64_t id, void* ctx), void* ctx) {
    const int P = b->c.world, d = b->d;
    const int64_t chunk = 65536;  // rows filled on the host at a time, on CUDA
    int failed;
    real* stage = dev_host_staging((size_t)chunk * d * sizeof(real), &failed);
    if (failed) die("out of memory for the memory bank's initial rows");
    for (int64_t i0 = 0; i0 < b->local_rows; i0 += chunk) {
        const int64_t n = b->local_rows - i0 < chunk ? b->local_rows - i0 : chunk;
        real* dst = stage ? stage : b->values + (size_t)i0 * d;
        for (int64_t i = 0; i < n; i++) fill(dst + (size_t)i * d, (i0 + i) * P + b->c.rank, ctx);
        if (stage) dev_to_device(b->values + (size_t)i0 * d, stage, (size_t)n * d * sizeof(real));
    }
    free(stage);
}

// Device memory grown to at least `bytes` (*p freed and replaced).
static void regrow(void* p, size_t bytes, const char* what) {
    void** q = p;
    dev_free(*q);
    *q = dalloc(bytes);
    if (!*q) die("out of device memory for the memory bank's %s (%.1f MB)", what, bytes / MB);
}

// Room for n ids in the plan's scratch.
static void scratch_reserve(bank* b, int64_t n) {
    if (n <= b->scratch_cap) return;
    const int64_t cap = n > 2 * b->scratch_cap ? n : 2 * b->scratch_cap;
    const size_t ib = (size_t)cap * sizeof(int32_t);
    regrow(&b->uniq, ib, "row ids");
    regrow(&b->gmap, ib, "gradient map");
    regrow(&b->perm, ib, "plan");
    regrow(&b->first, ib + sizeof(int32_t), "plan");
    regrow(&b->work, 3 * (size_t)cap * sizeof(uint64_t), "plan");
    b->scratch_cap = cap;
}

// ids[n] grouped by owner (kernels.h's ids_group) into b->uniq, row, b->perm
// and b->first, counts[P] the owners' shares; returns the distinct ids. The
// caller reserved the scratch (row may be b->gmap).
static int64_t group(bank* b, const int32_t* ids, int64_t n, int32_t* row, int64_t* counts) {
    if (n > b->scratch_cap)
        die("internal error: memory bank plan of %lld ids unreserved", (long long)n);
    const int64_t u =
        ids_group(b->uniq, row, b->perm, b->first, counts, ids, n, b->rows, b->c.world, b->work);
    if (u < 0)
        die("internal error: memory bank lookup of a row out of [0, %lld) on rank %d",
            (long long)b->rows, b->c.rank);
    return u;
}

// Room for n received ids and rows as owner.
static void served_reserve(bank* b, int64_t n) {
    if (n <= b->served_cap) return;
    const int64_t cap = n > 2 * b->served_cap ? n : 2 * b->served_cap;
    const size_t ib = (size_t)cap * sizeof(int32_t), rb = (size_t)cap * b->d * sizeof(real);
    regrow(&b->served_ids, ib, "rows served");
    regrow(&b->served_at, ib, "rows served");
    regrow(&b->served_rows, rb, "rows served");
    regrow(&b->own, ib, "gradient rows");
    regrow(&b->own_sum, rb, "gradient rows");
    b->served_cap = cap;
}

// The counts of the exchange (send_n -> recv_n) and the offsets of both;
// returns the total received.
static int64_t exchange_counts(bank* b) {
    char err[COMM_ERRLEN];
    for (int q = 0, at = 0; q < b->c.world; at += (int)b->send_n[q], q++) b->send_off[q] = at;
    const double t0 = now_sec();
    if (comm_alltoall_i64(&b->c, b->send_n, b->recv_n, err)) die("memory bank exchange: %s", err);
    if (!b->quiet) b->stats.wait_s += now_sec() - t0;
    int64_t total = 0;
    for (int q = 0; q < b->c.world; q++) b->recv_off[q] = total, total += b->recv_n[q];
    return total;
}

// The all-to-all of device buffers (device to device under NCCL, through
// host copies under MPI on CUDA, host buffers on the CPU).
static void exchange(bank* b, const void* send, const int64_t* sn, const int64_t* so, void* recv,
                     const int64_t* rn, const int64_t* ro, size_t elem) {
    char err[COMM_ERRLEN];
    const double t0 = now_sec();
    if (comm_alltoallv_dev(&b->c, send, sn, so, recv, rn, ro, elem, err))
        die("memory bank exchange: %s", err);
    if (!b->quiet) b->stats.wait_s += now_sec() - t0;
}

// Bytes this rank sends to the others when it sends n[q] elements to rank q.
static int64_t off_rank_bytes(const bank* b, const int64_t* n, size_t elem) {
    int64_t s = 0;
    for (int q = 0; q < b->c.world; q++)
        if (q != b->c.rank) s += n[q] * (int64_t)elem;
    return s;
}

// The local rows of the n ids this rank was sent as owner, into at.
static void served_local(bank* b, int32_t* at, const int32_t* ids, int64_t n) {
    const int64_t bad = ids_local(at, ids, n, b->rows, b->c.world, b->c.rank);
    if (bad)
        die("memory bank exchange: rank %d was sent %lld ids of rows it does not hold", b->c.rank,
            (long long)bad);
}

const real* bank_lookup(bank* b, int call, const int32_t* ids, int64_t n, const int32_t** row) {
    if (call < 0 || call >= b->calls || n < 0 || n > b->cap)
        die("internal error: memory bank lookup %d of %lld ids (the bank was sized for %d of %lld)",
            call, (long long)n, b->calls, (long long)b->cap);
    const int d = b->d;
    if (b->c.world == 1) {  // every row is here: read in place (only counted)
        if (!b->quiet) {
            b->stats.lookups += n;
            if (b->count_distinct) {
                scratch_reserve(b, n);
                b->stats.unique += group(b, ids, n, b->gmap, b->send_n);
            }
        }
        b->ids[call] = ids;
        *row = ids;
        return b->values;
    }
    int32_t* rmap = b->row + (size_t)call * b->cap;
    scratch_reserve(b, n);
    const int64_t u = group(b, ids, n, rmap, b->send_n);
    b->fetch_n[call] = u;
    const int64_t got = exchange_counts(b);
    served_reserve(b, got);
    exchange(b, b->uniq, b->send_n, b->send_off, b->served_ids, b->recv_n, b->recv_off,
             sizeof(int32_t));
    // the owner's rows, gathered where they live, sent back into what the model reads
    served_local(b, b->served_at, b->served_ids, got);
    rows_gather(b->served_rows, b->values, b->served_at, (int)got, d);
    exchange(b, b->served_rows, b->recv_n, b->recv_off, b->fetched + (size_t)call * b->cap * d,
             b->send_n, b->send_off, d * sizeof(real));
    if (!b->quiet) {
        b->stats.lookups += n;
        b->stats.unique += u;
        b->stats.served += got;
        b->stats.id_bytes += off_rank_bytes(b, b->send_n, sizeof(int32_t));
        b->stats.row_bytes += off_rank_bytes(b, b->recv_n, d * sizeof(real));
    }
    *row = rmap;
    return b->fetched + (size_t)call * b->cap * d;
}

const real* bank_fetched(const bank* b, int call, const int32_t** row) {
    if (b->c.world == 1) {
        *row = b->ids[call];
        return b->values;
    }
    *row = b->row + (size_t)call * b->cap;
    return b->fetched + (size_t)call * b->cap * b->d;
}

void bank_skip_forward(bank* b) {
    const int32_t* row;
    for (int l = 0; l < b->calls; l++) bank_lookup(b, l, NULL, 0, &row);
}

void bank_push(bank* b, const int32_t* ids, const real* w, const real* rows, int per_query,
               int64_t n, double* gsq) {
    if (n < 0 || n > b->grad_cap)
        die("internal error: %lld memory bank gradients (the bank was sized for %lld)",
            (long long)n, (long long)b->grad_cap);
    const int d = b->d;
    // this rank's rows: one gradient per row, summed in the order backward
    // listed them (the sums sized by the distinct rows, not the lookups)
    scratch_reserve(b, n);
    const int64_t u = group(b, ids, n, b->gmap, b->send_n);
    if (u > b->gsum_cap) {
        const int64_t cap = u > 2 * b->gsum_cap ? u : 2 * b->gsum_cap;
        const int64_t most = cap < b->grad_cap ? cap : b->grad_cap;
        regrow(&b->gsum, (size_t)most * d * sizeof(real), "gradient sums");
        b->gsum_cap = most;
    }
    rows_sum_runs(b->gsum, rows, w, per_query, b->perm, b->first, u, d);
    if (b->c.world == 1) {  // the owner: its distinct rows, ascending, are the local rows
        b->upd = b->uniq, b->upd_sum = b->gsum, b->n_own = u;
        sum_squares_into(gsq, b->gsum, u * d);
        return;
    }
    // to the owners, which sum what the ranks sent in rank order
    const int64_t got = exchange_counts(b);
    served_reserve(b, got);
    exchange(b, b->uniq, b->send_n, b->send_off, b->served_ids, b->recv_n, b->recv_off,
             sizeof(int32_t));
    exchange(b, b->gsum, b->send_n, b->send_off, b->served_rows, b->recv_n, b->recv_off,
             d * sizeof(real));
    b->stats.grad_bytes += off_rank_bytes(b, b->send_n, sizeof(int32_t) + d * sizeof(real));
    // the owner's rows, in ascending order; a row's sum in the order received
    scratch_reserve(b, got);
    const int64_t own = group(b, b->served_ids, got, b->gmap, b->own_n);
    rows_sum_runs(b->own_sum, b->served_rows, NULL, 1, b->perm, b->first, own, d);
    served_local(b, b->own, b->uniq, own);
    b->upd = b->own, b->upd_sum = b->own_sum, b->n_own = own;
    sum_squares_into(gsq, b->own_sum, own * d);
}

void bank_apply(bank* b, real lr, real beta1, real beta2, real eps, int64_t t) {
    adam_sparse_update(b->values, b->m, b->v, b->upd, b->upd_sum, b->n_own, b->d, lr, beta1, beta2,
                       eps, t);
    rows_mark(b->read, b->upd, b->n_own);
}

void bank_count_lookups(bank* b, int on) { b->quiet = !on; }

int bank_lookups_on_device(const bank* b) { return b->c.world == 1 && b->quiet; }

void bank_count_distinct(bank* b, int on) { b->count_distinct = on; }

int64_t bank_rows_read(bank* b) {
    const size_t lr = (size_t)b->local_rows;
    int failed;
    void* stage = dev_host_staging(lr, &failed);
    if (failed) die("out of memory for the memory bank's usage marks (%.1f MB)", lr / MB);
    const uint8_t* marks = dev_host_view(b->read, lr, stage);
    double n = 0;
    for (size_t i = 0; i < lr; i++) n += marks[i];
    free(stage);
    dev_zero(b->read, lr);
    char err[COMM_ERRLEN];
    if (comm_allreduce_sum_f64(&b->c, &n, 1, err)) die("memory bank usage: %s", err);
    return (int64_t)n;
}

void bank_stats_collect(bank* b, bank_stats* out) {
    const bank_stats* s = &b->stats;
    double sums[6] = {(double)s->lookups,   (double)s->unique,     (double)s->id_bytes,
                      (double)s->row_bytes, (double)s->grad_bytes, (double)s->served};
    const int P = b->c.world;
    double* each = xmalloc(2 * (size_t)P * sizeof(double), "memory bank statistics");
    const double mine[2] = {(double)s->served, s->wait_s};
    char err[COMM_ERRLEN];
    if (comm_allreduce_sum_f64(&b->c, sums, 6, err) ||
        comm_allgather(&b->c, mine, each, sizeof mine, err))
        die("memory bank statistics: %s", err);
    memset(out, 0, sizeof *out);
    out->lookups = (int64_t)sums[0], out->unique = (int64_t)sums[1];
    out->id_bytes = (int64_t)sums[2], out->row_bytes = (int64_t)sums[3];
    out->grad_bytes = (int64_t)sums[4], out->served = (int64_t)sums[5];
    for (int q = 0; q < P; q++) {
        if (each[2 * q] > (double)out->served_max) out->served_max = (int64_t)each[2 * q];
        if (each[2 * q + 1] > out->wait_s) out->wait_s = each[2 * q + 1];
    }
    free(each);
    memset(&b->stats, 0, sizeof b->stats);
}
