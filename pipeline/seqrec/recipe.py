"""The seed's training recipe as released (``recipe: srt``), beside recdag's (``recipe: recdag``).

Seed: Zivic, Vazquez, Kowalski, Parra, "Scaling Sequential Recommendation Models with Transformers" (SIGIR
2024), code github.com/mercadolibre/srt (SASRecF2 on a patched RecBole). What the release does and this
module reproduces:

* **Optimiser and schedule** (RecBole ``Trainer._build_scheduler``): ``torch.optim.Adam(lr, weight_decay)``
  and ``torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, pct_start=0.3, anneal_strategy='cos',
  final_div_factor=0.1)`` with torch's defaults otherwise (``div_factor`` 25, ``cycle_momentum`` with β1
  between 0.85 and 0.95), stepped after every batch — so the run *ends* at lr/25/0.1 = lr/2.5, not near
  zero. No gradient clipping: the configs set ``max_grad_norm``, which the trainer never reads (it reads
  ``clip_grad_norm``). Fine-tuning steps the optimiser every ``gradient_accumulation_steps`` = 10 batches
  (``batch_idx % 10 == 0``: the first batch of an epoch steps alone) while the scheduler steps every batch.
  :class:`SrtOneCycleAdam`.
* **Progressive unfreezing** (``confs/fine_tune/progressive.json``, ``scripts/fine_tune.py``): the token
  and position embeddings frozen; for i = 1..layers, the top i blocks (and the rest: the text projection,
  the LayerNorm) trained for ``epochs_per_layer`` epochs; then everything for ``final_epochs``. Each phase
  is a fresh optimiser and one-cycle over its own epochs, and keeps its *last* epoch (``saved=False``).
  :func:`progressive_phases`, :func:`set_trainable`.
* **EWC** (``srt/fine_tune/elastic_weight_consolidation.py``; Kirkpatrick et al. 2017): the diagonal
  empirical Fisher F = mean over ``n`` pretraining batches of (∂L_batch/∂θ)² at the pretrained θ*, and the
  penalty λ · Σ F (θ − θ*)² (no ½) added to every fine-tuning batch loss. :class:`EWCPenalty`.

The loss, negatives and architecture parts of the recipe live where they act: per-row popularity negatives
with +1 smoothing in :class:`pipeline.seqrec.train.SeqRecTask`, post-LN blocks in
:mod:`pipeline.seqrec.model` (``arch: srt``). Written from the release's description; no code copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

RECIPES = ("recdag", "srt")


class SrtOneCycleAdam:
    """The release's step rule: Adam (weight decay as L2), torch's OneCycleLR stepped every batch, the
    optimiser stepped every ``accumulate`` batches of an epoch (gradients summed in between), no clipping.
    Its state (optimizer, scheduler, batch counter) is in ``state_dict`` so resume covers it."""

    def __init__(self, params, *, lr: float, weight_decay: float, epochs: int, steps_per_epoch: int,
                 pct_start: float, div_factor: float, final_div_factor: float, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, accumulate: int = 1):
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr, weight_decay=weight_decay)
        self.scheduler = OneCycleLR(self.optimizer, max_lr=lr, epochs=max(1, epochs),
                                    steps_per_epoch=max(1, steps_per_epoch), pct_start=pct_start,
                                    anneal_strategy="cos", div_factor=div_factor,
                                    final_div_factor=final_div_factor, cycle_momentum=True,
                                    base_momentum=base_momentum, max_momentum=max_momentum)
        self.steps_per_epoch, self.accumulate = max(1, steps_per_epoch), max(1, accumulate)
        self.total = max(1, epochs) * self.steps_per_epoch
        self.batches = 0

    def step(self, x: torch.Tensor, closure) -> torch.Tensor:
        loss = closure()                                           # backward: gradients add up
        if (self.batches % self.steps_per_epoch) % self.accumulate == 0:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.batches += 1
        if self.batches < self.total:                              # the last batch needs no next lr
            self.scheduler.step()
        return loss

    def state_dict(self) -> dict:
        """Optimizer, scheduler, batch counter and the gradients summed since the last optimizer step (so a
        run resumed between two steps of an accumulation ends where an uninterrupted one does)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "batches": self.batches,
                "pending": [None if p.grad is None else p.grad.detach().clone() for p in self.params]}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches = int(state["batches"])
        for p, g in zip(self.params, state["pending"]):
            p.grad = None if g is None else g.clone()


@dataclass(frozen=True)
class Phase:
    """One fine-tuning phase: its name, epochs, whether the embeddings are frozen and how many top blocks
    train (-1 = all)."""

    name: str
    epochs: int
    freeze_embeddings: bool
    top_blocks: int


def progressive_phases(layers: int, epochs_per_layer: int, final_epochs: int, freeze_embeddings: bool) -> list[Phase]:
    """The release's progressive schedule: ``layers`` phases unfreezing one more top block each, then all."""
    out = [Phase(f"unfreeze-{i}", epochs_per_layer, freeze_embeddings, i) for i in range(1, layers + 1)
           if epochs_per_layer > 0]
    return out + [Phase("all", final_epochs, False, -1)] if final_epochs > 0 else out


def set_trainable(model: nn.Module, freeze_embeddings: bool, top_blocks: int) -> None:
    """The release's ``freeze_model``: everything trainable, then the embeddings (token/item table and
    positions) frozen if asked and every block below the top ``top_blocks`` frozen (-1: none)."""
    model.requires_grad_(True)
    groups = model.frozen_groups()
    if freeze_embeddings:
        for m in groups["embeddings"]:
            m.requires_grad_(False)
    blocks = groups["blocks"]
    n = len(blocks) if top_blocks < 0 else top_blocks
    for i, blk in enumerate(blocks):
        if i < len(blocks) - n:
            blk.requires_grad_(False)


class EWCPenalty:
    """λ · Σ_θ F (θ − θ*)² with F the mean squared batch gradient at θ* (the release's EWC)."""

    def __init__(self, lam: float, means: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]):
        self.lam, self.means, self.fisher = lam, means, fisher

    @classmethod
    def fit(cls, lam: float, model: nn.Module, task, data, *, batch_size: int, batches: int, seed: int) -> "EWCPenalty":
        """F over the first ``batches`` batches of ``data`` (a TensorData of the pretraining sequences) with
        ``task``'s loss; the model in train mode, as the release fits it."""
        was = model.training
        model.train()
        means = {n: p.detach().clone() for n, p in model.named_parameters()}
        fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        n = 0
        for x, y, _ in data.batches(batch_size, seed=seed, epoch=0):
            if n == batches:
                break
            model.zero_grad(set_to_none=True)
            task.loss(model, x, y).backward()
            for name, p in model.named_parameters():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2
            n += 1
        model.zero_grad(set_to_none=True)
        model.train(was)
        for name in fisher:
            fisher[name] /= max(n, 1)
        return cls(lam, means, fisher)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        loss = torch.zeros(())
        for name, p in model.named_parameters():
            loss = loss + (self.fisher[name] * (p - self.means[name]) ** 2).sum()
        return loss * self.lam
