// model.h: what the trainer needs of a model. Defines: tensor_spec, act_spec,
// model, model_create, model_new, model_alloc, model_tensor, model_free.
// A model maps left-padded item sequences to hidden states out[B,L,d]; the
// trainer turns out into the loss with the tied item table (the tensor named
// "wte", [V,d]), so every model shares the loss, the evaluation and the
// optimizer. Parameters and their gradients are one allocation each.
#ifndef ELASTIC_MODEL_H
#define ELASTIC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "config.h"
#include "kernels.h"

struct bank;

#define MODEL_MAX_TENSORS 32
#define MODEL_MAX_DIMS 4

typedef struct {
    const char* name;
    size_t offset;  // into params, in elements
    size_t size;    // elements
    int ndim;
    int64_t shape[MODEL_MAX_DIMS];
    int layered;  // shape[0] is the layer (layer_tensor_add)
} tensor_spec;

typedef struct model model;
struct model {
    const char* name;
    int V, L, d, B;  // B: the largest batch the activations were sized for
    real* params;    // [n_params], one allocation
    real* grads;     // [n_params]
    size_t n_params;
    int n_tensors;
    tensor_spec tensors[MODEL_MAX_TENSORS];
    int n_layers;  // of the layered tensors
    // Called by backward as soon as layer l's gradients are final (layers in
    // descending order; NULL: nobody listens), so that their all-reduce can
    // start while the earlier layers' backward runs.
    void (*layer_done)(model* m, int l);
    void* layer_ctx;
    real* acts;             // the activation table, one allocation (model_alloc)
    int32_t *inputs, *pad;  // [B,L] and [B] of the last forward
    // The global batch's index of row 0 of this forward (a rank's first row):
    // dropout masks are keyed by the global position, so a run draws the same
    // masks whatever the number of ranks. Set before forward; 0 on one rank.
    int64_t row0;
    real* out;         // [B,L,d] hidden states written by forward
    real* dout;        // [B,L,d] gradient of the loss w.r.t. out, read by backward
    size_t act_bytes;  // activation memory, for the memory table
    // The end of the activation table whose contents need not survive from
    // forward to backward (backward's own buffers, forward's scratch): between
    // the two, the loss may use these floats as its scratch.
    real* spare;
    size_t spare_floats;
    // Set by a caller that reads only position L-1 of each row of out
    // (evaluation, serving): forward may then run its last layer's
    // position-wise half (and SASRec its last attention) at those rows alone,
    // leaving out's other rows as they were. No backward may follow.
    int last_only;
    int32_t* last_rows;  // [B] b*L + L-1, on the backend's memory (model_alloc)
    // Rows of the FFN half run at once (its 4d-wide scratch holds this many;
    // create sets the most, a test may lower it to exercise the blocking).
    int ffn_rows;
    // Optional sparse table (ELASTIC's memory bank, src/bank.h) outside
    // params, row-sharded over the ranks: read through its lookups in forward,
    // updated row-wise from the rows the last backward lists (global row ids),
    // never all-reduced whole. The model frees it.
    struct bank* bank;
    int64_t n_bank_grads;   // rows listed by the last backward (ids may repeat)
    int64_t bank_grad_cap;  // the most rows a backward lists
    int32_t* bank_grad_ids;
    // row i's gradient is bank_grad_w[i] * bank_grad_src[i / bank_grad_group]:
    // a query's lookups share its gradient (bank_push's form)
    real* bank_grad_w;    // [n_bank_grads]
    real* bank_grad_src;  // [n_bank_grads / bank_grad_group, d]
    int bank_grad_group;
    // forward over B <= m->B rows of m->inputs and m->pad (model_forward
    // copies them there); dropout_seed 0 means no dropout (evaluation). Called
    // through model_forward, which may record it as a graph and replay it: it
    // must then do the same device work every time for the same B and
    // last_only, reading nothing back.
    void (*forward)(model* m, int B, uint64_t dropout_seed);
    // accumulates into grads from dout, for the batch of the last forward.
    void (*backward)(model* m);
    // one line of model-specific diagnostics about the last forward into
    // buf[n] (may be NULL: none).
    void (*diagnostics)(const model* m, char* buf, size_t n);
    // initial values, drawn from seed.
    void (*init)(model* m, uint64_t seed);
    // Streaming one user's history on the CPU (elastic_eval --stream), for
    // the models linear in it (NULL for SASRec): the floats of a user's state
    // (zeroed: no history yet), and one event, the item at position t (0 for
    // the user's first), which updates the state in O(1) in t and writes the
    // final hidden state h[d] (the item scores are h . wte[1..]): what the
    // forward over the whole history without padding gives at position t.
    // The model's row-0 activations are the scratch (its last batch is lost).
    size_t (*stream_floats)(const model* m);
    void (*stream_step)(model* m, real* state, int64_t t, int32_t item, real* h);
    // frees what the model allocated beyond this struct's own (may be NULL).
    void (*free)(model* m);
    void* impl;
    // Forwards without dropout replayed (model_forward, on CUDA): the graph
    // of the last such forward's shape (B, last_only) once it ran eagerly
    // (which sized the backend's scratch), and the forwards it replayed.
    struct dev_graph* graph;
    int graph_B, graph_last;
    long graph_replays;
};

