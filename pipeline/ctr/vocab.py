"""One vocabulary per field (FuxiCTR semantics) and int32 encoding of every split.

FuxiCTR's tokenizer: index 0 is ``__PAD__``; tokens seen at least ``min_count`` times in the training
splits get 1..n ordered by count (descending) then token (ascending), so the result is deterministic;
``__OOV__`` is n + 1 and takes every token outside the vocabulary (and nulls, e.g. x1's unknown weekday).
Counting and encoding stream over parquet row groups (read ahead on a thread, :mod:`pipeline.core.prefetch`;
the fields of a row group are counted / encoded on a small thread pool: pyarrow's kernels release the GIL;
the encoded file is written while the next row group is encoded);
memory is bounded by the number of distinct tokens.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.io import parquet_reader, row_group_batches
from pipeline.core.prefetch import prefetch
from pipeline.ctr.schema import LABEL, ORACLE, TIME_FIELDS

log = logging.getLogger(__name__)

PAD, OOV = "__PAD__", "__OOV__"
_COMPACT_AT = 1_000_000   # merge partial counts once this many (token, count) rows are buffered: the
                          # per-row-group parts never exceed ~1M rows beyond the merged counts
THREADS = max(1, min(4, os.cpu_count() or 1))   # fields counted / encoded at once


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="recdag-vocab")


def _as_tokens(col: pa.ChunkedArray | pa.Array, field: str) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return pc.cast(col, pa.string()) if field in TIME_FIELDS else col


def _dictionary(col, field: str) -> tuple[pa.Array, np.ndarray]:
    """(distinct tokens, code per row) with nulls coded as len(tokens). Dictionary columns read straight
    from parquet are used as they are; anything else is dictionary-encoded here."""
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(_as_tokens(col, field))
    values = col.dictionary
    codes = pc.fill_null(col.indices, len(values)).to_numpy(zero_copy_only=False)
    return values, codes


def _group_sum(tables: list[pa.Table]) -> pa.Table:
    t = pa.concat_tables(tables)
    return t.group_by("token").aggregate([("count", "sum")]).rename_columns(["token", "count"])


class TokenCounter:
    """Streaming per-field token counts (nulls are not tokens)."""

    def __init__(self, fields):
        self.fields = tuple(fields)
        self._parts: dict[str, list[pa.Table]] = {f: [] for f in self.fields}
        self._buffered = {f: 0 for f in self.fields}

    @staticmethod
    def _count(col, f: str) -> pa.Table:
        values, codes = _dictionary(col, f)
        counts = np.bincount(codes, minlength=len(values) + 1)[:len(values)]
        seen = counts > 0
        return pa.table({"token": values.cast(pa.string()).filter(pa.array(seen)),
                         "count": pa.array(counts[seen], pa.int64())})

    def update(self, batch: pa.RecordBatch, pool: ThreadPoolExecutor | None = None) -> None:
        cols = [batch.column(f) for f in self.fields]
        parts = pool.map(self._count, cols, self.fields) if pool is not None else map(self._count, cols, self.fields)
        for f, part in zip(self.fields, parts):
            self._parts[f].append(part)
            self._buffered[f] += part.num_rows
            if self._buffered[f] > _COMPACT_AT:
                merged = _group_sum(self._parts[f])
                self._parts[f], self._buffered[f] = [merged], merged.num_rows

    def result(self) -> dict[str, pa.Table]:
        empty = pa.table({"token": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        return {f: _group_sum(self._parts[f] or [empty]) for f in self.fields}


def count_file(path: Path, fields, batch_rows: int) -> dict[str, pa.Table]:
    counter = TokenCounter(fields)
    pf = parquet_reader(path, [f for f in fields if f not in TIME_FIELDS])
    with tqdm(total=pf.metadata.num_rows, desc=f"count {Path(path).parent.name}/{Path(path).stem}",
              unit="rows", unit_scale=True, disable=None) as bar:
        with _pool() as pool:
            for batch in prefetch(row_group_batches(pf, list(fields)), 1):
                counter.update(batch, pool)
                bar.update(batch.num_rows)
    return counter.result()


def merge_counts(parts: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    fields = parts[0].keys()
    return {f: _group_sum([p[f] for p in parts]) for f in fields}


@dataclass
class FieldVocab:
    tokens: pa.Array        # index i + 1 -> tokens[i]
    counts: pa.Array

    @property
    def size(self) -> int:   # PAD + tokens + OOV
        return len(self.tokens) + 2

    @property
    def oov_index(self) -> int:
        return len(self.tokens) + 1


def build_vocab(counts: dict[str, pa.Table], min_count: int) -> dict[str, FieldVocab]:
    vocab = {}
    for f, t in counts.items():
        kept = t.filter(pc.greater_equal(t["count"], min_count))
        order = pc.sort_indices(kept, sort_keys=[("count", "descending"), ("token", "ascending")])
        kept = kept.take(order)
        vocab[f] = FieldVocab(kept["token"].combine_chunks(), kept["count"].combine_chunks())
    return vocab


class Encoder:
    """token -> int32 index per field. Only each row group's distinct values (its dictionary) are looked
    up, then the rows take their value's index. The lookup is Arrow's hash lookup (``pc.index_in``: no
    Python string per token, the GIL released, fields on a thread pool) where the field's vocabulary is at
    most :data:`DICT_LOOKUP_AT` times the row group's distinct values; ``pc.index_in`` builds its hash
    table from the vocabulary on every call, so for a vocabulary much larger than that (device_ip of the
    real 40 M rows) a Python dict built once per field is cheaper (linear in the rows, not in
    row groups x vocabulary)."""

    DICT_LOOKUP_AT = 8

    def __init__(self, vocab: dict[str, FieldVocab]):
        self.vocab = vocab
        self._tokens = {f: v.tokens.cast(pa.string()) for f, v in vocab.items()}   # index i + 1 -> tokens[i]
        self._index: dict[str, dict[str, int]] = {}                                # built on first use

    def _dict_index(self, field: str) -> dict[str, int]:
        index = self._index.get(field)
        if index is None:
            index = self._index[field] = {t: i for i, t in enumerate(self._tokens[field].to_pylist(), 1)}
        return index

    def encode_column(self, col, field: str) -> tuple[np.ndarray, int]:
        """-> (int32 ids, number of OOV values) for one column."""
        values, codes = _dictionary(col, field)
        values = values.cast(pa.string())
        oov = self.vocab[field].oov_index
        table = np.empty(len(values) + 1, np.int32)
        if len(self._tokens[field]) <= self.DICT_LOOKUP_AT * max(1, len(values)):
            position = pc.index_in(values, value_set=self._tokens[field])             # null: not in vocab
            table[:-1] = pc.fill_null(pc.add(position, 1), oov).to_numpy(zero_copy_only=False)
        else:
            lookup = self._dict_index(field).get
            table[:-1] = np.fromiter(map(lookup, values.to_numpy(zero_copy_only=False), repeat(oov)), np.int32,
                                     len(values))
        table[-1] = oov                                                             # last slot: null
        ids = table[codes]
        return ids, int(np.count_nonzero(ids == oov))

    def encode_file(self, src: Path, dst: Path, batch_rows: int) -> dict:
        """Encode one normalized split into int32 parquet; returns rows, OOV counts and label/oracle sums."""
        fields = list(self.vocab)
        pf = parquet_reader(src, [f for f in fields if f not in TIME_FIELDS])
        has_oracle = ORACLE in pf.schema_arrow.names
        schema = pa.schema([pa.field(LABEL, pa.int8())] + [pa.field(f, pa.int32()) for f in fields]
                           + ([pa.field(ORACLE, pa.float32())] if has_oracle else []))
        oov = {f: 0 for f in fields}
        rows = clicks = 0
        labels, oracle = [], []
        bar = tqdm(total=pf.metadata.num_rows, desc=f"encode {Path(src).parent.name}/{Path(src).stem}",
                   unit="rows", unit_scale=True, disable=None)

        def encoded(pool):
            """The encoded row groups, in order (made on a read-ahead thread while this one writes)."""
            for batch in prefetch(row_group_batches(pf), 1):
                cols = [batch.column(LABEL)]
                for f, (ids, n_oov) in zip(fields, pool.map(self.encode_column, [batch.column(f) for f in fields],
                                                            fields)):
                    oov[f] += n_oov
                    cols.append(pa.array(ids, pa.int32()))
                if has_oracle:
                    cols.append(batch.column(ORACLE))
                    labels.append(batch.column(LABEL).to_numpy())
                    oracle.append(batch.column(ORACLE).to_numpy())
                yield pa.record_batch(cols, schema=schema)

        # the int32 parquet write (a third of the time, one thread) overlaps the next row group's lookups
        with pq.ParquetWriter(dst, schema, use_dictionary=[LABEL], compression="lz4") as w, bar, _pool() as pool:
            for out in prefetch(encoded(pool), 1):
                w.write_batch(out)
                rows += out.num_rows
                bar.update(out.num_rows)
                clicks += int(pc.sum(out.column(LABEL)).as_py() or 0)
        out = {"rows": rows, "clicks": clicks, "oov": oov}
        if has_oracle:
            out["labels"], out["oracle"] = np.concatenate(labels), np.concatenate(oracle)
        return out


def coverage(target: pa.Table, seen: pa.Table) -> dict:
    """Share of ``target``'s tokens that occur in ``seen``: by distinct token and by occurrence."""
    n_distinct = target.num_rows
    total = pc.sum(target["count"]).as_py() or 0
    if n_distinct == 0:
        return {"distinct": None, "occurrence": None}
    hit = pc.is_in(target["token"], value_set=seen["token"].combine_chunks())
    return {"distinct": pc.sum(pc.cast(hit, pa.int64())).as_py() / n_distinct,
            "occurrence": (pc.sum(pc.if_else(hit, target["count"], 0)).as_py() or 0) / total}


