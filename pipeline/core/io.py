"""Atomic outputs, checksums, small JSON helpers.

Every stage writes its outputs through :func:`atomic_outputs`: files are written into temporary siblings
and renamed into place only when the whole stage succeeded, so a failed stage leaves no half-written out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class AtomicOutputs:
    """Hands out temporary paths for final paths; :meth:`commit` renames them all into place."""

    def __init__(self) -> None:
        self._pending: dict[Path, Path] = {}

    def dir(self, final: str | os.PathLike) -> Path:
        """A fresh empty temporary directory that becomes ``final`` on commit."""
        tmp = self._register(Path(final))
        tmp.mkdir(parents=True)
        return tmp

    def file(self, final: str | os.PathLike) -> Path:
        """A temporary file path (not created) that becomes ``final`` on commit."""
        return self._register(Path(final))

    def _register(self, final: Path) -> Path:
        if final in self._pending:
            raise ValueError(f"output {final} registered twice")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(final)
        self._pending[final] = tmp
        return tmp

    def commit(self) -> None:
        for final, tmp in self._pending.items():
            if not tmp.exists():
                raise FileNotFoundError(f"output {final} was registered but never written")
        for final, tmp in self._pending.items():
            if final.exists() or final.is_symlink():
                _remove(final)
            os.replace(tmp, final)
        self._pending.clear()

    def abort(self) -> None:
        for tmp in self._pending.values():
            _remove(tmp)
        self._pending.clear()


@contextlib.contextmanager
def atomic_outputs() -> Iterator[AtomicOutputs]:
    """``with atomic_outputs() as out: d = out.dir(final_dir); ...`` - all or nothing."""
    outs = AtomicOutputs()
    try:
        yield outs
    except BaseException:
        outs.abort()
        raise
    outs.commit()


def md5_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# Parquet writer options for string columns: a dictionary page large enough that high-cardinality fields
# (device_ip) stay dictionary-encoded, so readers get DictionaryArrays (read_dictionary) without re-hashing.
PARQUET_WRITE = {"dictionary_pagesize_limit": 1 << 27}


def parquet_reader(path, dictionary_columns=()):
    """A ParquetFile that streams (no whole-file pre-buffering) and returns ``dictionary_columns`` as
    DictionaryArrays taken straight from the file's dictionary pages."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False, read_dictionary=list(dictionary_columns) or None)


def row_group_batches(pf, columns=None) -> Iterator[pa.RecordBatch]:
    """One record batch per row group: a dictionary column's dictionary (per row group) is then seen once,
    not once per slice. Memory is bounded by the writer's row-group size (``batch_rows`` here)."""
    for i in range(pf.metadata.num_row_groups):
        table = pf.read_row_group(i, columns=columns)
        if table.num_rows:
            yield _combine(table.to_batches())


def rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Regroup a stream of (small) record batches into batches of at least ``rows`` rows (the last may be
    smaller). Readers use small blocks to keep memory flat; work happens on ``rows``-sized batches."""
    buf: list[pa.RecordBatch] = []
    n = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        buf.append(b)
        n += b.num_rows
        if n >= rows:
            yield _combine(buf)
            buf, n = [], 0
    if buf:
        yield _combine(buf)


def _combine(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
