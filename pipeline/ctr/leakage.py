"""Leak control for the cross-source Avazu protocol: which training rows are x4 valid/test events.

reczoo's Avazu_x1, x2 and x4 each hold all 40,428,967 rows of Kaggle's train.csv, re-split. Once
``avazu_align`` has mapped x1/x2 ids back to x4's raw tokens, a row of an x1/x2 split carries the same values
as the x4 row of the same event, so the seed's protocol (train LLM-CTR on x1/x2 samples, evaluate on x4
test) trains on most of its test rows. This module finds them.

**What "the same event" means.** Two rows are the same event when they are equal in the 21 categorical
fields, ``hour_of_day`` and ``label`` (:func:`event_columns`): the columns every aligned source carries
(x1 has no date, so ``weekday`` / ``is_weekend`` are not compared; ``p_oracle`` is synthetic-only).

**Row hashes** (:func:`row_hashes`): one ``uint64`` per row, streamed over the parquet file in
``batch_rows`` batches (bounded memory: the output array plus one batch). The hash is a function of the
row's *values* only, never of the file's layout, and never Python's ``hash()`` (salted per process):

* every value is taken in its text form (Arrow's cast to string: ``int8 5``, ``int64 5`` and ``"5"`` are one
  value; a dictionary-encoded column hashes like its decoded values), and hashed as
  ``v = splitmix64(fnv1a64(utf8 bytes))``; a null is the constant :data:`NULL_HASH` (≠ the empty string);
* the row: ``h = ROW_SEED``, then for each column in the given order ``h = splitmix64(h XOR v_col)``.

FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) and the splitmix64 finaliser
(Steele et al.; constants 0xbf58476d1ce4e5b9, 0x94d049bb133111eb, shifts 30/27/31) are fixed, so the same
row hashes to the same number in any file, process, machine or batch layout (tested, with pinned values).
Two distinct rows collide with probability ~2^-64 per pair (~4e-5 expected pairs among 40.4 M rows).

**Duplicates and the exclusion rule** (:func:`leaked_mask`). Real Avazu has exact duplicate rows: distinct
events that look identical in these 23 columns. A hash cannot tell them apart, so the rule is
*conservative*: a training row is excluded if its hash occurs in the evaluation rows (x4 valid ∪ test) at
all. It never keeps a leaked row; it may drop a few identical-looking distinct events. :func:`leak_report`
counts both sides: per (training set, evaluation split) the rows excluded (``leaked_rows``) and, of those,
``excess_rows = Σ_h max(0, n_train(h) − n_eval(h))`` -- rows that *cannot* all be the evaluation events
(each event occurs once per source, so at most ``n_eval(h)`` training copies of hash ``h`` are the
evaluation's own rows): the price of the conservative rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.errors import DataError
from pipeline.core.io import parquet_reader, read_table
from pipeline.ctr.schema import LABEL

__all__ = [
    "EVENT_TIME", "NULL_HASH", "ROW_SEED", "HASH_NAME", "event_columns", "value_hashes", "row_hashes",
    "leaked_mask", "leak_report", "write_kept", "mask_source", "event_mask", "record_masks",
]

EVENT_TIME = "hour_of_day"
HASH_NAME = "fnv1a64-splitmix64-v1"       # recorded in reports; change it if the algorithm ever changes

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
ROW_SEED = np.uint64(0x9E3779B97F4A7C15)      # the golden-ratio constant: the hash of a row with no columns
NULL_HASH = np.uint64(0x6E756C6C6E756C6C)     # "nullnull": the value hash of a null


def event_columns(fields: Sequence[str]) -> tuple[str, ...]:
    """The columns that identify an event: the 21 categorical ``fields`` (in order), ``hour_of_day``, ``label``."""
    return (*fields, EVENT_TIME, LABEL)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _text_hashes(values: pa.Array) -> np.ndarray:
    """``splitmix64(fnv1a64(utf8))`` of each value of a string-castable array; nulls -> NULL_HASH."""
    values = pc.cast(values, pa.large_string()) if values.type != pa.large_string() else values
    n = len(values)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    _, off_buf, data_buf = values.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64, count=n + 1, offset=values.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")                 # longest first: live strings are a prefix
    starts, lengths = starts[order], lengths[order]
    neg = -lengths                                                # ascending
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    for pos in range(int(lengths[0])):
        live = int(np.searchsorted(neg, -pos, side="left"))      # strings longer than pos
        h[:live] = (h[:live] ^ data[starts[:live] + pos].astype(np.uint64)) * _FNV_PRIME
    out[order] = _splitmix64(h)
    nulls = values.is_null().to_numpy(zero_copy_only=False)
    if nulls.any():
        out[nulls] = NULL_HASH
    return out


def _value_table(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(hashes of the distinct values ``[k + 1]``, the last one NULL_HASH; codes ``[n]`` into them)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)               # hash each distinct value once
    table = np.append(_text_hashes(column.dictionary), NULL_HASH)
    codes = pc.fill_null(column.indices, len(column.dictionary))
    return table, codes.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def value_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The value hash ``[n] uint64`` of each entry of one column (see the module docstring): the same value
    gives the same hash whatever its Arrow type width or dictionary encoding."""
    table, codes = _value_table(column)
    return table[codes]


