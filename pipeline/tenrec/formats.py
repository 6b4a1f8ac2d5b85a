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
a row with the wrong number of fields, an empty, non-integer, negative or out-of-range value (ids, flags,
category, counts), bytes that are not UTF-8, or a truncated ``.gz`` is a DataError naming the file, the
1-based line (header = line 1) and the field. Accepted variants: ``<scenario>.csv.gz`` (gunzipped while
streaming; :func:`find_log` picks it when the plain name is absent), a UTF-8 BOM, spaces around the header's
names (values are read exactly as written), blank lines at the very end. Contiguity of users is checked by
:class:`UserChunker`, which regroups the stream into batches of whole users.
"""

from __future__ import annotations

import csv
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
from pipeline.core.io import input_stream, is_gz, open_text, read_first_line, reading

COLUMNS = ["user_id", "item_id", "click", "follow", "like", "share", "video_category", "watching_times",
           "gender", "age"]
BINARY = ("click", "follow", "like", "share")
MISSING = "\\N"
ORACLE_COLUMNS = ["p_click", "p_like_given_click"]
IDS = ("user_id", "item_id")
INT64_MAX = (1 << 63) - 1
GZIP_EXPECTED = "a complete gzip stream of Tenrec's CSV"


def csv_name(scenario: str) -> str:
    return f"{scenario}.csv"


def find_log(folder: str | Path, scenario: str, expected: str | None = None) -> Path:
    """``folder/<scenario>.csv``, or ``<scenario>.csv.gz`` when the plain file is absent; both present (which
    one is meant?) or neither is a DataError."""
    plain = Path(folder) / csv_name(scenario)
    gz = plain.with_name(plain.name + ".gz")
    if plain.exists() and gz.exists():
        raise DataError(plain, f"both {plain} and {gz} are present",
                        expected=f"only one of {plain.name} and {gz.name} (remove the other)")
    if gz.exists() and not plain.exists():
        plain = gz
    if not plain.is_file():
        raise DataError(plain, "not found",
                        expected=expected or f"Tenrec's {csv_name(scenario)} (or {csv_name(scenario)}.gz)")
    return plain


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
    """The header's names, stripped of spaces and quotes (a BOM is skipped, ``.gz`` gunzipped)."""
    line, _ = read_first_line(path)
    if not line.strip():
        raise DataError(path, "empty file", row=1, expected=f"the header {','.join(COLUMNS)}")
    if "\ufffd" in line:
        raise DataError(path, "header is not valid UTF-8 text", row=1, expected=",".join(COLUMNS))
    return [c.strip().strip('"').strip() for c in line.split(",")]


def check_header(path: Path) -> None:
    header = read_header(path)
    if header != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        problem = (f"missing column '{missing[0]}'" if missing else
                   f"unknown column '{extra[0]}'" if extra else "columns in the wrong order")
        raise DataError(path, f"wrong header: {problem}", row=1, field=(missing or extra or [None])[0],
                        expected=",".join(COLUMNS))


def _value_error(path: Path, batch: pa.RecordBatch, i: int, c: str, first_line: int) -> DataError:
    """Error path: the DataError for the value of field ``c`` on row ``i`` of ``batch`` (which failed the check)."""
    raw = pc.cast(batch.column(c), pa.binary())[i].as_py()
    expected = f"a non-negative integer or {MISSING}" if c == "video_category" else "a non-negative integer"
    row = first_line + i
    try:
        v = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return DataError(path, f"not valid UTF-8 text: {raw!r} (byte 0x{raw[e.start]:02x})", row=row, field=c,
                         expected=f"UTF-8 text, {expected}")
    if v == "":
        if all(batch.column(k)[i].as_py() == "" for k in COLUMNS):
            return DataError(path, "empty line", row=row, expected=f"{len(COLUMNS)} fields")
        return DataError(path, "empty value", row=row, field=c, expected=expected)
    if v[:1] == "-" and v[1:].isascii() and v[1:].isdigit():
        what = "negative id" if c in IDS else "negative value"
        return DataError(path, f"{what} {v}", row=row, field=c, expected=expected)
    if v.isascii() and v.isdigit():
        return DataError(path, f"out of range: {v}", row=row, field=c, expected="an integer below 2^63")
    return DataError(path, f"not an integer: {v!r}", row=row, field=c, expected=expected)


