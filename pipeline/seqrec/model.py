"""SASRec-style causal transformer with two item representations.

* ``IdItemEncoder``: one learned vector per catalogue item (classic SASRec; Kang & McAuley 2018).
* ``TextItemEncoder``: sum-pooled title token embeddings and sum-pooled brand token embeddings (one shared
  BPE vocabulary), concatenated, then a linear layer (Zivic et al. 2024). There is no item-id table: the
  catalogue enters only through non-persistent token-id buffers, so the parameter count does not depend on
  the catalogue and a checkpoint loads into a model over another catalogue (fine-tuning).

Two block layouts (``arch``):

* ``recdag`` (pre-LN, as SASRec's reference code): item vectors × sqrt(d) + learned positions counted from
  the *newest* item (right-aligned), dropout, ``layers`` × [LN → causal multi-head self-attention →
  residual, LN → FFN (GELU) → residual], final LN; PyTorch's default Linear init.
* ``srt`` (post-LN, as the seed's release: mercadolibre/srt, SASRecF2 on RecBole's ``TransformerEncoder``):
  item vectors + learned positions counted from the *oldest* item of the window (left-aligned, RecBole's
  position ids), LayerNorm, dropout, ``layers`` × [attention → dropout → LN(· + residual), FFN (GELU) →
  dropout → LN(· + residual)], no final LN, no sqrt(d) scaling; LayerNorm eps 1e-12; every Linear and
  Embedding initialised N(0, 0.02) with zero biases (RecBole's ``_init_weights``). Sequences are left-padded with item 0. A position attends
to itself and to earlier non-padding positions only. Training and evaluation pack several short sequences
into one row (``segments``; block-diagonal causal mask, per-sequence positions): the same numbers as the
padded rows, without computing the padding (real Beauty: 8.9 items a user in rows of 50). Scores are dot products of the hidden state with item
vectors (shared item encoder for inputs and outputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class IdItemEncoder(nn.Module):
    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.num_items = num_items
        self.emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.emb.weight, std=0.02)
        with torch.no_grad():
            self.emb.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.emb(items)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.emb.weight]


class TextItemEncoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int, title_tokens: torch.Tensor, brand_tokens: torch.Tensor):
        super().__init__()
        self.tok = nn.EmbeddingBag(vocab_size, dim, mode="sum", padding_idx=0)   # sum-pool, pads excluded
        nn.init.normal_(self.tok.weight, std=0.02)
        with torch.no_grad():
            self.tok.weight[0].zero_()
        self.proj = nn.Linear(2 * dim, dim)
        self.set_catalogue(title_tokens, brand_tokens)

    def set_catalogue(self, title_tokens: torch.Tensor, brand_tokens: torch.Tensor) -> None:
        """Token ids per catalogue item (row 0 = padding item, all zeros): not saved in the state_dict.
        Trailing all-padding columns are dropped (they pool to nothing)."""
        def trim(m: torch.Tensor) -> torch.Tensor:
            used = int((m != 0).any(0).nonzero().max()) + 1 if (m != 0).any() else 1
            return m[:, :used].long().contiguous()

        self.register_buffer("title", trim(title_tokens), persistent=False)
        self.register_buffer("brand", trim(brand_tokens), persistent=False)
        self.num_items = title_tokens.shape[0] - 1

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Item vectors for any shape of item ids; each distinct item is encoded once."""
        uniq, inv = torch.unique(items.reshape(-1), return_inverse=True)
        title = self.tok(self.title[uniq])                 # [u, d] sum over the title's tokens
        brand = self.tok(self.brand[uniq])
        out = self.proj(torch.cat([title, brand], -1)) * (uniq != 0).unsqueeze(-1)   # padding item = 0
        return out[inv].reshape(*items.shape, -1)

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.tok.weight]


ARCHS = ("recdag", "srt")


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int, dropout: float, post_ln: bool = False, eps: float = 1e-5):
        super().__init__()
        self.heads, self.post_ln = heads, post_ln
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff1, self.ff2 = nn.Linear(dim, inner), nn.Linear(inner, dim)
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def _attend(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        return self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.post_ln:                                  # RecBole's TransformerLayer (the srt release)
            h = self.ln1(h + self._attend(h, mask))
            return self.ln2(h + self.drop(self.ff2(F.gelu(self.ff1(h)))))
        b, n, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        h = h + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return h + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(h))))))


