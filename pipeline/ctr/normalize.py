"""normalize: one reczoo Avazu layout (x1, x2 or x4) -> the unified schema, as parquet, streaming.

The CSV is read in pieces (memory is bounded by a few pieces, not the file): an uncompressed file in
line-aligned chunks of :data:`CSV_CHUNK` bytes, each parsed by pyarrow's multi-threaded reader, a ``.gz``
streamed block by block; both on a read-ahead thread. Each ``batch_rows`` rows are validated, their
columns renamed through the declared layout, their time decoded into hour_of_day / weekday /
is_weekend, and appended to a parquet file as one row group (exactly ``batch_rows`` rows, the last one
fewer, however the input was cut). Any problem is a :class:`DataError` naming the
file, the 1-based line (header = line 1) and the field.

Accepted as they are: ``<split>.csv.gz`` in place of ``<split>.csv`` (gunzipped while streaming; both
present is an error), a UTF-8 byte-order mark, spaces after the header's commas. Refused with a DataError:
gzip bytes under a ``.csv`` name, a truncated ``.gz``, invalid UTF-8 (the line and column are found by a
rescan on the error path only), an hour that is not a real date and hour (``14023000``: Feb 30), a file
whose ``format: auto`` hours mix 8-digit YYMMDDHH and 6-digit YYDDHH (the first data row decides the
width), and, with ``out_of_window="error"``, an hour outside the layout's declared date window
(``window_start`` / ``window_end``; ``"warn"`` keeps such rows and logs their count once per file).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import logging
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.errors import DataError
from pipeline.core.io import (PARQUET_WRITE, check_compression, input_stream, is_gz, open_text, read_first_line,
                               reading, rebatch)
from pipeline.core.prefetch import prefetch
from pipeline.ctr.schema import Layout, TimeSpec, normalized_schema, split_file

log = logging.getLogger(__name__)

LABEL_VALUES = pa.array(["0", "1", "0.0", "1.0"])
_DIGITS = r"^[0-9]+$"
_INT = r"^-?[0-9]+$"
CSV_BLOCK = 8 << 20   # bytes per CSV read block of a streamed (.gz) file: memory stays bounded by a few blocks
                      # (bench/avazu_etl.py: 1 MiB blocks took 15 % longer, per-block overhead; 16 MiB no faster)
READ_AHEAD = 2        # CSV chunks (or streamed blocks) parsed ahead on the prefetch thread
CSV_CHUNK = 32 << 20  # an uncompressed CSV is read and parsed this many bytes at a time ...
PARSE_BLOCK = 1 << 20 # ... each chunk by pyarrow's multi-threaded reader, in blocks of this size
# statistics (per-column min / max of every row group) are never read back; they were ~27 % of the write
NORMALIZED_WRITE = {**PARQUET_WRITE, "write_statistics": False}


def read_header(path: Path) -> list[str]:
    """The header of a CSV file (``.gz`` gunzipped, a UTF-8 BOM and spaces around the names stripped);
    DataError for a missing or empty file, a file without a header, or gzip bytes under a ``.csv`` name."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", expected="the split's CSV file (<split>.csv or <split>.csv.gz)")
    first, _bom = read_first_line(path)
    if not first.strip():
        raise DataError(path, "file is empty", expected="a CSV header line followed by data rows", row=1)
    return [c.strip().strip('"').strip() for c in first.split(",")]


def line_chunks(path: Path, chunk_bytes: int = CSV_CHUNK) -> Iterator[pa.Buffer]:
    """The data rows of an uncompressed CSV (everything after its header line), read ``chunk_bytes`` at a
    time and cut into pieces that end at a line end (the last piece may lack one; a row longer than a
    chunk makes a longer piece). Cutting at any ``\\n`` is the reader's own rule: pyarrow's CSV parser does
    not allow newlines inside quoted values (``ParseOptions.newlines_in_values`` is False), so a row
    never spans two pieces. Plain reads, not a memory map: a map's touched pages would stay in the
    process's resident memory, growing with the file. A piece is a view of its read, not a copy (a row's
    tail beyond the last line end is read again with the next piece)."""
    with open(path, "rb") as f:
        f.readline()                                        # the header line
        while data := f.read(chunk_bytes):
            cut = data.rfind(b"\n") + 1
            if len(data) < chunk_bytes or cut == 0:         # the file's end, or a row longer than a chunk:
                yield pa.py_buffer(data + f.readline())     # up to that row's end (nothing more at the end)
                continue
            f.seek(cut - len(data), 1)                      # the next read starts at the next row
            yield pa.py_buffer(memoryview(data)[:cut])      # a view of the read: no copy


