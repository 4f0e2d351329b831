// sasrec.h: SASRec (DESIGN §3), causal softmax self-attention with learned
// absolute positions. Defines: sasrec_create.
#ifndef ELASTIC_SASREC_H
#define ELASTIC_SASREC_H

#include "model.h"

model* sasrec_create(const config* cfg, int V, int B, char* err);

#endif
