"""The Amazon file formats: readers (streaming) and the RecBole atomic writer.

Real formats handled:

* **Amazon v2 ratings CSV** (McAuley lab, 2018): ``item,user,rating,timestamp``, no header, one file per
  category (or all in one). Read in pyarrow CSV batches.
* **Metadata JSON lines** (v2: ``asin``, ``title``, ``brand``, ``category`` list). The 2014 metadata files
  write Python dict literals (single quotes) with ``categories`` as a list of lists; both are accepted
  (strict JSON first, then ``ast.literal_eval``).
* **2014 5-core reviews JSON lines** (``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``, ...).
* **RecBole atomic files**: tab-separated, header ``name:type`` (``token``, ``token_seq``, ``float``,
  ``float_seq``); ``.inter`` (user_id, item_id, rating, timestamp) and ``.item`` (item_id, title, brand,
  categories).
* **S3-Rec text**: ``user item1 item2 ...`` per line, chronological, integer ids.

Every reader raises :class:`DataError` naming the file, line and field on bad input. ``.gz`` files are
read transparently.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.core.errors import DataError

RATINGS_COLUMNS = ("item", "user", "rating", "timestamp")


def open_text(path: str | Path):
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _clean(s) -> str:
    """One-line text: RecBole atomic files are tab/newline separated."""
    if s is None:
        return ""
    if not isinstance(s, str):
        s = str(s)
    return " ".join(s.replace("\t", " ").split())


# ------------------------------------------------------------------------------------------------ ratings


def read_ratings(path: str | Path, batch_rows: int = 1 << 18) -> Iterator[pa.RecordBatch]:
    """Stream an Amazon v2 ratings CSV as batches of (item str, user str, rating float64, timestamp int64).
    Bad rows (wrong field count, non-numeric rating or timestamp) raise DataError with the line."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise DataError(path, "missing or empty ratings file", expected="item,user,rating,timestamp lines")
    opts = pacsv.ReadOptions(column_names=list(RATINGS_COLUMNS), block_size=max(1 << 16, batch_rows * 48))
    conv = pacsv.ConvertOptions(column_types={"item": pa.string(), "user": pa.string(), "rating": pa.string(),
                                              "timestamp": pa.string()})
    line = 0
    try:
        reader = pacsv.open_csv(path, read_options=opts, convert_options=conv,
                                parse_options=pacsv.ParseOptions(newlines_in_values=False))
        for batch in reader:
            yield _typed_ratings(path, batch, line)
            line += batch.num_rows
    except pa.ArrowInvalid as e:
        msg = str(e)
        raise DataError(path, f"not a ratings CSV: {msg.splitlines()[0]}", row=_row_of(msg, line),
                        expected="4 comma-separated fields item,user,rating,timestamp") from None


def _row_of(msg: str, fallback: int) -> int | None:
    import re

    m = re.search(r"[Rr]ow #?(\d+)", msg)
    return int(m.group(1)) if m else (fallback + 1 if fallback else None)


def _typed_ratings(path: Path, b: pa.RecordBatch, line0: int) -> pa.RecordBatch:
    import pyarrow.compute as pc

    cols = {}
    for name, tp in (("rating", pa.float64()), ("timestamp", pa.int64())):
        col = b.column(name)
        try:
            cols[name] = pc.cast(col, tp)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            for i, v in enumerate(col.to_pylist()):          # find the offending line for the message
                try:
                    float(v) if name == "rating" else int(v)
                except (TypeError, ValueError):
                    raise DataError(path, f"non-numeric {name} {v!r}", row=line0 + i + 1, field=name,
                                    expected="a number" if name == "rating" else "unix seconds") from None
            raise
    for name in ("item", "user"):
        if b.column(name).null_count or pc.any(pc.equal(pc.utf8_length(b.column(name)), 0)).as_py():
            i = next(i for i, v in enumerate(b.column(name).to_pylist()) if not v)
            raise DataError(path, f"empty {name} id", row=line0 + i + 1, field=name, expected="an id")
    return pa.RecordBatch.from_arrays([b.column("item"), b.column("user"), cols["rating"], cols["timestamp"]],
                                      names=list(RATINGS_COLUMNS))


# ------------------------------------------------------------------------------------------------ JSON lines


