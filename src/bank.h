// bank.h: ELASTIC's memory bank, the one owner of its state (DESIGN §4): a
// table of `rows` rows of d floats, row-sharded over the ranks of a
// communicator: global row i lives on rank i mod P at local row i / P, with
// its Adam moments. Defines: bank, bank_stats, bank_create, bank_free,
// bank_init_rows, bank_lookup, bank_fetched, bank_skip_forward, bank_push,
// bank_apply, bank_rows_read, bank_count_lookups, bank_lookups_on_device, bank_stats_collect,
// bank_shard_bytes, bank_ranks_needed, bank_local_rows.
//
// A forward makes up to `calls` lookups (one per layer), each of up to `cap`
// ids. Ids, fetched rows and gradients are in the process's device memory
// (device.h): host memory on the CPU, the GPU's on CUDA. A lookup is collective: each rank
// deduplicates its ids, buckets them by owner, exchanges the counts, then the ids; the owners
// gather the rows and send them back. The fetched rows stay with the bank until the next forward,
// for the backward. After backward, bank_push sums the row gradients per row
// on the rank that computed them, sends one gradient per row to its owner,
// and the owner sums what the ranks sent in rank order; bank_apply then runs
// the sparse (lazy, row-wise) Adam on the owner's rows. Every rank must make
// the same calls in the same order: a rank with nothing to look up passes
// n = 0 (bank_skip_forward does a whole forward's worth). At P = 1 the
// exchange is a copy. An exchange that fails stops every rank (comm_abort)
// with the reason: a forward has no error path, and a rank that went on
// would leave the others waiting.
#ifndef ELASTIC_BANK_H
#define ELASTIC_BANK_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "kernels.h"

// What the exchanges did since bank_stats_collect last cleared it (this
// rank's counts; bank_stats_collect sums or maxes them over the ranks).
typedef struct {
    int64_t lookups;     // ids looked up, before deduplication
    int64_t unique;      // after (per lookup call, summed)
    int64_t id_bytes;    // ids sent to owners
    int64_t row_bytes;   // rows sent back by owners
    int64_t grad_bytes;  // ids and row gradients sent to owners
    int64_t served;      // rows this rank served as owner (load)
    int64_t served_max;  // after collect: the most any owner served
    double wait_s;  // seconds inside the exchanges' collectives (waiting on the others included)
} bank_stats;

typedef struct bank {
    int64_t rows;  // global rows
    int d;
    comm c;  // a copy of the communicator; rank, world
    int64_t local_rows;
    // Every array is in the process's device memory (host memory on the
    // CPU, the GPU's on CUDA) except the exchange's counts: the plan is made
    // on the device (kernels.h's ids_group), and only what sizes the
    // exchange comes back to the host.
    real *values, *m, *v;  // [local_rows, d]: this rank's rows and their moments
    uint8_t* read;         // [local_rows] 1 for each row updated since bank_rows_read
    // lookups of the current forward
    int calls;
    int64_t cap;
    // Over several ranks each call's rows are fetched; on one the table is
    // read in place (fetched and row NULL) and each call's ids are its rows.
    real* fetched;        // [calls, cap, d] the rows each call fetched, in owner order
    int32_t* row;         // [calls, cap] where each looked-up id is in its call's fetched rows
    int64_t* fetch_n;     // [calls] rows each call fetched (host)
    const int32_t** ids;  // [calls] each call's ids (host array of device pointers), one rank
    const int32_t* upd;   // the rows the last push updates (own, or on one rank uniq)
    const real* upd_sum;  // and their gradient sums (own_sum, or gsum)
    // the exchange's counts (host)
    int64_t *send_n, *send_off, *recv_n, *recv_off, *own_n;  // [P] each
    // the plan's scratch, for scratch_cap ids
    int64_t scratch_cap;
    int32_t* uniq;          // ids by owner
    int32_t* gmap;          // a gradient's row among the sums
    int32_t *perm, *first;  // positions by id, and where each id's run starts
    uint64_t* work;         // [3 scratch_cap] ids_group's
    // as owner: the ids received, their local rows, the rows (gradients) received
    int32_t *served_ids, *served_at;
    real* served_rows;
    int64_t served_cap;
    // gradient push: this rank's per-row sums, and the owner's
    int64_t grad_cap;
    real* gsum;  // [gsum_cap, d]: this rank's sums per distinct row, grown as needed
    int64_t gsum_cap;
    int32_t* own;   // local rows with a gradient (served_cap)
    real* own_sum;  // [.., d]
    int64_t n_own;
    bank_stats stats;
    int quiet;  // lookups not counted in stats (evaluation's)
    // On one rank a lookup's distinct rows cost a sort and a wait of their
    // own (over several the exchange finds them): counted only when asked
    // (bank_count_distinct; the trainer's --comm-stats).
    int count_distinct;
} bank;

