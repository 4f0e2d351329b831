"""make_elastic_fixture.py: writes tests/reference/fixtures/elastic.h5 (memory
on) and fixtures/elastic_nomem.h5 (memory off), the float64 forward/backward
of tests/reference/elastic.py on a tiny seeded batch, for the C model's test
to compare against. Both use the same batch and the same parameters (the
memory-off file just lacks wqm, subkeys and bank). Run from anywhere:

    python3 tests/reference/make_elastic_fixture.py

Self-checks, printed, for each file (exit status 1 if one fails): loss equals
a by-hand log-softmax mean; central finite differences of the loss on 5
random parameter entries (plus one entry of each memory parameter, on a row
the batch uses) against autograd, with the memory's top-k selection asserted
unchanged by every perturbation; the selection's score margins; causality
(changing input t+1 leaves hidden[:, :t+1] exactly unchanged, every t, across
chunk boundaries); padding independence (changing padding items or wte[0]
leaves every non-padding output exactly unchanged; grad wte[0] = 0); and the
chunk-wise aggregation equals a streaming running-max/running-sum version.

File layout: attributes B L d H n_layers n_items k C mem_heads mem_dk mem_n
mem_topk memory (0/1) seed (int64), torch_version (string); datasets inputs,
targets [B,L], pad [B] (int32); every parameter by name (float64, shapes as in
elastic.param_shapes); hidden [B,L,d], logits [B,L,N], loss (scalar),
grad_<name> for every parameter; memory on only: slots_l0, slots_l1
[B,nc,k,Hm,kk] int32 (each layer's selected memory slots, sorted ascending
along the last axis).

The batch and parameter recipes, the shared self-checks (loss, finite
differences, causality, padding) and the HDF5 writer are in fixture_common.py;
this file holds the sizes, ELASTIC's parameter scales and its own checks
(memory parameters and slots, selection margin, running aggregation).
"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
sys.path.insert(0, HERE)
from elastic import ELASTIC, MEMORY_NAMES, aggregate_running, param_shapes  # noqa: E402
from fixture_common import SEED, Fixture, ok_word, random_names, run_variants  # noqa: E402

B, L, d, H, NL, N = 2, 11, 16, 2, 2, 29
K, C, HM, DK, NMEM, KK = 3, 4, 2, 8, 5, 3
PAD = [0, 3]
NC = (L + C - 1) // C
BIASES = ("qkvb", "attprojb", "fcb", "fcprojb", "ln1b", "ln2b", "lnfb")
SCALES = {"prior_b": 0.5}      # the rest (matrices, embeddings, experts, prior_u, bank): 0.3·randn
OUT = {True: os.path.join(HERE, "fixtures", "elastic.h5"),
       False: os.path.join(HERE, "fixtures", "elastic_nomem.h5")}


def selection_margin(model, trace):
    """Smallest gap between the kk-th and (kk+1)-th score at each top-k stage."""
    worst = float("inf")
    for l, tr in enumerate(trace):
        qm = (tr["P"] @ model.wqm[l].T).view(B, NC, K, HM, DK)
        Ks = model.subkeys[l].view(HM, 2, NMEM, DK // 2)
        s1 = torch.einsum("...mx,mix->...mi", qm[..., :DK // 2], Ks[:, 0])
        s2 = torch.einsum("...mx,mix->...mi", qm[..., DK // 2:], Ks[:, 1])
        v1, v2 = s1.sort(-1, descending=True).values, s2.sort(-1, descending=True).values
        sums = (v1[..., :KK, None] + v2[..., None, :KK]).flatten(-2).sort(-1, descending=True).values
        for v in (v1, v2, sums):
            worst = min(worst, (v[..., KK - 1] - v[..., KK]).min().item())
    return worst


def run(memory, params, batch):
    print(f"==== {'memory on' if memory else 'memory off'}")
    model = ELASTIC(N, d, H, NL, K, C, HM, DK, NMEM, KK, memory=memory, dtype=torch.float64)
    fx = Fixture(model, model.names, params, batch, trace=True)
    trace, names, grads = fx.trace, fx.names, fx.grads
    slots = [tr["slots"].sort(-1).values if memory else None for tr in trace]
    ok = fx.check_loss()

    # ---- finite differences: 5 random entries, plus one of each memory parameter
    fd_rng = np.random.default_rng(SEED + 1)
    picks = list(random_names(fd_rng, names))
    fix_index = stable = None
    if memory:
        picks += list(MEMORY_NAMES)
        used = torch.cat([s.flatten() for s in slots]).unique()

        def fix_index(name, idx):
            if name == "bank":                     # a slot the batch reads
                idx[0] = int(used[fd_rng.integers(len(used))])
            if name == "subkeys":                  # a sub-key some query selected
                idx[1] = int(grads[name][idx[0]].abs().sum(-1).argmax())

        def stable():                              # the perturbation kept every selected slot
            tr = []
            model(fx.inputs, fx.pad, trace=tr)
            return all((t["slots"].sort(-1).values == s).all() for t, s in zip(tr, slots))
    ok &= fx.check_finite_differences(picks, fd_rng, fix_index, stable)

    with torch.no_grad():
        if memory:
            margin = selection_margin(model, trace)
            good = margin > 1e-4
            ok &= good
            print(f"top-k selection margin (smallest kk-th vs (kk+1)-th score gap) = {margin:.3e} "
                  f"{ok_word(good)}")
    crng = np.random.default_rng(SEED + 2)
    ok &= fx.check_causality(crng)                 # across chunk boundaries too
    ok &= fx.check_padding(crng)

    # ---- aggregation: per-chunk softmax == streaming running max / running sums
    with torch.no_grad():
        diff = max((aggregate_running(model, l, tr["h"], fx.pad) - tr["P"]).abs().max().item()
                   for l, tr in enumerate(trace))
    good = diff < 1e-13
    ok &= good
    print(f"aggregation: per-chunk softmax vs running sums, max |diff| = {diff:.1e} {ok_word(good)}")

    extra = [(f"slots_l{l}", slots[l].numpy().astype(np.int32)) for l in range(NL)] if memory else []
    fx.write(OUT[memory], (("B", B), ("L", L), ("d", d), ("H", H), ("n_layers", NL), ("n_items", N),
                           ("k", K), ("C", C), ("mem_heads", HM), ("mem_dk", DK), ("mem_n", NMEM),
                           ("mem_topk", KK), ("memory", int(memory))), extra)
    return ok


def main():
    shapes = param_shapes(N, d, H, NL, K, HM, DK, NMEM, memory=True)
    return run_variants(run, (True, False), B, L, N, PAD, shapes, BIASES, SCALES)


if __name__ == "__main__":
    sys.exit(main())
