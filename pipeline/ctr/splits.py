"""Seeded, click-stratified row subsets of a parquet split: the x2 valid split and the 20% samples.

Only the label column is held in memory (1 byte per row) to draw the subset; rows are then streamed
batch by batch into the output file(s), keeping their order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from pipeline.core.errors import DataError
from pipeline.core.io import parquet_reader, PARQUET_WRITE, read_table
from pipeline.core.seeding import derive_seed
from pipeline.ctr.schema import LABEL


def stratified_mask(labels: np.ndarray, frac: float, seed: int, name: str) -> np.ndarray:
    """Boolean mask selecting round(frac * n) rows, click-stratified, deterministic in (seed, name)."""
    n = len(labels)
    if n < 2:
        raise ValueError(f"cannot split {n} rows")
    stratify = labels if np.bincount(labels, minlength=2).min() >= 2 else None
    _, chosen = train_test_split(np.arange(n), test_size=frac, stratify=stratify,
                                 random_state=derive_seed(seed, name) % 2**32)
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return mask


def read_labels(path) -> np.ndarray:
    try:
        return read_table(path, columns=[LABEL]).column(LABEL).to_numpy().astype(np.int8)
    except (OSError, pa.ArrowInvalid, KeyError) as e:
        raise DataError(path, f"cannot read the label column ({e})", expected="a normalized Avazu parquet") from None


def write_subsets(src, mask: np.ndarray, out_selected, out_rest=None, batch_rows: int = 262_144) -> tuple[int, int]:
    """Stream ``src`` rows where mask is True into ``out_selected`` and the others into ``out_rest``."""
    pf = parquet_reader(src)
    if pf.metadata.num_rows != len(mask):
        raise DataError(src, f"has {pf.metadata.num_rows} rows, the mask {len(mask)}")
    w_sel = pq.ParquetWriter(out_selected, pf.schema_arrow, **PARQUET_WRITE)
    w_rest = pq.ParquetWriter(out_rest, pf.schema_arrow, **PARQUET_WRITE) if out_rest is not None else None
    start = n_sel = n_rest = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            m = pa.array(mask[start:start + batch.num_rows])
            start += batch.num_rows
            sel = batch.filter(m)
            w_sel.write_batch(sel)
            n_sel += sel.num_rows
            if w_rest is not None:
                rest = batch.filter(pc.invert(m))
                w_rest.write_batch(rest)
                n_rest += rest.num_rows
    finally:
        w_sel.close()
        if w_rest is not None:
            w_rest.close()
    return n_sel, n_rest


def sample_name(source: str, frac: float) -> str:
    """``x1`` + 0.2 -> ``x1_sample20``; 0.125 -> ``x1_sample12.5``."""
    return f"{source}_sample{frac * 100:g}"
