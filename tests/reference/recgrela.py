"""recgrela.py: the PyTorch reference of elastic's RecGRELA model (the oracle the
C model is tested against). DESIGN.md section 3 gives the model (the authors'
rotary linear attention, made causal); this is the exact spec, written plainly
so it can be checked line by line:

  x = wte[inputs]                               (no position embedding), dropout
  per layer l (pre-LN):
    h   = LN(x; ln1w[l], ln1b[l])
    g   = SiLU(h @ wg[l].T + bg[l])             (gate on only)
    u   = h @ win[l].T + bin[l]                 (also the values: v = u)
    q   = u @ wqk[l][:d].T + bqk[l][:d]         k = u @ wqk[l][d:].T + bqk[l][d:]
    qf  = elu(q) + 1, kf = elu(k) + 1           qr = rope(qf), kr = rope(kf)
          rope: pair i = dims (2i, 2i+1) of the FULL d-wide row at position t
          (0..L-1) rotated by angle t * 10000^(-2i/d); heads are split after
    per row b, position t, head hh (slice hh*hd:(hh+1)*hd), j over pad[b] <= j <= t:
      a[b,t] = sum_j (qr_t·kr_j) u_j / (sum_j qf_t·kf_j + 1e-6)
             = qr_t·(sum_j kr_j u_j^T) / (qf_t·sum_j kf_j + 1e-6);  a = 0 at t < pad[b]
    r   = SiLU(conv(u)) (local on), 0 (local off), with the causal depthwise
          conv(u)[b,t,c] = convb[l][c] + sum_{i<K, t-i >= pad[b]} convw[l][c,i] u[b,t-i,c]
    z   = (a + r) * g (gate on), a + r (gate off)
    x   = x + dropout(z @ wout[l].T + bout[l])
    x   = x + dropout(MLP(LN(x; ln2w[l], ln2b[l])))   (as in SASRec)
  hidden = LN(x; lnfw, lnfb); logits = hidden @ wte[1:].T; loss as in SASRec.

Inputs: inputs [B,L] item ids, left-padded with 0; pad [B] = number of leading
zeros of each row; targets [B,L] (0 = no target).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from elastic import rope as rope_heads
from sasrec import LN_EPS, SASRec

# Parameter names in checkpoint order (wg, bg only with the gate; convw, convb
# only with the local branch).
PARAM_NAMES = [
    "wte", "ln1w", "ln1b", "wg", "bg", "win", "bin", "wqk", "bqk", "convw", "convb",
    "wout", "bout", "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
]
GATE_NAMES = ("wg", "bg")
LOCAL_NAMES = ("convw", "convb")
DEN_EPS = 1e-6


def param_names(local=True, gate=True):
    return [n for n in PARAM_NAMES
            if (local or n not in LOCAL_NAMES) and (gate or n not in GATE_NAMES)]


def param_shapes(n_items, d, n_layers, conv_kernel, local=True, gate=True):
    V, nl, K = n_items + 1, n_layers, conv_kernel
    shapes = {
        "wte": (V, d), "ln1w": (nl, d), "ln1b": (nl, d),
        "wg": (nl, d, d), "bg": (nl, d), "win": (nl, d, d), "bin": (nl, d),
        "wqk": (nl, 2 * d, d), "bqk": (nl, 2 * d),
        "convw": (nl, d, K), "convb": (nl, d),
        "wout": (nl, d, d), "bout": (nl, d),
        "ln2w": (nl, d), "ln2b": (nl, d),
        "fcw": (nl, 4 * d, d), "fcb": (nl, 4 * d),
        "fcprojw": (nl, d, 4 * d), "fcprojb": (nl, d),
        "lnfw": (d,), "lnfb": (d,),
    }
    return {name: shapes[name] for name in param_names(local, gate)}


def rope(x):
    """x [B, L, d], position = index along dim 1. Pair i = dims (2i, 2i+1) of the
    full row rotated by angle pos * 10000^(-2i/d): elastic's per-head rope with
    one head of width d."""
    return rope_heads(x[:, :, None, :])[:, :, 0, :]


def phi(x):
    return F.elu(x) + 1.0


class RecGRELA(nn.Module):
    def __init__(self, n_items, d, n_heads, n_layers, conv_kernel=4, local=True, gate=True,
                 dropout=0.0, dtype=torch.float32):
        super().__init__()
        # even head width: no rotated pair straddles two heads
        assert d % n_heads == 0 and (d // n_heads) % 2 == 0
        self.n_items, self.d, self.H, self.nl = n_items, d, n_heads, n_layers
        self.hd = d // n_heads
        self.K = conv_kernel
        self.local, self.gate = local, gate
        self.p = dropout
        self.names = param_names(local, gate)
        for name, shape in param_shapes(n_items, d, n_layers, conv_kernel, local, gate).items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dtype)))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std=0.02):
        # A plain GPT-style init (the fixture overwrites every parameter).
        for name in self.names:
            p = getattr(self, name)
            if name in ("ln1w", "ln2w", "lnfw"):
                p.fill_(1.0)
            elif name in ("wte", "wg", "win", "wqk", "convw", "wout", "fcw", "fcprojw"):
                p.normal_(0.0, std)
            else:
                p.zero_()

    # SASRec's FFN, output head and loss, unchanged.
    mlp = SASRec.mlp
    logits = SASRec.logits
    loss = SASRec.loss

    def linear_attention(self, qr, kr, qf, kf, v, pad):
        """a [B, L, d]: causal linear attention as an explicit masked L x L sum."""
        B, L, d = v.shape
        H, hd = self.H, self.hd
        qr4, kr4 = qr.view(B, L, H, hd), kr.view(B, L, H, hd)
        qf4, kf4 = qf.view(B, L, H, hd), kf.view(B, L, H, hd)
        v4 = v.view(B, L, H, hd)
        t = torch.arange(L, device=v.device)
        allowed = (t[None, :] <= t[:, None])[None] & (t[None, None, :] >= pad.long()[:, None, None])
        allowed = allowed[:, None]                                          # [B, 1, t, j]
        s_num = torch.einsum("bthx,bjhx->bhtj", qr4, kr4).masked_fill(~allowed, 0.0)
        s_den = torch.einsum("bthx,bjhx->bhtj", qf4, kf4).masked_fill(~allowed, 0.0)
        num = torch.einsum("bhtj,bjhx->bthx", s_num, v4)                   # [B, L, H, hd]
        den = s_den.sum(dim=-1).transpose(1, 2)[..., None] + DEN_EPS       # [B, L, H, 1]
        a = num / den
        real = (t[None, :] >= pad.long()[:, None])[:, :, None, None]       # [B, L, 1, 1]
        return torch.where(real, a, torch.zeros_like(a)).reshape(B, L, d)

    def conv(self, l, u, pad):
        """Causal depthwise convolution of u [B, L, d]; taps before pad[b] are left out."""
        B, L, d = u.shape
        t = torch.arange(L, device=u.device)
        out = self.convb[l].expand(B, L, d)
        for i in range(self.K):
            shifted = torch.cat([u.new_zeros(B, min(i, L), d), u[:, :L - i]], dim=1)  # u[b, t-i]
            ok = (t[None, :] - i >= pad.long()[:, None])[..., None]                  # [B, L, 1]
            out = out + self.convw[l][:, i] * torch.where(ok, shifted, torch.zeros_like(shifted))
        return out

    def mix(self, l, h, pad, trace=None):
        """The token mixer before the output projection: z [B, L, d]."""
        d = self.d
        u = h @ self.win[l].T + self.bin[l]
        q = u @ self.wqk[l][:d].T + self.bqk[l][:d]
        k = u @ self.wqk[l][d:].T + self.bqk[l][d:]
        qf, kf = phi(q), phi(k)
        qr, kr = rope(qf), rope(kf)
        a = self.linear_attention(qr, kr, qf, kf, u, pad)
        if trace is not None:
            trace.append({"u": u, "qf": qf, "kf": kf, "qr": qr, "kr": kr, "a": a})
        r = F.silu(self.conv(l, u, pad)) if self.local else torch.zeros_like(a)
        z = a + r
        if self.gate:
            z = z * F.silu(h @ self.wg[l].T + self.bg[l])
        return z

    def forward(self, inputs, pad, trace=None):
        """Returns hidden [B, L, d] (after the final LayerNorm). If trace is a
        list, appends per layer a dict with u, qf, kf, qr, kr and a."""
        d = self.d
        x = F.dropout(self.wte[inputs.long()], self.p, self.training)
        for l in range(self.nl):
            h = F.layer_norm(x, (d,), self.ln1w[l], self.ln1b[l], LN_EPS)
            z = self.mix(l, h, pad, trace)
            x = x + F.dropout(z @ self.wout[l].T + self.bout[l], self.p, self.training)
            h2 = F.layer_norm(x, (d,), self.ln2w[l], self.ln2b[l], LN_EPS)
            x = x + F.dropout(self.mlp(l, h2), self.p, self.training)
        return F.layer_norm(x, (d,), self.lnfw, self.lnfb, LN_EPS)


def linear_attention_chunked(model, qr, kr, qf, kf, v, pad, C):
    """The causal linear attention as the chunked kernel computes it: per row and
    head, an hd x hd state S = sum kr_j v_j^T and z = sum kf_j over earlier
    chunks, plus a masked C x C product inside the chunk. Used only to check
    RecGRELA.linear_attention."""
    B, L, d = v.shape
    H, hd = model.H, model.hd
    a = torch.zeros(B, L, H, hd, dtype=v.dtype)
    qr4, kr4 = qr.view(B, L, H, hd), kr.view(B, L, H, hd)
    qf4, kf4 = qf.view(B, L, H, hd), kf.view(B, L, H, hd)
    v4 = v.view(B, L, H, hd)
    for b in range(B):
        p = int(pad[b])
        for hh in range(H):
            S = torch.zeros(hd, hd, dtype=v.dtype)
            z = torch.zeros(hd, dtype=v.dtype)
            for c0 in range(0, L, C):
                c1 = min(L, c0 + C)
                t = torch.arange(c0, c1)
                keep = t >= p                                              # items, not padding
                mask = (t[None, :] <= t[:, None]) & keep[None, :]          # [t, j] in the chunk
                Q, Kr = qr4[b, c0:c1, hh], kr4[b, c0:c1, hh] * keep[:, None]
                Qf, Kf = qf4[b, c0:c1, hh], kf4[b, c0:c1, hh] * keep[:, None]
                V = v4[b, c0:c1, hh]
                num = Q @ S + (Q @ Kr.T).masked_fill(~mask, 0.0) @ V
                den = Qf @ z + (Qf @ Kf.T).masked_fill(~mask, 0.0).sum(-1) + DEN_EPS
                a[b, c0:c1, hh] = torch.where(keep[:, None], num / den[:, None], 0.0)
                S = S + Kr.T @ V
                z = z + Kf.sum(0)
    return a.reshape(B, L, d)
