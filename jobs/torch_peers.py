#!/usr/bin/env python3
"""torch_peers.py: efficient PyTorch peers of elastic's ELASTIC and RecGRELA models,
for throughput benchmarks (jobs/bench_torch.py).

The oracles in tests/reference/ (elastic.py, recgrela.py) are written for
checking, not speed: ELASTIC's materialises [B,H,L,L] local scores and
re-reads all of [B,k,H,L] once per chunk; RecGRELA's forms masked L x L
products. The peers here subclass the oracles, so parameter names, shapes,
init, the forward skeleton (embedding dropout; dropout after each mixer's
output projection and after each FFN; no dropout inside attention), the
product-key memory, logits and the full-softmax loss are the oracles' own
code; only the quadratic parts are replaced, with the same math up to
floating-point reordering (--check proves it in float64):

ElasticPeer
  aggregate  per-chunk statistics of the chunk's own positions (logsumexp
             lse_c and softmax-weighted mean m_c of h, per expert and head,
             padding masked), cost O(L*k*d); then the exclusive combination
             over chunks with the prior (u, b) as term 0:
               P^(c) = exp(b - Z_c) u + sum_{c'<c} exp(lse_c' - Z_c) m_c',
               Z_c = logcumsumexp([b, lse_0, ..., lse_{c-1}]).
             combine="tri": one batched [nc x nc] lower-triangular product,
               O((L/C)^2*k*d), below the dispatch's O(L*C*d) while L*k < C^3
               (L < 32768 at C=64, k=8); the default while nc <= C.
             combine="scan": a running (log Z, P) over the chunks with
               logaddexp rescaling, O(L/C*k*d) in nc small steps; the default
               when nc > C (long sequences), so the cost stays linear in L.
  memory     the oracle's PKM (top-k on the two sub-key halves, top-k of the
             k^2 sums). The bank is a dense Parameter [n*n, d] like the
             oracle's: its gradient is a dense [n*n, d] tensor zero-filled
             and scattered into every step, and torch.optim.Adam then reads
             and writes the bank and both moments in full (3 x n*n*d floats,
             plus moving untouched rows by their momentum). At the C
             trainer's default n*n = 65536, d = 64 that is ~16 MB x 4 of
             memory traffic per step, where the C trainer keeps a list of
             touched rows and a lazy row-wise Adam. sparse_bank=True reads
             the bank with F.embedding(sparse=True) (a sparse COO gradient
             of the touched rows only) for use with torch.optim.SparseAdam
             (lazy Adam, like the C trainer's).
  dispatch   per-chunk attention on [B, nc, C, ...] (L padded to nc*C at the
             tail internally): local causal scores [B, nc, H, C, C] with the
             oracle's RoPE at absolute positions, concatenated with the chunk's
             k interest scores (no RoPE), one softmax; keys before pad[b]
             masked, outputs at t < pad[b] zero. Cost O(L*(C+k)*d).
RecGRELAPeer
  chunked causal linear attention: masked C x C products inside each chunk
  plus the inter-chunk state, an exclusive cumulative sum over chunks of
  kr^T v [hd x hd] (numerator) and sum kf (normaliser), cost O(L*C*d + L*d*hd);
  the depthwise causal conv as one grouped F.conv1d on u with padding
  positions zeroed (= the oracle's "taps before pad[b] left out").

    python3 jobs/torch_peers.py --check     # float64 agreement with the oracles
"""
import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # leave no __pycache__ in the repo
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from elastic import ELASTIC, rope  # noqa: E402
from recgrela import DEN_EPS, RecGRELA  # noqa: E402


def _pad_tail(x, Lp, dim=1):
    """Zero-pad x along dim to length Lp."""
    n = Lp - x.shape[dim]
    if n == 0:
        return x
    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


