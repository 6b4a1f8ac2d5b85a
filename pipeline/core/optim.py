"""The step rules every branch shares, called by the one training loop as ``rule.step(x, closure)``.

``closure()`` runs forward + loss + backward and returns the (detached) loss; the rule zeroes gradients,
decides how often to call it and applies the update. A rule exposes ``optimizer`` (the loop's plateau lr
reduction walks its ``param_groups``) and ``state_dict`` / ``load_state_dict`` (resume).

* :class:`PlainAdam` -- one forward/backward, global grad-norm clipping (``clip_norm``; 0 = off), Adam with
  one learning rate per named parameter group (e.g. embedding tables vs the rest). Fused: one vectorised
  pass over every tensor (CPU and CUDA), several times faster than the per-tensor loop over large
  embedding tables (``bench/ctr_train.py``), same update rule.
* :class:`OneCycleAdam` -- Adam (weight decay as L2) + global grad-norm clipping + a one-cycle schedule
  applied per step inside ``step`` (its position is in ``state_dict``, so resume covers it): linear warm-up
  from lr/div to lr over ``warmup`` of the steps, then cosine annealing to lr/(div·final_div). Use it with
  the loop's ``lr_decay: 1.0`` (no plateau reduction on top of the schedule).

Branch-specific rules (SAM, Helen: the CTR branch) build on :class:`PlainAdam`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Closure = Callable[[], torch.Tensor]


def adam_groups(groups: dict[str, tuple[list, float]]) -> torch.optim.Adam:
    """Fused Adam over named groups ``{name: (params, lr)}``; empty groups are left out."""
    gs = [{"params": list(ps), "lr": lr, "name": name} for name, (ps, lr) in groups.items()]
    return torch.optim.Adam([g for g in gs if g["params"]], betas=(0.9, 0.999), eps=1e-8, fused=True)


class PlainAdam:
    """One backward, clip the global grad norm, Adam step (``lr_embed`` for ``embed_params``, ``lr_net`` for
    the rest)."""

    def __init__(self, embed_params, net_params, *, lr_embed: float, lr_net: float, clip_norm: float = 10.0):
        self.optimizer = adam_groups({"embedding": (embed_params, lr_embed), "net": (net_params, lr_net)})
        self.clip_norm = clip_norm

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def step(self, x: torch.Tensor, closure: Closure) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure()
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(self._params(), self.clip_norm)
        self.optimizer.step()
        return loss

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)


def one_cycle_lr(step: int, total: int, lr: float, warmup: float, div: float, final_div: float) -> float:
    """Learning rate before optimizer step ``step`` (0-based) of ``total``: linear warm-up from lr/div to
    lr over ceil(warmup·total) steps, then cosine annealing to lr/(div·final_div)."""
    start, end = lr / div, lr / (div * final_div)
    up = max(1, math.ceil(warmup * total))
    if step < up:
        return start + (lr - start) * step / up
    down = max(1, total - up)
    t = min(1.0, (step - up) / down)
    return end + (lr - end) * (1 + math.cos(math.pi * t)) / 2


class OneCycleAdam:
    """Adam (weight decay as L2) + global grad-norm clipping + the one-cycle schedule, per step."""

    def __init__(self, params, *, lr: float, weight_decay: float, clip_norm: float, total_steps: int,
                 warmup: float, div_factor: float, final_div_factor: float):
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr / div_factor, betas=(0.9, 0.999), eps=1e-8,
                                          weight_decay=weight_decay)
        self.peak, self.clip_norm, self.total = lr, clip_norm, max(1, total_steps)
        self.warmup, self.div, self.final_div = warmup, div_factor, final_div_factor
        self.steps = 0

    def lr_at(self, step: int) -> float:
        return one_cycle_lr(step, self.total, self.peak, self.warmup, self.div, self.final_div)

    def step(self, x: torch.Tensor, closure: Closure) -> torch.Tensor:
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure()
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
        self.optimizer.step()
        self.steps += 1
        return loss

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
