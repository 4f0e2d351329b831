"""make_recgrela_fixture.py: writes tests/reference/fixtures/recgrela.h5 (local
branch and gate on) and fixtures/recgrela_ablate.h5 (both off), the float64
forward/backward of tests/reference/recgrela.py on a tiny seeded batch, for
the C model's test to compare against. Both use the same batch and the same
parameters (the ablated file just lacks wg, bg, convw and convb). Run from
anywhere:

    python3 tests/reference/make_recgrela_fixture.py

Self-checks, printed, for each file (exit status 1 if one fails): loss equals
a by-hand log-softmax mean; central finite differences of the loss on 5
random parameter entries against autograd; causality (changing input t+1
leaves hidden[:, :t+1] exactly unchanged, every t); padding independence
(changing padding items or wte[0] leaves every non-padding output exactly
unchanged; grad wte[0] = 0); at the last position the causal attention equals
the authors' non-causal formula (q~_L·(K~^T V)) / (phi(q_L)·sum phi(k) + 1e-6)
over the unpadded sequence; and the masked L x L attention equals the chunked
state-passing form a C kernel uses (recgrela.linear_attention_chunked).

File layout: attributes B L d H n_layers n_items conv_kernel local gate
(0/1) seed (int64), torch_version (string); datasets inputs, targets [B,L],
pad [B] (int32); every parameter by name (float64, shapes as in
recgrela.param_shapes); hidden [B,L,d], logits [B,L,N], loss (scalar),
grad_<name> for every parameter.
"""
import os
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
sys.path.insert(0, HERE)
from recgrela import DEN_EPS, RecGRELA, linear_attention_chunked, param_shapes, rope  # noqa: E402

SEED = 20240611
B, L, d, H, NL, N = 2, 11, 16, 2, 2, 29
K = 4
PAD = [0, 3]
OUT = {True: os.path.join(HERE, "fixtures", "recgrela.h5"),
       False: os.path.join(HERE, "fixtures", "recgrela_ablate.h5")}


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
    for name, shape in param_shapes(N, d, NL, K, local=True, gate=True).items():
        if name in ("ln1w", "ln2w", "lnfw"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in ("bg", "bin", "bqk", "convb", "bout", "fcb", "fcprojb",
                      "ln1b", "ln2b", "lnfb"):
            a = 0.1 * rng.standard_normal(shape)
        else:                                      # matrices, embeddings, conv kernels
            a = 0.3 * rng.standard_normal(shape)
        params[name] = a
    return params


def noncausal_last(model, tr, pad):
    """The authors' (non-causal) attention at the last position of each row,
    over its unpadded part only, rotated at positions 0..n-1 as if it had never
    been padded (RoPE scores depend only on t - j): [B, d]."""
    Hh, hd = model.H, model.hd
    out = []
    for b in range(B):
        p = int(pad[b])
        qf, kf, v = tr["qf"][b:b + 1, p:], tr["kf"][b:b + 1, p:], tr["u"][b, p:]
        qr, kr = rope(qf)[0], rope(kf)[0]
        heads = []
        for hh in range(Hh):
            s = slice(hh * hd, (hh + 1) * hd)
            kv = kr[:, s].T @ v[:, s]                                      # K~^T V [hd, hd]
            num = qr[-1, s] @ kv
            den = qf[0, -1, s] @ kf[0, :, s].sum(0) + DEN_EPS
            heads.append(num / den)
        out.append(torch.cat(heads))
    return torch.stack(out)


def run(full, params, inputs_np, targets_np, pad_np):
    local = gate = full
    tag = "local and gate on" if full else "local and gate off"
    print(f"==== {tag}")
    model = RecGRELA(N, d, H, NL, K, local=local, gate=gate, dtype=torch.float64)
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
        name = names[fd_rng.integers(len(names))]
        p = getattr(model, name)
        idx = [int(fd_rng.integers(s)) for s in p.shape]
        if name == "wte" and idx[0] == 0:          # padding row has zero gradient; pick a real item
            idx[0] = 1
        idx = tuple(idx)
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
        good = err <= 1e-6 * max(abs(fd), abs(ag)) + 1e-8
        ok &= good
        print(f"  {name}{list(idx)}: fd {fd:+.10e} autograd {ag:+.10e} |diff| {err:.1e} "
              f"{'ok' if good else 'FAIL'}")

    with torch.no_grad():
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

        # ---- last position: causal == the authors' non-causal formula
        diff = max(((noncausal_last(model, tr, pad) - tr["a"][:, -1]).abs()
                    / tr["a"][:, -1].abs().max()).max().item() for tr in trace)
        good = diff < 1e-13
        ok &= good
        print(f"last position: causal vs non-causal (q~·(K~^T V))/(phi(q)·sum phi(k)+1e-6), "
              f"max |diff| / max |a| = {diff:.1e} {'ok' if good else 'FAIL'}")

        # ---- masked L x L sum == chunked state passing (chunk sizes 1, 4, L)
        diff = 0.0
        for C in (1, 4, L):
            for tr in trace:
                a = linear_attention_chunked(model, tr["qr"], tr["kr"], tr["qf"], tr["kf"],
                                             tr["u"], pad, C)
                diff = max(diff, ((a - tr["a"]).abs().max() / tr["a"].abs().max()).item())
        good = diff < 1e-13
        ok &= good
        print(f"attention: masked L x L vs chunked (C = 1, 4, {L}), max |diff| / max |a| = "
              f"{diff:.1e} {'ok' if good else 'FAIL'}")

    # ---- write the fixture (track_times=False: regenerating gives identical bytes)
    out = OUT[full]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as f:
        for k, v in (("B", B), ("L", L), ("d", d), ("H", H), ("n_layers", NL), ("n_items", N),
                     ("conv_kernel", K), ("local", int(local)), ("gate", int(gate)),
                     ("seed", SEED)):
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
    os.replace(tmp, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    return ok


def main():
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(SEED)
    inputs_np, targets_np, pad_np = make_batch(rng)
    params = random_params(rng)
    ok = True
    for full in (True, False):
        ok &= run(full, params, inputs_np, targets_np, pad_np)
    print(f"torch {torch.__version__}; self-checks:", "all ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
