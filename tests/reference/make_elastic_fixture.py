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
"""
import os
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
sys.path.insert(0, HERE)
from elastic import ELASTIC, MEMORY_NAMES, aggregate_running, param_shapes  # noqa: E402

SEED = 20240611
B, L, d, H, NL, N = 2, 11, 16, 2, 2, 29
K, C, HM, DK, NMEM, KK = 3, 4, 2, 8, 5, 3
PAD = [0, 3]
NC = (L + C - 1) // C
OUT = {True: os.path.join(HERE, "fixtures", "elastic.h5"),
       False: os.path.join(HERE, "fixtures", "elastic_nomem.h5")}


def make_batch(rng):
    # Same recipe as make_sasrec_fixture.make_batch (which uses that file's sizes).
    inputs = np.zeros((B, L), np.int32)
    targets = np.zeros((B, L), np.int32)
    for b in range(B):
        w = rng.integers(1, N + 1, size=L + 1)     # random items in 1..N
        w[:PAD[b]] = 0                             # left-padded window of L+1
        inputs[b] = w[:L]
        targets[b] = w[1:]
        targets[b][inputs[b] == 0] = 0             # no target where input is padding
    return inputs, targets, np.array(PAD, np.int32)


def random_params(rng):
    params = {}
    for name, shape in param_shapes(N, d, H, NL, K, HM, DK, NMEM, memory=True).items():
        if name in ("ln1w", "ln2w", "lnfw"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in ("qkvb", "attprojb", "fcb", "fcprojb", "ln1b", "ln2b", "lnfb"):
            a = 0.1 * rng.standard_normal(shape)
        elif name == "prior_b":
            a = 0.5 * rng.standard_normal(shape)
        else:                                      # matrices, embeddings, experts, prior_u, bank
            a = 0.3 * rng.standard_normal(shape)
        params[name] = a
    return params


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


def run(memory, params, inputs_np, targets_np, pad_np):
    tag = "memory on" if memory else "memory off"
    print(f"==== {tag}")
    model = ELASTIC(N, d, H, NL, K, C, HM, DK, NMEM, KK, memory=memory, dtype=torch.float64)
    names = model.names
    with torch.no_grad():
        for name in names:
            getattr(model, name).copy_(torch.from_numpy(params[name]))
    model.eval()
    inputs, targets, pad = (torch.from_numpy(a) for a in (inputs_np, targets_np, pad_np))

    trace = []
    hidden = model(inputs, pad, trace=trace)
    logits = model.logits(hidden)
    loss = model.loss(inputs, pad, targets)
    model.zero_grad()
    loss.backward()
    grads = {name: getattr(model, name).grad.detach().clone() for name in names}
    slots = [tr["slots"].sort(-1).values if memory else None for tr in trace]

    def current_slots():
        tr = []
        model(inputs, pad, trace=tr)
        return [t["slots"].sort(-1).values for t in tr]

    m = targets != 0
    lp = torch.log_softmax(logits, dim=-1)[m]
    manual = -lp.gather(1, (targets[m].long() - 1)[:, None]).mean()
    ok = True
    print(f"loss = {loss.item():.17g}  (by hand {manual.item():.17g}, {int(m.sum())} targets)")
    ok &= abs(loss.item() - manual.item()) < 1e-12

    # ---- finite differences: 5 random entries, plus one of each memory parameter
    fd_rng = np.random.default_rng(SEED + 1)
    eps = 1e-6
    picks = [names[fd_rng.integers(len(names))] for _ in range(5)]
    if memory:
        picks += list(MEMORY_NAMES)
    used = torch.cat([s.flatten() for s in slots]).unique() if memory else None
    print("finite differences (central, eps=1e-6) vs autograd:")
    for name in picks:
        p = getattr(model, name)
        idx = [int(fd_rng.integers(s)) for s in p.shape]
        if name == "wte" and idx[0] == 0:          # padding row has zero gradient; pick a real item
            idx[0] = 1
        if name == "bank":                         # a slot the batch reads
            idx[0] = int(used[fd_rng.integers(len(used))])
        if name == "subkeys":                      # a sub-key some query selected
            idx[1] = int(grads[name][idx[0]].abs().sum(-1).argmax())
        idx = tuple(idx)
        with torch.no_grad():
            orig = p[idx].item()
            p[idx] = orig + eps
            lp_ = model.loss(inputs, pad, targets).item()
            same = not memory or all((a == b).all() for a, b in zip(current_slots(), slots))
            p[idx] = orig - eps
            lm_ = model.loss(inputs, pad, targets).item()
            same &= not memory or all((a == b).all() for a, b in zip(current_slots(), slots))
            p[idx] = orig
        fd = (lp_ - lm_) / (2 * eps)
        ag = grads[name][idx].item()
        err = abs(fd - ag)
        good = same and err <= 1e-6 * max(abs(fd), abs(ag)) + 1e-8
        ok &= good
        print(f"  {name}{list(idx)}: fd {fd:+.10e} autograd {ag:+.10e} |diff| {err:.1e}"
              f"{'' if same else ' SLOTS CHANGED'} {'ok' if good else 'FAIL'}")

    with torch.no_grad():
        if memory:
            margin = selection_margin(model, trace)
            good = margin > 1e-4
            ok &= good
            print(f"top-k selection margin (smallest kk-th vs (kk+1)-th score gap) = {margin:.3e} "
                  f"{'ok' if good else 'FAIL'}")

        # ---- causality: change inputs at position t+1 -> hidden[:, :t+1] unchanged
        worst = 0.0
        crng = np.random.default_rng(SEED + 2)
        for t in range(L - 1):
            x2 = inputs.clone()
            for b in range(B):
                if t + 1 >= pad[b]:                # keep it a valid left-padded row
                    x2[b, t + 1] = int(crng.integers(1, N + 1))
            h2 = model(x2, pad)
            worst = max(worst, (h2[:, :t + 1] - hidden[:, :t + 1]).abs().max().item())
            changed = (h2[:, t + 1:] - hidden[:, t + 1:]).abs().max().item()
            assert changed > 0 or t + 1 < int(pad.min())
        good = worst == 0.0
        ok &= good
        print(f"causality: max |hidden[:, :t+1] change| after perturbing position t+1 "
              f"(every t) = {worst:.1e} {'ok' if good else 'FAIL'}")

        # ---- padding independence: padding items / padding row values do not matter
        x3 = inputs.clone()
        for b in range(B):
            x3[b, :pad[b]] = torch.from_numpy(crng.integers(1, N + 1, size=int(pad[b])).astype(np.int32))
        keep = model.wte[0].clone()
        model.wte[0] += torch.from_numpy(crng.standard_normal(d))
        h3 = model(x3, pad)
        h4 = model(inputs, pad)
        model.wte[0].copy_(keep)
        real = (torch.arange(L)[None, :] >= pad[:, None].long())
        diff = max((h3 - hidden)[real].abs().max().item(), (h4 - hidden)[real].abs().max().item())
        good = diff == 0.0
        ok &= good
        print(f"padding independence: max |hidden change| at non-padding positions = {diff:.1e} "
              f"{'ok' if good else 'FAIL'}")
        good = grads["wte"][0].abs().max().item() == 0.0
        ok &= good
        print(f"grad of padding row wte[0] is zero: {'ok' if good else 'FAIL'}")

        # ---- aggregation: per-chunk softmax == streaming running max / running sums
        diff = max((aggregate_running(model, l, tr["h"], pad) - tr["P"]).abs().max().item()
                   for l, tr in enumerate(trace))
        good = diff < 1e-13
        ok &= good
        print(f"aggregation: per-chunk softmax vs running sums, max |diff| = {diff:.1e} "
              f"{'ok' if good else 'FAIL'}")

    # ---- write the fixture (track_times=False: regenerating gives identical bytes)
    out = OUT[memory]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as f:
        for k, v in (("B", B), ("L", L), ("d", d), ("H", H), ("n_layers", NL), ("n_items", N),
                     ("k", K), ("C", C), ("mem_heads", HM), ("mem_dk", DK), ("mem_n", NMEM),
                     ("mem_topk", KK), ("memory", int(memory)), ("seed", SEED)):
            f.attrs[k] = np.int64(v)
        f.attrs["torch_version"] = np.bytes_(torch.__version__)
        f.create_dataset("inputs", data=inputs_np, track_times=False)
        f.create_dataset("targets", data=targets_np, track_times=False)
        f.create_dataset("pad", data=pad_np, track_times=False)
        for name in names:
            f.create_dataset(name, data=getattr(model, name).detach().numpy(), track_times=False)
        f.create_dataset("hidden", data=hidden.detach().numpy(), track_times=False)
        f.create_dataset("logits", data=logits.detach().numpy(), track_times=False)
        f.create_dataset("loss", data=np.float64(loss.item()), track_times=False)
        for name in names:
            f.create_dataset("grad_" + name, data=grads[name].numpy(), track_times=False)
        if memory:
            for l in range(NL):
                f.create_dataset(f"slots_l{l}", data=slots[l].numpy().astype(np.int32),
                                 track_times=False)
    os.replace(tmp, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    return ok


def main():
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(SEED)
    inputs_np, targets_np, pad_np = make_batch(rng)
    params = random_params(rng)
    ok = True
    for memory in (True, False):
        ok &= run(memory, params, inputs_np, targets_np, pad_np)
    print(f"torch {torch.__version__}; self-checks:", "all ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
