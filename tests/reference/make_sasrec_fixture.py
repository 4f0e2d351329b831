"""make_sasrec_fixture.py: writes tests/reference/fixtures/sasrec.h5, the
float64 forward/backward of tests/reference/sasrec.py on a tiny seeded batch,
for the C model's test to compare against. Run from anywhere:

    python3 tests/reference/make_sasrec_fixture.py

It also runs self-checks and prints them (exit status 1 if one fails): loss
equals a by-hand log-softmax mean; finite differences of the loss on 5 random
parameter entries against autograd (relative error 1e-6, absolute 1e-8 for
entries whose gradient is exactly 0, such as the key part of qkvb); causality
(changing inputs at position t+1 leaves hidden[:, :t+1] unchanged); and
padding independence (changing padding items or the padding row wte[0] leaves
every non-padding output unchanged; grad wte[0] = 0).

File layout: attributes B L d H n_layers n_items seed (int64), torch_version
(string); datasets inputs, targets [B,L] and pad [B] (int32); every parameter
by name (float64, shapes as in sasrec.param_shapes); hidden [B,L,d], logits
[B,L,N], loss (scalar), and grad_<name> for every parameter (float64).

The batch and parameter recipes, the self-checks and the HDF5 writer are
shared with the other fixture writers in fixture_common.py; this file holds
the sizes and SASRec's parameter scales.
"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
sys.path.insert(0, HERE)
from fixture_common import SEED, Fixture, finish, random_names, setup  # noqa: E402
from sasrec import PARAM_NAMES, SASRec, param_shapes  # noqa: E402

B, L, d, H, NL, N = 3, 7, 16, 2, 2, 37
PAD = [0, 2, 5]
BIASES = ("ln1b", "qkvb", "attprojb", "ln2b", "fcb", "fcprojb", "lnfb")  # the rest: 0.3·randn
OUT = os.path.join(HERE, "fixtures", "sasrec.h5")


def main():
    batch, params = setup(B, L, N, PAD, param_shapes(N, L, d, NL), BIASES)
    model = SASRec(N, L, d, H, NL, dropout=0.0, dtype=torch.float64)
    fx = Fixture(model, PARAM_NAMES, params, batch)
    ok = fx.check_loss()
    fd_rng = np.random.default_rng(SEED + 1)
    ok &= fx.check_finite_differences(random_names(fd_rng, PARAM_NAMES), fd_rng)
    crng = np.random.default_rng(SEED + 2)
    ok &= fx.check_causality(crng)
    ok &= fx.check_padding(crng)
    fx.write(OUT, (("B", B), ("L", L), ("d", d), ("H", H), ("n_layers", NL), ("n_items", N)))
    return finish(ok)


if __name__ == "__main__":
    sys.exit(main())
