// init.c: tensor table and seeded initialisation.
#include "init.h"

#include <math.h>

#include "util.h"

size_t tensor_add(model* m, const char* name, int64_t d0, int64_t d1, int64_t d2) {
    if (m->n_tensors >= MODEL_MAX_TENSORS)  // a model's own table: a programming error
        die("internal error: model %s declares more than %d tensors (at %s; raise "
            "MODEL_MAX_TENSORS in src/model.h)",
            m->name, MODEL_MAX_TENSORS, name);
    tensor_spec* t = &m->tensors[m->n_tensors++];
    int64_t dims[3] = {d0, d1, d2};
    t->name = name;
    t->offset = m->n_params;
    t->size = 1;
    t->ndim = 0;
    for (int i = 0; i < 3 && dims[i] > 0; i++) {
        t->shape[t->ndim++] = dims[i];
        t->size *= (size_t)dims[i];
    }
    m->n_params += t->size;
    return t->offset;
}

size_t layer_tensor_add(model* m, const char* name, int64_t nl, int64_t d1, int64_t d2) {
    if (m->n_layers && m->n_layers != nl)
        die("internal error: model %s has tensors of %d and %lld layers (at %s)", m->name,
            m->n_layers, (long long)nl, name);
    m->n_layers = (int)nl;
    const size_t at = tensor_add(m, name, nl, d1, d2);
    m->tensors[m->n_tensors - 1].layered = 1;
    return at;
}

void init_normal(real* x, size_t n, double std, uint64_t seed, uint64_t stream) {
    init_normal_from(x, n, std, seed, stream, 0);
}

void init_normal_from(real* x, size_t n, double std, uint64_t seed, uint64_t stream,
                      uint64_t first) {
    uint64_t key = rng_hash64(seed, stream);
    for (size_t i = 0; i < n; i++) {
        // Box-Muller on two uniforms; 1-u keeps log away from 0
        const uint64_t j = first + i;
        double u1 = 1.0 - rng_uniform(key, 2 * j), u2 = rng_uniform(key, 2 * j + 1);
        x[i] = (real)(std * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    }
}

void init_const(real* x, size_t n, real v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}