def _json_lines(path: str | Path, literal_ok: bool) -> Iterator[tuple[int, dict]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with open_text(path) as f:
        for n, raw in enumerate(f, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                obj = None
                if literal_ok:                               # 2014 metadata: Python dict literals
                    try:
                        obj = ast.literal_eval(raw)
                    except (ValueError, SyntaxError):
                        obj = None
                if obj is None:
                    raise DataError(path, f"not a JSON object: {e.msg}", row=n,
                                    expected="one JSON object per line") from None
            if not isinstance(obj, dict):
                raise DataError(path, f"not a JSON object ({type(obj).__name__})", row=n,
                                expected="one JSON object per line")
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


def read_metadata(path: str | Path) -> Iterator[ItemMeta]:
    """Stream item metadata; every line needs an ``asin``. Title, brand and the first three category levels
    are kept (missing ones become empty)."""
    for n, obj in _json_lines(path, literal_ok=True):
        asin = obj.get("asin")
        if not isinstance(asin, str) or not asin:
            raise DataError(path, "missing asin", row=n, field="asin", expected="a non-empty string")
        yield ItemMeta(asin, _clean(obj.get("title")), _clean(obj.get("brand")), _categories(obj))


def read_reviews(path: str | Path) -> Iterator[tuple[str, str, float, int]]:
    """Stream a 2014 5-core review file as (user, item, rating, timestamp)."""
    for n, obj in _json_lines(path, literal_ok=False):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in obj or obj[key] in (None, ""):
                raise DataError(path, f"missing {key}", row=n, field=key, expected="a 2014 review object")
        ts = obj["unixReviewTime"]
        try:
            if isinstance(ts, bool) or isinstance(ts, float) and not math.isfinite(ts):
                raise ValueError
            ts = int(ts) if not isinstance(ts, str) else int(ts.strip())
        except (TypeError, ValueError):
            raise DataError(path, f"non-numeric timestamp {obj['unixReviewTime']!r}", row=n,
                            field="unixReviewTime", expected="unix seconds") from None
        rating = obj.get("overall", 0.0)
        try:
            rating = float(rating)
        except (TypeError, ValueError):
            raise DataError(path, f"non-numeric rating {rating!r}", row=n, field="overall",
                            expected="a number") from None
        yield str(obj["reviewerID"]), str(obj["asin"]), rating, ts


# ------------------------------------------------------------------------------------------------ S3-Rec


def read_s3rec(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """Stream S3-Rec's ``user item1 item2 ...`` lines (chronological) as (user, [items])."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    with open_text(path) as f:
        for n, raw in enumerate(f, 1):
            parts = raw.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(path, "a user without items", row=n, expected="'user item1 item2 ...'")
            for j, tok in enumerate(parts):
                if not tok.isdigit():
                    raise DataError(path, f"non-integer id {tok!r}", row=n,
                                    field="user" if j == 0 else f"item {j}", expected="integer ids")
            yield parts[0], parts[1:]


# ------------------------------------------------------------------------------------------------ RecBole

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def _recbole_header(path: Path, line: str) -> list[tuple[str, str]]:
    cols = []
    for j, h in enumerate(line.rstrip("\n").split("\t")):
        name, sep, tp = h.rpartition(":")
        if not sep or not name or tp not in RECBOLE_TYPES:
            raise DataError(path, f"bad header column {h!r}", row=1, field=f"column {j + 1}",
                            expected=f"name:type with type in {list(RECBOLE_TYPES)}")
        cols.append((name, tp))
    return cols


def read_recbole(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Stream a RecBole atomic file as dicts {name: value}; ``float`` fields are parsed, ``token_seq`` are
    split on spaces. ``required`` names columns that must exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", expected="a RecBole atomic file")
    with open_text(path) as f:
        header = f.readline()
        if not header.strip():
            raise DataError(path, "empty file", row=1, expected="a 'name:type' header line")
        cols = _recbole_header(path, header)
        names = [c for c, _ in cols]
        for r in required:
            if r not in names:
                raise DataError(path, "missing column", row=1, field=r, expected=f"columns {list(required)}")
        for n, raw in enumerate(f, 2):
            raw = raw.rstrip("\n")
            if not raw:
                continue
            vals = raw.split("\t")
            if len(vals) != len(cols):
                raise DataError(path, f"{len(vals)} fields", row=n, expected=f"{len(cols)} tab-separated fields")
            row = {}
            for (name, tp), v in zip(cols, vals):
                if tp == "float":
                    try:
                        row[name] = float(v) if v != "" else float("nan")
                    except ValueError:
                        raise DataError(path, f"non-numeric value {v!r}", row=n, field=name,
                                        expected="a float") from None
                elif tp == "token_seq":
                    row[name] = v.split(" ") if v else []
                elif tp == "float_seq":
                    row[name] = [float(t) for t in v.split(" ")] if v else []
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


def read_recbole_item(path: Path) -> dict[str, ItemMeta]:
    """A RecBole ``.item`` file as {item_id: ItemMeta}: title (token_seq joined), brand, categories. Only
    ``item_id`` is required; other columns default to empty."""
    out = {}
    for row in read_recbole(path, required=("item_id",)):
        title = row.get("title", [])
        cats = row.get("categories", [])
        cats = cats if isinstance(cats, list) else [cats]
        brand = row.get("brand", "")
        out[row["item_id"]] = ItemMeta(row["item_id"], " ".join(title) if isinstance(title, list) else title,
                                       brand if isinstance(brand, str) else " ".join(brand),
                                       [c.replace("_", " ") for c in cats][:3])
    return out
