"""elastic.py: the PyTorch reference of elastic's ELASTIC model (the oracle the
C model is tested against). DESIGN.md section 3 gives the idea; this is the
exact spec, written plainly so it can be checked line by line:

  x = wte[inputs]                               (no position embedding), dropout
  per layer l (pre-LN), chunk c holds positions c*C .. min(L,(c+1)*C)-1:
    h   = LN(x; ln1w[l], ln1b[l])
    qe  = experts[l] @ wq1[l].T                 [k,d]      kh = h @ wk1[l].T
    aggregate, per row b, chunk c, expert e, head hh (slice hh*hd:(hh+1)*hd):
      s_j = qe[e]·kh[b,j] / sqrt(hd)   for pad[b] <= j < c*C (earlier chunks only)
      P[b,c,e] = softmax([prior_b[l,e,hh] ; s_j]) @ [prior_u[l,e] ; h[b,j]]
    memory on:  Pt = P + PKM_l(P)   (product-key memory, see memory())
    memory off: Pt = P
    qkv = h @ qkvw[l].T + qkvb[l]               q | kl | vl
    ki, vi = Pt through the same K, V projections  [B,nc,k,d]
    dispatch, per row b, position t in chunk c = t // C, head hh, one softmax over
      interest e: q[b,t]·ki[b,c,e] / sqrt(hd)                    (no RoPE)
      local j, max(c*C, pad[b]) <= j <= t: rope(q[b,t],t)·rope(kl[b,j],j) / sqrt(hd)
      y[b,t] = sum_e p_e vi[b,c,e] + sum_j p_j vl[b,j]; y = 0 at t < pad[b]
    x   = x + dropout(y @ attprojw[l].T + attprojb[l])
    x   = x + dropout(MLP(LN(x; ln2w[l], ln2b[l])))  (as in SASRec)
  hidden = LN(x; lnfw, lnfb); logits = hidden @ wte[1:].T; loss as in SASRec.

Inputs: inputs [B,L] item ids, left-padded with 0; pad [B] = number of leading
zeros of each row; targets [B,L] (0 = no target).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sasrec import LN_EPS, SASRec

# Parameter names in checkpoint order (the last three only with memory on).
PARAM_NAMES = [
    "wte", "ln1w", "ln1b", "experts", "wq1", "wk1", "prior_u", "prior_b",
    "wqm", "subkeys", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb", "bank",
]
MEMORY_NAMES = ("wqm", "subkeys", "bank")
ROPE_BASE = 10000.0


def param_names(memory):
    return [n for n in PARAM_NAMES if memory or n not in MEMORY_NAMES]


def param_shapes(n_items, d, n_heads, n_layers, k, mem_heads, mem_dk, mem_n, memory=True):
    V, nl, Hm, dk, n = n_items + 1, n_layers, mem_heads, mem_dk, mem_n
    shapes = {
        "wte": (V, d), "ln1w": (nl, d), "ln1b": (nl, d),
        "experts": (nl, k, d), "wq1": (nl, d, d), "wk1": (nl, d, d),
        "prior_u": (nl, k, d), "prior_b": (nl, k, n_heads),
        "wqm": (nl, Hm * dk, d), "subkeys": (nl, Hm * 2 * n, dk // 2),
        "qkvw": (nl, 3 * d, d), "qkvb": (nl, 3 * d),
        "attprojw": (nl, d, d), "attprojb": (nl, d),
        "ln2w": (nl, d), "ln2b": (nl, d),
        "fcw": (nl, 4 * d, d), "fcb": (nl, 4 * d),
        "fcprojw": (nl, d, 4 * d), "fcprojb": (nl, d),
        "lnfw": (d,), "lnfb": (d,), "bank": (n * n, d),
    }
    return {name: shapes[name] for name in param_names(memory)}


def rope(x):
    """x [B, L, H, hd], position = index along dim 1. Pair i = dims (2i, 2i+1)
    of each head, rotated by angle pos * ROPE_BASE^(-2i/hd)."""
    L, hd = x.shape[1], x.shape[-1]
    i = torch.arange(hd // 2, dtype=x.dtype, device=x.device)
    theta = ROPE_BASE ** (-2.0 * i / hd)                       # [hd/2]
    ang = torch.arange(L, dtype=x.dtype, device=x.device)[:, None] * theta  # [L, hd/2]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


class ELASTIC(nn.Module):
    def __init__(self, n_items, d, n_heads, n_layers, k, C, mem_heads, mem_dk, mem_n,
                 mem_topk, memory=True, dropout=0.0, dtype=torch.float32):
        super().__init__()
        assert d % n_heads == 0 and (d // n_heads) % 2 == 0 and mem_dk % 2 == 0
        self.n_items, self.d, self.H, self.nl = n_items, d, n_heads, n_layers
        self.hd = d // n_heads
        self.k, self.C = k, C
        self.Hm, self.dk, self.n, self.kk = mem_heads, mem_dk, mem_n, mem_topk
        self.memory = memory
        self.p = dropout
        self.names = param_names(memory)
        shapes = param_shapes(n_items, d, n_heads, n_layers, k, mem_heads, mem_dk, mem_n, memory)
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dtype)))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std=0.02):
        # A plain GPT-style init (the fixture overwrites every parameter).
        for name in self.names:
            p = getattr(self, name)
            if name in ("ln1w", "ln2w", "lnfw"):
                p.fill_(1.0)
            elif name in ("qkvb", "attprojb", "fcb", "fcprojb", "ln1b", "ln2b", "lnfb",
                          "prior_u", "prior_b"):
                p.zero_()
            else:
                p.normal_(0.0, std)

    # SASRec's FFN, output head and loss, unchanged.
    mlp = SASRec.mlp
    logits = SASRec.logits
    loss = SASRec.loss

    def aggregate(self, l, h, pad):
        """P [B, nc, k, d]: per chunk c, softmax over [prior ; earlier positions]."""
        B, L, d = h.shape
        H, hd, k, C = self.H, self.hd, self.k, self.C
        nc = (L + C - 1) // C
        qe = (self.experts[l] @ self.wq1[l].T).view(k, H, hd)
        kh = (h @ self.wk1[l].T).view(B, L, H, hd)
        hh = h.view(B, L, H, hd)
        s = torch.einsum("ehx,bjhx->behj", qe, kh) / math.sqrt(hd)   # [B, k, H, L]
        u = self.prior_u[l].view(k, H, hd)
        prior = self.prior_b[l][None, :, :, None].expand(B, k, H, 1)
        j = torch.arange(L, device=h.device)
        P = []
        for c in range(nc):
            allowed = (j[None, :] >= pad.long()[:, None]) & (j[None, :] < c * C)   # [B, L]
            sc = s.masked_fill(~allowed[:, None, None, :], float("-inf"))
            w = torch.softmax(torch.cat([prior, sc], dim=-1), dim=-1)     # [B, k, H, 1+L]
            Pc = w[..., :1] * u + torch.einsum("behj,bjhx->behx", w[..., 1:], hh)
            P.append(Pc.reshape(B, k, d))
        return torch.stack(P, dim=1)

    def pkm(self, l, P):
        """Product-key memory. P [..., d] -> (mem [..., d], slots [..., Hm, kk])."""
        Hm, dk, n, kk = self.Hm, self.dk, self.n, self.kk
        qm = (P @ self.wqm[l].T).view(*P.shape[:-1], Hm, dk)
        q1, q2 = qm[..., : dk // 2], qm[..., dk // 2:]             # [..., Hm, dk/2]
        K = self.subkeys[l].view(Hm, 2, n, dk // 2)                 # row (m*2+half)*n + i
        s1 = torch.einsum("...mx,mix->...mi", q1, K[:, 0])          # [..., Hm, n]
        s2 = torch.einsum("...mx,mix->...mi", q2, K[:, 1])
        v1, a = s1.topk(kk, dim=-1)
        v2, b = s2.topk(kk, dim=-1)
        sums = (v1[..., :, None] + v2[..., None, :]).flatten(-2)   # [..., Hm, kk*kk]
        cand = (a[..., :, None] * n + b[..., None, :]).flatten(-2)
        sc, best = sums.topk(kk, dim=-1)
        slots = cand.gather(-1, best)                               # [..., Hm, kk]
        w = torch.softmax(sc, dim=-1)
        mem = (w[..., None] * self.bank[slots]).sum(dim=(-3, -2))  # over heads and slots
        return mem, slots

    def dispatch(self, l, h, Pt, pad):
        """y [B, L, d] before the output projection."""
        B, L, d = h.shape
        H, hd, k, C = self.H, self.hd, self.k, self.C
        qkv = h @ self.qkvw[l].T + self.qkvb[l]
        q, kl, vl = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        ki = Pt @ self.qkvw[l][d:2 * d].T + self.qkvb[l][d:2 * d]   # [B, nc, k, d]
        vi = Pt @ self.qkvw[l][2 * d:].T + self.qkvb[l][2 * d:]
        t = torch.arange(L, device=h.device)
        chunk = t // C
        ki_t = ki[:, chunk].view(B, L, k, H, hd)                     # chunk of position t
        vi_t = vi[:, chunk].view(B, L, k, H, hd)
        q4 = q.view(B, L, H, hd)
        qr, klr = rope(q4), rope(kl.view(B, L, H, hd))
        s_int = torch.einsum("bthx,btehx->bhte", q4, ki_t) / math.sqrt(hd)      # [B,H,L,k]
        s_loc = torch.einsum("bthx,bjhx->bhtj", qr, klr) / math.sqrt(hd)        # [B,H,L,L]
        allowed = ((t[None, :] <= t[:, None]) & (t[None, :] >= (chunk * C)[:, None]))[None]
        allowed = allowed & (t[None, None, :] >= pad.long()[:, None, None])    # [B, t, j]
        s_loc = s_loc.masked_fill(~allowed[:, None], float("-inf"))
        p = torch.softmax(torch.cat([s_int, s_loc], dim=-1), dim=-1)
        y = (torch.einsum("bhte,btehx->bthx", p[..., :k], vi_t)
             + torch.einsum("bhtj,bjhx->bthx", p[..., k:], vl.view(B, L, H, hd)))
        real = (t[None, :] >= pad.long()[:, None])[:, :, None, None]            # [B, L, 1, 1]
        return torch.where(real, y, torch.zeros_like(y)).reshape(B, L, d)

    def forward(self, inputs, pad, trace=None):
        """Returns hidden [B, L, d] (after the final LayerNorm). If trace is a
        list, appends per layer a dict with h, P and (memory on) slots."""
        d = self.d
        x = F.dropout(self.wte[inputs.long()], self.p, self.training)
        for l in range(self.nl):
            h = F.layer_norm(x, (d,), self.ln1w[l], self.ln1b[l], LN_EPS)
            P = self.aggregate(l, h, pad)
            slots = None
            if self.memory:
                mem, slots = self.pkm(l, P)
                Pt = P + mem
            else:
                Pt = P
            if trace is not None:
                trace.append({"h": h, "P": P, "slots": slots})
            y = self.dispatch(l, h, Pt, pad)
            x = x + F.dropout(y @ self.attprojw[l].T + self.attprojb[l], self.p, self.training)
            h2 = F.layer_norm(x, (d,), self.ln2w[l], self.ln2b[l], LN_EPS)
            x = x + F.dropout(self.mlp(l, h2), self.p, self.training)
        return F.layer_norm(x, (d,), self.lnfw, self.lnfb, LN_EPS)


def aggregate_running(model, l, h, pad):
    """The aggregation as a streaming kernel computes it: per row, one pass over
    the chunks with running max m, denominator z and numerator num per
    (expert, head); P of chunk c is read before chunk c is absorbed. Used only
    to check ELASTIC.aggregate."""
    B, L, d = h.shape
    H, hd, k, C = model.H, model.hd, model.k, model.C
    nc = (L + C - 1) // C
    qe = (model.experts[l] @ model.wq1[l].T).view(k, H, hd)
    kh = (h @ model.wk1[l].T).view(B, L, H, hd)
    hh = h.view(B, L, H, hd)
    P = torch.zeros(B, nc, k, H, hd, dtype=h.dtype)
    for b in range(B):
        m = model.prior_b[l].clone()                         # [k, H]
        z = torch.ones(k, H, dtype=h.dtype)                  # exp(prior_b - m)
        num = model.prior_u[l].view(k, H, hd).clone()        # exp(prior_b - m) * u
        for c in range(nc):
            P[b, c] = num / z[..., None]
            lo, hi = max(c * C, int(pad[b])), min(L, (c + 1) * C)
            if lo >= hi:
                continue
            s = torch.einsum("ehx,jhx->ehj", qe, kh[b, lo:hi]) / math.sqrt(hd)  # [k, H, n_j]
            m_new = torch.maximum(m, s.max(dim=-1).values)
            scale = torch.exp(m - m_new)
            e = torch.exp(s - m_new[..., None])
            z = z * scale + e.sum(dim=-1)
            num = num * scale[..., None] + torch.einsum("ehj,jhx->ehx", e, hh[b, lo:hi])
            m = m_new
    return P.view(B, nc, k, d)