def _convert(path: Path, batch: pa.RecordBatch, first_line: int) -> dict[str, np.ndarray]:
    """The batch's columns as int64 (video_category: -1 = missing). Every value must be ASCII digits (the
    category may be ``\\N``); the first offending value (earliest row, then leftmost field) is the error."""
    first: tuple[int, int] | None = None
    for k, c in enumerate(COLUMNS):
        col = batch.column(c)
        ok = pc.ascii_is_decimal(col)
        if c == "video_category":
            ok = pc.or_(ok, pc.equal(col, MISSING))
        ok = pc.fill_null(ok, False)
        if not pc.all(ok).as_py():
            i = int(np.flatnonzero(~ok.to_numpy(zero_copy_only=False))[0])
            first = min(first, (i, k)) if first else (i, k)
    if first:
        raise _value_error(path, batch, first[0], COLUMNS[first[1]], first_line)
    cols = {}
    for c in COLUMNS:
        col = batch.column(c)
        if c == "video_category":
            col = pc.if_else(pc.equal(col, MISSING), pa.scalar("-1"), col)
        try:
            cols[c] = pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):         # digits only, so: beyond int64
            values = col.to_pylist()
            i = next(j for j, v in enumerate(values) if int(v) > INT64_MAX)
            raise _value_error(path, batch, i, c, first_line) from None
    _check_ranges(path, cols, first_line)
    return cols


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_ranges(path: Path, cols: dict[str, np.ndarray], first_line: int) -> None:
    """Value ranges (every value is already a non-negative integer: :func:`_convert`)."""
    for c in BINARY:
        bad = (cols[c] != 0) & (cols[c] != 1)
        if bad.any():
            i = _first_bad(bad)
            raise DataError(path, f"not binary: {cols[c][i]}", row=first_line + i, field=c, expected="0 or 1")
    for c, hi in (("gender", 2), ("age", 7)):
        bad = cols[c] > hi
        if bad.any():
            i = _first_bad(bad)
            raise DataError(path, f"out of range: {cols[c][i]}", row=first_line + i, field=c,
                            expected=f"0..{hi} (0 = missing)")
    bad = (cols["like"] == 1) & (cols["click"] == 0)
    if bad.any():
        i = _first_bad(bad)
        raise DataError(path, "a like on a row that is not a click", row=first_line + i, field="like",
                        expected="like = 1 only where click = 1")


ORACLE_EXPECTED = "the oracle sidecar of the log, written by tenrec_download (run `dvc repro tenrec_download`)"


