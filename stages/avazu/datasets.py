"""Where each encoded dataset's splits come from (the sample and vocab stages resolve them from params)."""

from __future__ import annotations

from pathlib import Path

from pipeline.ctr.splits import sample_name
from stages.avazu.common import NORMALIZED, SAMPLE, SPLIT


def source_splits(layouts, split_valid_sources: list[str], source: str) -> dict[str, Path]:
    """Where each split of a (base) source lives after normalize / split_valid, resolved from params."""
    norm = NORMALIZED / source
    splits = {s: norm / f"{s}.parquet" for s in layouts[source].splits}
    if source in split_valid_sources:
        splits.update(train=SPLIT / source / "train.parquet", valid=SPLIT / source / "valid.parquet")
    return {s: splits[s] for s in ("train", "valid", "test") if s in splits}


def all_datasets(a, layouts) -> dict[str, dict[str, Path]]:
    """Every dataset the vocab stage encodes: the base sources, then their samples (``a``: the avazu
    params, reading ``sources``, ``split_valid.sources`` and ``sample``)."""
    out = {s: source_splits(layouts, a.split_valid.sources, s) for s in a.sources}
    for s in a.sample.sources:
        out[sample_name(s, a.sample.frac)] = {sp: SAMPLE / s / f"{sp}.parquet" for sp in ("train", "valid")
                                              if sp in out[s]}
    return out
