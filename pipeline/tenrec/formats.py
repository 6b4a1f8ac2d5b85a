"""Tenrec's published file format and a validating streaming reader.

The video scenarios (QB-video.csv, QK-video.csv) are CSV with the header
``user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age``. There is no
timestamp: each user's rows are contiguous and in time order. Rows are exposures (click 0) and clicks;
follow/like/share are 0/1; gender is 0 (missing), 1 or 2; age 0..7 (0 = missing); video_category is an
integer or ``\\N`` (missing). ``watching_times`` is only non-zero for clicks (it leaks the label).

On synthetic data the download stage also writes ``<scenario>.oracle.parquet`` (``p_click``,
``p_like_given_click`` per CSV row, same order) and ``world.npz`` (the planted factors, so the oracle can
score any user/item pair, not only the logged ones).

:func:`iter_log` streams the CSV in ``batch_rows`` batches (pyarrow), validating each: a wrong header,
a non-integer or negative id, a non-binary flag or an out-of-range gender/age is a DataError naming the
file, the 1-based line (header = line 1) and the field. Contiguity of users is checked by
:class:`UserChunker`, which regroups the stream into batches of whole users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.errors import DataError

COLUMNS = ["user_id", "item_id", "click", "follow", "like", "share", "video_category", "watching_times",
           "gender", "age"]
INT_COLUMNS = [c for c in COLUMNS if c != "video_category"]
BINARY = ("click", "follow", "like", "share")
MISSING = "\\N"
ORACLE_COLUMNS = ["p_click", "p_like_given_click"]
_INT_RE = r"^-?[0-9]+$"


def csv_name(scenario: str) -> str:
    return f"{scenario}.csv"


def oracle_name(scenario: str) -> str:
    return f"{scenario}.oracle.parquet"


@dataclass
class LogBatch:
    first_line: int                     # file line of the batch's first row (header = 1)
    cols: dict[str, np.ndarray]         # int64 columns; video_category as int64 with -1 = missing
    oracle: dict[str, np.ndarray] | None

    def __len__(self) -> int:
        return len(self.cols["user_id"])

    def slice(self, a: int, b: int) -> "LogBatch":
        return LogBatch(self.first_line + a, {k: v[a:b] for k, v in self.cols.items()},
                        None if self.oracle is None else {k: v[a:b] for k, v in self.oracle.items()})

    @staticmethod
    def concat(parts: list["LogBatch"]) -> "LogBatch":
        if len(parts) == 1:
            return parts[0]
        cols = {k: np.concatenate([p.cols[k] for p in parts]) for k in parts[0].cols}
        oracle = None if parts[0].oracle is None else {
            k: np.concatenate([p.oracle[k] for p in parts]) for k in parts[0].oracle}
        return LogBatch(parts[0].first_line, cols, oracle)


def read_header(path: Path) -> list[str]:
    with open(path, "rb") as f:
        line = f.readline().decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    if not line:
        raise DataError(path, "empty file", row=1, expected=f"the header {','.join(COLUMNS)}")
    return [c.strip().strip('"') for c in line.split(",")]


def check_header(path: Path) -> None:
    header = read_header(path)
    if header != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        problem = (f"missing column '{missing[0]}'" if missing else
                   f"unknown column '{extra[0]}'" if extra else "columns in the wrong order")
        raise DataError(path, f"wrong header: {problem}", row=1, field=(missing or extra or [None])[0],
                        expected=",".join(COLUMNS))


def _locate_bad_value(path: Path, batch: pa.RecordBatch, first_line: int) -> DataError:
    """Slow path after a failed conversion: find the first row/field that is not an integer."""
    for c in INT_COLUMNS:
        col = batch.column(c)
        ok = pc.match_substring_regex(col, _INT_RE)
        bad = pc.invert(pc.fill_null(ok, False))
        if pc.any(bad).as_py():
            i = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
            return DataError(path, f"not an integer: {col[i].as_py()!r}", row=first_line + i, field=c,
                             expected="a non-negative integer")
    cat = batch.column("video_category")
    ok = pc.or_(pc.match_substring_regex(cat, _INT_RE), pc.equal(cat, MISSING))
    bad = pc.invert(pc.fill_null(ok, False))
    if pc.any(bad).as_py():
        i = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        return DataError(path, f"not an integer: {cat[i].as_py()!r}", row=first_line + i, field="video_category",
                         expected=f"an integer or {MISSING}")
    return DataError(path, "could not parse the batch", row=first_line, expected="Tenrec's CSV format")


def _convert(path: Path, batch: pa.RecordBatch, first_line: int) -> dict[str, np.ndarray]:
    cols = {}
    try:
        for c in INT_COLUMNS:
            cols[c] = pc.cast(batch.column(c), pa.int64()).to_numpy(zero_copy_only=False)
        cat = batch.column("video_category")
        missing = pc.fill_null(pc.equal(cat, MISSING), True)
        cat = pc.cast(pc.if_else(missing, pa.scalar("-1"), cat), pa.int64())
        cols["video_category"] = cat.to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _locate_bad_value(path, batch, first_line) from None
    _check_ranges(path, cols, first_line)
    return cols


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_ranges(path: Path, cols: dict[str, np.ndarray], first_line: int) -> None:
    for c in ("user_id", "item_id"):
        bad = cols[c] < 0
        if bad.any():
            i = _first_bad(bad)
            raise DataError(path, f"negative id {cols[c][i]}", row=first_line + i, field=c,
                            expected="a non-negative integer")
    for c in BINARY:
        bad = (cols[c] != 0) & (cols[c] != 1)
        if bad.any():
            i = _first_bad(bad)
            raise DataError(path, f"not binary: {cols[c][i]}", row=first_line + i, field=c, expected="0 or 1")
    for c, hi in (("gender", 2), ("age", 7)):
        bad = (cols[c] < 0) | (cols[c] > hi)
        if bad.any():
            i = _first_bad(bad)
            raise DataError(path, f"out of range: {cols[c][i]}", row=first_line + i, field=c,
                            expected=f"0..{hi} (0 = missing)")
    bad = cols["watching_times"] < 0
    if bad.any():
        i = _first_bad(bad)
        raise DataError(path, "negative watching_times", row=first_line + i, field="watching_times",
                        expected=">= 0")
    bad = (cols["like"] == 1) & (cols["click"] == 0)
    if bad.any():
        i = _first_bad(bad)
        raise DataError(path, "a like on a row that is not a click", row=first_line + i, field="like",
                        expected="like = 1 only where click = 1")


def _oracle_batches(path: Path) -> Iterator[pa.RecordBatch]:
    pf = pq.ParquetFile(path, pre_buffer=False)
    missing = [c for c in ORACLE_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise DataError(path, "missing column", field=missing[0], expected="the oracle sidecar of the log")
    yield from pf.iter_batches(batch_size=1 << 16, columns=ORACLE_COLUMNS)


class _Aligned:
    """Pulls exactly n rows at a time from a batch iterator (the oracle sidecar, in step with the CSV)."""

    def __init__(self, path: Path, batches: Iterator[pa.RecordBatch]):
        self.path, self.it, self.buf, self.n = path, batches, [], 0

    def take(self, n: int, first_line: int) -> dict[str, np.ndarray]:
        while self.n < n:
            b = next(self.it, None)
            if b is None:
                raise DataError(self.path, f"has fewer rows than the log (ends before log line {first_line + self.n})",
                                expected="one row per log row")
            self.buf.append(b)
            self.n += b.num_rows
        t = pa.Table.from_batches(self.buf)
        head, rest = t.slice(0, n), t.slice(n)
        self.buf = rest.to_batches() if rest.num_rows else []
        self.n -= n
        return {c: head.column(c).to_numpy().astype(np.float64) for c in ORACLE_COLUMNS}

    def finish(self) -> None:
        if self.n or next(self.it, None) is not None:
            raise DataError(self.path, "has more rows than the log", expected="one row per log row")


def iter_log(path: str | Path, batch_rows: int, oracle: str | Path | None = None) -> Iterator[LogBatch]:
    """Stream and validate a Tenrec video log. Memory: one ``batch_rows`` batch (+ one oracle batch)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "not found", expected=f"Tenrec's {path.name}")
    check_header(path)
    block = max(1 << 16, min(1 << 26, batch_rows * 48))
    reader = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=block),
        parse_options=pacsv.ParseOptions(delimiter=","),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False))
    aligned = _Aligned(Path(oracle), _oracle_batches(Path(oracle))) if oracle else None
    line = 2
    seen = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as e:
            m = re.search(r"[Rr]ow #(\d+)", str(e))
            raise DataError(path, f"malformed CSV: {str(e).splitlines()[0]}",
                            row=int(m.group(1)) if m else None, expected=f"{len(COLUMNS)} fields per row") from None
        if batch.num_rows == 0:
            continue
        cols = _convert(path, batch, line)
        orc = aligned.take(batch.num_rows, line) if aligned else None
        yield LogBatch(line, cols, orc)
        line += batch.num_rows
        seen += batch.num_rows
    if seen == 0:
        raise DataError(path, "no data rows (header only)", row=2, expected="at least one row")
    if aligned:
        aligned.finish()


