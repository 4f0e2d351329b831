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

The batch and parameter recipes, the shared self-checks (loss, finite
differences, causality, padding) and the HDF5 writer are in fixture_common.py;
this file holds the sizes, RecGRELA's parameter scales and its own checks
(non-causal last position, chunked attention).
"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
sys.path.insert(0, HERE)
from fixture_common import SEED, Fixture, ok_word, random_names, run_variants  # noqa: E402
from recgrela import DEN_EPS, RecGRELA, linear_attention_chunked, param_shapes, rope  # noqa: E402

B, L, d, H, NL, N = 2, 11, 16, 2, 2, 29
K = 4
PAD = [0, 3]
BIASES = ("bg", "bin", "bqk", "convb", "bout", "fcb", "fcprojb", "ln1b", "ln2b", "lnfb")
# the rest (matrices, embeddings, conv kernels): 0.3·randn
OUT = {True: os.path.join(HERE, "fixtures", "recgrela.h5"),
       False: os.path.join(HERE, "fixtures", "recgrela_ablate.h5")}


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


def run(full, params, batch):
    local = gate = full
    print(f"==== {'local and gate on' if full else 'local and gate off'}")
    model = RecGRELA(N, d, H, NL, K, local=local, gate=gate, dtype=torch.float64)
    fx = Fixture(model, model.names, params, batch, trace=True)
    trace, pad = fx.trace, fx.pad
    ok = fx.check_loss()
    fd_rng = np.random.default_rng(SEED + 1)
    ok &= fx.check_finite_differences(random_names(fd_rng, fx.names), fd_rng)
    crng = np.random.default_rng(SEED + 2)
    ok &= fx.check_causality(crng)
    ok &= fx.check_padding(crng)

    with torch.no_grad():
        # ---- last position: causal == the authors' non-causal formula
        diff = max(((noncausal_last(model, tr, pad) - tr["a"][:, -1]).abs()
                    / tr["a"][:, -1].abs().max()).max().item() for tr in trace)
        good = diff < 1e-13
        ok &= good
        print(f"last position: causal vs non-causal (q~·(K~^T V))/(phi(q)·sum phi(k)+1e-6), "
              f"max |diff| / max |a| = {diff:.1e} {ok_word(good)}")

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
              f"{diff:.1e} {ok_word(good)}")

    fx.write(OUT[full], (("B", B), ("L", L), ("d", d), ("H", H), ("n_layers", NL), ("n_items", N),
                         ("conv_kernel", K), ("local", int(local)), ("gate", int(gate))))
    return ok


def main():
    shapes = param_shapes(N, d, NL, K, local=True, gate=True)
    return run_variants(run, (True, False), B, L, N, PAD, shapes, BIASES)


if __name__ == "__main__":
    sys.exit(main())
