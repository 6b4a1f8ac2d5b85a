"""The fast data path: encoded int32 parquet loaded once into contiguous tensors, batches by slicing a
seeded permutation (no per-row ``Dataset.__getitem__`` + collate).

Sharding for DDP follows ``DistributedSampler``: one permutation per (seed, epoch) shared by all ranks,
padded to a multiple of the world size, rank ``r`` takes ``perm[r::world]``; so at step ``i`` the union of
the ranks' batches is exactly the single-process global batch ``i`` and ``set_epoch``-style reshuffling
comes from the epoch in the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.core.errors import DataError
from pipeline.core.seeding import derive_seed
from pipeline.core.io import parquet_reader


@dataclass
class TensorData:
    x: torch.Tensor                 # int32 [N, F], contiguous
    y: torch.Tensor                 # float32 [N]
    oracle: torch.Tensor | None     # float32 [N] true click probability (synthetic data only)
    name: str = ""

    def __len__(self) -> int:
        return self.x.shape[0]

    @classmethod
    def from_parquet(cls, paths: Path | list[Path], features: list[str], label: str = "label",
                     oracle: str = "p_oracle", name: str = "") -> "TensorData":
        """Read one or more encoded parquet files (concatenated) row group by row group into preallocated
        arrays: peak memory is the tensors plus one row group."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        files = [parquet_reader(p) for p in paths]
        for p, f in zip(paths, files):
            missing = [c for c in (label, *features) if c not in f.schema_arrow.names]
            if missing:
                raise DataError(p, "missing column", field=missing[0],
                                expected=f"an int32 parquet with columns {label!r} and {len(features)} features")
        has_oracle = all(oracle in f.schema_arrow.names for f in files)
        n = sum(f.metadata.num_rows for f in files)
        x = np.empty((n, len(features)), dtype=np.int32)
        y = np.empty(n, dtype=np.float32)
        o = np.empty(n, dtype=np.float32) if has_oracle else None
        at = 0
        for f in files:
            for i in range(f.metadata.num_row_groups):
                t = f.read_row_group(i, columns=[label, *features] + ([oracle] if has_oracle else []))
                k = t.num_rows
                for j, c in enumerate(features):
                    x[at:at + k, j] = t.column(c).to_numpy()
                y[at:at + k] = t.column(label).to_numpy()
                if o is not None:
                    o[at:at + k] = t.column(oracle).to_numpy()
                at += k
        return cls(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(o) if o is not None else None,
                   name=name)

    def select(self, keep) -> "TensorData":
        """The rows where boolean ``keep`` is True, in order."""
        idx = torch.from_numpy(np.flatnonzero(np.asarray(keep, dtype=bool)))
        return TensorData(self.x.index_select(0, idx).contiguous(), self.y.index_select(0, idx),
                          None if self.oracle is None else self.oracle.index_select(0, idx), name=self.name)

    def subsample(self, rows: int, seed: int) -> "TensorData":
        """A seeded sample of ``rows`` rows without replacement, kept in file order (all rows when
        ``rows`` is 0 or at least ``len(self)``)."""
        if rows <= 0 or rows >= len(self):
            return self
        g = torch.Generator().manual_seed(derive_seed(seed, "subsample", str(rows)) % 2**63)
        keep = np.zeros(len(self), dtype=bool)
        keep[torch.randperm(len(self), generator=g)[:rows].numpy()] = True
        return self.select(keep)

    def permutation(self, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
        if not shuffle:
            return torch.arange(len(self))
        g = torch.Generator().manual_seed(derive_seed(seed, "batches", str(epoch)) % 2**63)
        return torch.randperm(len(self), generator=g)

    def shard(self, order: torch.Tensor, rank: int, world: int, pad: bool) -> torch.Tensor:
        if world == 1:
            return order
        if pad:                                      # DistributedSampler: every rank gets the same count
            total = -(-len(order) // world) * world
            order = torch.cat([order, order[: total - len(order)]])
        return order[rank::world]

    def batches(self, batch_size: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True,
                rank: int = 0, world: int = 1, start_step: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (x int32 [b, F], y float32 [b], row indices) for this rank, from ``start_step`` on.
        ``batch_size`` is per rank; the last batch may be smaller."""
        order = self.shard(self.permutation(seed, epoch, shuffle), rank, world, pad=shuffle)
        for i in range(start_step * batch_size, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx), idx

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        per_rank = -(-len(self) // world)
        return -(-per_rank // batch_size)