def check_header(path: Path, header: list[str], layout: Layout) -> TimeSpec:
    """Match the header against the declared layout (or its alternative time encoding); return the time spec."""
    candidates = [layout.time] + ([layout.alternative_time] if layout.alternative_time else [])
    for time in candidates:
        if set(header) == set(layout.expected_columns(time)) and len(header) == len(set(header)):
            return time
    expected = layout.expected_columns(layout.time)
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise DataError(path, "duplicate column in the header", row=1, field=dupes[0])
    missing = [c for c in expected if c not in header]
    # a header that fits the alternative time encoding but lacks something else: report against that one
    if layout.alternative_time and any(c not in header for c in layout.time.columns):
        expected = layout.expected_columns(layout.alternative_time)
        missing = [c for c in expected if c not in header]
    if missing:
        raise DataError(path, "missing column", row=1, field=missing[0],
                        expected=f"the Avazu_{layout.name} columns {', '.join(expected)}")
    extra = [c for c in header if c not in expected]
    raise DataError(path, "unknown extra column", row=1, field=extra[0],
                    expected=f"only the Avazu_{layout.name} columns {', '.join(expected)}")


# pyarrow's message for a row with the wrong field count. No Python ``invalid_row_handler`` is given to the
# reader to catch that row: pyarrow's C++ reader would own the callable, the last reference to the reader can
# be dropped on one of pyarrow's worker threads, and a worker that needs the GIL while the interpreter is
# finalising is ended by pthread_exit inside a noexcept destructor -> std::terminate ("terminate called
# without an active exception", ~1 % of runs, after the outputs were committed). The error path rescans.
_FIELD_COUNT = re.compile(r"Expected (?P<expected>[0-9]+) columns, got (?P<got>[0-9]+)")


def _locate_bad_row(path: Path, n_fields: int) -> int | None:
    """Error path only: the 1-based line of the first row whose field count differs from the header's."""
    try:
        with open_text(path, errors="replace") as f:
            reader = csv.reader(f)
            for row in reader:
                if len(row) != n_fields:
                    return reader.line_num
    except (OSError, EOFError, csv.Error):
        return None
    return None


_SURROGATE = re.compile("[\udc80-\udcff]")


def _locate_bad_utf8(path: Path, header: list[str], columns) -> tuple[int, str] | None:
    """Error path only: (1-based line, column name) of the first field of ``columns`` holding bytes that
    are not UTF-8 (a rescan with Python; the normal path never pays for it)."""
    wanted = {i for i, c in enumerate(header) if c in set(columns)}
    try:
        with open_text(path, errors="surrogateescape") as f:
            reader = csv.reader(f)
            next(reader, None)                                      # the header (matched already)
            for row in reader:
                if _SURROGATE.search("".join(row)):
                    for i, v in enumerate(row):
                        if i in wanted and _SURROGATE.search(v):
                            return reader.line_num, header[i]
    except (OSError, EOFError, csv.Error):
        return None
    return None


def _first_false(mask: pa.Array) -> int | None:
    mask = pc.fill_null(mask, False)
    if pc.all(mask).as_py():
        return None
    return int(pc.index(mask, False).as_py())


