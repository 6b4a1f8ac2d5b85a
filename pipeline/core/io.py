"""Atomic outputs, checksums, checked readers of JSON / parquet / checkpoints / raw text inputs.

Every stage writes its outputs through :func:`atomic_outputs`: files are written into temporary siblings
and renamed into place only when the whole stage succeeded, so a failed stage leaves no half-written out.
The temporary sibling of ``dir/out`` is ``dir/.out.tmp-<pid>-<hex>``: hidden, and listed in ``.dvcignore``
(``.*.tmp-*``), so a killed stage's leftovers are never hashed into a downstream stage's dependency; a
stage removes the leftovers of dead processes beside its outputs when it starts (:func:`clean_stale_tmp`).

Every reader here turns a missing, empty, truncated or malformed file into a :class:`DataError` naming the
file and what was expected (the CLI prints it as one line, exit code 2), never a library traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from pipeline.core.errors import DataError

log = logging.getLogger(__name__)

UPSTREAM = "the output of its upstream stage (run `dvc repro` to build it)"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)(-[0-9a-f]+)?$")


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>-…`` leftovers in ``folder`` whose process is gone (a killed stage);
    returns what was removed. Temporaries of live processes (a concurrent run) are left alone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if m and not _pid_alive(int(m["pid"])):
            _remove(p)
            removed.append(p)
    if removed:
        log.info("removed %d stale temporary output(s) of killed runs in %s", len(removed), folder)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class AtomicOutputs:
    """Hands out temporary paths for final paths; :meth:`commit` renames them all into place."""

    def __init__(self) -> None:
        self._pending: dict[Path, Path] = {}
        self._created: list[Path] = []      # parent folders this run created (removed again on abort if empty)

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
        created = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        self._created += [p for p in created if p not in self._created]
        clean_stale_tmp(final.parent)
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
        for d in sorted(self._created, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()                   # only if still empty
        self._created.clear()


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


def read_json(path: str | os.PathLike, expected: str = UPSTREAM):
    """The JSON value in ``path``; a DataError if it is missing, empty, not UTF-8 or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(path, "not found", expected=expected) from None
    except IsADirectoryError:
        raise DataError(path, "is a directory", expected=expected) from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text (byte {e.start})", expected=expected) from None
    if not text.strip():
        raise DataError(path, "file is empty", expected=expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg} (column {e.colno})", row=e.lineno,
                        expected=expected) from None


