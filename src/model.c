// model.c: model registry, the tensor table and shared initialisation helpers.
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/elastic.h"
#include "models/recgrela.h"
#include "models/sasrec.h"

model* model_create(const config* cfg, int64_t n_items, int B, char* err) {
    if (n_items < 1 || n_items > INT32_MAX - 1) {
        snprintf(err, 512, "cannot build a model for %lld items", (long long)n_items);
        return NULL;
    }
    if (!strcmp(cfg->model, "sasrec")) return sasrec_create(cfg, (int)n_items + 1, B, err);
    if (!strcmp(cfg->model, "elastic")) return elastic_create(cfg, (int)n_items + 1, B, err);
    if (!strcmp(cfg->model, "recgrela")) return recgrela_create(cfg, (int)n_items + 1, B, err);
    snprintf(err, 512, "unknown --model '%s'", cfg->model);
    return NULL;
}

const tensor_spec* model_tensor(const model* m, const char* name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

void model_free(model* m) {
    if (m) m->free(m);
}
