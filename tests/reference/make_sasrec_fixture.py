"""make_sasrec_fixture.py: writes tests/reference/fixtures/sasrec.h5, the
float64 forward/backward of tests/reference/sasrec.py on a tiny seeded batch,
for the C model's test to compare against. Run from anywhere:

    python3 tests/reference/make_sasrec_fixture.py

It also runs self-checks and prints them (exit status 1 if one fails):
finite differences of the loss on 5 random parameter entries against
autograd (relative error 1e-6, absolute 1e-8 for entries whose gradient is
exactly 0, such as the key part of qkvb), causality (changing inputs at position t+1 leaves hidden[:, :t+1]
unchanged), and padding independence (changing padding items or the padding
row wte[0] leaves every non-padding output unchanged).

File layout: attributes B L d H n_layers n_items (int); datasets inputs,
targets [B,L] and pad [B] (int32); every parameter by name (float64, shapes
as in sasrec.param_shapes); hidden [B,L,d], logits [B,L,N], loss (scalar),
and grad_<name> for every parameter (float64).
"""
import os
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
sys.path.insert(0, HERE)
from sasrec import PARAM_NAMES, SASRec, param_shapes  # noqa: E402

SEED = 20240611
B, L, d, H, NL, N = 3, 7, 16, 2, 2, 37
PAD = [0, 2, 5]
OUT = os.path.join(HERE, "fixtures", "sasrec.h5")


def make_batch(rng):
    inputs = np.zeros((B, L), np.int32)
    targets = np.zeros((B, L), np.int32)
    for b in range(B):
        seq = rng.integers(1, N + 1, size=L + 1)   # random items in 1..N
        w = seq.copy()
        w[:PAD[b]] = 0                             # left-padded window of L+1
        inputs[b] = w[:L]
        targets[b] = w[1:]
        targets[b][inputs[b] == 0] = 0             # no target where input is padding
    pad = np.array(PAD, np.int32)
    assert all((inputs[b, :pad[b]] == 0).all() and (inputs[b, pad[b]:] != 0).all() for b in range(B))
    return inputs, targets, pad


def random_params(rng):
    params = {}
    for name, shape in param_shapes(N, L, d, NL).items():
        if name in ("ln1w", "ln2w", "lnfw"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"):
            a = 0.3 * rng.standard_normal(shape)
        else:                                      # biases
            a = 0.1 * rng.standard_normal(shape)
        params[name] = a
    return params


def main():
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(SEED)
    inputs_np, targets_np, pad_np = make_batch(rng)
    params = random_params(rng)

    model = SASRec(N, L, d, H, NL, dropout=0.0, dtype=torch.float64)
    with torch.no_grad():
        for name in PARAM_NAMES:
            getattr(model, name).copy_(torch.from_numpy(params[name]))
    model.eval()
    inputs, targets, pad = (torch.from_numpy(a) for a in (inputs_np, targets_np, pad_np))

    hidden = model(inputs, pad)
    logits = model.logits(hidden)
    loss = model.loss(inputs, pad, targets)
    model.zero_grad()
    loss.backward()
    grads = {name: getattr(model, name).grad.detach().clone() for name in PARAM_NAMES}

    # Same loss written out by hand (mean over target != 0 of CE(logits, target-1)).
    m = targets != 0
    lp = torch.log_softmax(logits, dim=-1)[m]
    manual = -lp.gather(1, (targets[m].long() - 1)[:, None]).mean()

    ok = True
    print(f"loss = {loss.item():.17g}  (by hand {manual.item():.17g}, {int(m.sum())} targets)")
    ok &= abs(loss.item() - manual.item()) < 1e-12

    # ---- finite differences on 5 random parameter entries
    fd_rng = np.random.default_rng(SEED + 1)
    eps = 1e-6
    print("finite differences (central, eps=1e-6) vs autograd:")
    for _ in range(5):
        name = PARAM_NAMES[fd_rng.integers(len(PARAM_NAMES))]
        p = getattr(model, name)
        idx = tuple(int(fd_rng.integers(s)) for s in p.shape)
        if name == "wte" and idx[0] == 0:          # padding row has zero gradient; pick a real item
            idx = (1,) + idx[1:]
        with torch.no_grad():
            orig = p[idx].item()
            p[idx] = orig + eps
            lp_ = model.loss(inputs, pad, targets).item()
            p[idx] = orig - eps
            lm_ = model.loss(inputs, pad, targets).item()
            p[idx] = orig
        fd = (lp_ - lm_) / (2 * eps)
        ag = grads[name][idx].item()
        err = abs(fd - ag)
        # Relative tolerance, plus an absolute floor for entries whose true
        # gradient is 0 (e.g. the key bias: softmax is invariant to it).
        good = err <= 1e-6 * max(abs(fd), abs(ag)) + 1e-8
        ok &= good
        print(f"  {name}{list(idx)}: fd {fd:+.10e} autograd {ag:+.10e} |diff| {err:.1e} {'ok' if good else 'FAIL'}")

    with torch.no_grad():
        # ---- causality: change inputs at position t+1 (and later) -> hidden[:, :t+1] unchanged
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
        print(f"causality: max |hidden[:, :t+1] change| after perturbing position t+1 = {worst:.1e} {'ok' if good else 'FAIL'}")

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
        print(f"padding independence: max |hidden change| at non-padding positions = {diff:.1e} {'ok' if good else 'FAIL'}")
    good = grads["wte"][0].abs().max().item() == 0.0
    ok &= good
    print(f"grad of padding row wte[0] is zero: {'ok' if good else 'FAIL'}")

    # ---- write the fixture (track_times=False: regenerating gives identical bytes)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with h5py.File(tmp, "w") as f:
        for k, v in (("B", B), ("L", L), ("d", d), ("H", H), ("n_layers", NL), ("n_items", N)):
            f.attrs[k] = np.int64(v)
        f.attrs["seed"] = np.int64(SEED)
        f.attrs["torch_version"] = np.bytes_(torch.__version__)
        f.create_dataset("inputs", data=inputs_np, track_times=False)
        f.create_dataset("targets", data=targets_np, track_times=False)
        f.create_dataset("pad", data=pad_np, track_times=False)
        for name in PARAM_NAMES:
            f.create_dataset(name, data=getattr(model, name).detach().numpy(), track_times=False)
        f.create_dataset("hidden", data=hidden.detach().numpy(), track_times=False)
        f.create_dataset("logits", data=logits.detach().numpy(), track_times=False)
        f.create_dataset("loss", data=np.float64(loss.item()), track_times=False)
        for name in PARAM_NAMES:
            f.create_dataset("grad_" + name, data=grads[name].numpy(), track_times=False)
    os.replace(tmp, OUT)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes), torch {torch.__version__}")
    print("self-checks:", "all ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
