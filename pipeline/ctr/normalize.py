"""normalize: one reczoo Avazu layout (x1, x2 or x4) -> the unified schema, as parquet, streaming.

The CSV is read in pyarrow batches (memory is bounded by the batch, not the file); each batch is
validated, its columns renamed through the declared layout, its time decoded into hour_of_day /
weekday / is_weekend, and appended to a parquet file. Any problem is a :class:`DataError` naming the
file, the 1-based line (header = line 1) and the field.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.errors import DataError
from pipeline.core.io import PARQUET_WRITE, rebatch
from pipeline.ctr.schema import Layout, TimeSpec, normalized_schema

log = logging.getLogger(__name__)

LABEL_VALUES = pa.array(["0", "1", "0.0", "1.0"])
_DIGITS = r"^[0-9]+$"
_INT = r"^-?[0-9]+$"
CSV_BLOCK = 1 << 20   # bytes per CSV read block: small, so the streaming reader's read-ahead stays small


def read_header(path: Path) -> list[str]:
    """The header of a CSV file; DataError for a missing or empty file or a file without a header."""
    if not path.is_file():
        raise DataError(path, "file not found", expected="the split's CSV file")
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise DataError(path, "file is empty", expected="a CSV header line followed by data rows", row=1)
    return [c.strip().strip('"') for c in first.decode("utf-8", errors="replace").rstrip("\r\n").split(",")]


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


def _locate_bad_row(path: Path, n_fields: int) -> int | None:
    """Error path only: the 1-based line of the first row whose field count differs from the header's."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        for row in reader:
            if len(row) != n_fields:
                return reader.line_num
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
        self.reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=block_size),
                                     convert_options=pacsv.ConvertOptions(column_types={"p_click": pa.float32()}))
        self.buf: list[pa.Array] = []
        self.n = 0

    def take(self, k: int) -> pa.Array:
        while self.n < k:
            try:
                batch = self.reader.read_next_batch()
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
        for batch in self.reader:
            if batch.num_rows:
                raise DataError(self.path, "has more rows than its CSV", expected="one p_click per data row")


def _bad_time(path, row0, field, value, expected):
    return DataError(path, f"hour value '{value}' is in an unknown format", row=row0, field=field,
                     expected=expected)


def _decode_datetime(col: pa.Array, spec: TimeSpec, path: Path, row0: int):
    """YYMMDDHH (8 digits) or YYDDHH (6 digits, month from the layout) -> (hour, weekday) arrays."""
    enc = pc.dictionary_encode(col).combine_chunks() if isinstance(col, pa.ChunkedArray) else pc.dictionary_encode(col)
    uniq, codes = enc.dictionary, enc.indices
    length = pc.utf8_length(uniq)
    digits = pc.match_substring_regex(uniq, _DIGITS)
    ok8 = pc.and_(digits, pc.equal(length, 8))
    ok6 = pc.and_(digits, pc.equal(length, 6))
    if spec.format == "yymmddhh":
        ok6 = pc.and_(ok6, False)
    elif spec.format == "yyddhh":
        ok8 = pc.and_(ok8, False)
    month = f"{spec.yyddhh_month:02d}"
    full = pc.if_else(ok6, pc.binary_join_element_wise(pc.utf8_slice_codeunits(uniq, 0, 2), month,
                                                       pc.utf8_slice_codeunits(uniq, 2, 6), ""), uniq)
    ts = pc.strptime(full, format="%y%m%d%H", unit="s", error_is_null=True)
    good = pc.and_(pc.or_(ok8, ok6), pc.is_valid(ts))
    bad_at = _first_false(pc.take(good, codes))
    if bad_at is not None:
        expected = {"auto": "8-digit YYMMDDHH or 6-digit YYDDHH", "yymmddhh": "8-digit YYMMDDHH",
                    "yyddhh": "6-digit YYDDHH"}[spec.format]
        raise _bad_time(path, row0 + bad_at, spec.column, col[bad_at].as_py(), expected)
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


