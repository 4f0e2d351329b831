"""sasrec.py: the PyTorch reference of elastic's SASRec model (the oracle the C
model is tested against, and the model of the PyTorch throughput peer).

Written plainly so that it can be checked line by line against the spec:

  x = wte[inputs] + wpe[t]                      (no sqrt(d) scaling), dropout
  per layer l (pre-LN):
    h   = LN(x; ln1w[l], ln1b[l])
    qkv = h @ qkvw[l].T + qkvb[l]               q | k | v, head j = cols j*hd:(j+1)*hd
    att = softmax(q_j k_j^T / sqrt(hd)) over keys pad[b] <= s <= t
    y   = concat_j(att @ v_j), and y = 0 at padding queries (t < pad[b])
    x   = x + dropout(y @ attprojw[l].T + attprojb[l])
    h2  = LN(x; ln2w[l], ln2b[l])
    f   = gelu_tanh(h2 @ fcw[l].T + fcb[l])
    x   = x + dropout(f @ fcprojw[l].T + fcprojb[l])
  hidden = LN(x; lnfw, lnfb)
  logits = hidden @ wte[1:].T                   class c is item c+1
  loss   = mean over target != 0 of CE(logits, target - 1)

Inputs: inputs [B,L] item ids (int), left-padded with 0; pad [B] = number of
leading zeros of each row; targets [B,L] (0 = no target).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Parameter names in checkpoint order.
PARAM_NAMES = [
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
]

LN_EPS = 1e-5


def param_shapes(n_items, L, d, n_layers):
    V, nl = n_items + 1, n_layers
    return {
        "wte": (V, d), "wpe": (L, d),
        "ln1w": (nl, d), "ln1b": (nl, d),
        "qkvw": (nl, 3 * d, d), "qkvb": (nl, 3 * d),
        "attprojw": (nl, d, d), "attprojb": (nl, d),
        "ln2w": (nl, d), "ln2b": (nl, d),
        "fcw": (nl, 4 * d, d), "fcb": (nl, 4 * d),
        "fcprojw": (nl, d, 4 * d), "fcprojb": (nl, d),
        "lnfw": (d,), "lnfb": (d,),
    }


class SASRec(nn.Module):
    def __init__(self, n_items, L, d, n_heads, n_layers, dropout=0.0, dtype=torch.float32):
        super().__init__()
        assert d % n_heads == 0
        self.n_items, self.L, self.d, self.H, self.nl = n_items, L, d, n_heads, n_layers
        self.hd = d // n_heads
        self.p = dropout
        for name, shape in param_shapes(n_items, L, d, n_layers).items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dtype)))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std=0.02):
        # A plain GPT-style init (the fixture overwrites every parameter).
        for name in PARAM_NAMES:
            p = getattr(self, name)
            if name in ("ln1w", "ln2w", "lnfw"):
                p.fill_(1.0)
            elif name in ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"):
                p.normal_(0.0, std)
            else:
                p.zero_()

    def attention_mask(self, pad, L):
        # allowed[b, 1, t, s] = pad[b] <= s <= t
        t = torch.arange(L, device=pad.device)
        causal = t[None, :] <= t[:, None]                     # [t, s]: s <= t
        not_pad = t[None, :] >= pad.long()[:, None]           # [b, s]: s >= pad[b]
        return (causal[None, :, :] & not_pad[:, None, :])[:, None, :, :]

    def attention(self, l, h, allowed):
        B, L, d = h.shape
        H, hd = self.H, self.hd
        qkv = h @ self.qkvw[l].T + self.qkvb[l]               # [B, L, 3d]
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        q = q.view(B, L, H, hd).transpose(1, 2)               # [B, H, L, hd]
        k = k.view(B, L, H, hd).transpose(1, 2)
        v = v.view(B, L, H, hd).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)    # [B, H, L(t), L(s)]
        scores = scores.masked_fill(~allowed, float("-inf"))
        # Padding queries have no allowed key: give them finite scores so that
        # softmax has no NaN, then zero their weights (y = 0 exactly there).
        has_key = allowed.any(dim=-1, keepdim=True)           # [B, 1, L, 1]
        scores = scores.masked_fill(~has_key, 0.0)
        att = torch.softmax(scores, dim=-1)
        att = att * allowed                                   # exact zeros off the mask
        y = att @ v                                           # [B, H, L, hd]
        y = y.transpose(1, 2).reshape(B, L, d)                # concat heads
        return y @ self.attprojw[l].T + self.attprojb[l]

    def mlp(self, l, h2):
        f = F.gelu(h2 @ self.fcw[l].T + self.fcb[l], approximate="tanh")
        return f @ self.fcprojw[l].T + self.fcprojb[l]

    def forward(self, inputs, pad):
        """Returns hidden [B, L, d] (after the final LayerNorm)."""
        B, L = inputs.shape
        d = self.d
        t = torch.arange(L, device=inputs.device)
        x = self.wte[inputs.long()] + self.wpe[t][None, :, :]
        x = F.dropout(x, self.p, self.training)
        allowed = self.attention_mask(pad, L)
        for l in range(self.nl):
            h = F.layer_norm(x, (d,), self.ln1w[l], self.ln1b[l], LN_EPS)
            x = x + F.dropout(self.attention(l, h, allowed), self.p, self.training)
            h2 = F.layer_norm(x, (d,), self.ln2w[l], self.ln2b[l], LN_EPS)
            x = x + F.dropout(self.mlp(l, h2), self.p, self.training)
        return F.layer_norm(x, (d,), self.lnfw, self.lnfb, LN_EPS)

    def logits(self, hidden):
        """[B, L, N]: class c is item c+1 (padding row 0 is never a class)."""
        return hidden @ self.wte[1:].T

    def loss(self, inputs, pad, targets):
        """Mean cross-entropy over positions with target != 0."""
        logits = self.logits(self.forward(inputs, pad))
        N = logits.shape[-1]
        labels = targets.long().reshape(-1) - 1               # target 0 -> -1 (ignored)
        return F.cross_entropy(logits.reshape(-1, N), labels, ignore_index=-1)
