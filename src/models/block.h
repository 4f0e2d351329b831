// block.h: what every model's pre-LN block shares: the FFN half and the
// dropout seeds. Defines: block_seed, ffn_params, ffn_acts, ffn_offsets,
// ffn_add_tensors, ffn_init, ffn_forward, ffn_backward.
//   res3 = res2 + dropout(fcproj(gelu(fc(LN2(res2)))))      [R = B*L rows, d]
#ifndef ELASTIC_MODELS_BLOCK_H
#define ELASTIC_MODELS_BLOCK_H

#include "model.h"

// Dropout sites: -1/0 the embedding, (l,1) the mixer output, (l,2) the FFN output.
uint64_t block_seed(uint64_t seed, int layer, int site);

// Offsets of the FFN tensors of all layers in params ([nl, ...] each).
typedef struct {
    size_t ln2w, ln2b, fcw, fcb, fcprojw, fcprojb;
} ffn_offsets;
void ffn_add_tensors(model* m, ffn_offsets* o, int nl);
void ffn_init(model* m, const ffn_offsets* o, int nl, uint64_t seed);

// Activations of one layer's FFN half. fch_gelu [R,4d] is only the forward's
// scratch (the model's dfch_gelu will do): backward recomputes GELU(fch)
// rather than keeping 4d floats per position and layer.
typedef struct {
    real *ln2, *mean, *rstd, *fch, *fch_gelu;  // [R,d], [R], [R], [R,4d], [R,4d]
} ffn_acts;

// tmp[R,d] is scratch.
void ffn_forward(real* res3, const real* res2, const model* m, const ffn_offsets* o, int l,
                 const ffn_acts* a, real* tmp, real p, uint64_t seed, int R);
// dres holds d(res3) and is left holding d(res2); dbuf[R,d], dfch and
// dfch_gelu [R,4d] are scratch. With recompute, a's ln2, mean, rstd and fch
// are first rebuilt from res2 (the model then keeps one set for all layers
// instead of one per layer).
void ffn_backward(real* dres, model* m, const ffn_offsets* o, int l, const ffn_acts* a,
                  const real* res2, real* dbuf, real* dfch, real* dfch_gelu, real p, uint64_t seed,
                  int R, int recompute);

#endif
