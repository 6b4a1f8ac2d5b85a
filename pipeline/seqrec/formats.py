"""The Amazon file formats: readers (streaming) and the RecBole atomic writer.

Real formats handled:

* **Amazon v2 ratings CSV** (McAuley lab, 2018): ``item,user,rating,timestamp``, no header, one file per
  category (or all in one). Read in pyarrow CSV batches.
* **Metadata JSON lines** (v2: ``asin``, ``title``, ``brand``, ``category`` list). The 2014 metadata files
  write Python dict literals (single quotes) with ``categories`` as a list of lists; both are accepted
  (strict JSON first, then ``ast.literal_eval``). No numeric field of it is read.
* **2014 5-core reviews JSON lines** (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``, ...).
* **RecBole atomic files**: tab-separated, header ``name:type`` (``token``, ``token_seq``, ``float``,
  ``float_seq``); ``.inter`` (user_id, item_id, rating, timestamp) and ``.item`` (item_id, title, brand,
  categories; the common aliases of other RecBole datasets are mapped, see :func:`item_text_columns`).
* **S3-Rec text**: ``user item1 item2 ...`` per line, chronological, integer ids (no rating, no timestamp).

Every reader raises :class:`DataError` naming the file, the row (1-based line of the file, header
included) and the field on bad input: a missing field, a wrong field count, a rating or timestamp that is
empty, ``nan``, ``inf`` or not a number, bytes that are not UTF-8, a truncated gzip stream, gzip bytes under
a name without ``.gz``. ``.gz`` files are read transparently; a leading UTF-8 BOM is skipped.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.core.errors import DataError
from pipeline.core.io import UTF8_BOM, check_compression, input_stream, is_gz

RATINGS_COLUMNS = ("item", "user", "rating", "timestamp")
RATINGS_EXPECTED = "4 comma-separated fields item,user,rating,timestamp per line, no header"
NUMBER_EXPECTED = {"rating": "a finite number, e.g. 4.0",
                   "timestamp": "unix seconds, a whole number, e.g. 1400000000"}


def _clean(s) -> str:
    """One-line text: RecBole atomic files are tab/newline separated."""
    if s is None:
        return ""
    if not isinstance(s, str):
        s = str(s)
    return " ".join(s.replace("\t", " ").split())


def _require_file(path: Path, expected: str) -> None:
    if not path.exists():
        raise DataError(path, "not found", expected=expected)
    if not path.is_file():
        raise DataError(path, "is not a file", expected=expected)
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty", expected=expected)
    check_compression(path)


def _gzip_error(path: Path, e: BaseException, after: int, expected: str) -> DataError:
    reason = (str(e).splitlines() or [type(e).__name__])[0] or type(e).__name__
    what = "truncated or corrupt gzip stream" if is_gz(path) else "unreadable file"
    return DataError(path, f"{what} ({reason})" + (f" after {after} rows" if after else ""),
                     expected=f"a complete file of {expected}" if is_gz(path) else expected)


def text_lines(path: str | Path, expected: str) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its end) of a text file, ``.gz`` gunzipped, a leading UTF-8 BOM
    skipped. A line that is not UTF-8 and a truncated gzip stream are DataErrors naming the file (and line).
    Lines are decoded one by one so the row in the message is exact."""
    path = Path(path)
    _require_file(path, expected)
    n = 0
    try:
        with (gzip.open(path, "rb") if is_gz(path) else open(path, "rb")) as f:
            for n, raw in enumerate(f, 1):
                if n == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM):]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(path, f"not UTF-8 text (byte {e.start + 1} of the line)", row=n,
                                    expected=expected) from None
                yield n, line.rstrip("\r\n")
    except (EOFError, zlib.error, OSError) as e:            # gzip.BadGzipFile is an OSError
        raise _gzip_error(path, e, n, expected) from None