def feature_map(vocab: dict[str, FieldVocab], dataset: str, min_count: int) -> dict:
    """A FuxiCTR-style feature map: fields in input order with vocab size, padding and OOV indices."""
    return {
        "dataset_id": dataset,
        "num_fields": len(vocab),
        "total_features": int(sum(v.size for v in vocab.values())),
        "input_length": len(vocab),
        "min_count": min_count,
        "labels": [LABEL],
        "features": [{"name": f, "type": "categorical", "dtype": "int32", "vocab_size": v.size,
                      "padding_idx": 0, "oov_idx": v.oov_index} for f, v in vocab.items()],
    }


def vocab_table(vocab: dict[str, FieldVocab]) -> pa.Table:
    """All fields' vocabularies in one table (field, index, token, count) including PAD and OOV rows."""
    parts = []
    for f, v in vocab.items():
        n = len(v.tokens)
        parts.append(pa.table({
            "field": pa.array([f] * (n + 2)),
            "index": pa.array(np.arange(n + 2, dtype=np.int32)),
            "token": pa.concat_arrays([pa.array([PAD]), v.tokens.cast(pa.string()), pa.array([OOV])]),
            "count": pa.concat_arrays([pa.array([0], pa.int64()), v.counts, pa.array([0], pa.int64())]),
        }))
    return pa.concat_tables(parts)
