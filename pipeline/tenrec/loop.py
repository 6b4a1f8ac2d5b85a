"""Glue between the Tenrec params and the one training loop (pipeline.core.train)."""

from __future__ import annotations

from pipeline.core.train import LoopConfig, run_key  # noqa: F401  (re-exported for the stages)


def loop_config(section, seed: int, max_steps: int = 0) -> LoopConfig:
    """A LoopConfig from a ``retrieval`` / ``ranking`` params section (evaluation once per epoch)."""
    return LoopConfig(epochs=section.epochs, batch_size=section.batch_size, eval_every_steps=0,
                      patience=section.patience, lr_decay=section.lr_decay, min_lr=section.min_lr,
                      checkpoint_every_steps=section.checkpoint_every_steps,
                      eval_batch_size=section.eval_batch_size, seed=seed, max_steps=max_steps)