def _number(value, name: str, integer: bool = False):
    """``value`` (a JSON or text field) as a finite float (or int); ValueError with the problem otherwise."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"empty {name}" if value is None or isinstance(value, str) else
                         f"non-numeric {name} {value!r}")
    if isinstance(value, (int, float)):
        x = value
    else:
        try:
            x = int(value) if integer else float(value)
        except (TypeError, ValueError):
            try:
                f = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"non-numeric {name} {value!r}") from None
            if not math.isfinite(f):
                raise ValueError(f"non-finite {name} {value!r}") from None
            raise ValueError(f"non-integer {name} {value!r}") from None
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"non-finite {name} {value!r}")
    return int(x) if integer else float(x)


# ------------------------------------------------------------------------------------------------ ratings


def read_ratings(path: str | Path, batch_rows: int = 1 << 18) -> Iterator[pa.RecordBatch]:
    """Stream an Amazon v2 ratings CSV (``.csv`` or ``.csv.gz``) as batches of (item str, user str,
    rating float64, timestamp int64). A wrong field count, an empty item or user, a rating that is empty,
    ``nan``, ``inf`` or not a number, a timestamp that is not a whole number, a truncated gzip stream:
    DataError naming the file and the line (blank lines are skipped, but counted in line numbers)."""
    path = Path(path)
    _require_file(path, RATINGS_EXPECTED)
    opts = pacsv.ReadOptions(column_names=list(RATINGS_COLUMNS), block_size=max(1 << 16, batch_rows * 48))
    conv = pacsv.ConvertOptions(column_types={c: pa.string() for c in RATINGS_COLUMNS})
    parse = pacsv.ParseOptions(newlines_in_values=False)
    done = 0                                                 # records (non-blank lines) yielded so far
    try:
        with input_stream(path) as stream:
            for batch in pacsv.open_csv(stream, read_options=opts, convert_options=conv, parse_options=parse):
                if batch.num_rows:
                    yield _typed_ratings(path, batch, done)
                    done += batch.num_rows
    except DataError:
        raise
    except pa.ArrowInvalid as e:
        msg = (str(e).splitlines() or [""])[0]
        if "columns" in msg:                                 # pyarrow does not know the line: find it
            row, count = _field_count_row(path)
            raise DataError(path, f"{count} fields instead of 4" if row else f"not a ratings CSV: {msg}",
                            row=row, expected=RATINGS_EXPECTED) from None
        if "Empty CSV" in msg:
            raise DataError(path, "no rows", expected=RATINGS_EXPECTED) from None
        for _ in text_lines(path, RATINGS_EXPECTED):         # an UTF-8 error: text_lines names the line
            pass
        raise DataError(path, f"not a ratings CSV: {msg}", expected=RATINGS_EXPECTED) from None
    except (OSError, EOFError) as e:
        raise _gzip_error(path, e, done, RATINGS_EXPECTED) from None


def _field_count_row(path: Path) -> tuple[int | None, int]:
    """(line, field count) of the first non-blank line without 4 CSV fields."""
    for n, line in text_lines(path, RATINGS_EXPECTED):
        if line:
            fields = next(csv.reader([line]))
            if len(fields) != len(RATINGS_COLUMNS):
                return n, len(fields)
    return None, 0


def _line_of_record(path: Path, k: int) -> int:
    """The line number of the ``k``-th (1-based) record: pyarrow skips blank lines, the message may not."""
    seen = 0
    for n, line in text_lines(path, RATINGS_EXPECTED):
        if line:
            seen += 1
            if seen == k:
                return n
    return k


def _first_failing(col: pa.Array, tp: pa.DataType) -> int:
    """Index of the first element of ``col`` that does not cast to ``tp`` (the cast of all of it failed)."""
    lo, hi = 0, len(col) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            pc.cast(col.slice(0, mid + 1), tp)
            lo = mid + 1
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo


def _typed_ratings(path: Path, b: pa.RecordBatch, done: int) -> pa.RecordBatch:
    def fail(i: int, problem: str, name: str, expected: str):
        raise DataError(path, problem, row=_line_of_record(path, done + i + 1), field=name, expected=expected)

    for name in ("item", "user"):
        col = b.column(name)
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)
        if col.null_count or pc.any(empty).as_py():
            fail(pc.index(pc.fill_null(empty, True), True).as_py(), f"empty {name} id", name, "an id")
    cols = {}
    for name, tp in (("rating", pa.float64()), ("timestamp", pa.int64())):
        col = pc.utf8_trim_whitespace(b.column(name))
        try:
            cols[name] = pc.cast(col, tp)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            i = _first_failing(col, tp)
            v = col[i].as_py()
            try:
                _number(v, name, integer=name == "timestamp")
                problem = f"non-numeric {name} {v!r}"         # e.g. '1_000': Python reads it, pyarrow does not
            except ValueError as e:
                problem = str(e)
            fail(i, problem, name, NUMBER_EXPECTED[name])
        if name == "rating":
            finite = pc.is_finite(cols[name])
            if not pc.all(finite).as_py():
                i = pc.index(finite, False).as_py()
                fail(i, f"non-finite rating {col[i].as_py()!r}", name, NUMBER_EXPECTED[name])
    return pa.RecordBatch.from_arrays([b.column("item"), b.column("user"), cols["rating"], cols["timestamp"]],
                                      names=list(RATINGS_COLUMNS))


# ------------------------------------------------------------------------------------------------ JSON lines


def _json_lines(path: str | Path, literal_ok: bool, expected: str) -> Iterator[tuple[int, dict]]:
    for n, raw in text_lines(path, expected):
        raw = raw.strip()
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            obj = None
            if literal_ok:                                   # 2014 metadata: Python dict literals
                try:
                    obj = ast.literal_eval(raw)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    obj = None
            if obj is None:
                reason = getattr(e, "msg", type(e).__name__)
                raise DataError(path, f"not a JSON object: {reason}", row=n, expected=expected) from None
        if not isinstance(obj, dict):
            raise DataError(path, f"not a JSON object ({type(obj).__name__})", row=n, expected=expected)
        yield n, obj


@dataclass
class ItemMeta:
    asin: str
    title: str
    brand: str
    categories: list[str]      # the first three category levels


def _categories(obj: dict) -> list[str]:
    cat = obj.get("category")
    if cat is None:                                          # 2014: categories = [[top, sub, ...], ...]
        cats = obj.get("categories") or []
        cat = cats[0] if cats and isinstance(cats[0], list) else cats
    if not isinstance(cat, list):
        cat = [cat]
    return [_clean(c) for c in cat if c is not None and _clean(c)][:3]


META_EXPECTED = "one JSON object per line with an 'asin' (v2 meta or 2014 metadata)"
REVIEWS_EXPECTED = "one 2014 review JSON object per line (reviewerID, asin, overall, unixReviewTime)"


def read_metadata(path: str | Path) -> Iterator[ItemMeta]:
    """Stream item metadata; every line needs an ``asin``. Title, brand and the first three category levels
    are kept (missing ones become empty). No numeric field (price, rank) is read."""
    for n, obj in _json_lines(path, literal_ok=True, expected=META_EXPECTED):
        asin = obj.get("asin")
        if not isinstance(asin, str) or not asin.strip():
            raise DataError(path, "missing asin", row=n, field="asin", expected="a non-empty string")
        yield ItemMeta(asin.strip(), _clean(obj.get("title")), _clean(obj.get("brand")), _categories(obj))


def metadata_keys(path: str | Path, lines: int = 1000) -> list[str]:
    """The keys of the first ``lines`` metadata objects (for messages naming what a file holds)."""
    keys: dict[str, None] = {}
    for k, (_, obj) in enumerate(_json_lines(path, literal_ok=True, expected=META_EXPECTED)):
        keys.update(dict.fromkeys(obj))
        if k + 1 >= lines:
            break
    return list(keys)


def read_reviews(path: str | Path) -> Iterator[tuple[str, str, float, int]]:
    """Stream a 2014 5-core review file as (user, item, rating, timestamp). ``unixReviewTime`` is required
    and ``overall`` (default 0.0 when absent) must be a finite number: ``NaN``, ``Infinity``, ``"nan"``,
    ``""`` or ``null`` are DataErrors naming the line and the field."""
    for n, obj in _json_lines(path, literal_ok=False, expected=REVIEWS_EXPECTED):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in obj or obj[key] is None or (isinstance(obj[key], str) and not obj[key].strip()):
                raise DataError(path, f"missing {key}", row=n, field=key, expected="a 2014 review object")
        try:
            ts = _number(obj["unixReviewTime"], "timestamp", integer=True)
        except ValueError as e:
            raise DataError(path, str(e), row=n, field="unixReviewTime",
                            expected=NUMBER_EXPECTED["timestamp"]) from None
        try:
            rating = _number(obj.get("overall", 0.0), "rating")
        except ValueError as e:
            raise DataError(path, str(e), row=n, field="overall", expected=NUMBER_EXPECTED["rating"]) from None
        yield str(obj["reviewerID"]), str(obj["asin"]), rating, ts


# ------------------------------------------------------------------------------------------------ S3-Rec


S3REC_EXPECTED = "'user item1 item2 ...' per line, integer ids separated by spaces"


def read_s3rec(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """Stream S3-Rec's ``user item1 item2 ...`` lines (chronological) as (user, [items]). The format has no
    rating and no timestamp (the order of a line is the order of the events); ids must be ASCII digits."""
    for n, raw in text_lines(path, S3REC_EXPECTED):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(path, "a user without items", row=n, expected=S3REC_EXPECTED)
        for j, tok in enumerate(parts):
            if not (tok.isascii() and tok.isdigit()):
                raise DataError(path, f"non-integer id {tok!r}", row=n,
                                field="user" if j == 0 else f"item {j}", expected="integer ids")
        yield parts[0], parts[1:]


# ------------------------------------------------------------------------------------------------ RecBole

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


RECBOLE_EXPECTED = "a RecBole atomic file: a tab-separated 'name:type' header line, then tab-separated rows"
FINITE = ("rating", "timestamp")     # float columns that must hold a finite number on every row


def _recbole_header(path: Path, line: str) -> list[tuple[str, str]]:
    cols = []
    for j, h in enumerate(line.split("\t")):
        name, sep, tp = h.strip().rpartition(":")
        if not sep or not name or tp not in RECBOLE_TYPES:
            raise DataError(path, f"bad header column {h!r}", row=1, field=f"column {j + 1}",
                            expected=f"name:type with type in {list(RECBOLE_TYPES)}")
        cols.append((name, tp))
    return cols


def recbole_header(path: str | Path) -> list[tuple[str, str]]:
    """The (name, type) columns of a RecBole atomic file's header."""
    path = Path(path)
    for _, line in text_lines(path, RECBOLE_EXPECTED):
        if not line.strip():
            raise DataError(path, "empty header line", row=1, expected="a 'name:type' header line")
        return _recbole_header(path, line)
    raise DataError(path, "file is empty", row=1, expected="a 'name:type' header line")


