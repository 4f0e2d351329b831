// elastic.h: ELASTIC (DESIGN §3), our causal chunked form: interest experts
// aggregate the prefix, a product-key memory refines them, and every position
// dispatches over its chunk's interests and its own chunk. Defines:
// elastic_create, elastic_expert_load, elastic_diagnostics.
#ifndef ELASTIC_ELASTIC_H
#define ELASTIC_ELASTIC_H

#include "model.h"

// The memory bank is sharded over c (NULL: one process) and must fit in
// cfg->mem_budget MB per rank.
model* elastic_create(const config* cfg, int V, int B, const comm* c, char* err);
// After a forward: load[k] = the dispatch attention mass on each expert,
// averaged over layers, heads and non-padding positions (sums to the share
// of attention that goes to interests rather than the local chunk).
void elastic_expert_load(const model* m, double* load);
// "expert load 0.12 0.10 ... (interests 0.61 of attention)" into buf[n].
void elastic_diagnostics(const model* m, char* buf, size_t n);

#endif