def json_field(obj, key: str, path, types=None, expected: str | None = None):
    """``obj[key]`` of a JSON object read from ``path``; a DataError naming the field if it is absent
    (or not of ``types``)."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(path, "missing field", field=key, expected=expected or UPSTREAM)
    value = obj[key]
    if types is not None and not isinstance(value, types):
        raise DataError(path, f"field has the wrong type ({type(value).__name__})", field=key,
                        expected=expected or UPSTREAM)
    return value


@contextlib.contextmanager
def reading(path: str | os.PathLike, expected: str = UPSTREAM, what: str = "parquet file") -> Iterator[None]:
    """Turn the errors of reading ``path`` with a library (a missing, truncated or schema-broken parquet
    file, an unreadable stream) into one DataError naming it; ours pass through unchanged."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(path, "not found", expected=expected) from None
    except (pa.ArrowException, OSError, EOFError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(path, f"not a readable {what} ({reason})", expected=expected) from None


def read_table(path: str | os.PathLike, columns=None, expected: str = UPSTREAM, **kw) -> pa.Table:
    """``pyarrow.parquet.read_table`` with checked errors; a requested column that is absent is a
    DataError naming it."""
    import pyarrow.parquet as pq

    with reading(path, expected):
        if columns is not None:
            require_columns(path, pq.read_schema(path).names, columns, expected)
        return pq.read_table(path, columns=columns, **kw)


def require_columns(path, names, columns, expected: str = UPSTREAM) -> None:
    """DataError naming the first of ``columns`` missing from ``names`` (a parquet schema's names)."""
    for c in columns:
        if c not in names:
            raise DataError(path, "missing column", field=c, expected=expected)


def load_weights(path: str | os.PathLike, *, map_location="cpu", kind: str = "weights",
                 expected: str = UPSTREAM):
    """``torch.load(path, weights_only=True)`` with checked errors: a missing, empty, truncated or
    non-tensor (pickled object) file is a DataError naming it; never advice to drop ``weights_only``."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "not found", expected=expected)
    if path.stat().st_size == 0:
        raise DataError(path, f"{kind} file is empty (0 bytes)", expected=expected)
    try:
        return torch.load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError:
        raise DataError(path, f"{kind} file holds objects other than tensors and plain containers; the "
                              "safe loader refused it", expected=expected) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise DataError(path, f"{kind} file is truncated or not a torch file ({reason})",
                        expected=expected) from None


GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


def is_gz(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".gz")


def check_compression(path: str | os.PathLike) -> None:
    """A DataError for gzip bytes under a name without ``.gz`` (they would read as garbage columns)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head == GZIP_MAGIC and not is_gz(path):
        raise DataError(path, "is gzip-compressed but its name does not end in .gz",
                        expected=f"uncompressed text, or the same bytes named {Path(path).name}.gz (read "
                                 "transparently)")


def input_stream(path: str | os.PathLike):
    """A pyarrow input stream of ``path``, gunzipped on the fly when the name ends in ``.gz`` (streaming:
    memory does not grow with the file). Gzip bytes under another name are a DataError."""
    check_compression(path)
    return pa.input_stream(str(path), compression="gzip" if is_gz(path) else None)


def open_text(path: str | os.PathLike, errors: str = "strict"):
    """A text handle on ``path`` (``.gz`` gunzipped), UTF-8 with a leading BOM skipped (``utf-8-sig``)."""
    import gzip

    check_compression(path)
    if is_gz(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors=errors, newline="")
    return open(path, encoding="utf-8-sig", errors=errors, newline="")


def read_first_line(path: str | os.PathLike) -> tuple[str, bool]:
    """(first line without its line end, whether it began with a UTF-8 BOM); ``.gz`` is gunzipped.
    A truncated or corrupt gzip stream is a DataError."""
    import gzip
    import zlib

    check_compression(path)
    try:
        if is_gz(path):
            with gzip.open(path, "rb") as f:
                raw = f.readline()
        else:
            with open(path, "rb") as f:
                raw = f.readline()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(path, f"not a readable gzip file ({e})",
                        expected="a complete gzip stream of CSV text") from None
    bom = raw.startswith(UTF8_BOM)
    if bom:
        raw = raw[len(UTF8_BOM):]
    return raw.decode("utf-8", errors="replace").rstrip("\r\n"), bom


# Parquet writer options for string columns: a dictionary page large enough that high-cardinality fields
# (device_ip) stay dictionary-encoded, so readers get DictionaryArrays (read_dictionary) without re-hashing.
PARQUET_WRITE = {"dictionary_pagesize_limit": 1 << 27}


def parquet_reader(path, dictionary_columns=()):
    """A ParquetFile that streams (no whole-file pre-buffering) and returns ``dictionary_columns`` as
    DictionaryArrays taken straight from the file's dictionary pages."""
    import pyarrow.parquet as pq

    with reading(path):
        return pq.ParquetFile(path, pre_buffer=False, read_dictionary=list(dictionary_columns) or None)


def row_group_batches(pf, columns=None) -> Iterator[pa.RecordBatch]:
    """One record batch per row group: a dictionary column's dictionary (per row group) is then seen once,
    not once per slice. Memory is bounded by the writer's row-group size (``batch_rows`` here)."""
    for i in range(pf.metadata.num_row_groups):
        table = pf.read_row_group(i, columns=columns)
        if table.num_rows:
            yield _combine(table.to_batches())


def rebatch(batches: Iterable[pa.RecordBatch], rows: int, combine: bool = True,
            exact: bool = False) -> Iterator[pa.RecordBatch | pa.Table]:
    """Regroup a stream of (small) record batches into batches of at least ``rows`` rows (the last may be
    smaller). Readers use small blocks to keep memory flat; work happens on ``rows``-sized batches.
    ``combine=False`` yields each group as a zero-copy ``pa.Table`` of its batches instead of copying them
    into one record batch (for work that takes chunked columns, e.g. a parquet write). ``exact=True``
    yields exactly ``rows`` rows per group (zero-copy slices; the last may be smaller), so the groups do
    not depend on how the input happened to be blocked."""
    join = _combine if combine else pa.Table.from_batches
    buf: list[pa.RecordBatch] = []
    n = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        buf.append(b)
        n += b.num_rows
        if n >= rows and not exact:
            yield join(buf)
            buf, n = [], 0
        while n >= rows and exact:
            table = pa.Table.from_batches(buf)
            yield join(table.slice(0, rows).to_batches())
            buf, n = [r for r in table.slice(rows).to_batches() if r.num_rows], n - rows
    if buf:
        yield join(buf)


def _combine(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
