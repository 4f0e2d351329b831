// bank.c: sparse row-wise Adam on the memory bank, and its usage marks.
#include "bank.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void bank_opt_init(bank_opt* b, const model* m) {
    const size_t rows = (size_t)m->bank_rows, cap = (size_t)m->bank_grad_cap;
    b->m = xcalloc(rows * m->d, sizeof(real), "memory bank Adam moments");
    b->v = xcalloc(rows * m->d, sizeof(real), "memory bank Adam moments");
    b->sum = xmalloc(cap * m->d * sizeof(real), "memory bank gradient rows");
    b->uniq = xmalloc(cap * sizeof(int32_t), "memory bank row ids");
    b->perm = xmalloc(cap * sizeof(int64_t), "memory bank sort scratch");
    b->read = xcalloc(rows, 1, "memory bank usage");
}

void bank_opt_free(bank_opt* b) {
    free(b->m), free(b->v), free(b->sum), free(b->uniq), free(b->perm), free(b->read);
    memset(b, 0, sizeof *b);
}

double bank_opt_reduce(bank_opt* b, const model* m) {
    const int d = m->d;
    b->n_uniq = sparse_rows_reduce(b->uniq, b->sum, m->bank_grad_ids, m->bank_grad_rows,
                                   m->n_bank_grads, d, b->perm);
    double gsq = 0;
    for (int64_t i = 0; i < b->n_uniq * d; i++) gsq += (double)b->sum[i] * b->sum[i];
    return gsq;
}

void bank_opt_apply(bank_opt* b, model* m, real lr, real beta1, real beta2, real eps, int64_t t) {
    adam_sparse_update(m->bank, b->m, b->v, b->uniq, b->sum, b->n_uniq, m->d, lr, beta1, beta2, eps,
                       t);
    for (int64_t i = 0; i < b->n_uniq; i++) b->read[b->uniq[i]] = 1;
}

int64_t bank_opt_rows_read(bank_opt* b, const model* m) {
    int64_t n = 0;
    for (int64_t i = 0; i < m->bank_rows; i++) n += b->read[i];
    memset(b->read, 0, (size_t)m->bank_rows);
    return n;
}
