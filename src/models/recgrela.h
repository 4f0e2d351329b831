// recgrela.h: RecGRELA (DESIGN §3), rotary-enhanced linear attention with a
// local rank-augmentation branch and a SiLU gate, made causal. Defines:
// recgrela_create (with the model's streamed state, O(1) an event).
#ifndef ELASTIC_RECGRELA_H
#define ELASTIC_RECGRELA_H

#include "model.h"

model* recgrela_create(const config* cfg, int V, int B, char* err);

#endif