def _oracle_batches(path: Path) -> Iterator[pa.RecordBatch]:
    with reading(path, ORACLE_EXPECTED):
        pf = pq.ParquetFile(path, pre_buffer=False)
        missing = [c for c in ORACLE_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(path, "missing column", field=missing[0], expected=ORACLE_EXPECTED)
        yield from pf.iter_batches(batch_size=1 << 16, columns=ORACLE_COLUMNS)


class _Aligned:
    """Pulls exactly n rows at a time from a batch iterator (the oracle sidecar, in step with the CSV)."""

    def __init__(self, path: Path, batches: Iterator[pa.RecordBatch]):
        self.path, self.it, self.buf, self.n = path, batches, [], 0

    def take(self, n: int, first_line: int) -> dict[str, np.ndarray]:
        while self.n < n:
            with reading(self.path, ORACLE_EXPECTED):
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
        with reading(self.path, ORACLE_EXPECTED):
            more = self.n or next(self.it, None) is not None
        if more:
            raise DataError(self.path, "has more rows than the log", expected="one row per log row")


def _locate_field_count(path: Path) -> tuple[int, int] | None:
    """Error path only: (1-based line, field count) of the first data row whose field count is not the
    header's, rescanning the file in Python (blank lines are rows of empty values, as for the reader)."""
    try:
        with open_text(path, errors="replace") as f:
            reader = csv.reader(f)
            next(reader, None)
            for fields in reader:
                if fields and len(fields) != len(COLUMNS):
                    return reader.line_num, len(fields)
    except (OSError, EOFError, csv.Error, ValueError):
        return None
    return None


# pyarrow's message for a row with the wrong field count. No Python ``invalid_row_handler`` is passed to the
# reader: its C++ side would own the callable, the reader's last reference can be dropped on a pyarrow worker
# thread during interpreter shutdown, and that thread's GIL request then ends in std::terminate ("terminate
# called without an active exception", ~1 % of runs; see pipeline/ctr/normalize.py). The error path rescans.
_FIELD_COUNT = re.compile(r"Expected (?P<expected>[0-9]+) columns, got (?P<got>[0-9]+)")


def _read_error(path: Path, e: Exception) -> DataError:
    """The DataError for an exception of the CSV reader (or of the gzip stream under it)."""
    text = (str(e).splitlines() or [type(e).__name__])[0]
    counts = _FIELD_COUNT.search(text)
    if counts:
        found = _locate_field_count(path)
        n = found[1] if found else int(counts["got"])
        return DataError(path, f"row has {n} field{'s' if n != 1 else ''}", row=found[0] if found else None,
                         expected=f"{len(COLUMNS)} fields as in the header")
    if is_gz(path) and (isinstance(e, (OSError, EOFError))
                        or any(w in text.lower() for w in ("compress", "gzip", "zlib", "inflate"))):
        return DataError(path, f"not a readable gzip file ({text})", expected=GZIP_EXPECTED)
    return DataError(path, f"malformed CSV ({text})", expected=f"Tenrec's CSV format, {len(COLUMNS)} fields per row")


def _trailing_empty(batch: pa.RecordBatch) -> int:
    """How many rows at the end of ``batch`` are blank lines (every field empty)."""
    n = batch.num_rows
    if batch.column(COLUMNS[0])[n - 1].as_py() != "":
        return 0
    empty = np.ones(n, bool)
    for c in COLUMNS:
        empty &= pc.equal(batch.column(c), "").to_numpy(zero_copy_only=False)
    return n - int(np.flatnonzero(~empty)[-1]) - 1 if not empty.all() else n


def _csv_batches(path: Path, block: int) -> Iterator[pa.RecordBatch]:
    """The data rows (header skipped, its names checked by :func:`check_header`) as string batches, one row
    per line after the header: blank lines are kept (as rows of empty values) so line numbers stay exact."""
    stream = input_stream(path)
    try:
        try:
            reader = pacsv.open_csv(
                stream, read_options=pacsv.ReadOptions(block_size=block, skip_rows=1, column_names=COLUMNS),
                parse_options=pacsv.ParseOptions(delimiter=",", ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS},
                                                     strings_can_be_null=False, quoted_strings_can_be_null=False,
                                                     check_utf8=False))
        except (pa.ArrowException, OSError, EOFError) as e:          # the first block is read on open
            raise _read_error(path, e) from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError, EOFError) as e:
                raise _read_error(path, e) from None
            yield batch
    finally:
        stream.close()


def iter_log(path: str | Path, batch_rows: int, oracle: str | Path | None = None) -> Iterator[LogBatch]:
    """Stream and validate a Tenrec video log (``.gz`` gunzipped on the fly). Memory: one ``batch_rows``
    batch (+ one oracle batch)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "not found", expected=f"Tenrec's {path.name}")
    check_header(path)
    block = max(1 << 16, min(1 << 26, batch_rows * 48))
    aligned = _Aligned(Path(oracle), _oracle_batches(Path(oracle))) if oracle else None
    line = 2                                    # file line of the next row
    blank_from = None                           # first line of a run of blank lines not yet followed by data
    seen = 0
    for batch in _csv_batches(path, block):
        n = batch.num_rows
        if n == 0:
            continue
        k = _trailing_empty(batch)
        if k < n and blank_from is not None:     # blank lines, then data: a blank line inside the log
            raise DataError(path, "empty line", row=blank_from, expected=f"{len(COLUMNS)} fields")
        if k < n:
            body = batch.slice(0, n - k) if k else batch
            cols = _convert(path, body, line)
            orc = aligned.take(body.num_rows, line) if aligned else None
            yield LogBatch(line, cols, orc)
            seen += body.num_rows
        if k:
            blank_from = blank_from or line + n - k
        line += n
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