class _Sidecar:
    """Row-aligned reader of an oracle sidecar (one column ``p_click``), consumed in step with the CSV."""

    def __init__(self, path: Path, block_size: int):
        self.path = path
        header = read_header(path)
        if header != ["p_click"]:
            raise DataError(path, f"unexpected header {header}", row=1, expected="one column 'p_click'")
        with reading(path, expected="one float column p_click", what="CSV file"):
            self.reader = pacsv.open_csv(
                input_stream(path), read_options=pacsv.ReadOptions(block_size=block_size, column_names=header,
                                                                   skip_rows=1),
                convert_options=pacsv.ConvertOptions(column_types={"p_click": pa.float32()}))
        self.buf: list[pa.Array] = []
        self.n = 0

    def _next(self):
        with reading(self.path, expected="one float column p_click", what="CSV file"):
            return self.reader.read_next_batch()

    def take(self, k: int) -> pa.Array:
        while self.n < k:
            try:
                batch = self._next()
            except StopIteration:
                raise DataError(self.path, f"has fewer rows than its CSV (ran out after {self.n} buffered)",
                                expected="one p_click per data row of the CSV") from None
            self.buf.append(batch.column(0))
            self.n += batch.num_rows
        arr = pa.concat_arrays(self.buf)
        self.buf, self.n = [arr.slice(k)], len(arr) - k
        return arr.slice(0, k)

    def finish(self) -> None:
        if self.n:
            raise DataError(self.path, "has more rows than its CSV", expected="one p_click per data row")
        while True:
            try:
                batch = self._next()
            except StopIteration:
                return
            if batch.num_rows:
                raise DataError(self.path, "has more rows than its CSV", expected="one p_click per data row")


def _bad_time(path, row0, field, value, expected):
    return DataError(path, f"hour value '{value}' is in an unknown format", row=row0, field=field,
                     expected=expected)


_WIDTH_OF = {"yymmddhh": 8, "yyddhh": 6}
_FORMAT_TEXT = {8: "8-digit YYMMDDHH", 6: "6-digit YYDDHH"}


class _TimeState:
    """What one file's datetime decoding carries from batch to batch: the width the first data row chose
    (``format: auto``) and, with ``out_of_window: warn``, the rows outside the declared date window."""

    def __init__(self, spec: TimeSpec, path: Path, out_of_window: str | None):
        if out_of_window not in (None, "error", "warn"):
            raise ValueError(f"out_of_window must be error, warn or None, not {out_of_window!r}")
        self.spec, self.path, self.mode = spec, path, out_of_window
        self.width = _WIDTH_OF.get(spec.format)    # None: auto, not decided yet
        self.width_row: int | None = None           # auto: the data row that decided the width
        self.outside = 0                            # warn: rows outside the window so far
        self.first_outside: tuple[int, str] | None = None
        window = spec.window if out_of_window else None
        self.window = None if window is None else (
            pa.scalar(dt.datetime.combine(window[0], dt.time()), pa.timestamp("s")),
            pa.scalar(dt.datetime.combine(window[1] + dt.timedelta(days=1), dt.time()), pa.timestamp("s")))

    def format_text(self) -> str:
        if self.width is None:
            return "8-digit YYMMDDHH or 6-digit YYDDHH"
        text = _FORMAT_TEXT[self.width]
        return text + (f" (month {self.spec.yyddhh_month:02d} assumed)" if self.width == 6 else "")

    def error(self, value: str, row: int) -> DataError:
        """The DataError for the hour ``value`` in ``row`` that failed the checks."""
        field, spec = self.spec.column, self.spec
        fmt = self.format_text()
        n = len(value)
        digits = re.fullmatch("[0-9]+", value) is not None
        if digits and n in (6, 8) and self.width not in (None, n):
            if self.width_row is not None:        # format: auto, the first data row chose the other width
                return DataError(self.path, f"hour value '{value}' has {n} digits but the file's first data "
                                 f"row (row {self.width_row}) has {self.width}", row=row, field=field,
                                 expected=f"{_FORMAT_TEXT[self.width]} like the rest of the file")
            return _bad_time(self.path, row, field, value, fmt)
        if not digits or n not in (6, 8):
            return _bad_time(self.path, row, field, value, fmt)
        yy, mm, dd, hh = (int(value[:2]), int(value[2:4]), int(value[4:6]), int(value[6:8])) if n == 8 else \
            (int(value[:2]), spec.yyddhh_month, int(value[2:4]), int(value[4:6]))
        if hh > 23:
            reason = f"hour {hh:02d} > 23"
        else:
            reason = f"20{yy:02d}-{mm:02d}-{dd:02d} is not a calendar date"
        return DataError(self.path, f"hour value '{value}' is not a real date and hour ({reason})", row=row,
                         field=field, expected=f"{fmt} of a calendar date, hour 00-23")


