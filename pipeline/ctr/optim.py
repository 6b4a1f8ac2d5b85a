"""The CTR branch's step rules: Adam, SAM and Helen, called by the one training loop the same way,
``rule.step(x, closure)`` (see :mod:`pipeline.core.optim` for the contract). Models know nothing about
optimizers.

* **Adam** (:class:`pipeline.core.optim.PlainAdam`, shared by every branch): one forward/backward, global
  grad-norm clipping (``clip_norm``, FuxiCTR's 10), Adam with separate embedding / net learning rates.
* **SAM** (Foret et al., 2021): g = ∇L(w); ε = ρ g / ‖g‖₂ over all parameters; w + ε; ∇L(w + ε);
  restore w; base Adam step with the perturbed-point gradient.
* **Helen** (Zhu, Liu, Zheng, Guo, You: "Helen: Optimizing CTR Prediction Models with Frequency-wise
  Hessian Eigenvalue Regularization", WWW 2024, arXiv:2403.00798; release: github.com/NUS-HPC-AI-Lab/Helen,
  ``optim/Helen.py``, its parameter split in ``models/base_model.py`` and its batch step in ``train.py``).
  Per batch: count the occurrences of each field's ids in the batch (``torch.unique``; max_count = the
  largest count of that field in this batch); first forward/backward at w; every table of the *embedding
  group* is perturbed by ρ · clamp(count/max_count, min=``bound``) · g / (‖g_table‖ + 1e-12) (per-table
  gradient norm, per-row frequency scale); every *dense* weight is perturbed by ρ · g / (N + 1e-12) only when
  ``net_pert``, otherwise it keeps its first-pass gradient; second forward/backward at the perturbed point;
  restore w; a plain Adam step (β = 0.9, 0.999, eps 1e-8, no weight decay, **no grad clipping**) with
  ``lr_embed`` for the embedding group and ``lr_net`` for the dense group, using the perturbed-point
  gradient for every perturbed tensor. Under DDP the counts are taken over the global batch (all ranks'
  ids), so a DDP run perturbs exactly as one process on the same global batch (the release has no DDP).

  ``helen_variant`` (``optim.helen_variant``) chooses between two readings of that step:

  ``release`` -- the released update, exactly:

  1. *Parameter split.* The release's embedding group is every ``embedding_layer`` parameter whose last
     dimension is > 1 (``BaseModel.embed_params``); its 1-dimensional first-order (LR) tables -- WideDeep's
     wide part, DeepFM's first-order term -- are in the *dense* group (``BaseModel.net_params``): no
     frequency scale, not perturbed unless ``net_pert`` (then by the dense rule), trained with ``lr_net``.
     We apply the same rule by dimension: every 1-dim table (``embedding_dim`` 1 would move the main
     tables too, as in the release) goes to the dense group.
  2. *Dense norm.* N is the gradient norm of the *last* embedding table (in field order) that has a
     gradient: ``first_step`` computes the global norm for the dense perturbation, but the embedding loop
     reassigns the same variable to each table's norm before the dense group is reached (a shadowed
     variable). Only if no table has a gradient does N stay the global norm.

  ``recdag`` -- this project's reading (its behaviour before the switch existed):

  1. The first-order tables are embedding tables of their field: they are the per-id weights whose
     Hessian eigenvalues the paper ties to feature frequency, so they get the frequency-scaled,
     per-table-norm perturbation and ``lr_embed`` like every other table.
  2. N is the global gradient norm over all parameters, the quantity the release computes for exactly
     this purpose (``_grad_norm``) before it is shadowed, and what SAM uses; dividing a dense
     perturbation by one unrelated table's norm makes its size depend on the field order and on that
     field's gradient. It is also far from ρ: on our DeepFM at initialisation (22 fields, batch 1024) the
     last table's gradient norm is ~340x smaller than the dense gradient's, so the release's dense
     perturbation is ~340 ρ long (its own ``conf/optim/Helen.yaml`` has ``net_pert: False``).

  On a model without first-order tables (DNN, PNN, DCN, DLRM, DCNv2) the two variants differ only through
  N, i.e. they are identical when ``net_pert`` is off. Both share everything else above (the counts, the
  clamp, the 1e-12, the first-pass gradient of unperturbed dense weights, the perturbed-point gradient of
  perturbed ones, Adam without clipping), and both cost the same. Not part of the step, hence not in the
  variants: the release's training loop logs the perturbed-point loss, our ``step`` returns the first-pass
  loss (what every rule returns); the L2 regularisers stay with the loop (the release too classifies its
  LR tables as embeddings there, by name, which is what :meth:`CTRModel.embedding_parameters` does).
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


HELEN_VARIANTS = ("release", "recdag")


class Helen(PlainAdam):
    """Frequency-aware sharpness-aware optimizer for CTR embeddings (see module docstring).

    ``field_tables`` lists ``(field, table)`` for every embedding table (a field may have several, e.g. its
    embedding and its first-order table); ``variant="release"`` moves the 1-dim ones to the dense group."""

    def __init__(self, field_tables: list[tuple[int, nn.Embedding]], net_params, *, lr_embed: float,
                 lr_net: float, rho: float, bound: float, net_pert: bool, variant: str = "recdag"):
        if variant not in HELEN_VARIANTS:
            raise ValueError(f"helen_variant: '{variant}' is not one of {', '.join(HELEN_VARIANTS)}")
        field_tables, net_params = list(field_tables), list(net_params)
        if variant == "release":            # models/base_model.py: embedding = last dim > 1; LR tables are dense
            dense = [t.weight for _, t in field_tables if t.weight.shape[-1] == 1]
            field_tables = [(f, t) for f, t in field_tables if t.weight.shape[-1] > 1]
            moved = {id(w) for w in dense}
            net_params = dense + [p for p in net_params if id(p) not in moved]
        self.field_tables = field_tables
        super().__init__([t.weight for _, t in field_tables], net_params, lr_embed=lr_embed, lr_net=lr_net,
                         clip_norm=0.0)
        self.rho, self.bound, self.net_pert, self.variant = rho, bound, net_pert, variant

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

    def _global_norm(self) -> torch.Tensor:
        grads = [p.grad for p in self._params() if p.grad is not None]
        return torch.norm(torch.stack([g.norm(2) for g in grads]), 2)

    def step(self, x: torch.Tensor, closure: Closure) -> torch.Tensor:
        net = [p for g in self.optimizer.param_groups if g.get("name") == "net" for p in g["params"]]
        x = self._global_batch(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss = closure()
        old_p: dict[torch.Tensor, torch.Tensor] = {}
        old_g: dict[torch.Tensor, torch.Tensor] = {}
        with torch.no_grad():
            last_table_norm = None
            for field, table in self.field_tables:
                w = table.weight
                if w.grad is None:
                    continue
                table_norm = w.grad.norm(2)
                last_table_norm = table_norm
                old_p[w] = w.detach().clone()
                e = w.grad * (self.rho / (table_norm + 1e-12))
                w.add_(e * self.freq_scale(x, field, w.shape[0]).unsqueeze(1).to(e.dtype))
            if self.net_pert:
                # release: the last table's norm (its shadowed variable); recdag: the global norm
                use_last = self.variant == "release" and last_table_norm is not None
                net_norm = last_table_norm if use_last else self._global_norm()
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
                    rho: float, bound: float, net_pert: bool, helen_variant: str, clip_norm: float):
    if name == "adam":
        return PlainAdam(embed_params, net_params, lr_embed=lr_embed, lr_net=lr_net, clip_norm=clip_norm)
    if name == "sam":
        return SAM(embed_params, net_params, lr_embed=lr_embed, lr_net=lr_net, rho=rho)
    if name == "helen":
        return Helen(field_tables, net_params, lr_embed=lr_embed, lr_net=lr_net, rho=rho, bound=bound,
                     net_pert=net_pert, variant=helen_variant)
    raise ValueError(f"optim.name: '{name}' is not one of adam, sam, helen")
