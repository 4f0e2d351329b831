"""fixture_common.py: what the three oracle fixture writers
(make_sasrec_fixture.py, make_elastic_fixture.py, make_recgrela_fixture.py)
share, so that each of them keeps only what is specific to its model:

- make_batch: the batch recipe (a random window of L+1 items in 1..N per row,
  its first pad[b] entries set to 0; inputs = w[:L], targets = w[1:], and
  targets 0 wherever the input is padding);
- random_params: the random parameter recipe (LayerNorm weights 1 + 0.1·randn,
  biases 0.1·randn, everything else 0.3·randn unless a script gives a scale),
  drawn in the order of the model's param_shapes;
- setup / run_variants / finish: float64 default dtype, the batch and the
  parameters from the seed, a run per file variant (elastic memory on/off,
  RecGRELA full/ablated) and the final verdict and exit status;
- Fixture: one float64 forward/backward of a model on that batch, the
  self-checks every script runs (by-hand log-softmax loss, central finite
  differences of the loss on random parameter entries, causality, padding
  independence, zero gradient of the padding row wte[0]) and the HDF5 writer
  (attributes, batch, parameters, hidden, logits, loss, grad_<name>, written
  with track_times=False so regenerating with the same versions and the same
  number of CPU threads gives identical bytes).

The random numbers all come from numpy: the batch and then the parameters from
default_rng(SEED), the finite-difference entries from default_rng(SEED + 1),
the causality and padding perturbations from default_rng(SEED + 2).
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.dont_write_bytecode = True  # leave no __pycache__ in the repo

SEED = 20240611
LN_WEIGHTS = ("ln1w", "ln2w", "lnfw")


def make_batch(rng, B, L, N, pad):
    """inputs, targets [B,L] and pad [B] (int32) for left paddings pad."""
    inputs = np.zeros((B, L), np.int32)
    targets = np.zeros((B, L), np.int32)
    for b in range(B):
        w = rng.integers(1, N + 1, size=L + 1)     # random items in 1..N
        w[:pad[b]] = 0                             # left-padded window of L+1
        inputs[b] = w[:L]
        targets[b] = w[1:]
        targets[b][inputs[b] == 0] = 0             # no target where input is padding
    pad = np.array(pad, np.int32)
    assert all((inputs[b, :pad[b]] == 0).all() and (inputs[b, pad[b]:] != 0).all() for b in range(B))
    return inputs, targets, pad


def random_params(rng, shapes, biases, scales=None):
    """One float64 array per entry of shapes, drawn in its order (not the
    training init, so that every gradient is O(0.1) and nothing is degenerate):
    LayerNorm weights 1 + 0.1·randn, the names in biases 0.1·randn, the names
    in scales scales[name]·randn, everything else 0.3·randn."""
    scales = scales or {}
    params = {}
    for name, shape in shapes.items():
        if name in LN_WEIGHTS:
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in scales:
            a = scales[name] * rng.standard_normal(shape)
        elif name in biases:
            a = 0.1 * rng.standard_normal(shape)
        else:                                      # matrices, embeddings, ...
            a = 0.3 * rng.standard_normal(shape)
        params[name] = a
    return params


def setup(B, L, N, pad, shapes, biases, scales=None):
    """float64 as torch's default dtype; the batch, then the parameters, from
    default_rng(SEED). Returns (batch, params), batch = (inputs, targets, pad)."""
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(SEED)
    batch = make_batch(rng, B, L, N, pad)
    params = random_params(rng, shapes, biases, scales)
    return batch, params


def run_variants(run, variants, B, L, N, pad, shapes, biases, scales=None):
    """setup, then ok = run(variant, params, batch) for each variant (each
    writes its own file from the same batch and parameters); the exit status."""
    batch, params = setup(B, L, N, pad, shapes, biases, scales)
    ok = True
    for variant in variants:
        ok &= run(variant, params, batch)
    return finish(ok)


def random_names(rng, names, n=5):
    """n parameter names drawn from rng, lazily: iterated by
    Fixture.check_finite_differences, each name is drawn just before its index."""
    for _ in range(n):
        yield names[rng.integers(len(names))]


def ok_word(good):
    return "ok" if good else "FAIL"


def finish(ok):
    print(f"torch {torch.__version__}; self-checks:", "all ok" if ok else "FAILED")
    return 0 if ok else 1


class Fixture:
    """The float64 forward/backward of model (parameters names, set from params)
    on batch: hidden, logits, loss and grads (by autograd); with trace=True the
    model's forward is given a list to fill (self.trace)."""

    def __init__(self, model, names, params, batch, trace=False):
        self.model, self.names = model, names
        with torch.no_grad():
            for name in names:
                getattr(model, name).copy_(torch.from_numpy(params[name]))
        model.eval()
        self.batch = batch
        self.inputs, self.targets, self.pad = (torch.from_numpy(a) for a in batch)
        self.trace = [] if trace else None
        kw = {"trace": self.trace} if trace else {}
        self.hidden = model(self.inputs, self.pad, **kw)
        self.logits = model.logits(self.hidden)
        self.loss = self.loss_now()
        model.zero_grad()
        self.loss.backward()
        self.grads = {name: getattr(model, name).grad.detach().clone() for name in names}

    def loss_now(self):
        return self.model.loss(self.inputs, self.pad, self.targets)

    def check_loss(self):
        """The loss equals a by-hand mean over target != 0 of CE(logits, target-1)."""
        m = self.targets != 0
        lp = torch.log_softmax(self.logits, dim=-1)[m]
        manual = -lp.gather(1, (self.targets[m].long() - 1)[:, None]).mean()
        print(f"loss = {self.loss.item():.17g}  (by hand {manual.item():.17g}, {int(m.sum())} targets)")
        return abs(self.loss.item() - manual.item()) < 1e-12

    def check_finite_differences(self, picks, rng, fix_index=None, stable=None):
        """Central finite differences (eps 1e-6) of the loss against autograd on
        one random entry (indices drawn from rng) of each parameter in picks.
        A wte entry on the padding row 0 is moved to row 1 (its gradient is 0);
        fix_index(name, idx), if given, may then change idx (a list) in place.
        stable(), if given, is called at each perturbed point and returns False
        if the perturbation changed a discrete choice of the model (elastic's
        memory slots), which fails the entry."""
        model, eps, ok = self.model, 1e-6, True
        print("finite differences (central, eps=1e-6) vs autograd:")
        for name in picks:
            p = getattr(model, name)
            idx = [int(rng.integers(s)) for s in p.shape]
            if name == "wte" and idx[0] == 0:      # padding row has zero gradient; pick a real item
                idx[0] = 1
            if fix_index is not None:
                fix_index(name, idx)
            idx = tuple(idx)
            with torch.no_grad():
                orig = p[idx].item()
                p[idx] = orig + eps
                lp_ = self.loss_now().item()
                same = stable is None or stable()
                p[idx] = orig - eps
                lm_ = self.loss_now().item()
                same &= stable is None or stable()
                p[idx] = orig
            fd = (lp_ - lm_) / (2 * eps)
            ag = self.grads[name][idx].item()
            err = abs(fd - ag)
            # Relative tolerance, plus an absolute floor for entries whose true
            # gradient is 0 (e.g. SASRec's key bias: softmax is invariant to it).
            good = same and err <= 1e-6 * max(abs(fd), abs(ag)) + 1e-8
            ok &= good
            print(f"  {name}{list(idx)}: fd {fd:+.10e} autograd {ag:+.10e} |diff| {err:.1e}"
                  f"{'' if same else ' SLOTS CHANGED'} {ok_word(good)}")
        return ok

    @torch.no_grad()
    def check_causality(self, rng):
        """Changing the input at position t+1 leaves hidden[:, :t+1] exactly
        unchanged (and changes something after it), for every t."""
        model, inputs, pad, hidden = self.model, self.inputs, self.pad, self.hidden
        (B, L), N = inputs.shape, model.n_items
        worst = 0.0
        for t in range(L - 1):
            x2 = inputs.clone()
            for b in range(B):
                if t + 1 >= pad[b]:                # keep it a valid left-padded row
                    x2[b, t + 1] = int(rng.integers(1, N + 1))
            h2 = model(x2, pad)
            worst = max(worst, (h2[:, :t + 1] - hidden[:, :t + 1]).abs().max().item())
            changed = (h2[:, t + 1:] - hidden[:, t + 1:]).abs().max().item()
            assert changed > 0 or t + 1 < int(pad.min())
        good = worst == 0.0
        print(f"causality: max |hidden[:, :t+1] change| after perturbing position t+1 "
              f"(every t) = {worst:.1e} {ok_word(good)}")
        return good

    @torch.no_grad()
    def check_padding(self, rng):
        """Changing the padding items, or the padding row wte[0], leaves every
        non-padding output exactly unchanged; the gradient of wte[0] is 0."""
        model, inputs, pad, hidden = self.model, self.inputs, self.pad, self.hidden
        (B, L), N = inputs.shape, model.n_items
        x3 = inputs.clone()
        for b in range(B):
            x3[b, :pad[b]] = torch.from_numpy(rng.integers(1, N + 1, size=int(pad[b])).astype(np.int32))
        keep = model.wte[0].clone()
        model.wte[0] += torch.from_numpy(rng.standard_normal(model.wte.shape[1]))
        h3 = model(x3, pad)
        h4 = model(inputs, pad)
        model.wte[0].copy_(keep)
        real = (torch.arange(L)[None, :] >= pad[:, None].long())
        diff = max((h3 - hidden)[real].abs().max().item(), (h4 - hidden)[real].abs().max().item())
        good = diff == 0.0
        print(f"padding independence: max |hidden change| at non-padding positions = {diff:.1e} "
              f"{ok_word(good)}")
        good_grad = self.grads["wte"][0].abs().max().item() == 0.0
        print(f"grad of padding row wte[0] is zero: {ok_word(good_grad)}")
        return good and good_grad

    def write(self, out, attrs, extra=()):
        """Writes the fixture out: int64 attributes attrs (pairs, in order), then
        seed and torch_version; datasets inputs, targets, pad, every parameter,
        hidden, logits, loss, grad_<name> for every parameter, then the
        (name, array) pairs of extra. track_times=False: regenerating (same
        versions, same thread count) gives identical bytes."""
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".tmp"
        with h5py.File(tmp, "w") as f:
            for k, v in tuple(attrs) + (("seed", SEED),):
                f.attrs[k] = np.int64(v)
            f.attrs["torch_version"] = np.bytes_(torch.__version__)
            data = list(zip(("inputs", "targets", "pad"), self.batch))
            data += [(name, getattr(self.model, name).detach().numpy()) for name in self.names]
            data += [("hidden", self.hidden.detach().numpy()),
                     ("logits", self.logits.detach().numpy()),
                     ("loss", np.float64(self.loss.item()))]
            data += [("grad_" + name, self.grads[name].numpy()) for name in self.names]
            for name, a in data + list(extra):
                f.create_dataset(name, data=a, track_times=False)
        os.replace(tmp, out)
        print(f"wrote {out} ({os.path.getsize(out)} bytes)")