def row_hashes(path: str | Path, fields: Sequence[str], batch_rows: int = 1 << 20) -> np.ndarray:
    """One stable ``uint64`` per row of the parquet file ``path`` over the columns ``fields`` (in that
    order; normally :func:`event_columns`).

    Streams one row group at a time, string columns read as DictionaryArrays straight from the file's
    dictionary pages (:func:`pipeline.core.io.parquet_reader`), so each row group's distinct values are
    hashed once; rows are then combined ``batch_rows`` at a time. Memory: the output (8 bytes a row), one
    row group of the requested columns and ``batch_rows``-sized work arrays. A missing column or an
    unreadable file is a DataError naming the file."""
    from pipeline.core.io import parquet_reader

    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    fields = list(fields)
    if not fields:
        raise ValueError("row_hashes needs at least one column")
    path = Path(path)
    schema = parquet_reader(path).schema_arrow              # a DataError naming the file if unreadable
    for f in fields:
        if f not in schema.names:
            raise DataError(path, "missing column", field=f, expected=f"the columns {fields}")
    texts = [f for f in fields if pa.types.is_string(schema.field(f).type) or pa.types.is_large_string(
        schema.field(f).type)]
    pf = parquet_reader(path, dictionary_columns=texts)
    out = np.empty(pf.metadata.num_rows, dtype=np.uint64)
    at, step = 0, int(batch_rows)
    for rg in range(pf.metadata.num_row_groups):
        group = pf.read_row_group(rg, columns=fields, use_threads=False)
        prepared = [_value_table(group.column(f)) for f in fields]
        del group
        n = len(prepared[0][1])
        for lo in range(0, n, step):
            h = np.full(min(step, n - lo), ROW_SEED, dtype=np.uint64)
            for table, codes in prepared:
                h = _splitmix64(h ^ table[codes[lo:lo + step]])
            out[at + lo:at + lo + len(h)] = h
        at += n
    if at != len(out):
        raise DataError(path, f"read {at} rows but the footer declares {len(out)}")
    return out


def _as_hashes(hashes) -> np.ndarray:
    if isinstance(hashes, np.ndarray):
        arrs = [hashes]
    else:
        arrs = list(hashes)
    arrs = [np.asarray(a) for a in arrs]
    for a in arrs:
        if a.dtype != np.uint64 or a.ndim != 1:
            raise ValueError(f"expected 1-d uint64 row hashes, got {a.dtype} of shape {a.shape}")
    return arrs[0] if len(arrs) == 1 else np.concatenate(arrs)