class UserChunker:
    """Regroups a validated stream into batches of whole users (a user's rows never span two chunks) and
    checks that every user's rows are contiguous: a user id that reappears after another user's rows is a
    DataError naming the line where it reappears."""

    def __init__(self, path: Path, min_rows: int):
        self.path, self.min_rows = Path(path), min_rows
        self.seen: set[int] = set()

    def _check(self, b: LogBatch) -> None:
        u = b.cols["user_id"]
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        runs = u[starts]
        uniq, first = np.unique(runs, return_index=True)
        if len(uniq) != len(runs):                           # a user with two runs inside this chunk
            dup_pos = np.setdiff1d(np.arange(len(runs)), first)[0]
            i = starts[dup_pos]
            raise DataError(self.path, f"user {int(u[i])} reappears after other users' rows", row=b.first_line + i,
                            field="user_id", expected="each user's rows contiguous (Tenrec: rows in time order per user)")
        again = np.fromiter((int(r) in self.seen for r in runs), bool, len(runs)) if self.seen else np.zeros(len(runs), bool)
        if again.any():
            i = starts[_first_bad(again)]
            raise DataError(self.path, f"user {int(u[i])} reappears after other users' rows", row=b.first_line + i,
                            field="user_id", expected="each user's rows contiguous (Tenrec: rows in time order per user)")
        self.seen.update(int(r) for r in runs)

    def chunks(self, batches: Iterator[LogBatch]) -> Iterator[LogBatch]:
        carry: list[LogBatch] = []
        n = 0
        for b in batches:
            carry.append(b)
            n += len(b)
            if n < self.min_rows:
                continue
            whole = LogBatch.concat(carry)
            u = whole.cols["user_id"]
            last_start = int(np.flatnonzero(np.r_[True, u[1:] != u[:-1]])[-1])
            if last_start == 0:                               # one user so far: keep accumulating
                carry, n = [whole], len(whole)
                continue
            done, rest = whole.slice(0, last_start), whole.slice(last_start, len(whole))
            self._check(done)
            yield done
            carry, n = [rest], len(rest)
        if carry:
            whole = LogBatch.concat(carry)
            self._check(whole)
            yield whole