def _float(path: Path, v: str, n: int, name: str, finite: bool) -> float:
    v = v.strip()
    if not v:
        if finite:
            raise DataError(path, f"empty {name}", row=n, field=name, expected=NUMBER_EXPECTED.get(name, "a float"))
        return float("nan")                                  # an optional float column (RecBole: missing)
    try:
        x = float(v)
    except ValueError:
        raise DataError(path, f"non-numeric value {v!r}", row=n, field=name,
                        expected=NUMBER_EXPECTED.get(name, "a float")) from None
    if finite and not math.isfinite(x):
        raise DataError(path, f"non-finite {name} {v!r}", row=n, field=name, expected=NUMBER_EXPECTED[name]
                        if name in NUMBER_EXPECTED else "a finite number")
    return x


def read_recbole(path: str | Path, required: tuple[str, ...] = (), finite: tuple[str, ...] = FINITE
                 ) -> Iterator[dict]:
    """Stream a RecBole atomic file as dicts {name: value}; ``float`` fields are parsed, ``token_seq`` are
    split on spaces. ``required`` names columns that must exist; the columns named in ``finite`` (default:
    rating, timestamp; ``float``, or ``token`` read as a float) must hold a finite number on every row
    (empty, ``nan``, ``inf``: DataError naming the line and the field); other ``float`` columns may be
    empty (NaN)."""
    path = Path(path)
    cols: list[tuple[str, str]] = []
    for n, raw in text_lines(path, RECBOLE_EXPECTED):
        if n == 1:
            if not raw.strip():
                raise DataError(path, "empty header line", row=1, expected="a 'name:type' header line")
            cols = _recbole_header(path, raw)
            names = [c for c, _ in cols]
            for r in required:
                if r not in names:
                    raise DataError(path, "missing column", row=1, field=r,
                                    expected=f"columns {list(required)} in the header (found {names})")
            continue
        if not raw:
            continue
        vals = raw.split("\t")
        if len(vals) != len(cols):
            raise DataError(path, f"{len(vals)} tab-separated fields instead of {len(cols)}", row=n,
                            expected=f"{len(cols)} tab-separated fields as in the header")
        row = {}
        for (name, tp), v in zip(cols, vals):
            if tp == "float" or (name in finite and tp == "token"):
                row[name] = _float(path, v, n, name, name in finite)
            elif tp == "token_seq":
                row[name] = v.split(" ") if v else []
            elif tp == "float_seq":
                row[name] = [_float(path, t, n, name, False) for t in v.split(" ")] if v.strip() else []
            else:
                row[name] = v
        yield row