def _decode_datetime(col: pa.Array, st: _TimeState, row0: int):
    """YYMMDDHH (8 digits) or YYDDHH (6 digits, month from the layout) -> (hour, weekday) arrays.

    Works on the dictionary of the batch's distinct values: a value must have the file's width, parse,
    and survive a strftime round trip (``pc.strptime`` alone rolls Feb 30 into March 2)."""
    spec = st.spec
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if st.width is None and len(col):                 # format: auto, the file's first data row decides
        first = col[0].as_py()
        if re.fullmatch("[0-9]+", first) and len(first) in (6, 8):
            st.width, st.width_row = len(first), row0
    enc = pc.dictionary_encode(col)
    uniq, codes = enc.dictionary, enc.indices
    length = pc.utf8_length(uniq)
    digits = pc.match_substring_regex(uniq, _DIGITS)
    ok8 = pc.and_(digits, pc.equal(length, 8))
    ok6 = pc.and_(digits, pc.equal(length, 6))
    shape = {8: ok8, 6: ok6, None: pc.or_(ok8, ok6)}[st.width]
    month = f"{spec.yyddhh_month:02d}"
    full = pc.if_else(ok6, pc.binary_join_element_wise(pc.utf8_slice_codeunits(uniq, 0, 2), month,
                                                       pc.utf8_slice_codeunits(uniq, 2, 6), ""), uniq)
    ts = pc.strptime(full, format="%y%m%d%H", unit="s", error_is_null=True)
    real = pc.fill_null(pc.equal(pc.strftime(ts, format="%y%m%d%H"), full), False)
    good = pc.and_(shape, real)
    bad_at = _first_false(pc.take(good, codes))
    if bad_at is not None:
        raise st.error(col[bad_at].as_py(), row0 + bad_at)
    if st.window is not None:
        inside = pc.and_(pc.greater_equal(ts, st.window[0]), pc.less(ts, st.window[1]))
        outside_rows = pc.invert(pc.take(inside, codes))
        count = int(pc.sum(pc.cast(outside_rows, pa.int64())).as_py() or 0)
        if count:
            at = int(pc.index(outside_rows, True).as_py())
            value = col[at].as_py()
            if st.mode == "error":
                stamp = ts[codes[at].as_py()].as_py()
                raise DataError(st.path, f"hour value '{value}' ({stamp:%Y-%m-%d %H}h) is outside the layout's "
                                f"declared date window {spec.window_text}", row=row0 + at, field=spec.column,
                                expected=f"hours on {spec.window_text}, the layout's window_start / window_end; "
                                "avazu.out_of_window: warn keeps such rows")
            st.outside += count
            if st.first_outside is None:
                st.first_outside = (row0 + at, value)
    hour = pc.take(pc.hour(ts), codes)
    weekday = pc.take(pc.day_of_week(ts), codes)  # Monday = 0
    return hour, weekday


def _int_column(col: pa.Array, base: int, lo: int, hi: int, path: Path, row0: int, field: str, what: str):
    ok = pc.match_substring_regex(col, _INT)
    bad_at = _first_false(ok)
    if bad_at is None:
        v = pc.subtract(pc.cast(col, pa.int64()), base)
        bad_at = _first_false(pc.and_(pc.greater_equal(v, lo), pc.less_equal(v, hi)))
    if bad_at is not None:
        raise _bad_time(path, row0 + bad_at, field, col[bad_at].as_py(),
                        f"{what}: an integer id in [{base + lo}, {base + hi}] (declared base {base})")
    return v