class SASRec(nn.Module):
    def __init__(self, item_encoder: nn.Module, *, dim: int, layers: int, heads: int, inner: int,
                 max_len: int, dropout: float, arch: str = "recdag"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch: {arch}")
        self.srt = arch == "srt"
        eps = 1e-12 if self.srt else 1e-5
        self.items = item_encoder
        self.dim, self.max_len = dim, max_len
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, inner, dropout, post_ln=self.srt, eps=eps)
                                    for _ in range(layers))
        # recdag: the final LN of a pre-LN stack; srt: the LN of the input embeddings (SASRecF2.LayerNorm)
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.config = {"dim": dim, "layers": layers, "heads": heads, "inner": inner, "max_len": max_len,
                       "dropout": dropout, "arch": arch}
        if self.srt:
            self.apply(_recbole_init)

    def frozen_groups(self) -> dict[str, list[nn.Module]]:
        """The parameter groups of the release's progressive unfreezing (srt ``freeze_model``): the
        embeddings (token/item table and positions), the blocks bottom to top, and the rest (the text
        encoder's projection, the LayerNorm)."""
        emb = [self.items.tok if hasattr(self.items, "tok") else self.items.emb, self.pos]
        return {"embeddings": emb, "blocks": list(self.blocks)}

    @staticmethod
    def attention_mask(seq: torch.Tensor) -> torch.Tensor:
        """[b, 1, n, n] bool: query t may attend key s iff s <= t and (s is an item or s == t)."""
        n = seq.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        real = (seq != 0).unsqueeze(1)                               # [b, 1, n] keys
        eye = torch.eye(n, dtype=torch.bool, device=seq.device)
        return (causal & (real | eye)).unsqueeze(1)

    @staticmethod
    def packed_layout(segments: torch.Tensor, max_len: int,
                      oldest_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions [r, n] and attention mask [r, 1, n, n] of packed rows: ``segments`` [r, n] gives each
        token's sequence id (0 = padding), every sequence one contiguous run of at most ``max_len`` tokens.
        A token attends to itself and to earlier tokens of its own sequence; its position is the one it has
        in that sequence left-padded alone (right-aligned: the last token gets max_len - 1; with
        ``oldest_first`` its index in the sequence, RecBole's), so a packed row computes exactly what the
        padded rows of its sequences compute."""
        n = segments.shape[1]
        same = segments.unsqueeze(2) == segments.unsqueeze(1)                   # [r, query, key]
        causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
        before = (same & causal).sum(-1) - 1                                     # index within the sequence
        length = same.sum(-1)
        pos = (before if oldest_first else max_len - length + before).clamp_min(0)   # padding: any valid
        eye = torch.eye(n, dtype=torch.bool, device=segments.device)
        mask = (same & causal & (segments != 0).unsqueeze(1)) | eye
        return pos, mask.unsqueeze(1)

    def forward(self, seq: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [b, n, d] for left-padded item sequences [b, n] (n <= max_len), or, with
        ``segments``, for packed rows (several sequences per row; see :meth:`packed_layout`)."""
        seq = seq.long()
        n = seq.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence length {n} > max_len {self.max_len}")
        if segments is None:
            pos = torch.arange(self.max_len - n, self.max_len, device=seq.device)   # right-aligned positions
            mask = self.attention_mask(seq)
            if self.srt:                                       # RecBole: positions from the oldest item
                pos = ((seq != 0).cumsum(1) - 1).clamp_min(0)
        else:
            pos, mask = self.packed_layout(segments, self.max_len, oldest_first=self.srt)
        if self.srt:
            h = self.drop(self.ln(self.items(seq) + self.pos(pos)) * (seq != 0).unsqueeze(-1))
            for blk in self.blocks:
                h = blk(h, mask)
            return h
        h = self.items(seq) * math.sqrt(self.dim) + self.pos(pos)
        h = self.drop(h * (seq != 0).unsqueeze(-1))
        for blk in self.blocks:
            h = blk(h, mask)
        return self.ln(h)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.items(items)

    def all_item_vectors(self) -> torch.Tensor:
        """Vectors of every catalogue item 1..N as rows 1..N (row 0 = padding, zero)."""
        return self.items(torch.arange(self.items.num_items + 1, device=self.pos.weight.device))

    def embedding_parameters(self) -> list[nn.Parameter]:
        return self.items.embedding_parameters() + [self.pos.weight]


def _recbole_init(module: nn.Module) -> None:
    """RecBole's ``_init_weights`` (the srt release): N(0, 0.02) weights, zero biases, LayerNorm (1, 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.EmbeddingBag)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "padding_idx", None) is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def parameter_counts(model: SASRec) -> dict:
    """Total parameters and non-embedding parameters (Kaplan et al.: without the item/token and position
    embedding tables)."""
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for p in model.embedding_parameters())
    return {"params_total": total, "params_non_embedding": total - emb, "params_embedding": emb}


def build_model(item_repr: str, *, dim: int, layers: int, heads: int, ffn_mult: int, max_len: int,
                dropout: float, num_items: int = 0, vocab_size: int = 0, title_tokens: torch.Tensor | None = None,
                brand_tokens: torch.Tensor | None = None, arch: str = "recdag") -> SASRec:
    if item_repr == "id":
        enc = IdItemEncoder(num_items, dim)
    elif item_repr == "text":
        enc = TextItemEncoder(vocab_size, dim, title_tokens, brand_tokens)
    else:
        raise ValueError(f"item_repr: {item_repr}")
    return SASRec(enc, dim=dim, layers=layers, heads=heads, inner=ffn_mult * dim, max_len=max_len, dropout=dropout,
                  arch=arch)