// Bytes of one rank's shard of a bank of `rows` rows of d floats over P
// ranks: its values, both moments and the usage marks.
double bank_shard_bytes(int64_t rows, int d, int P);
// Rows of a bank of `rows` that rank `rank` of P holds (global rows i with
// i mod P = rank).
int64_t bank_local_rows(int64_t rows, int rank, int P);
// The fewest ranks whose shards fit in budget_mb (MB, per rank).
int bank_ranks_needed(int64_t rows, int d, double budget_mb);
// A bank of `rows` rows of d floats sharded over c (NULL: one process), for
// up to `calls` lookups of up to `cap` ids per forward and up to `grad_cap`
// row gradients per backward. budget_mb > 0: this rank's shard must fit in it.
// NULL with err[512] when it does not fit or memory runs out.
bank* bank_create(int64_t rows, int d, int calls, int64_t cap, int64_t grad_cap, const comm* c,
                  double budget_mb, char* err);
void bank_free(bank* b);
// Fills each of this rank's rows: fill(row, global id, ctx) writes its d values.
void bank_init_rows(bank* b, void (*fill)(real* row, int64_t id, void* ctx), void* ctx);
// Lookup `call` (0-based) of this forward: ids[n] are global rows, n <= cap.
// Returns the fetched rows; *row[n] says where each id's row is among them.
// On one rank nothing moves: the table itself, and *row = ids, which must
// then stay unchanged until backward's bank_fetched.
const real* bank_lookup(bank* b, int call, const int32_t* ids, int64_t n, const int32_t** row);
// The rows and row map of lookup `call` of the last forward, for backward.
const real* bank_fetched(const bank* b, int call, const int32_t** row);
// A forward's lookups with nothing to look up (a rank without rows).
void bank_skip_forward(bank* b);
// Sends the row gradients of the last backward to their owners, which sum
// them: ids[n] global rows, the gradient of ids[i] w[i] * rows[i / per_query]
// (rows[n / per_query, d]: the lookups of one query share its gradient; w
// NULL: rows[n, d] themselves, per_query 1). Writes this rank's share of the squared
// norm of the bank's gradient (the owners' sums; summed over ranks, the norm)
// to gsq[0], in device memory: nothing waits for it.
void bank_push(bank* b, const int32_t* ids, const real* w, const real* rows, int per_query,
               int64_t n, double* gsq);
// Sparse Adam on the rows the last push gave this rank, global step t (1-based).
void bank_apply(bank* b, real lr, real beta1, real beta2, real eps, int64_t t);
// Rows updated (over all ranks) since the last call, which clears the marks.
// Collective.
int64_t bank_rows_read(bank* b);
// Lookups counted in the statistics (on, the default) or not (evaluation's
// forwards are not the training step's exchanges).
void bank_count_lookups(bank* b, int on);
// Whether a lookup does nothing on the host (one rank, lookups not counted):
// then a forward may be recorded and replayed as a graph (model_forward).
int bank_lookups_on_device(const bank* b);
// On one rank, whether the statistics count each lookup's distinct rows (off
// by default: a sort and a wait each).
void bank_count_distinct(bank* b, int on);
// The exchange counters summed over ranks (served_max the most any rank
// served, wait_s the most any rank waited) into *out; clears them. Collective.
void bank_stats_collect(bank* b, bank_stats* out);

#endif