def decode_time(batch: pa.RecordBatch, spec: TimeSpec, path: Path, row0: int):
    """-> (hour_of_day, weekday) int8 arrays; weekday is all-null when the layout carries no date."""
    n = batch.num_rows
    if spec.kind == "datetime":
        hour, weekday = _decode_datetime(batch.column(spec.column), spec, path, row0)
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
                  batch_rows: int, oracle_path: Path | None = None, block_size: int = CSV_BLOCK) -> dict:
    """Normalize one split; returns {'rows', 'clicks', 'time'}. Writes ``out_path`` (parquet)."""
    header = read_header(csv_path)
    time = check_header(csv_path, header, layout)
    needed = [layout.label, *layout.columns, *time.columns]
    block = block_size
    bad_rows: list = []

    def on_invalid(row):
        bad_rows.append(row)
        return "error"

    def parse_error(e: Exception, rows_done: int) -> DataError:
        if bad_rows:
            r = bad_rows[0]
            line = r.number if r.number is not None else _locate_bad_row(csv_path, len(header))
            return DataError(csv_path, f"row has {r.actual_columns} fields", row=line,
                             expected=f"{r.expected_columns} fields as in the header")
        return DataError(csv_path, f"CSV parse error after line {rows_done + 1}: {e}")

    try:
        reader = pacsv.open_csv(
            csv_path,
            read_options=pacsv.ReadOptions(block_size=block),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                 include_columns=needed, strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as e:
        raise parse_error(e, 0) from None
    sidecar = _Sidecar(oracle_path, block) if oracle_path is not None else None
    schema = normalized_schema(fields, with_oracle=sidecar is not None)
    ns = layout.namespace
    col_of = {f: c for c, f in layout.columns.items()}
    rows = clicks = 0
    bar = tqdm(desc=f"normalize {layout.name}/{csv_path.stem}", unit="rows", unit_scale=True, disable=None)
    def blocks():
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as e:
                raise parse_error(e, rows) from None

    with pq.ParquetWriter(out_path, schema, **PARQUET_WRITE) as writer, bar:
        for batch in rebatch(blocks(), batch_rows):
            n = batch.num_rows
            row0 = rows + 2                                   # line number of this batch's first row
            label = _label(batch.column(layout.label), csv_path, row0, layout.label)
            hour, weekday = decode_time(batch, time, csv_path, row0)
            cols = [label]
            for f in fields:
                col = batch.column(col_of[f])
                cols.append(pc.binary_join_element_wise(ns, col, "") if ns else col)
            is_weekend = pc.cast(pc.greater_equal(weekday, 5), pa.int8())
            cols += [hour, weekday, is_weekend]
            if sidecar is not None:
                cols.append(sidecar.take(n))
            writer.write_batch(pa.record_batch(cols, schema=schema))
            rows += n
            clicks += int(pc.sum(label).as_py() or 0)
            bar.update(n)
    if sidecar is not None:
        sidecar.finish()
    if rows == 0:
        raise DataError(csv_path, "has a header but no data rows", row=2, expected="at least one data row")
    return {"rows": rows, "clicks": clicks, "ctr": clicks / rows, "time": time.kind,
            "time_format": time.format if time.kind == "datetime" else None, "oracle": sidecar is not None}


def normalize_source(raw_dir: Path, layout: Layout, fields: tuple[str, ...], out_dir: Path,
                     batch_rows: int) -> dict:
    """Normalize every declared split of one source: ``raw_dir/<split>.csv`` -> ``out_dir/<split>.parquet``."""
    stats = {}
    for split in layout.splits:
        csv_path = raw_dir / f"{split}.csv"
        oracle = raw_dir / f"{split}.oracle.csv"
        log.info("normalize %s/%s", layout.name, split)
        stats[split] = normalize_csv(csv_path, layout, fields, out_dir / f"{split}.parquet", batch_rows,
                                     oracle if oracle.is_file() else None)
    return stats
