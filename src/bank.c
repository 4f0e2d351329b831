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

static int on_gpu(void) { return device_current() == DEVICE_CUDA; }

// A device buffer of `bytes` standing for host buffer h (old, if any, freed):
// h itself on the CPU.
static void* mirror(void* h, void* old, size_t bytes, const char* what) {
    if (!on_gpu()) return h;
    if (old != h) dev_free(old);
    void* p = dev_alloc(bytes ? bytes : 1);
    if (!p) die("out of device memory for the memory bank's %s (%.1f MB)", what, bytes / MB);
    return p;
}

static void mirror_free(void* dev, void* h) {
    if (dev != h) dev_free(dev);
}

// host -> its mirror (nothing where the mirror is the host buffer)
static void upload(void* dev, const void* h, size_t bytes) {
    if (dev != h && bytes) dev_to_device(dev, h, bytes);
}

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
    // sort keys hold the row (owner-major) above the lookup's position
    const int64_t most = cap > grad_cap ? cap : grad_cap;
    if (bit_width((uint64_t)rows + (uint64_t)P) + bit_width((uint64_t)most) > 63 ||
        rows > INT32_MAX) {
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
    // the shard in the device's memory
    b->values = dev_alloc(lr * d * sd + 1);
    b->m = dev_alloc(lr * d * sd + 1);
    b->v = dev_alloc(lr * d * sd + 1);
    if (!b->values || !b->m || !b->v) goto oom;
    dev_zero(b->m, lr * d * sd), dev_zero(b->v, lr * d * sd);
    b->read = calloc(lr + 1, 1);
    b->fetched = dev_alloc((size_t)calls * cap * d * sd + 1);
    b->row = malloc((size_t)calls * cap * sizeof(int32_t) + 1);
    b->fetch_n = calloc((size_t)calls + 1, sizeof(int64_t));
    b->send_n = calloc(4 * (size_t)P, sizeof(int64_t));
    b->gids = malloc((size_t)grad_cap * sizeof(int32_t) + 1);
    b->gsum = malloc((size_t)grad_cap * d * sd + 1);
    if (!b->values || !b->m || !b->v || !b->read || !b->fetched || !b->row || !b->fetch_n ||
        !b->send_n || !b->gids || !b->gsum)
        goto oom;
    b->send_off = b->send_n + P, b->recv_n = b->send_n + 2 * P, b->recv_off = b->send_n + 3 * P;
    b->row_dev = mirror(b->row, NULL, (size_t)calls * cap * sizeof(int32_t), "row maps");
    if (on_gpu()) {
        b->ids_h = malloc((size_t)cap * sizeof(int32_t) + 1);
        b->grads_h = malloc((size_t)grad_cap * d * sd + 1);
        if (!b->ids_h || !b->grads_h) goto oom;
    }
    return b;
oom:
    bank_free(b);
    snprintf(err, 512, "out of memory for the memory bank (%lld rows x %d, %.1f MB on this rank)",
             (long long)rows, d, shard / MB);
    return NULL;
}

