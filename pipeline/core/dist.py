"""Evaluation under torchrun: which rows a rank scores and how the shards come back together.

Training shards its batches inside the one loop (pipeline.core.train); an evaluation that ranks users or
scores candidates splits its rows into contiguous shards (:func:`shard_range`), each rank computes its
shard, and :func:`gather_rows` puts the shards back in rank order on every rank, so every rank ends with
the metrics of the whole split (one process: the rows themselves, no process group needed).
"""

from __future__ import annotations

import numpy as np
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(n: int, rank: int = 0, world: int = 1) -> tuple[int, int]:
    """The contiguous rows ``[lo, hi)`` of ``n`` that rank ``rank`` of ``world`` evaluates (sizes differ by
    at most one; all of them for one process)."""
    per, extra = divmod(n, world)
    lo = rank * per + min(rank, extra)
    return lo, lo + per + (1 if rank < extra else 0)


def my_shard(n: int) -> tuple[int, int]:
    """:func:`shard_range` of this process."""
    return shard_range(n, *rank_world())


def gather_rows(part: np.ndarray) -> np.ndarray:
    """Every rank's ``part`` (its :func:`shard_range` rows), concatenated in rank order on every rank; the
    array itself without a process group."""
    _, world = rank_world()
    if world == 1:
        return part
    parts: list = [None] * world
    dist.all_gather_object(parts, part)
    return np.concatenate(parts)
