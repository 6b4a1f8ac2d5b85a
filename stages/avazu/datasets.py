"""Where each encoded dataset's splits come from (the sample and vocab stages resolve them from params)."""

from __future__ import annotations

from pathlib import Path

from pipeline.ctr.splits import sample_name
from stages.avazu.common import ALIGNED, NORMALIZED, SAMPLE, SPLIT

ALIGNABLE = ("x1", "x2")


def base_dir(source: str, sources: list[str], align: bool) -> Path:
    """A source's published splits: aligned to x4's tokens (x1 / x2 when ``avazu.align`` and x4 is used),
    else as normalized."""
    return ALIGNED / source if align and source in ALIGNABLE and "x4" in sources else NORMALIZED / source


def source_splits(layouts, a, source: str) -> dict[str, Path]:
    """Where each split of a (base) source lives after normalize / align / split_valid, resolved from the
    avazu params ``a`` (``sources``, ``align``, ``split_valid.sources``)."""
    norm = base_dir(source, a.sources, a.align)
    splits = {s: norm / f"{s}.parquet" for s in layouts[source].splits}
    if source in a.split_valid.sources:
        splits.update(train=SPLIT / source / "train.parquet", valid=SPLIT / source / "valid.parquet")
    return {s: splits[s] for s in ("train", "valid", "test") if s in splits}


def all_datasets(a, layouts) -> dict[str, dict[str, Path]]:
    """Every dataset the vocab stage encodes: the base sources, then their samples (``a``: the avazu
    params, reading ``sources``, ``align``, ``split_valid.sources`` and ``sample``)."""
    out = {s: source_splits(layouts, a, s) for s in a.sources}
    for s in a.sample.sources:
        out[sample_name(s, a.sample.frac)] = {sp: SAMPLE / s / f"{sp}.parquet" for sp in ("train", "valid")
                                              if sp in out[s]}
    return out
