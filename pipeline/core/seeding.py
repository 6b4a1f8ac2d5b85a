"""Determinism from one seed: every consumer derives its own stream from (seed, name)."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(seed: int, *names: str) -> int:
    """A stable 63-bit seed for a named sub-stream (independent of Python's hash randomisation)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(names)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def rng(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *names))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if installed) torch global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)