def decode_time(batch: pa.RecordBatch, spec: TimeSpec, path: Path, row0: int, state: _TimeState | None = None):
    """-> (hour_of_day, weekday) int8 arrays; weekday is all-null when the layout carries no date.
    ``state``: the file's :class:`_TimeState` (one per file, passed to every batch of it)."""
    n = batch.num_rows
    if spec.kind == "datetime":
        state = state or _TimeState(spec, path, None)
        hour, weekday = _decode_datetime(batch.column(spec.column), state, row0)
    elif spec.kind == "hour_id":
        hour = _int_column(batch.column(spec.column), spec.base, 0, 23, path, row0, spec.column, "hour of day")
        weekday = pa.nulls(n, pa.int8())
    else:  # encoded_ids
        hour = _int_column(batch.column(spec.hour), spec.hour_base, 0, 23, path, row0, spec.hour, "hour of day")
        day = _int_column(batch.column(spec.mday), spec.mday_base, 0, spec.num_days - 1, path, row0,
                          spec.mday, f"day since {spec.first_day}")
        _int_column(batch.column(spec.wday), spec.wday_base, 0, 6, path, row0, spec.wday, "weekday")
        table = pa.array([(spec.first_date + dt.timedelta(days=d)).weekday() for d in range(spec.num_days)],
                         pa.int8())
        weekday = pc.take(table, day)
    return pc.cast(hour, pa.int8()), pc.cast(weekday, pa.int8())


def _label(col: pa.Array, path: Path, row0: int, name: str) -> pa.Array:
    bad_at = _first_false(pc.is_in(col, value_set=LABEL_VALUES))
    if bad_at is not None:
        raise DataError(path, f"label value '{col[bad_at].as_py()}' is not 0/1", row=row0 + bad_at, field=name,
                        expected="0 or 1")
    return pc.cast(pc.equal(pc.utf8_slice_codeunits(col, 0, 1), "1"), pa.int8())


