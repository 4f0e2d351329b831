// init.h: parameter-table and initialisation helpers shared by the models.
// Defines: tensor_add, layer_tensor_add, init_normal, init_normal_from, init_const.
#ifndef ELASTIC_MODELS_INIT_H
#define ELASTIC_MODELS_INIT_H

#include "model.h"

// Appends a tensor of the given shape (ndim <= 4, trailing zeros ignored) at
// the end of the table; returns its offset in elements.
size_t tensor_add(model* m, const char* name, int64_t d0, int64_t d1, int64_t d2);
// A tensor with one slice per layer, [nl, d1, d2]: marked `layered`, so its
// slice of layer l can be all-reduced once that layer's backward is done;
// every layered tensor of a model has the same nl (m->n_layers).
size_t layer_tensor_add(model* m, const char* name, int64_t nl, int64_t d1, int64_t d2);
// x[i] ~ N(0, std^2), drawn from (seed, stream, i): independent of thread count.
void init_normal(real* x, size_t n, double std, uint64_t seed, uint64_t stream);
// Elements [first, first + n) of that draw into x[n]: a slice of a table drawn
// whole, the same values wherever it is cut.
void init_normal_from(real* x, size_t n, double std, uint64_t seed, uint64_t stream,
                      uint64_t first);
void init_const(real* x, size_t n, real v);

#endif
