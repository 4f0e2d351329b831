// bank.h: the optimizer side of a model's memory bank (ELASTIC's product-key
// value table, model.bank): its Adam moments, the scratch of its sparse
// update, and the marks of the rows read, for the usage diagnostic. Defines:
// bank_opt, bank_opt_init, bank_opt_free, bank_opt_reduce, bank_opt_apply,
// bank_opt_rows_read.
// The bank's values stay with the model; the sharded table of the distributed
// trainer grows out of this module.
#ifndef ELASTIC_BANK_H
#define ELASTIC_BANK_H

#include <stdint.h>

#include "model.h"

typedef struct {
    real *m, *v;     // [rows, d] Adam moments (checkpointed)
    real* sum;       // [cap, d] gradient rows summed by row
    int32_t* uniq;   // [cap] their row ids
    int64_t n_uniq;  // rows summed by the last bank_opt_reduce
    int64_t* perm;   // [cap] sort scratch
    uint8_t* read;   // [rows] 1 for each row updated since bank_opt_rows_read
} bank_opt;

// Sized for the model's bank (m->bank must be set); dies when out of memory.
void bank_opt_init(bank_opt* b, const model* m);
void bank_opt_free(bank_opt* b);
// Sums the row gradients the last backward listed (m->bank_grad_ids/rows) per
// row, in a fixed order; returns their sum of squares, for the gradient norm.
double bank_opt_reduce(bank_opt* b, const model* m);
// Sparse (lazy, row-wise) Adam with those sums on their rows only, with the
// global step t (1-based) for bias correction.
void bank_opt_apply(bank_opt* b, model* m, real lr, real beta1, real beta2, real eps, int64_t t);
// Rows updated since the last call, which clears the marks.
int64_t bank_opt_rows_read(bank_opt* b, const model* m);

#endif