class ElasticPeer(ELASTIC):
    def __init__(self, *args, combine="auto", sparse_bank=False, **kw):
        super().__init__(*args, **kw)
        assert combine in ("auto", "tri", "scan")
        self.combine = combine
        self.sparse_bank = sparse_bank

    @torch.no_grad()
    def init_like_c(self):
        """The C trainer's init distributions (src/models/elastic.c), not its draws."""
        nl = self.nl
        std, proj_std = 0.02, 0.02 / math.sqrt(2.0 * nl)
        self.init_weights(std)
        self.wte[0].zero_()
        self.experts.normal_(0.0, 1.0)
        self.attprojw.normal_(0.0, proj_std)
        self.fcprojw.normal_(0.0, proj_std)
        if self.memory:
            self.subkeys.normal_(0.0, 1.0 / math.sqrt(self.dk / 2.0))

    def aggregate(self, l, h, pad):
        """P [B, nc, k, d], as ELASTIC.aggregate, in O(L*k*d) (+ the combine)."""
        B, L, d = h.shape
        H, hd, k, C = self.H, self.hd, self.k, self.C
        nc = (L + C - 1) // C
        Lp = nc * C
        qe = (self.experts[l] @ self.wq1[l].T).view(k, H, hd)
        kh = (h @ self.wk1[l].T).view(B, L, H, hd)
        s = torch.einsum("ehx,bjhx->behj", qe, kh) / math.sqrt(hd)     # [B, k, H, L]
        s = _pad_tail(s, Lp, dim=3).view(B, k, H, nc, C)
        j = torch.arange(Lp, device=h.device)
        real = ((j[None, :] >= pad.long()[:, None]) & (j[None, :] < L)).view(B, 1, 1, nc, C)
        # A finite fill: a chunk with no real position gets lse ~ -huge (weight exactly
        # 0 below) instead of -inf, whose softmax/logsumexp backward would be NaN.
        s = s.masked_fill(~real, torch.finfo(s.dtype).min)
        lse = torch.logsumexp(s, dim=-1)                                   # [B, k, H, nc]
        w = torch.exp(s - lse[..., None]) * real                           # exact 0 off mask
        hh = _pad_tail(h, Lp).view(B, nc, C, H, hd)
        mean = torch.einsum("behcj,bcjhx->behcx", w, hh)                  # [B, k, H, nc, hd]
        b = self.prior_b[l][None, :, :].expand(B, k, H)                    # [B, k, H]
        u = self.prior_u[l].view(k, H, hd)
        mode = self.combine if self.combine != "auto" else ("tri" if nc <= C else "scan")
        if mode == "tri":
            Z = torch.logcumsumexp(torch.cat([b[..., None], lse[..., :-1]], dim=-1), dim=-1)
            wp = torch.exp(b[..., None] - Z)                               # [B, k, H, nc]
            below = torch.ones(nc, nc, dtype=torch.bool, device=h.device).tril(-1)  # c' < c
            W = torch.exp((lse[..., None, :] - Z[..., :, None]).masked_fill(~below, float("-inf")))
            P = wp[..., None] * u[:, :, None, :] + W @ mean                # [B, k, H, nc, hd]
        else:
            logZ = b
            Pc = u.expand(B, k, H, hd)
            out = []
            for c in range(nc):
                out.append(Pc)
                if c == nc - 1:
                    break
                Zn = torch.logaddexp(logZ, lse[..., c])
                Pc = (torch.exp(logZ - Zn)[..., None] * Pc
                      + torch.exp(lse[..., c] - Zn)[..., None] * mean[..., c, :])
                logZ = Zn
            P = torch.stack(out, dim=3)
        return P.permute(0, 3, 1, 2, 4).reshape(B, nc, k, d)

    def pkm(self, l, P):
        """As ELASTIC.pkm; the bank read optionally with a sparse gradient."""
        if not self.sparse_bank:
            return super().pkm(l, P)
        Hm, dk, n, kk = self.Hm, self.dk, self.n, self.kk
        qm = (P @ self.wqm[l].T).view(*P.shape[:-1], Hm, dk)
        q1, q2 = qm[..., : dk // 2], qm[..., dk // 2:]
        K = self.subkeys[l].view(Hm, 2, n, dk // 2)
        s1 = torch.einsum("...mx,mix->...mi", q1, K[:, 0])
        s2 = torch.einsum("...mx,mix->...mi", q2, K[:, 1])
        v1, a = s1.topk(kk, dim=-1)
        v2, b = s2.topk(kk, dim=-1)
        sums = (v1[..., :, None] + v2[..., None, :]).flatten(-2)
        cand = (a[..., :, None] * n + b[..., None, :]).flatten(-2)
        sc, best = sums.topk(kk, dim=-1)
        slots = cand.gather(-1, best)
        w = torch.softmax(sc, dim=-1)
        rows = F.embedding(slots, self.bank, sparse=True)                  # [..., Hm, kk, d]
        mem = (w[..., None] * rows).sum(dim=(-3, -2))
        return mem, slots

    def dispatch(self, l, h, Pt, pad):
        """y [B, L, d], as ELASTIC.dispatch, per chunk in O(L*(C+k)*d)."""
        B, L, d = h.shape
        H, hd, k, C = self.H, self.hd, self.k, self.C
        nc = Pt.shape[1]
        Lp = nc * C
        qkv = _pad_tail(h @ self.qkvw[l].T + self.qkvb[l], Lp)            # [B, Lp, 3d]
        q, kl, vl = (x.view(B, Lp, H, hd) for x in qkv.split(d, dim=-1))
        kvw, kvb = self.qkvw[l][d:], self.qkvb[l][d:]
        ki, vi = (Pt @ kvw.T + kvb).view(B, nc, k, 2, H, hd).unbind(3)    # [B, nc, k, H, hd]
        qr, klr = rope(q), rope(kl)                                        # absolute positions
        q, qr = q.view(B, nc, C, H, hd), qr.view(B, nc, C, H, hd)
        klr, vl = klr.view(B, nc, C, H, hd), vl.view(B, nc, C, H, hd)
        scale = 1.0 / math.sqrt(hd)
        s_int = torch.einsum("bcthx,bcehx->bchte", q, ki) * scale          # [B, nc, H, C, k]
        s_loc = torch.einsum("bcthx,bcjhx->bchtj", qr, klr) * scale        # [B, nc, H, C, C]
        i = torch.arange(C, device=h.device)
        causal = i[None, :] <= i[:, None]                                  # [t, j]
        pos = torch.arange(Lp, device=h.device).view(nc, C)
        key_real = pos[None] >= pad.long()[:, None, None]                  # [B, nc, C(j)]
        allowed = causal[None, None] & key_real[:, :, None, :]             # [B, nc, t, j]
        s_loc = s_loc.masked_fill(~allowed[:, :, None], float("-inf"))
        p = torch.softmax(torch.cat([s_int, s_loc], dim=-1), dim=-1)
        y = (torch.einsum("bchte,bcehx->bcthx", p[..., :k], vi)
             + torch.einsum("bchtj,bcjhx->bcthx", p[..., k:], vl))         # [B, nc, C, H, hd]
        y = y.reshape(B, Lp, d)[:, :L]
        real = (torch.arange(L, device=h.device)[None, :] >= pad.long()[:, None])[..., None]
        return torch.where(real, y, torch.zeros_like(y))


class RecGRELAPeer(RecGRELA):
    def __init__(self, *args, chunk=64, **kw):
        super().__init__(*args, **kw)
        self.C = chunk

    @torch.no_grad()
    def init_like_c(self):
        """The C trainer's init distributions (src/models/recgrela.c), not its draws."""
        proj_std = 0.02 / math.sqrt(2.0 * self.nl)
        self.init_weights(0.02)
        self.wte[0].zero_()
        self.wout.normal_(0.0, proj_std)
        self.fcprojw.normal_(0.0, proj_std)
        if self.local:
            self.convw.normal_(0.0, 1.0 / math.sqrt(self.K))

    def linear_attention(self, qr, kr, qf, kf, v, pad):
        """a [B, L, d], as RecGRELA.linear_attention, chunk-wise."""
        B, L, d = v.shape
        H, hd, C = self.H, self.hd, self.C
        nc = (L + C - 1) // C
        Lp = nc * C
        t = torch.arange(Lp, device=v.device)
        keep = ((t[None, :] >= pad.long()[:, None]) & (t[None, :] < L)).to(v.dtype)  # [B, Lp]
        keep = keep.view(B, 1, nc, C, 1)

        def heads(x):                                                      # -> [B, H, nc, C, hd]
            return _pad_tail(x, Lp).view(B, nc, C, H, hd).permute(0, 3, 1, 2, 4)

        Qr, Qf, V = heads(qr), heads(qf), heads(v)
        Kr, Kf = heads(kr) * keep, heads(kf) * keep                        # padding keys out
        causal = torch.ones(C, C, dtype=torch.bool, device=v.device).tril()
        S = Kr.transpose(-1, -2) @ V                                       # [B, H, nc, hd, hd]
        z = Kf.sum(dim=-2)                                                 # [B, H, nc, hd]
        S = torch.cat([torch.zeros_like(S[:, :, :1]), S[:, :, :-1]], dim=2).cumsum(dim=2)
        z = torch.cat([torch.zeros_like(z[:, :, :1]), z[:, :, :-1]], dim=2).cumsum(dim=2)
        num = Qr @ S + (Qr @ Kr.transpose(-1, -2)).masked_fill(~causal, 0.0) @ V
        den = ((Qf * z[..., None, :]).sum(-1)
               + (Qf @ Kf.transpose(-1, -2)).masked_fill(~causal, 0.0).sum(-1) + DEN_EPS)
        a = (num / den[..., None]).permute(0, 2, 3, 1, 4).reshape(B, Lp, d)[:, :L]
        real = (torch.arange(L, device=v.device)[None, :] >= pad.long()[:, None])[..., None]
        return torch.where(real, a, torch.zeros_like(a))

    def conv(self, l, u, pad):
        """As RecGRELA.conv: one grouped causal conv1d over u with padding zeroed."""
        B, L, d = u.shape
        t = torch.arange(L, device=u.device)
        u = torch.where((t[None, :] >= pad.long()[:, None])[..., None], u, torch.zeros_like(u))
        w = self.convw[l].flip(-1)[:, None, :]                             # [d, 1, K]: tap t-i
        out = F.conv1d(F.pad(u.transpose(1, 2), (self.K - 1, 0)), w, self.convb[l], groups=d)
        return out.transpose(1, 2)


# ----------------------------------------------------------------------------- check

def _rel(a, b):
    """max |a - b| / max |b| (absolute where b is all zero)."""
    a, b = a.detach(), b.detach()
    if a.is_sparse:
        a = a.to_dense()
    if b.is_sparse:
        b = b.to_dense()
    den = b.abs().max().item()
    err = (a - b).abs().max().item()
    return err / den if den > 0 else err


def _batch(B, L, n_items, pads, gen):
    inputs = torch.randint(1, n_items + 1, (B, L), generator=gen)
    pad = torch.tensor(pads, dtype=torch.int32)
    t = torch.arange(L)
    inputs[t[None, :] < pad[:, None].long()] = 0
    targets = torch.roll(inputs, -1, dims=1)
    targets[:, -1] = torch.randint(1, n_items + 1, (B,), generator=gen)
    targets[inputs == 0] = 0
    return inputs, pad, targets


def _compare(name, oracle, peer, inputs, pad, targets, tol):
    peer.load_state_dict(oracle.state_dict())
    worst, what = 0.0, ""
    outs = []
    for m in (oracle, peer):
        m.zero_grad(set_to_none=True)
        hid = m.forward(inputs, pad)
        loss = m.loss(inputs, pad, targets)
        loss.backward()
        outs.append((hid, loss, {n: p.grad for n, p in m.named_parameters()}))
    (h0, l0, g0), (h1, l1, g1) = outs
    pairs = [("hidden", h1, h0), ("loss", l1, l0)] + [(f"grad {n}", g1[n], g0[n]) for n in g0]
    for label, a, b in pairs:
        if a is None or b is None:
            e = float("inf") if (a is None) != (b is None) else 0.0
        else:
            e = _rel(a, b)
        if math.isnan(e) or e > worst:
            worst, what = e, label
            if math.isnan(e):
                break
    ok = worst <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {len(pairs)} tensors, worst rel err {worst:.2e} ({what})")
    return ok


def check():
    torch.set_num_threads(2)
    dt = torch.float64
    tol = 1e-5
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    N, d, H, nl, B = 50, 16, 2, 2, 3
    all_ok = True
    for L in (19, 32):
        for C in (4, 8):
            # row 0 unpadded, row 1 padding crossing a chunk boundary, row 2 random;
            # row 2 at L=32/C=4 pads whole chunks.
            pads = [0, C + 2 if C + 2 < L else 1,
                    int(torch.randint(0, L - 1, (1,), generator=gen)) if L != 32 else 2 * C]
            inputs, pad, targets = _batch(B, L, N, pads, gen)
            for memory in (True, False):
                for combine in ("tri", "scan"):
                    for sparse in ((False, True) if memory and combine == "tri" else (False,)):
                        kw = dict(n_items=N, d=d, n_heads=H, n_layers=nl, k=3, C=C, mem_heads=2,
                                  mem_dk=8, mem_n=8, mem_topk=4, memory=memory, dropout=0.0, dtype=dt)
                        oracle = ELASTIC(**kw)
                        with torch.no_grad():  # non-trivial priors and unit-scale queries
                            for p in oracle.parameters():
                                p.add_(0.3 * torch.randn_like(p))
                            oracle.experts.normal_(0.0, 1.0)
                        peer = ElasticPeer(**kw, combine=combine, sparse_bank=sparse)
                        name = (f"elastic L={L} C={C} pad={pads} memory={'on' if memory else 'off'} "
                                f"combine={combine}{' sparse-bank' if sparse else ''}")
                        all_ok &= _compare(name, oracle, peer, inputs, pad, targets, tol)
            for local in (True, False):
                for gate in (True, False):
                    kw = dict(n_items=N, d=d, n_heads=H, n_layers=nl, conv_kernel=4, local=local,
                              gate=gate, dropout=0.0, dtype=dt)
                    oracle = RecGRELA(**kw)
                    with torch.no_grad():
                        for p in oracle.parameters():
                            p.add_(0.3 * torch.randn_like(p))
                    peer = RecGRELAPeer(**kw, chunk=C)
                    name = (f"recgrela L={L} C={C} pad={pads} local={'on' if local else 'off'} "
                            f"gate={'on' if gate else 'off'}")
                    all_ok &= _compare(name, oracle, peer, inputs, pad, targets, tol)
    print("all agree" if all_ok else "MISMATCH")
    return 0 if all_ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the oracles in float64")
    a = ap.parse_args()
    if a.check:
        return check()
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