class RecboleWriter:
    """Write one RecBole atomic file with a ``name:type`` header, row by row (streaming)."""

    def __init__(self, path: Path, columns: list[tuple[str, str]]):
        self.f = open(path, "w", encoding="utf-8", newline="\n")
        self.columns = columns
        self.f.write("\t".join(f"{n}:{t}" for n, t in columns) + "\n")

    def write(self, *values) -> None:
        out = []
        for (_, tp), v in zip(self.columns, values):
            if tp == "token_seq":                             # one token may not contain a space
                out.append(" ".join(_clean(t).replace(" ", "_") for t in v if _clean(t)))
            elif tp == "float":
                out.append(repr(float(v)) if not float(v).is_integer() else str(int(v)))
            else:
                out.append(_clean(v))
        self.f.write("\t".join(out) + "\n")

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


INTER_COLUMNS = [("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")]
ITEM_COLUMNS = [("item_id", "token"), ("title", "token_seq"), ("brand", "token"), ("categories", "token_seq")]


# RecBole datasets name the item text differently; the first alias present is read as the field.
TITLE_ALIASES = ("title", "movie_title", "item_name", "name", "book_title", "product_title", "product_name",
                 "item_title", "app_name", "track_name", "song_name")
BRAND_ALIASES = ("brand", "manufacturer", "book_author", "author", "publisher", "artist_name", "artist")
CATEGORY_ALIASES = ("categories", "category", "genre", "genres", "class", "tags")
TEXT_FIELDS = ("title", "brand")     # the item text of item_repr: text (categories are not tokenised)