void bank_free(bank* b) {
    if (!b) return;
    dev_free(b->values), dev_free(b->m), dev_free(b->v), free(b->read);
    dev_free(b->fetched), mirror_free(b->row_dev, b->row);
    mirror_free(b->served_at_dev, b->served_at), mirror_free(b->served_rows_dev, b->served_rows);
    mirror_free(b->own_dev, b->own), mirror_free(b->own_sum_dev, b->own_sum);
    free(b->served_at), free(b->ids_h), free(b->grads_h);
    free(b->row), free(b->fetch_n), free(b->send_n);
    free(b->uniq), free(b->keys), free(b->keys2), free(b->gmap), free(b->seen), free(b->served_ids),
        free(b->served_rows);
    free(b->gids), free(b->gsum), free(b->own), free(b->own_sum);
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

// Room for n ids in the deduplication's scratch.
static void scratch_reserve(bank* b, int64_t n) {
    if (n <= b->scratch_cap) return;
    const int64_t cap = n > 2 * b->scratch_cap ? n : 2 * b->scratch_cap;
    free(b->uniq), free(b->keys), free(b->keys2), free(b->gmap), free(b->seen);
    b->uniq = xmalloc((size_t)cap * sizeof(int32_t), "memory bank row ids");
    b->keys = xmalloc((size_t)cap * sizeof(int64_t), "memory bank sort keys");
    b->keys2 = xmalloc((size_t)cap * sizeof(int64_t), "memory bank sort keys");
    b->gmap = xmalloc((size_t)cap * sizeof(int32_t), "memory bank gradient map");
    b->seen = xmalloc((size_t)cap, "memory bank gradient marks");
    b->scratch_cap = cap;
}

// keys[n] ascending, their low `bits` bits significant: least significant
// digit first, 11 bits a pass, through tmp[n]. Keys are distinct (each holds
// its position), so the order is the one any sort gives, and the passes
// replace a qsort that was most of a lookup's time.
static void radix_sort(uint64_t* keys, uint64_t* tmp, int64_t n, int bits) {
    enum { DIGIT = 11, BUCKETS = 1 << DIGIT };
    static int64_t count[BUCKETS];
    for (int shift = 0; shift < bits; shift += DIGIT) {
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < n; i++) count[(keys[i] >> shift) & (BUCKETS - 1)]++;
        for (int64_t j = 0, at = 0; j < BUCKETS; j++) {
            const int64_t c = count[j];
            count[j] = at, at += c;
        }
        for (int64_t i = 0; i < n; i++) tmp[count[(keys[i] >> shift) & (BUCKETS - 1)]++] = keys[i];
        uint64_t* t = keys;
        keys = tmp, tmp = t;
    }
    // an odd number of passes left the result in the caller's tmp
    if ((bits + DIGIT - 1) / DIGIT % 2) memcpy(tmp, keys, (size_t)n * sizeof *keys);
}

// The distinct ids of ids[n] into b->uniq, grouped by owner (rank order) and
// ascending within an owner; row[i] = the position of ids[i] among them;
// b->send_n/send_off the owners' shares. Returns the count.
static int64_t dedup_by_owner(bank* b, const int32_t* ids, int64_t n, int32_t* row) {
    const int P = b->c.world;
    const int64_t per = (b->rows + P - 1) / P;  // local rows of rank 0, the most
    const int pb = bit_width((uint64_t)(n > 1 ? n - 1 : 1));
    scratch_reserve(b, n);
    uint64_t* key = (uint64_t*)b->keys;
    for (int64_t i = 0; i < n; i++) {
        const int64_t id = ids[i];
        if (id < 0 || id >= b->rows)
            die("internal error: memory bank lookup of row %lld, the bank has %lld", (long long)id,
                (long long)b->rows);
        key[i] = (uint64_t)((id % P) * per + id / P) << pb | (uint64_t)i;
    }
    radix_sort(key, (uint64_t*)b->keys2, n, bit_width((uint64_t)P * per) + pb);
    for (int q = 0; q < P; q++) b->send_n[q] = 0;
    int64_t u = -1;
    uint64_t last = UINT64_MAX;
    for (int64_t i = 0; i < n; i++) {
        const uint64_t k = key[i] >> pb;
        if (k != last) {
            const int64_t owner = (int64_t)k / per, local = (int64_t)k % per;
            b->uniq[++u] = (int32_t)(local * P + owner);
            b->send_n[owner]++;
            last = k;
        }
        row[key[i] & (((uint64_t)1 << pb) - 1)] = (int32_t)u;
    }
    for (int q = 0, at = 0; q < P; at += (int)b->send_n[q], q++) b->send_off[q] = at;
    return u + 1;
}

