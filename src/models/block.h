// block.h: what every model's pre-LN block shares: the FFN half and the
// dropout seeds. Defines: block_seed, ffn_acts, ffn_scratch, ffn_half,
// ffn_add_tensors, ffn_init, ffn_block_rows, ffn_scratch_floats, ffn_scratch_carve,
// ffn_forward, ffn_backward, rope_row.
//   res3 = res2 + dropout(fcproj(gelu(fc(LN2(res2)))))      [R = B*L rows, d]
// The FFN is row-wise, so it runs in blocks of m->ffn_rows rows: its 4d-wide
// tensors (GELU output, their gradients and, with recompute, fc's output)
// live in a scratch of a block's size, not of the batch's.
#ifndef ELASTIC_MODELS_BLOCK_H
#define ELASTIC_MODELS_BLOCK_H

#include "model.h"

// Rows of an FFN block, of BL rows in all: on the CPU 1024 (a few MB of
// scratch at d = 64, large enough that the products stay efficient); on CUDA
// up to 16384 (a GPU wants a few large products, not 32 small ones; 16384 x
// 64 x 256 still fills one, and the scratch stays at 55 MB: at 65536 it was
// 218 MB, a fifth of SASRec's whole peak at L 4096 x 8).
int ffn_block_rows(size_t BL);

// Dropout sites: -1/0 the embedding, (l,1) the mixer output, (l,2) the FFN output.
uint64_t block_seed(uint64_t seed, int layer, int site);

// What one layer's FFN keeps for backward: ln2 [R,d], mean, rstd [R], fch [R,4d].
typedef struct {
    real *ln2, *mean, *rstd, *fch;
} ffn_acts;

// One block's scratch: ln2 [rows,d], mean, rstd [rows], fch, g, dg [rows,4d],
// carved from base.
typedef struct {
    real *base, *ln2, *mean, *rstd, *fch, *g, *dg;
} ffn_scratch;

// The FFN half of all layers: its tensors' offsets in params ([nl, ...]
// each), what it keeps for backward ([nl, rows, ...], rows = the model's B*L;
// nothing with recompute, when backward rebuilds it block by block) and one
// block's scratch. The model points kept and s.base into its activation table.
typedef struct {
    size_t ln2w, ln2b, fcw, fcb, fcprojw, fcprojb;
    int recompute;
    size_t rows;
    ffn_acts kept;
    ffn_scratch s;
} ffn_half;
void ffn_add_tensors(model* m, ffn_half* f, int nl);
void ffn_init(model* m, const ffn_half* f, int nl, uint64_t seed);
// Floats of the scratch for blocks of up to rows rows.
size_t ffn_scratch_floats(int d, int rows);
void ffn_scratch_carve(ffn_scratch* s, int d, int rows);

// Layer l: res3 = res2 + FFN(res2) over R rows; tmp[R,d] is scratch.
void ffn_forward(real* res3, const real* res2, const model* m, const ffn_half* f, int l, real* tmp,
                 real p, uint64_t seed, int R);
// dres holds d(res3) and is left holding d(res2); dbuf[R,d] is scratch.
void ffn_backward(real* dres, model* m, const ffn_half* f, int l, const real* res2, real* dbuf,
                  real p, uint64_t seed, int R);

// The last layer of a forward that only position L-1 of each row is read of
// (m->last_only), from there on: the mixer's output at those rows ylast[B,d]
// (before its projection w, bias), the layer's input x [B*L,d]; the
// residual, the FFN (no dropout: evaluation) and the final layer norm (lnfw,
// lnfb; statistics into mean, rstd [G]) at those rows alone, written into
// m->out's rows L-1. The rows go in groups of G = block_last_group rows,
// the last one padded with zeros (ylast must hold B rounded up to G): every
// product has G rows whatever B is, so a row's numbers do not depend on how
// many rows a rank has (a BLAS may sum a small product in another order).
// scratch: 5 [G,d] buffers. The models take it when block_last_applies.
int block_last_group(const model* m);
void block_last_rows(model* m, const ffn_half* f, int l, const real* x, real* ylast, const real* w,
                     const real* bias, const real* lnfw, const real* lnfb, real* mean, real* rstd,
                     real* scratch, int B);
// Whether layer l of nl runs as block_last_rows (L of at least 8: below, the
// full layer costs as little).
static inline int block_last_applies(const model* m, int l, int nl) {
    return m->last_only && l == nl - 1 && m->L >= 8;
}

// x[n] rotated at position t over adjacent pairs, as the RoPE kernels rotate
// the row at position t (pair i at angle t * 10000^(-2i/n), in double; an odd
// last element passes through): the streamed models' one-row RoPE.
void rope_row(real* y, const real* x, int64_t t, int n);

#endif
