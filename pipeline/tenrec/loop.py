"""Glue between the Tenrec params and the one training loop (pipeline.core.train): the run config, the
step rule and the Trainer of a ``retrieval`` / ``ranking`` section, and what the stages report of a run.
(Under torchrun the evaluations shard their users with pipeline.core.dist.)"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.core.optim import PlainAdam
from pipeline.core.train import LoopConfig, LoopState, Task, Trainer


def loop_config(section, seed: int, max_steps: int = 0) -> LoopConfig:
    """A LoopConfig from a ``retrieval`` / ``ranking`` params section (evaluation once per epoch)."""
    return LoopConfig(epochs=section.epochs, batch_size=section.batch_size, eval_every_steps=0,
                      patience=section.patience, lr_decay=section.lr_decay, min_lr=section.min_lr,
                      checkpoint_every_steps=section.checkpoint_every_steps,
                      eval_batch_size=section.eval_batch_size, seed=seed, max_steps=max_steps)


def trainer(model: nn.Module, section, task: Task, *, seed: int, checkpoint_dir: Path, tb_dir: Path | None,
            max_steps: int = 0) -> Trainer:
    """The one loop over ``model`` with PlainAdam (one lr ``section.lr`` for the embedding tables of
    ``model.embedding_parameters()`` and the rest, grad-norm clipping ``section.clip_norm``)."""
    emb = model.embedding_parameters()
    emb_ids = {id(p) for p in emb}
    rule = PlainAdam(emb, [p for p in model.parameters() if id(p) not in emb_ids], lr_embed=section.lr,
                     lr_net=section.lr, clip_norm=section.clip_norm)
    return Trainer(model, rule, loop_config(section, seed, max_steps), embedding_params=emb,
                   checkpoint_dir=checkpoint_dir, tb_dir=tb_dir, task=task)


def best_valid(state: LoopState) -> dict:
    """The validation figures of the best evaluation (``valid_`` prefix dropped); {} before any."""
    best = max(state.history, key=lambda h: h["monitor"]) if state.history else {}
    return {k[len("valid_"):]: v for k, v in best.items() if k.startswith("valid_")}


def curve(state: LoopState, keys) -> list[dict]:
    """The training curve (one row per evaluation) restricted to ``keys`` (absent ones: None)."""
    return [{k: h.get(k) for k in keys} for h in state.history]