// Room for n received ids and rows as owner.
static void served_reserve(bank* b, int64_t n) {
    if (n <= b->served_cap) return;
    const int64_t cap = n > 2 * b->served_cap ? n : 2 * b->served_cap;
    const size_t ib = (size_t)cap * sizeof(int32_t), rb = (size_t)cap * b->d * sizeof(real);
    int32_t* at = xmalloc(ib, "memory bank rows served");
    real* rows = xmalloc(rb, "memory bank rows served");
    int32_t* own = xmalloc(ib, "memory bank gradient rows");
    real* sum = xmalloc(rb, "memory bank gradient rows");
    b->served_at_dev =
        mirror(at, b->served_at_dev == b->served_at ? NULL : b->served_at_dev, ib, "rows served");
    b->served_rows_dev = mirror(
        rows, b->served_rows_dev == b->served_rows ? NULL : b->served_rows_dev, rb, "rows served");
    b->own_dev = mirror(own, b->own_dev == b->own ? NULL : b->own_dev, ib, "gradient rows");
    b->own_sum_dev =
        mirror(sum, b->own_sum_dev == b->own_sum ? NULL : b->own_sum_dev, rb, "gradient rows");
    free(b->served_ids), free(b->served_at), free(b->served_rows), free(b->own), free(b->own_sum);
    b->served_ids = xmalloc(ib, "memory bank rows served");
    b->served_at = at, b->served_rows = rows, b->own = own, b->own_sum = sum;
    b->served_cap = cap;
}

// The counts of the exchange (send_n -> recv_n) and the receive offsets;
// returns the total received.
static int64_t exchange_counts(bank* b) {
    char err[COMM_ERRLEN];
    const double t0 = now_sec();
    if (comm_alltoall_i64(&b->c, b->send_n, b->recv_n, err)) die("memory bank exchange: %s", err);
    if (!b->quiet) b->stats.wait_s += now_sec() - t0;
    int64_t total = 0;
    for (int q = 0; q < b->c.world; q++) b->recv_off[q] = total, total += b->recv_n[q];
    return total;
}