def normalize_csv(csv_path: Path, layout: Layout, fields: tuple[str, ...], out_path: Path,
                  batch_rows: int, oracle_path: Path | None = None, block_size: int = CSV_BLOCK,
                  out_of_window: str | None = None) -> dict:
    """Normalize one split; returns {'rows', 'clicks', 'time', ...}. Writes ``out_path`` (parquet).

    ``csv_path`` may end in ``.gz`` (gunzipped while streaming). ``out_of_window``: what an hour outside
    the time spec's declared date window is - ``"error"`` (a DataError), ``"warn"`` (rows kept, one log
    warning with their count; ``out_of_window_rows`` in the stats), or None: not checked (the default for
    library callers that score new data, e.g. ``predict``; the normalize stage passes its param)."""
    csv_path = Path(csv_path)
    header = read_header(csv_path)
    time = check_header(csv_path, header, layout)
    tstate = _TimeState(time, csv_path, out_of_window) if time.kind == "datetime" else None
    needed = [layout.label, *layout.columns, *time.columns]
    block = block_size

    def parse_error(e: Exception, rows_done: int) -> DataError:
        text = (str(e).splitlines() or [type(e).__name__])[0]
        counts = _FIELD_COUNT.search(text)
        if counts:                                        # a row with the wrong number of fields
            line = _locate_bad_row(csv_path, len(header))
            return DataError(csv_path, f"row has {counts['got']} fields", row=line,
                             expected=f"{counts['expected']} fields as in the header")
        if "invalid UTF8" in text:
            where = _locate_bad_utf8(csv_path, header, needed)
            if where is not None:
                return DataError(csv_path, "value is not valid UTF-8 text", row=where[0], field=where[1],
                                 expected="UTF-8 encoded CSV text")
            return DataError(csv_path, f"not valid UTF-8 text after line {rows_done + 1}",
                             expected="UTF-8 encoded CSV text")
        if not isinstance(e, pa.ArrowInvalid) and is_gz(csv_path):
            return DataError(csv_path, f"not a readable gzip file ({text})",
                             expected="a complete gzip stream of CSV text (a truncated download? fetch it again)")
        return DataError(csv_path, f"CSV parse error after line {rows_done + 1}: {text}")

    # the header's stripped names (BOM, spaces after the commas) replace pyarrow's reading of it
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in header}, include_columns=needed,
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    stream = None
    if is_gz(csv_path):                                   # gunzipped while streaming, block by block
        stream = input_stream(csv_path)
        try:
            reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=block, column_names=header,
                                                                           skip_rows=1), convert_options=convert)
        except (pa.ArrowInvalid, OSError) as e:
            stream.close()
            raise parse_error(e, 0) from None
    else:
        check_compression(csv_path)
    sidecar = _Sidecar(oracle_path, block) if oracle_path is not None else None
    schema = normalized_schema(fields, with_oracle=sidecar is not None)
    ns = layout.namespace
    col_of = {f: c for c, f in layout.columns.items()}
    rows = clicks = 0
    name = csv_path.name.split(".")[0]
    bar = tqdm(desc=f"normalize {layout.name}/{name}", unit="rows", unit_scale=True, disable=None)

    def parsed():
        """Lists of record batches: one chunk's (parsed on pyarrow's threads) or one streamed block's."""
        if stream is None:
            opts = pacsv.ReadOptions(block_size=PARSE_BLOCK, column_names=header)
            for piece in line_chunks(csv_path, CSV_CHUNK):
                try:
                    yield pacsv.read_csv(pa.BufferReader(piece), read_options=opts,
                                         convert_options=convert).to_batches()
                except (pa.ArrowInvalid, OSError) as e:
                    raise parse_error(e, rows) from None
            return
        while True:
            try:
                yield [reader.read_next_batch()]
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError) as e:
                raise parse_error(e, rows) from None

    # the CSV is parsed on a prefetch thread while this one validates, decodes and writes the previous rows;
    # the row groups are exactly batch_rows, however the input was chunked (.csv or .csv.gz: one layout)
    batches = (b for group in prefetch(parsed(), READ_AHEAD) for b in group)
    with contextlib.nullcontext() if stream is None else stream, \
            pq.ParquetWriter(out_path, schema, **NORMALIZED_WRITE) as writer, bar:
        for batch in rebatch(batches, batch_rows, combine=False, exact=True):      # zero-copy tables
            n = batch.num_rows
            row0 = rows + 2                                   # line number of this batch's first row
            label = _label(batch.column(layout.label), csv_path, row0, layout.label)
            hour, weekday = decode_time(batch, time, csv_path, row0, tstate)
            cols = [label]
            for f in fields:
                col = batch.column(col_of[f])
                cols.append(pc.binary_join_element_wise(ns, col, "") if ns else col)
            is_weekend = pc.cast(pc.greater_equal(weekday, 5), pa.int8())
            cols += [hour, weekday, is_weekend]
            if sidecar is not None:
                cols.append(sidecar.take(n))
            writer.write_table(pa.Table.from_arrays(cols, schema=schema))   # one row group per batch
            rows += n
            clicks += int(pc.sum(label).as_py() or 0)
            bar.update(n)
    if sidecar is not None:
        sidecar.finish()
    if rows == 0:
        raise DataError(csv_path, "has a header but no data rows", row=2, expected="at least one data row")
    stats = {"rows": rows, "clicks": clicks, "ctr": clicks / rows, "time": time.kind,
             "time_format": time.format if time.kind == "datetime" else None, "oracle": sidecar is not None}
    if tstate is not None and tstate.outside:
        row, value = tstate.first_outside
        log.warning("%s: %d row(s) have an hour outside the layout's declared date window %s (first: row %d, "
                    "'%s'); kept, as avazu.out_of_window is warn", csv_path, tstate.outside, time.window_text,
                    row, value)
        stats["out_of_window_rows"] = tstate.outside
    return stats


def normalize_source(raw_dir: Path, layout: Layout, fields: tuple[str, ...], out_dir: Path,
                     batch_rows: int, out_of_window: str | None = "error") -> dict:
    """Normalize every declared split of one source: ``raw_dir/<split>.csv`` (or ``<split>.csv.gz``) ->
    ``out_dir/<split>.parquet``; an oracle sidecar ``<split>.oracle.csv[.gz]`` is carried along when present."""
    stats = {}
    for split in layout.splits:
        csv_path = split_file(raw_dir, split)
        oracle = split_file(raw_dir, f"{split}.oracle", required=False)
        log.info("normalize %s/%s", layout.name, split)
        stats[split] = normalize_csv(csv_path, layout, fields, out_dir / f"{split}.parquet", batch_rows,
                                     oracle, out_of_window=out_of_window)
    return stats
