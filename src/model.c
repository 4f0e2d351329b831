// model.c: model registry, the tensor table and shared initialisation helpers.
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bank.h"
#include "device.h"
#include "util.h"
#include "models/elastic.h"
#include "models/recgrela.h"
#include "models/sasrec.h"

model* model_create(const config* cfg, int64_t n_items, int B, const comm* c, char* err) {
    if (n_items < 1 || n_items > INT32_MAX - 1) {
        snprintf(err, 512, "cannot build a model for %lld items", (long long)n_items);
        return NULL;
    }
    if (!strcmp(cfg->model, "sasrec")) return sasrec_create(cfg, (int)n_items + 1, B, err);
    if (!strcmp(cfg->model, "elastic")) return elastic_create(cfg, (int)n_items + 1, B, c, err);
    if (!strcmp(cfg->model, "recgrela")) return recgrela_create(cfg, (int)n_items + 1, B, err);
    snprintf(err, 512, "unknown --model '%s'", cfg->model);
    return NULL;
}

static void graph_drop(model* m) {
    dev_graph_free(m->graph);
    m->graph = NULL, m->graph_B = 0;
}

// A forward without dropout: replayed when this shape's graph is recorded
// and up to date; recorded (then launched) when this shape ran eagerly last
// time (which sized the backend's scratch); else run eagerly.
static void forward_replayed(model* m, int B) {
    if (m->graph_B == B && m->graph_last == m->last_only) {
        if (m->graph && !dev_graph_launch(m->graph)) {
            m->graph_replays++;
            return;
        }
        if (!m->graph && dev_graph_begin()) {
            m->forward(m, B, 0);
            m->graph = dev_graph_end();
            if (dev_graph_launch(m->graph))
                die("internal error: a graph out of date when recorded");
            m->graph_replays++;
            return;
        }
    }
    graph_drop(m);  // another shape, or the recording out of date
    m->forward(m, B, 0);
    m->graph_B = B, m->graph_last = m->last_only;
}

void model_forward(model* m, const int32_t* inputs, const int32_t* pad, int B,
                   uint64_t dropout_seed) {
    if (B <= 0) {
        if (m->bank) bank_skip_forward(m->bank);
        return;
    }
    dev_to_device(m->inputs, inputs, (size_t)B * m->L * sizeof *inputs);
    dev_to_device(m->pad, pad, (size_t)B * sizeof *pad);
    if (dropout_seed || (m->bank && !bank_lookups_on_device(m->bank))) {
        graph_drop(m);
        m->forward(m, B, dropout_seed);
    } else
        forward_replayed(m, B);
}

void model_init(model* m, uint64_t seed) {
    const size_t bytes = m->n_params * sizeof(real);
    int failed = 0;
    real* host = dev_host_staging(bytes, &failed);
    if (failed) die("out of memory for the initial parameters (%zu bytes)", bytes);
    if (!host) {  // the CPU: the parameters are host memory
        m->init(m, seed);
        return;
    }
    real* on_device = m->params;
    m->params = host;
    m->init(m, seed);
    m->params = on_device;
    dev_to_device(on_device, host, bytes);
    free(host);
}

const tensor_spec* model_tensor(const model* m, const char* name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

model* model_new(const char* name, size_t impl_bytes, const config* cfg, int V, int B) {
    model* m = calloc(1, sizeof *m);
    if (!m || !(m->impl = calloc(1, impl_bytes))) {
        free(m);
        return NULL;
    }
    m->name = name;
    m->V = V, m->L = cfg->L, m->d = cfg->d, m->B = B;
    return m;
}

int model_alloc(model* m, const act_spec* spec, int n, int B) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += spec[i].n;
    // on the backend's memory (device.h): one allocation each
    m->params = dev_alloc(m->n_params * sizeof(real));
    m->grads = dev_alloc(m->n_params * sizeof(real));
    m->acts = dev_alloc((total ? total : 1) * sizeof(real));
    m->inputs = dev_alloc((size_t)B * m->L * sizeof(int32_t));
    m->pad = dev_alloc((size_t)B * sizeof(int32_t));
    m->last_rows = dev_alloc((size_t)B * sizeof(int32_t) + 1);
    if (!m->params || !m->grads || !m->acts || !m->inputs || !m->pad || !m->last_rows) return -1;
    int32_t* last = malloc((size_t)B * sizeof(int32_t) + 1);
    if (!last) return -1;
    for (int b = 0; b < B; b++) last[b] = b * m->L + m->L - 1;
    dev_to_device(m->last_rows, last, (size_t)B * sizeof(int32_t));
    free(last);
    dev_zero(m->params, m->n_params * sizeof(real));
    dev_zero(m->grads, m->n_params * sizeof(real));
    real* c = m->acts;
    for (int spare = 0; spare < 2; spare++) {
        if (spare) m->spare = c;
        for (int i = 0; i < n; i++)
            if (!spec[i].spare == !spare) *spec[i].at = c, c += spec[i].n;
    }
    m->spare_floats = (size_t)(c - m->spare);
    m->act_bytes += total * sizeof(real);
    return 0;
}

void model_free(model* m) {
    if (!m) return;
    dev_graph_free(m->graph);
    if (m->free) m->free(m);
    dev_free(m->params);
    dev_free(m->grads);
    dev_free(m->acts);
    dev_free(m->inputs);
    dev_free(m->pad);
    dev_free(m->last_rows);
    bank_free(m->bank);
    dev_free(m->bank_grad_ids);
    dev_free(m->bank_grad_w);
    dev_free(m->bank_grad_src);
    free(m->impl);
    free(m);
}