// The all-to-all of host buffers, or of device buffers (dev: device to
// device under NCCL, through host copies under MPI on CUDA).
static void exchange(bank* b, const void* send, const int64_t* sn, const int64_t* so, void* recv,
                     const int64_t* rn, const int64_t* ro, size_t elem, int dev) {
    char err[COMM_ERRLEN];
    const double t0 = now_sec();
    if ((dev ? comm_alltoallv_dev : comm_alltoallv)(&b->c, send, sn, so, recv, rn, ro, elem, err))
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

const real* bank_lookup(bank* b, int call, const int32_t* ids, int64_t n, const int32_t** row) {
    if (call < 0 || call >= b->calls || n < 0 || n > b->cap)
        die("internal error: memory bank lookup %d of %lld ids (the bank was sized for %d of %lld)",
            call, (long long)n, b->calls, (long long)b->cap);
    const int P = b->c.world, d = b->d;
    int32_t* rmap = b->row + (size_t)call * b->cap;
    ids = n ? dev_host_view(ids, (size_t)n * sizeof(int32_t), b->ids_h) : NULL;
    const int64_t u = dedup_by_owner(b, ids, n, rmap);
    b->fetch_n[call] = u;
    const int64_t got = exchange_counts(b);
    served_reserve(b, got);
    exchange(b, b->uniq, b->send_n, b->send_off, b->served_ids, b->recv_n, b->recv_off,
             sizeof(int32_t), 0);
    for (int64_t j = 0; j < got; j++) {
        const int64_t id = b->served_ids[j];
        if (id < 0 || id >= b->rows || id % P != b->c.rank)
            die("memory bank exchange: rank %d was asked for row %lld, which it does not hold",
                b->c.rank, (long long)id);
        b->served_at[j] = (int32_t)(id / P);
    }
    // the owner's rows, gathered where they live and sent device to device
    // (NCCL; host copies under MPI on CUDA) into what the model reads
    upload(b->served_at_dev, b->served_at, (size_t)got * sizeof(int32_t));
    rows_gather(b->served_rows_dev, b->values, b->served_at_dev, (int)got, d);
    exchange(b, b->served_rows_dev, b->recv_n, b->recv_off, b->fetched + (size_t)call * b->cap * d,
             b->send_n, b->send_off, d * sizeof(real), 1);
    upload(b->row_dev + (size_t)call * b->cap, rmap, (size_t)n * sizeof(int32_t));
    if (!b->quiet) {
        b->stats.lookups += n;
        b->stats.unique += u;
        b->stats.served += got;
        b->stats.id_bytes += off_rank_bytes(b, b->send_n, sizeof(int32_t));
        b->stats.row_bytes += off_rank_bytes(b, b->recv_n, d * sizeof(real));
    }
    *row = b->row_dev + (size_t)call * b->cap;
    return b->fetched + (size_t)call * b->cap * d;
}

const real* bank_fetched(const bank* b, int call, const int32_t** row) {
    *row = b->row_dev + (size_t)call * b->cap;
    return b->fetched + (size_t)call * b->cap * b->d;
}

void bank_skip_forward(bank* b) {
    const int32_t* row;
    for (int l = 0; l < b->calls; l++) bank_lookup(b, l, NULL, 0, &row);
}

// out[row[i]] = the sum of rows[i] over the i with that row, in the order of
// i (the first copied), for u distinct rows.
static void sum_by_row(real* out, const real* rows, const int32_t* row, int64_t n, int64_t u, int d,
                       uint8_t* seen) {
    memset(seen, 0, (size_t)u);
    for (int64_t i = 0; i < n; i++) {
        real* o = out + (size_t)row[i] * d;
        const real* g = rows + (size_t)i * d;
        if (!seen[row[i]]) {
            memcpy(o, g, d * sizeof(real));
            seen[row[i]] = 1;
        } else {
            for (int c = 0; c < d; c++) o[c] += g[c];
        }
    }
}

double bank_push(bank* b, const int32_t* ids, const real* rows, int64_t n) {
    if (n < 0 || n > b->grad_cap)
        die("internal error: %lld memory bank gradients (the bank was sized for %lld)",
            (long long)n, (long long)b->grad_cap);
    const int P = b->c.world, d = b->d;
    if (n) rows = dev_host_view(rows, (size_t)n * d * sizeof(real), b->grads_h);
    // this rank's rows: one gradient per row, summed in the order backward listed them
    scratch_reserve(b, n);
    const int64_t u = dedup_by_owner(b, ids, n, b->gmap);
    sum_by_row(b->gsum, rows, b->gmap, n, u, d, b->seen);
    memcpy(b->gids, b->uniq, (size_t)u * sizeof(int32_t));
    // to the owners, which sum what the ranks sent in rank order
    const int64_t got = exchange_counts(b);
    served_reserve(b, got);
    exchange(b, b->gids, b->send_n, b->send_off, b->served_ids, b->recv_n, b->recv_off,
             sizeof(int32_t), 0);
    exchange(b, b->gsum, b->send_n, b->send_off, b->served_rows, b->recv_n, b->recv_off,
             d * sizeof(real), 0);
    b->stats.grad_bytes += off_rank_bytes(b, b->send_n, sizeof(int32_t) + d * sizeof(real));
    // the owner's rows, in ascending order; a row's sum in the order received
    scratch_reserve(b, got);
    const int64_t own = dedup_by_owner(b, b->served_ids, got, b->gmap);
    sum_by_row(b->own_sum, b->served_rows, b->gmap, got, own, d, b->seen);
    for (int64_t j = 0; j < own; j++) b->own[j] = (int32_t)(b->uniq[j] / P);
    b->n_own = own;
    double gsq = 0;
    for (int64_t i = 0; i < own * d; i++) gsq += (double)b->own_sum[i] * b->own_sum[i];
    return gsq;
}

void bank_apply(bank* b, real lr, real beta1, real beta2, real eps, int64_t t) {
    upload(b->own_dev, b->own, (size_t)b->n_own * sizeof(int32_t));
    upload(b->own_sum_dev, b->own_sum, (size_t)b->n_own * b->d * sizeof(real));
    adam_sparse_update(b->values, b->m, b->v, b->own_dev, b->own_sum_dev, b->n_own, b->d, lr, beta1,
                       beta2, eps, t);
    for (int64_t i = 0; i < b->n_own; i++) b->read[b->own[i]] = 1;
}

void bank_count_lookups(bank* b, int on) { b->quiet = !on; }

int64_t bank_rows_read(bank* b) {
    double n = 0;
    for (int64_t i = 0; i < b->local_rows; i++) n += b->read[i];
    memset(b->read, 0, (size_t)b->local_rows);
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