def item_text_columns(names) -> dict[str, str | None]:
    """{"title", "brand", "categories"} -> the column of a RecBole ``.item`` header read as it (None: none)."""
    names = list(names)
    out = {}
    for field, aliases in (("title", TITLE_ALIASES), ("brand", BRAND_ALIASES), ("categories", CATEGORY_ALIASES)):
        out[field] = next((a for a in aliases if a in names), None)
    return out


def read_recbole_item(path: Path) -> dict[str, ItemMeta]:
    """A RecBole ``.item`` file as {item_id: ItemMeta}: title, brand, categories. Only ``item_id`` is
    required; other columns default to empty. The columns are found by name, the first present of:

    * title: ``title``, ``movie_title`` (ml-100k, ml-1m), ``item_name`` (Yelp), ``name`` (anime),
      ``book_title`` (Book-Crossing), ``product_title``, ``product_name``, ``item_title``, ``app_name``
      (Steam), ``track_name``, ``song_name``;
    * brand: ``brand``, ``manufacturer``, ``book_author``, ``author``, ``publisher``, ``artist_name``,
      ``artist``;
    * categories: ``categories``, ``category``, ``genre``, ``genres``, ``class`` (ml-100k), ``tags``.

    ``token_seq`` values are joined with spaces (categories: one token each, ``_`` read as a space)."""
    path = Path(path)
    found = item_text_columns(c for c, _ in recbole_header(path))
    out = {}
    for row in read_recbole(path, required=("item_id",), finite=()):
        title = row.get(found["title"], []) if found["title"] else ""
        brand = row.get(found["brand"], "") if found["brand"] else ""
        cats = row.get(found["categories"], []) if found["categories"] else []
        cats = cats if isinstance(cats, list) else [cats]
        out[row["item_id"]] = ItemMeta(row["item_id"], _clean(" ".join(title) if isinstance(title, list) else title),
                                       _clean(" ".join(brand) if isinstance(brand, list) else brand),
                                       [_clean(c.replace("_", " ")) for c in cats if _clean(c)][:3])
    return out
