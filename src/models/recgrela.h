// recgrela.h: RecGRELA (DESIGN §3), rotary-enhanced linear attention with a
// local rank-augmentation branch and a SiLU gate, made causal. Defines:
// recgrela_create, recgrela_stream_floats, recgrela_stream_step.
#ifndef ELASTIC_RECGRELA_H
#define ELASTIC_RECGRELA_H

#include "model.h"

model* recgrela_create(const config* cfg, int V, int B, char* err);

// Streaming one user's history (on the CPU): the floats of a user's state
// (zeroed: no history yet), and one event, the item at position t (0 for the
// user's first), which updates the state in O(1) and writes the final state
// h[d] (the item scores are h . wte[1..]): what the forward over the whole
// history without padding gives at position t.
size_t recgrela_stream_floats(const model* m);
void recgrela_stream_step(model* m, real* state, int64_t t, int32_t item, real* h);

#endif