def leaked_mask(train_hashes: np.ndarray, eval_hashes, chunk: int = 1 << 22) -> np.ndarray:
    """``mask[i]`` is True where training row ``i``'s hash occurs among ``eval_hashes`` (one array, or a
    sequence of arrays such as [x4 valid, x4 test]) at all: the conservative exclusion rule (every
    identical-looking row goes, see the module docstring). Memory: the distinct eval hashes plus one
    ``chunk`` of training rows."""
    train = _as_hashes(train_hashes)
    ev = np.unique(_as_hashes(eval_hashes))
    mask = np.zeros(len(train), dtype=bool)
    if len(ev) == 0:
        return mask
    for lo in range(0, len(train), chunk):
        part = train[lo:lo + chunk]
        pos = np.minimum(np.searchsorted(ev, part), len(ev) - 1)
        mask[lo:lo + chunk] = ev[pos] == part
    return mask


def _counts(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(hashes, return_counts=True)


def _share(a: int, b: int) -> float:
    return float(a) / b if b else 0.0


def leak_report(train_sets: Mapping[str, np.ndarray], eval_splits: Mapping[str, np.ndarray]) -> dict:
    """Counts per training set and per (training set, evaluation split), JSON-safe.

    ``train_sets`` maps a name (e.g. ``"x1_sample20/train"``) to its row hashes, ``eval_splits`` a name
    (``"x4/valid"``, ``"x4/test"``) to its row hashes. Per evaluation split: ``rows``, ``distinct``,
    ``duplicate_rows`` (rows − distinct). Per training set: ``rows``, ``distinct``, ``duplicate_rows``,
    ``excluded_rows`` / ``excluded_share`` (hash in any evaluation split: what the leak-free protocol
    drops, :func:`leaked_mask`), ``kept_rows``, and ``by_eval[<split>]``:

    * ``leaked_rows`` / ``leaked_share``: training rows whose hash occurs in that split (all excluded);
    * ``eval_rows_in_train`` / ``eval_share_in_train``: that split's rows whose hash occurs in the
      training set (the seed protocol's "test rows seen in training");
    * ``paired_rows`` = Σ_h min(n_train(h), n_eval(h)): at most this many leaked rows are the split's own
      events; ``excess_rows`` = leaked_rows − paired_rows: excluded rows that are certainly *other*
      (identical-looking) events, dropped by the conservative rule.
    """
    ev_counts = {}
    report: dict = {"hash": HASH_NAME,
                    "rule": "a training row is excluded if its hash occurs in any evaluation split at all",
                    "eval": {}, "train": {}}
    for name, h in eval_splits.items():
        h = _as_hashes(h)
        u, c = _counts(h)
        ev_counts[name] = (u, c)
        report["eval"][name] = {"rows": int(len(h)), "distinct": int(len(u)), "duplicate_rows": int(len(h) - len(u))}
    all_eval = [_as_hashes(h) for h in eval_splits.values()]
    for name, h in train_sets.items():
        h = _as_hashes(h)
        n = int(len(h))
        u, c = _counts(h)
        excluded = int(leaked_mask(h, all_eval).sum()) if all_eval else 0
        entry = {"rows": n, "distinct": int(len(u)), "duplicate_rows": int(n - len(u)),
                 "excluded_rows": excluded, "excluded_share": _share(excluded, n), "kept_rows": n - excluded,
                 "by_eval": {}}
        for ev_name, (eu, ec) in ev_counts.items():
            _, it, ie = np.intersect1d(u, eu, assume_unique=True, return_indices=True)
            ct, ce = c[it], ec[ie]
            leaked, in_train = int(ct.sum()), int(ce.sum())
            paired = int(np.minimum(ct, ce).sum())
            n_eval = report["eval"][ev_name]["rows"]
            entry["by_eval"][ev_name] = {
                "leaked_rows": leaked, "leaked_share": _share(leaked, n),
                "eval_rows_in_train": in_train, "eval_share_in_train": _share(in_train, n_eval),
                "paired_rows": paired, "excess_rows": leaked - paired,
            }
        report["train"][name] = entry
    return report


def write_kept(src: str | Path, dst: str | Path, keep: np.ndarray, batch_rows: int = 1 << 20) -> int:
    """Stream ``src`` to ``dst`` (parquet, same schema) keeping the rows where ``keep`` is True; returns
    the rows written. ``dst`` should be a temporary path of the calling stage (atomic outputs)."""
    import pyarrow.parquet as pq

    from pipeline.core.io import PARQUET_WRITE

    keep = np.asarray(keep, dtype=bool)
    pf = parquet_reader(src)
    if len(keep) != pf.metadata.num_rows:
        raise DataError(src, f"has {pf.metadata.num_rows} rows but the keep mask has {len(keep)}")
    at = written = 0
    with pq.ParquetWriter(dst, pf.schema_arrow, **PARQUET_WRITE) as w:
        for batch in pf.iter_batches(batch_size=int(batch_rows), use_threads=False):
            part = batch.filter(pa.array(keep[at:at + batch.num_rows]))
            at += batch.num_rows
            if part.num_rows:
                w.write_batch(part)
                written += part.num_rows
        if written == 0:
            w.write_table(pf.schema_arrow.empty_table())
    return written


def mask_source(path: str | Path) -> str:
    """How :func:`event_mask` decides for this file: ``paired_rows`` when avazu_align paired its rows with
    x4's (the ``x4_split`` column), else ``row_hash``."""
    import pyarrow.parquet as pq

    from pipeline.ctr.align import X4_SPLIT

    return "paired_rows" if X4_SPLIT in pq.read_schema(path).names else "row_hash"


def event_mask(path: str | Path, hashes: np.ndarray, eval_hashes, eval_splits=("valid", "test")) -> np.ndarray:
    """True for the rows of ``path`` that are x4 valid / test events. Rows avazu_align paired with an x4 row
    (column ``x4_split``) are decided by that pairing — exact even where x2's rare bucket hides the raw
    tokens; the other rows (x4's own splits, unpaired rows) by the conservative hash rule
    (:func:`leaked_mask`)."""
    import pyarrow.parquet as pq

    from pipeline.ctr.align import X4_SPLIT

    mask = leaked_mask(hashes, eval_hashes)
    if X4_SPLIT not in pq.read_schema(path).names:
        return mask
    col = read_table(path, columns=[X4_SPLIT]).column(X4_SPLIT).combine_chunks()
    col = col.dictionary_decode() if pa.types.is_dictionary(col.type) else col
    paired = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False))
    in_eval = np.asarray(pc.fill_null(pc.is_in(col, value_set=pa.array(list(eval_splits))), False)
                         .to_numpy(zero_copy_only=False))
    return np.where(paired, in_eval, mask)


def record_masks(report: dict, masks: Mapping[str, np.ndarray], decided_by: Mapping[str, str]) -> dict:
    """Put the masks actually applied into a :func:`leak_report`: per training set ``excluded_rows`` /
    ``excluded_share`` / ``kept_rows`` become the mask's (what the leak-free protocol drops), ``excluded_by``
    says how it decided (:func:`mask_source`), and the hash rule's own count stays beside it as
    ``hash_rule_excluded_rows``. The two differ where the pairing decides: x2's rare bucket hides raw
    tokens, so an x2 row and its x4 event hash differently and the hash rule alone under-counts."""
    for name, m in masks.items():
        entry = report["train"][name]
        n, k = int(len(m)), int(np.asarray(m).sum())
        if n != entry["rows"]:
            raise ValueError(f"{name}: mask of {n} rows for {entry['rows']} hashed rows")
        entry["hash_rule_excluded_rows"] = entry["excluded_rows"]
        entry.update(excluded_rows=k, excluded_share=_share(k, n), kept_rows=n - k, excluded_by=decided_by[name])
    report["rule"] = ("a training row is excluded if avazu_align paired it with an x4 valid / test row, or, for "
                      "rows not paired, if its hash occurs in any evaluation split at all")
    return report