// One entry of a model's activation table: where the pointer goes, how many
// floats, and whether it is spare: written and read within forward, or
// within backward, never carried from one to the other.
typedef struct {
    real** at;
    size_t n;
    int spare;
} act_spec;
#define ACT_KEPT 0
#define ACT_SPARE 1

// Builds the model named by cfg->model for V = n_items + 1 rows and batches of
// up to B rows, its memory bank (if any) sharded over c (NULL: one process);
// NULL with err[512] on failure.
model* model_create(const config* cfg, int64_t n_items, int B, const comm* c, char* err);
// The forward over inputs[B, L] and pad[B] (host memory), or, for a rank
// with no rows (B = 0), its part in the forward's collective exchanges: every
// rank makes the same calls. Without dropout, where the backend records
// graphs and the forward does nothing on the host (no bank, or one whose
// lookups stay on the device), the second forward of a shape is recorded and
// every later one of that shape replays it (m->graph_replays counts them):
// the same work without the host's cost per kernel, which for one user's
// request is most of its time. A forward of another shape, or with dropout,
// runs as usual and drops the recording.
void model_forward(model* m, const int32_t* inputs, const int32_t* pad, int B,
                   uint64_t dropout_seed);
// m->init, drawn on the host and uploaded when the parameters live on a GPU.
void model_init(model* m, uint64_t seed);
// A model named name with a zeroed impl of impl_bytes, sized from cfg for V
// item rows and batches of up to B rows; NULL when out of memory.
model* model_new(const char* name, size_t impl_bytes, const config* cfg, int V, int B);
// Allocates params and grads (m->n_params, zeroed), inputs and pad for B rows,
// and the activation table: one block carved in the order of spec[n], the
// spare entries last (m->spare), its size added to m->act_bytes. 0, or -1
// when out of memory.
int model_alloc(model* m, const act_spec* spec, int n, int B);
const tensor_spec* model_tensor(const model* m, const char* name);
static inline void model_layer_done(model* m, int l) {
    if (m->layer_done) m->layer_done(m, l);
}
// Element c of row i's gradient in the bank's list, in memory the host reads
// (the CPU backend's).
static inline real model_bank_grad(const model* m, int64_t i, int c) {
    return m->bank_grad_w[i] * m->bank_grad_src[(size_t)(i / m->bank_grad_group) * m->d + c];
}
// Index in the global batch's [*, L, d] tensors of this forward's first element.
static inline int64_t model_elem0(const model* m) { return m->row0 * m->L * m->d; }
void model_free(model* m);

#endif
