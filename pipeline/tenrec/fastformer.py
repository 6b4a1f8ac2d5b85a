"""Fastformer (Wu et al., 2021, "Fastformer: Additive Attention Can Be All You Need") and the standard
Transformer encoder it is compared with, behind one interface: ``encoder(x [B, L, d], mask [B, L] bool
(True = real token)) -> [B, L, d]``.

Fastformer attention, per head h with head size d_h (q_i, k_i, v_i = the head's slices of W_q x_i,
W_k x_i, W_v x_i):

    α_i = softmax_i(w_q·q_i / √d_h)          q = Σ_i α_i q_i            (global query, additive attention)
    p_i = q ⊙ k_i
    β_i = softmax_i(w_k·p_i / √d_h)          k = Σ_i β_i p_i            (global key)
    u_i = k ⊙ v_i
    r_i = W_o u_i + q_i                      (output transform + the query residual of the paper)

Padding positions get −∞-like scores before both softmaxes, so they receive zero weight and adding
padding never changes the outputs at real positions. Linear in L (no L×L matrix).

The layer around it follows the official release (BERT layout, post-LN): attention → dense → dropout →
LayerNorm(x + ·) → GELU FFN → dropout → LayerNorm(· + ·). Two deliberate choices, both the paper's:
the scores use per-head parameter vectors w_q^h, w_k^h over the head's own slice (the release scores each
head from the full hidden vector with one Linear(d, heads)), and u_i multiplies the global key with the
*values* (the release multiplies it with the queries).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax over dim 1 of scores [B, L, H] with mask [B, L]; masked positions get exactly 0."""
    scores = scores.masked_fill(~mask.unsqueeze(-1), torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=1) * mask.unsqueeze(-1)


class FastformerAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads {heads} must divide dim {dim}")
        self.dim, self.heads, self.dh = dim, heads, dim // heads
        self.w_q = nn.Linear(dim, dim)
        self.w_k = nn.Linear(dim, dim)
        self.w_v = nn.Linear(dim, dim)
        self.q_att = nn.Parameter(torch.empty(heads, self.dh))
        self.k_att = nn.Parameter(torch.empty(heads, self.dh))
        self.w_o = nn.Linear(dim, dim)
        nn.init.normal_(self.q_att, std=0.02)
        nn.init.normal_(self.k_att, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.w_q(x).view(b, n, self.heads, self.dh)
        k = self.w_k(x).view(b, n, self.heads, self.dh)
        v = self.w_v(x).view(b, n, self.heads, self.dh)
        scale = 1.0 / math.sqrt(self.dh)
        alpha = _masked_softmax((q * self.q_att).sum(-1) * scale, mask)              # [B, L, H]
        global_q = torch.einsum("blh,blhd->bhd", alpha, q)
        p = global_q.unsqueeze(1) * k                                                 # [B, L, H, dh]
        beta = _masked_softmax((p * self.k_att).sum(-1) * scale, mask)
        global_k = torch.einsum("blh,blhd->bhd", beta, p)
        u = global_k.unsqueeze(1) * v
        return self.w_o(u.reshape(b, n, self.dim)) + q.reshape(b, n, self.dim)


class FastformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = FastformerAttention(dim, heads)
        self.attn_out = nn.Linear(dim, dim)
        self.ln1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn_dim)
        self.ff2 = nn.Linear(ffn_dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x + self.drop(self.attn_out(self.attn(x, mask))))
        return self.ln2(h + self.drop(self.ff2(F.gelu(self.ff1(h)))))


class TransformerLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (post-LN, GELU) behind the same (x, mask) interface."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu",
                                                batch_first=True, norm_first=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.layer(x, src_key_padding_mask=~mask)


class Encoder(nn.Module):
    """A stack of ``num_layers`` Fastformer or Transformer layers; optional activation checkpointing
    (recompute each layer in the backward pass: memory ∝ one layer's activations instead of all)."""

    def __init__(self, kind: str, dim: int, heads: int, ffn_dim: int, num_layers: int, dropout: float,
                 gradient_checkpointing: bool = False):
        super().__init__()
        layer = {"fastformer": FastformerLayer, "transformer": TransformerLayer}[kind]
        self.layers = nn.ModuleList(layer(dim, heads, ffn_dim, dropout) for _ in range(num_layers))
        self.gradient_checkpointing = gradient_checkpointing
        self.kind = kind

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x


def time_encoder(kind: str, length: int, *, dim: int, heads: int, ffn_dim: int, num_layers: int, batch: int = 8,
                 steps: int = 3, seed: int = 0) -> dict:
    """Median wall and CPU seconds of one training step (forward + backward, a fifth of half the batch
    padded) of :class:`Encoder` ``kind`` at ``length``, after one untimed step; and its parameter count."""
    import statistics
    import time

    gen = torch.Generator().manual_seed(seed)
    enc = Encoder(kind, dim, heads, ffn_dim, num_layers, dropout=0.0)
    x = torch.randn(batch, length, dim, generator=gen)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[: batch // 2, int(length * 0.8):] = False
    wall, cpu = [], []
    for i in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        enc(x, mask).square().mean().backward()
        enc.zero_grad(set_to_none=True)
        if i:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return {"encoder": kind, "length": length, "step_ms": 1000 * statistics.median(wall),
            "step_cpu_ms": 1000 * statistics.median(cpu), "params": sum(p.numel() for p in enc.parameters())}
