"""The CTR branch's step rules: Adam, SAM and Helen, called by the one training loop the same way,
``rule.step(x, closure)`` (see :mod:`pipeline.core.optim` for the contract). Models know nothing about
optimizers.

* **Adam** (:class:`pipeline.core.optim.PlainAdam`, shared by every branch): one forward/backward, global
  grad-norm clipping (``clip_norm``, FuxiCTR's 10), Adam with separate embedding / net learning rates.
* **SAM** (Foret et al., 2021): g = ∇L(w); ε = ρ g / ‖g‖₂ over all parameters; w + ε; ∇L(w + ε);
  restore w; base Adam step with the perturbed-point gradient.
* **Helen** (Zhu et al., WWW 2024; faithful to NUS-HPC-AI-Lab/Helen ``optim/Helen.py``): per batch, count
  the occurrences of each field's ids; every embedding table of field f is perturbed by
  ρ · clamp(count/max_count, min=bound) · g / ‖g_table‖ (per-table gradient norm, per-row frequency
  scale); dense weights are perturbed by ρ · g / ‖g‖ only when ``net_pert`` (otherwise they keep the
  first-pass gradient, as in the release); restore; Adam update with ``lr_embed`` / ``lr_net``.
  The release's net perturbation divides by the *last embedding table's* gradient norm (a shadowed
  variable); ``net_norm="global"`` (our default) uses the global gradient norm the code computes for that
  purpose, ``net_norm="last_table"`` reproduces the release exactly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.optim import Closure, PlainAdam

class SAM(PlainAdam):
    """Sharpness-aware minimisation with an Adam base optimizer (no clipping, as in the SAM recipe)."""

    def __init__(self, embed_params, net_params, *, lr_embed: float, lr_net: float, rho: float):
        super().__init__(embed_params, net_params, lr_embed=lr_embed, lr_net=lr_net, clip_norm=0.0)
        self.rho = rho

    def step(self, x: torch.Tensor, closure: Closure) -> torch.Tensor:
        params = self._params()
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure()
        with torch.no_grad():
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2) if grads else torch.tensor(0.0)
            scale = self.rho / (norm + 1e-12)
            eps = {}
            for p in params:
                if p.grad is None:
                    continue
                eps[p] = p.grad * scale
                p.add_(eps[p])
        self.optimizer.zero_grad(set_to_none=True)
        closure()
        with torch.no_grad():
            for p, e in eps.items():
                p.sub_(e)
        self.optimizer.step()
        return loss


class Helen(PlainAdam):
    """Frequency-aware sharpness-aware optimizer for CTR embeddings (see module docstring)."""

    def __init__(self, field_tables: list[tuple[int, nn.Embedding]], net_params, *, lr_embed: float,
                 lr_net: float, rho: float, bound: float, net_pert: bool, net_norm: str = "global"):
        self.field_tables = field_tables
        super().__init__([t.weight for _, t in field_tables], net_params, lr_embed=lr_embed, lr_net=lr_net,
                         clip_norm=0.0)
        if net_norm not in ("global", "last_table"):
            raise ValueError(f"net_norm: '{net_norm}' is not one of global, last_table")
        self.rho, self.bound, self.net_pert, self.net_norm = rho, bound, net_pert, net_norm
        self._embed = {id(t.weight) for _, t in field_tables}

    def freq_scale(self, x: torch.Tensor, field: int, num_rows: int) -> torch.Tensor:
        """clamp(count / max_count, min=bound) for every row of a field's table, from this batch's ids."""
        ids, counts = torch.unique(x[:, field].long(), return_counts=True)
        freq = torch.zeros(num_rows, dtype=torch.float32, device=x.device)
        freq.scatter_(0, ids, counts.float())
        return torch.clamp(freq / freq.max(), min=self.bound)

    @staticmethod
    def _global_batch(x: torch.Tensor) -> torch.Tensor:
        """Under DDP the occurrence counts are taken over the global batch (all ranks' ids), so a DDP run
        perturbs exactly as one process on the same global batch (ranks hold equal-sized shards)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def step(self, x: torch.Tensor, closure: Closure) -> torch.Tensor:
        net = [p for g in self.optimizer.param_groups if g.get("name") == "net" for p in g["params"]]
        x = self._global_batch(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure()
        old_p: dict[torch.Tensor, torch.Tensor] = {}
        old_g: dict[torch.Tensor, torch.Tensor] = {}
        with torch.no_grad():
            all_grads = [p.grad for p in self._params() if p.grad is not None]
            global_norm = torch.norm(torch.stack([g.norm(2) for g in all_grads]), 2)
            last_table_norm = global_norm
            for field, table in self.field_tables:
                w = table.weight
                if w.grad is None:
                    continue
                table_norm = w.grad.norm(2)
                last_table_norm = table_norm
                old_p[w] = w.detach().clone()
                e = w.grad * (self.rho / (table_norm + 1e-12))
                w.add_(e * self.freq_scale(x, field, w.shape[0]).unsqueeze(1).to(e.dtype))
            net_norm = global_norm if self.net_norm == "global" else last_table_norm
            for p in net:
                if p.grad is None:
                    continue
                if self.net_pert:
                    old_p[p] = p.detach().clone()
                    p.add_(p.grad * (self.rho / (net_norm + 1e-12)))
                else:
                    old_g[p] = p.grad.clone()
        self.optimizer.zero_grad(set_to_none=True)
        closure()
        with torch.no_grad():
            for p, w in old_p.items():
                p.copy_(w)
            for p, g in old_g.items():
                p.grad = g
        self.optimizer.step()
        return loss


def build_step_rule(name: str, *, field_tables, embed_params, net_params, lr_embed: float, lr_net: float,
                    rho: float, bound: float, net_pert: bool, net_norm: str, clip_norm: float):
    if name == "adam":
        return PlainAdam(embed_params, net_params, lr_embed=lr_embed, lr_net=lr_net, clip_norm=clip_norm)
    if name == "sam":
        return SAM(embed_params, net_params, lr_embed=lr_embed, lr_net=lr_net, rho=rho)
    if name == "helen":
        return Helen(field_tables, net_params, lr_embed=lr_embed, lr_net=lr_net, rho=rho, bound=bound,
                     net_pert=net_pert, net_norm=net_norm)
    raise ValueError(f"optim.name: '{name}' is not one of adam, sam, helen")
