"""align: recover the raw x4 token behind every anonymised x1 / x2 id, from the data alone.

reczoo's Avazu_x1, Avazu_x2 and Avazu_x4 (https://github.com/reczoo/Datasets/tree/main/Avazu) each hold
the same 40,428,967 events of Kaggle's ``train.csv`` (https://www.kaggle.com/c/avazu-ctr-prediction),
re-split; x1 and x2 replaced every value by a global integer id (x2 also merged the values seen < 20 times
into one OOV id). Per field the relabelling is a bijection (up to x2's merged bucket), so it can be undone:
this is a de-anonymisation by co-occurrence in the sense of Narayanan & Shmatikov, "Robust
De-anonymization of Large Sparse Datasets" (IEEE S&P 2008), done as a colour refinement of the bipartite
row-value graph (Weisfeiler & Leman 1968) that only ever commits a match both sides make unique.

The algorithm (one source s in {x1, x2} against x4, over ALL splits of both):

(a) **Fingerprints.** Per field, every value's ``(occurrences, clicks)``. A fingerprint held by exactly one
    value on each side is a match (round 0). x2's merged bucket (``rare_token``) is mapped to the declared
    :data:`RARE` token, never guessed; the x4 values seen fewer times than the rarest non-merged value of
    that field (or than ``rare_min_count`` when given) are the bucket's content and candidates for nothing.
(b) **Row matching, iterated.** A row key is a 64-bit hash of (label, hour_of_day, weekday where the source
    has it, and per field: the x4 token of the row's value if it is mapped, else a marker of the value's
    fingerprint class, or the rare marker) - computed identically on both sides, so the two copies of one
    event have the same key. Every unmapped value gets a signature: a multiset hash (sum of mixed keys) of
    the keys of all its rows. A value whose (fingerprint, signature) is unique among the unmapped values of
    its field on both sides is matched to the one x4 value with the same pair: its rows' partners are
    exactly that value's rows, so the match is forced (a row key unique on both sides pairs two rows; equal
    multiplicities of identical rows - exact duplicates - pair as a block; both are special cases). Each
    round's matches make the next round's keys finer (the anchor set grows: mapped tokens replace class
    markers). Repeat until a round maps nothing or ``max_rounds``.
(c) What is still ambiguous (values no data can tell apart, e.g. two singletons in rows identical in
    everything else) keeps its namespaced token and is counted, never guessed.
(d) **Rows.** With the final keys, a source row whose key is unique on both sides (or one of a block of
    identical source rows with the same multiplicity in x4) is matched to its x4 row; x4's weekday is kept
    for it (x1 carries no date), as one int8 per source row (-1 = not recovered), per split, in file order,
    so :func:`apply_alignment` can stream it.

Only the data is read: a truth sidecar of the synthetic world is for :meth:`Alignment.report` alone.

Memory (40.4 M rows per side, the real files): no per-row array stays in memory. Each side's per-row arrays -
per field one integer code in the smallest dtype its cardinality allows (int8 for the 11 small fields, int16
for the 8 mid ones, int32 for device_id and device_ip: 35 B a row), label / hour / weekday (3 B) - go to raw
files in a private folder under the system's temporary directory (:class:`_Spill`: 38 B a row, ~1.5 GB of disk
per side, plus 24 B a row of row keys during the final matching; x4's folder is removed when
:func:`align_source` returns or fails, the source's when its :class:`Alignment` is garbage collected) and are
read back in ``batch_rows`` blocks with ``np.fromfile`` (no memory maps: what is resident is what was asked
for). Reading a field holds its row groups' dictionaries and their unification (the row groups' indices wait
in the spill until the transpose maps are known). The rounds stream blocks of codes; what they hold grows with
the distinct values (per value on each side: occurrences and clicks as int32, the map, and during a round its
key table and signature; estimated ~0.3 GB for device_ip's 6.7 M values on both sides) and the tokens. The
final row matching writes both sides' row keys and the source rows' content hashes to the spill and pairs rows
one of 16 key partitions at a time (equal keys share a partition), holding a partition's sort orders and runs
plus x4's weekday and three int8 results per source row. Freed blocks are handed back to the OS (Arrow's pool
and glibc's ``malloc_trim``) after each field read and before :func:`apply_alignment`, which streams row
groups (memory bounded by ``batch_rows``) and reads the source's codes back from its spill. Measured
(``bench/avazu_align.py``, synthetic world, one fresh process per source, peak RSS of align_source +
apply_alignment, 199 MB of it the interpreter and libraries): x1 0.41 GB at 1 M rows and 0.46 GB at 4 M (18 B
per extra row, 1.11 GB projected to 40.4 M rows), x2 0.38 / 0.43 GB (1.04 GB projected); before the spill:
0.46 / 0.97 GB (169 B per extra row). At those sizes the peak is in apply_alignment; measured phase by phase
(x1, 4 M rows against 1 M, ru_maxrss after each phase), the read grows ~29 B and the rounds and row matching
~33 B per extra row (mostly per-value arrays: the synthetic world, like the real files, has ~0.23 distinct
values per row).
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.core.errors import ConfigError, DataError
from pipeline.core.io import PARQUET_WRITE, parquet_reader, rebatch, row_group_batches
from pipeline.ctr.schema import LABEL

log = logging.getLogger(__name__)

X4_SPLIT = "x4_split"        # column added to the aligned files: the x4 split holding the same event (null: unpaired)
RARE = "__RARE__"          # the declared token of a merged rare bucket (x2's OOV id)
UNMAPPED, RARE_CODE = -1, -2
_TIME = ("hour_of_day", "weekday")

# 64-bit hashing (splitmix64 finaliser, Steele, Lea & Flood, OOPSLA 2014); numpy uint64 arrays wrap.
_C1, _C2, _C3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_SALT_BASE, _SALT_FP, _SALT_MARK, _SALT_RARE, _SALT_G, _SALT_SRC = (np.uint64(s) for s in (
    0x1B873593, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1, 0x68E31DA4))


def _mix(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.uint64) + _C1
    z ^= z >> _S30
    z *= _C2
    z ^= z >> _S27
    z *= _C3
    z ^= z >> _S31
    return z


def _salt(i: int, kind: np.uint64) -> np.uint64:
    return _mix(np.array([(i + 1) << 40], dtype=np.uint64) ^ kind)[0]


def _code_dtype(card: int):
    return np.int8 if card <= 127 else np.int16 if card <= 32767 else np.int32


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):         # not glibc (musl has no malloc_trim)
        return None


_TRIM = _malloc_trim()


def _release() -> None:
    """Give freed memory back to the OS: Arrow's pool, and glibc's heap (numpy's blocks below glibc's mmap
    threshold, 32 MB at most, stay in the heap once freed, counted in RSS, until trimmed)."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)


# ---------------------------------------------------------------------------------------------- reading


class _Spill:
    """Per-row arrays kept on disk, not in memory: raw files in a private folder under the system's temporary
    directory, appended to in blocks and read back whole or by row range (``np.fromfile``, not a memory map,
    so what a reader holds is exactly what it asked for). The folder goes with :meth:`close`, or with the
    object when it is garbage collected (or at interpreter exit)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="recdag-align-"))
        self._files: dict = {}                 # name -> [path, dtype, rows]
        self._made = 0                         # files made so far (their names)
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.dir), ignore_errors=True)

    def append(self, name, arr: np.ndarray) -> None:
        if name not in self._files:
            self._files[name] = [self.dir / f"{self._made}.bin", arr.dtype, 0]
            self._made += 1
        entry = self._files[name]
        with open(entry[0], "ab") as fh:
            np.ascontiguousarray(arr, dtype=entry[1]).tofile(fh)
        entry[2] += len(arr)

    def get(self, name, s: int = 0, e: int | None = None) -> np.ndarray:
        path, dtype, rows = self._files[name]
        e = rows if e is None else min(e, rows)
        if e <= s:
            return np.empty(0, dtype)
        return np.fromfile(path, dtype, count=e - s, offset=s * dtype.itemsize)

    def drop(self, name) -> None:
        self._files.pop(name)[0].unlink()

    def close(self) -> None:
        self._cleanup()


# per-row arrays in a side's spill besides the fields' codes (named by tuples: no field's name, a str)
_LABEL, _HOUR, _WEEKDAY = ("rows", LABEL), ("rows", "hour_of_day"), ("rows", "weekday")     # int8, -1 = null
_RAW, _KEY, _CONTENT = ("rows", "raw"), ("rows", "key"), ("rows", "content")


@dataclass
class _Side:
    """One dataset's rows, all splits concatenated in the given split order, as integer codes (on disk)."""

    name: str
    split_rows: dict[str, int]
    files: dict[str, Path]
    codes: _Spill = dc_field(default_factory=_Spill)     # per field, per row; label / hour / weekday
    tokens: dict[str, pa.Array] = dc_field(default_factory=dict)      # per field, per code
    clicks: int = 0
    all_weekday: bool = False                            # no row's weekday is null

    @property
    def rows(self) -> int:
        return sum(self.split_rows.values())


def _starts(split_rows: dict[str, int]) -> dict[str, int]:
    out, pos = {}, 0
    for s, n in split_rows.items():
        out[s] = pos
        pos += n
    return out


def _open(files: dict[str, Path], fields: list[str], what: str) -> dict[str, pq.ParquetFile]:
    pfs = {}
    for split, path in files.items():
        path = Path(path)
        if not path.is_file():
            raise DataError(path, f"file not found (split '{split}' of {what})",
                            expected="the normalized parquet file of every split")
        try:
            names = set(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as e:
            raise DataError(path, f"not a readable parquet file ({e})",
                            expected="the normalized parquet file of the split") from None
        for col in (LABEL, *fields, *_TIME):
            if col not in names:
                raise DataError(path, "missing column", field=col, expected="the unified Avazu schema")
        pfs[split] = parquet_reader(path, fields)
    return pfs


def _int8(col, fill: int) -> np.ndarray:
    return pc.fill_null(col, fill).to_numpy(zero_copy_only=False).astype(np.int8, copy=False)


def _read_side(files: dict[str, Path], fields: list[str], what: str) -> _Side:
    pfs = _open(files, fields, what)
    split_rows = {s: pf.metadata.num_rows for s, pf in pfs.items()}
    n = sum(split_rows.values())
    side = _Side(what, split_rows, {s: Path(p) for s, p in files.items()})
    try:
        _read_rows(side, pfs, files, fields)
    except BaseException:
        side.codes.close()
        raise
    log.info("align: read %s (%d rows, %d splits)", what, n, len(files))
    return side


def _read_rows(side: _Side, pfs: dict[str, pq.ParquetFile], files: dict[str, Path], fields: list[str]) -> None:
    """Label / hour / weekday, then per field (one at a time) the codes, into ``side.codes``."""
    split_rows, what = side.split_rows, side.name
    label, hour, weekday = (np.empty(side.rows, np.int8) for _ in range(3))
    pos = 0
    for split, pf in pfs.items():
        for b in row_group_batches(pf, columns=[LABEL, *_TIME]):
            k = b.num_rows
            if b.column(LABEL).null_count:
                raise DataError(files[split], "null label", field=LABEL, expected="0 or 1 on every row")
            label[pos:pos + k] = _int8(b.column(LABEL), 0)
            hour[pos:pos + k] = _int8(b.column("hour_of_day"), -1)
            weekday[pos:pos + k] = _int8(b.column("weekday"), -1)
            pos += k
    for col, arr, hi in (("hour_of_day", hour, 23), ("weekday", weekday, 6)):
        bad = np.flatnonzero((arr < -1) | (arr > hi))
        if len(bad):
            split = next(s for s, o in _starts(split_rows).items() if o <= bad[0] < o + split_rows[s])
            raise DataError(files[split], f"value {int(arr[bad[0]])} out of range", field=col,
                            row=int(bad[0] - _starts(split_rows)[split]) + 1, expected=f"0..{hi} or null")
    side.clicks, side.all_weekday = int(label.sum(dtype=np.int64)), bool(np.all(weekday >= 0))
    for name, arr in ((_LABEL, label), (_HOUR, hour), (_WEEKDAY, weekday)):
        side.codes.append(name, arr)
    del label, hour, weekday
    for f in tqdm(fields, desc=f"align: read {what}", unit="field", disable=None):
        dicts, lengths = [], []                      # per row group: its dictionary, its rows
        for split, pf in pfs.items():
            for b in row_group_batches(pf, columns=[f]):
                col = b.column(0)
                if col.null_count:
                    raise DataError(files[split], "null value", field=f, expected="a token on every row")
                col = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
                dicts.append(col.dictionary)
                lengths.append(len(col))
                side.codes.append(_RAW, col.indices.to_numpy(zero_copy_only=False))
        if not dicts:
            side.tokens[f] = pa.array([], pa.string())
            side.codes.append(f, np.empty(0, np.int8))
            continue
        # unify_dictionaries depends on the dictionaries alone: unified under identity indices, each row
        # group's dictionary gives its transpose map (own index -> unified code), applied to its indices
        unified = pa.chunked_array([pa.DictionaryArray.from_arrays(np.arange(len(d), dtype=np.int32), d)
                                    for d in dicts]).unify_dictionaries()
        del dicts
        side.tokens[f] = unified.chunk(0).dictionary.cast(pa.string())
        dtype = _code_dtype(len(side.tokens[f]))
        pos = 0
        for k, c in zip(lengths, unified.chunks):
            transpose = c.indices.to_numpy(zero_copy_only=False)
            side.codes.append(f, transpose[side.codes.get(_RAW, pos, pos + k)].astype(dtype))
            pos += k
        side.codes.drop(_RAW)
        del unified
        _release()                                   # the column reads' buffers: give them back


# ------------------------------------------------------------------------------------------ per-field state


@dataclass
class _Field:
    name: str
    salt: int
    occ_s: np.ndarray
    clk_s: np.ndarray
    occ_4: np.ndarray
    clk_4: np.ndarray
    to_x4: np.ndarray          # int32 per source code: x4 code | UNMAPPED | RARE_CODE
    from_src: np.ndarray       # int32 per x4 code: source code | UNMAPPED | RARE_CODE
    round_of: np.ndarray       # int8 per source code: round of its match (0 = fingerprint), -1
    bucket: int                # source code of the merged rare bucket, -1 if none
    rare_threshold: int | None
    rare_consistent: bool | None
    fp_mismatch: int = 0       # source ids whose fingerprint class has another size in x4

    def fp(self, side: str) -> np.ndarray:
        occ, clk = (self.occ_s, self.clk_s) if side == "s" else (self.occ_4, self.clk_4)
        return (occ.astype(np.uint64) << np.uint64(32)) | clk.astype(np.uint64)

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-code row-key contributions, source side and x4 side (equal for the two copies of a value):
        the x4 token's hash when mapped, the rare marker, else the marker of the fingerprint class."""
        tok = _mix(np.arange(len(self.from_src), dtype=np.uint64) + _salt(self.salt, np.uint64(0)))
        mark, rare = _salt(self.salt, _SALT_MARK), _salt(self.salt, _SALT_RARE)
        t_s = _mix(_mix(self.fp("s") + _SALT_FP) ^ mark)
        t_s[self.to_x4 == RARE_CODE] = rare
        hit = self.to_x4 >= 0
        t_s[hit] = tok[self.to_x4[hit]]
        t_4 = _mix(_mix(self.fp("4") + _SALT_FP) ^ mark)
        t_4[self.from_src == RARE_CODE] = rare
        hit = self.from_src >= 0
        t_4[hit] = tok[hit]
        return t_s, t_4


def _common(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j) with a[i] == b[j], for two sorted arrays of distinct keys (cheaper than
    np.intersect1d, which sorts the concatenation)."""
    if not len(a) or not len(b):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    j = np.searchsorted(b, a)
    j[j == len(b)] = 0
    hit = b[j] == a
    return np.flatnonzero(hit), j[hit]


def _uniques(keys: np.ndarray, ids: np.ndarray):
    """(keys held by exactly one id, those ids, every distinct key, its count)."""
    u, first, cnt = np.unique(keys, return_index=True, return_counts=True)
    one = cnt == 1
    return u[one], ids[first[one]], u, cnt


def _match(fs: _Field, keys_s: np.ndarray, keys_4: np.ndarray, round_no: int) -> int:
    """Match unmapped values whose class key is unique on both sides; returns the number of new matches."""
    cand_s = np.flatnonzero(fs.to_x4 == UNMAPPED)
    cand_4 = np.flatnonzero(fs.from_src == UNMAPPED)
    if not len(cand_s) or not len(cand_4):
        return 0
    ks, ids_s, us, cs = _uniques(keys_s[cand_s], cand_s)
    k4, ids_4, u4, c4 = _uniques(keys_4[cand_4], cand_4)
    if round_no == 0:
        if len(cand_s) >= 2 and not len(ks):
            raise DataError(f"<{fs.name}>", f"every one of the field's {len(cand_s)} values shares its "
                            "(occurrences, clicks) fingerprint with another value: nothing to anchor the "
                            "alignment on - set avazu.align: false to use the source's own ids", field=fs.name,
                            expected="at least one value with a unique fingerprint")
        i_s, i_4 = _common(us, u4)
        same = np.zeros(len(us), bool)
        same[i_s[cs[i_s] == c4[i_4]]] = True
        fs.fp_mismatch = int(np.sum(cs[~same]))
    a, b = _common(ks, k4)
    src, x4 = ids_s[a], ids_4[b]
    fs.to_x4[src] = x4
    fs.from_src[x4] = src
    fs.round_of[src] = round_no
    return len(src)


# ------------------------------------------------------------------------------------------ row keys


def _base_code(side: _Side, s: int, e: int, weekday_in_key: bool) -> np.ndarray:
    code = side.codes.get(_LABEL, s, e).astype(np.int64) + 2 * (side.codes.get(_HOUR, s, e).astype(np.int64) + 1)
    if weekday_in_key:
        code += 50 * (side.codes.get(_WEEKDAY, s, e).astype(np.int64) + 1)
    return code


_BASE = _mix(np.arange(50 * 9, dtype=np.uint64) + _SALT_BASE)


def _blocks(side: _Side, tabs: dict[str, np.ndarray], batch_rows: int, weekday_in_key: bool):
    """Per block of ``batch_rows`` rows: (the block's codes per field, read from disk, its row keys)."""
    for s in range(0, side.rows, batch_rows):
        e = min(side.rows, s + batch_rows)
        codes = {f: side.codes.get(f, s, e) for f in tabs}
        h = _BASE[_base_code(side, s, e, weekday_in_key)]
        for f, t in tabs.items():
            h += t[codes[f]]
        yield codes, h


def _signatures(side: _Side, tabs: dict[str, np.ndarray], cand: dict[str, np.ndarray], batch_rows: int,
                weekday_in_key: bool) -> dict[str, np.ndarray]:
    """Per field, per candidate code: the sum of the mixed row keys of its rows (a multiset hash)."""
    sig = {f: np.zeros(len(m), np.uint64) for f, m in cand.items()}
    for codes, h in _blocks(side, tabs, batch_rows, weekday_in_key):
        g = _mix(h ^ _SALT_G)
        for f, m in cand.items():
            c = codes[f]
            hit = m[c]
            np.add.at(sig[f], c[hit], g[hit])
    return sig


_PARTS = 16                                               # the final row matching, in key partitions


def _spill_keys(side: _Side, tabs: dict[str, np.ndarray], name, batch_rows: int, weekday_in_key: bool) -> None:
    for _, h in _blocks(side, tabs, batch_rows, weekday_in_key):
        side.codes.append(name, h)


def _partition(side: _Side, names: tuple, part: int, batch_rows: int) -> list[np.ndarray]:
    """[the rows whose ``names[0]`` key falls in partition ``part`` of :data:`_PARTS` (ascending), then those
    rows' values of each of ``names``], streamed from the side's spill."""
    mask, part = np.uint64(_PARTS - 1), np.uint64(part)
    out = [[np.empty(0, np.int64)]] + [[np.empty(0, np.uint64)] for _ in names]
    for s in range(0, side.rows, batch_rows):
        e = min(side.rows, s + batch_rows)
        k = side.codes.get(names[0], s, e)
        hit = np.flatnonzero((k & mask) == part)
        out[0].append(hit + s)
        out[1].append(k[hit])
        for o, name in zip(out[2:], names[1:]):
            o.append(side.codes.get(name, s, e)[hit])
    return [np.concatenate(o) for o in out]


def _runs(sorted_keys: np.ndarray):
    start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(sorted_keys) else \
        np.empty(0, np.int64)
    cnt = np.diff(np.r_[start, len(sorted_keys)]).astype(np.int32)
    start = start.astype(np.int32)
    return sorted_keys[start], start, cnt


def _uniform(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per run (``starts`` into ``values``): whether all its values are equal."""
    if not len(starts):
        return np.zeros(0, bool)
    return np.minimum.reduceat(values, starts) == np.maximum.reduceat(values, starts)


def _match_rows(src: _Side, x4: _Side, tabs_s: dict[str, np.ndarray], tabs_4: dict[str, np.ndarray],
                batch_rows: int, weekday_in_key: bool):
    """Final row keys -> (matched bool per source row, x4's weekday int8 per source row, -1 = none, and the
    x4 split (index into ``x4.split_rows``) of the paired x4 row, int8 per source row, -1 = not paired).

    A key held by one row on each side pairs them; a key held by c rows on each side pairs them as a block
    when the c source rows are identical (exact duplicates: any pairing is the same data) and, for the
    weekday alone, when the c x4 rows share one weekday. The keys (and the source rows' content hashes) go
    to the sides' spills; rows with equal keys are in the same key partition, so the matching runs one
    partition at a time (rows in file order within each, as one global stable sort would order them)."""
    _spill_keys(x4, tabs_4, _KEY, batch_rows, weekday_in_key)
    _spill_keys(src, tabs_s, _KEY, batch_rows, weekday_in_key)
    ctabs = {f: _mix(np.arange(len(src.tokens[f]), dtype=np.uint64) + _salt(i, _SALT_SRC))
             for i, f in enumerate(tabs_s)}
    _spill_keys(src, ctabs, _CONTENT, batch_rows, weekday_in_key=True)   # identity of a row: its own codes
    matched = np.zeros(src.rows, bool)
    weekday = np.full(src.rows, -1, np.int8)
    x4_split = np.full(src.rows, -1, np.int8)
    starts = np.asarray(list(_starts(x4.split_rows).values()), dtype=np.int64)
    weekday_4 = x4.codes.get(_WEEKDAY)
    for part in range(_PARTS):
        r_4, h_4 = _partition(x4, (_KEY,), part, batch_rows)
        o_4 = np.argsort(h_4, kind="stable")
        u_4, st_4, cnt_4 = _runs(h_4[o_4])
        uniform = _uniform(weekday_4[r_4[o_4]], st_4)
        r_s, h_s, content = _partition(src, (_KEY, _CONTENT), part, batch_rows)
        o_s = np.argsort(h_s, kind="stable")
        u_s, st_s, cnt_s = _runs(h_s[o_s])
        ident = _uniform(content[o_s], st_s)
        del h_4, h_s, content
        i_s, i_4 = _common(u_s, u_4)
        eq = cnt_s[i_s] == cnt_4[i_4]
        i_s, i_4 = i_s[eq], i_4[eq]
        c = cnt_s[i_s]
        paired = (c == 1) | ident[i_s]
        keep = paired | uniform[i_4]
        i_s, i_4, c, paired = i_s[keep], i_4[keep], c[keep], paired[keep]
        j = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        rows_s = r_s[o_s[np.repeat(st_s[i_s], c) + j]]
        rows_4 = r_4[o_4[np.repeat(st_4[i_4], c) + j]]
        pair = np.repeat(paired, c)
        matched[rows_s[pair]] = True
        weekday[rows_s] = weekday_4[rows_4]
        x4_split[rows_s[pair]] = (np.searchsorted(starts, rows_4[pair], side="right") - 1).astype(np.int8)
    for side, names in ((x4, (_KEY,)), (src, (_KEY, _CONTENT))):
        for name in names:
            side.codes.drop(name)
    return matched, weekday, x4_split


# ------------------------------------------------------------------------------------------ the alignment


@dataclass
class FieldMap:
    """One field's mapping: source code -> x4 code (or UNMAPPED / RARE_CODE), with what decided it."""

    field: str
    src_tokens: pa.Array
    x4_tokens: pa.Array
    to_x4: np.ndarray
    round_of: np.ndarray
    occurrences: np.ndarray
    clicks: np.ndarray
    bucket: int
    rare_threshold: int | None
    rare_consistent: bool | None
    x4_rare_values: int
    fp_mismatch: int
    _out: pa.Array | None = None

    def output_tokens(self) -> pa.Array:
        """Per source code, the token apply_alignment writes: the x4 token, RARE, or the source token."""
        if self._out is None:
            mapped = self.to_x4 >= 0
            x4 = self.x4_tokens.take(pa.array(np.where(mapped, self.to_x4, 0).astype(np.int64))) \
                if len(self.x4_tokens) else pa.nulls(len(self.to_x4), pa.string())
            out = pc.if_else(pa.array(mapped), x4, self.src_tokens)
            self._out = pc.if_else(pa.array(self.to_x4 == RARE_CODE), pa.scalar(RARE), out)
        return self._out


@dataclass
class Alignment:
    """The result of :func:`align_source`: per field maps, per split recovered weekdays and counts."""

    fields: dict[str, FieldMap]
    split_rows: dict[str, int]
    weekday: dict[str, np.ndarray]       # per split, int8 per row: x4's weekday of the matched row, -1
    rows_matched: dict[str, int]
    rounds: list[dict]
    weekday_in_key: bool
    rare_token: str | None
    source_files: dict[str, Path]
    codes: _Spill                        # per field, the source codes of every row (for apply_alignment)
    seconds: float = 0.0
    x4_split: dict = dc_field(default_factory=dict)   # per split, int8 per row: x4 split of the paired row, -1
    x4_splits: list = dc_field(default_factory=list)  # x4's split names, in the order the codes index

    @property
    def offsets(self) -> dict[str, int]:
        """Per split, the position of its first row among all the source's rows."""
        return _starts(self.split_rows)

    def mapping_table(self) -> pa.Table:
        """One row per (field, source token): the token written, its status and fingerprint."""
        cols = {"field": [], "token": [], "x4_token": [], "status": [], "round": [], "occurrences": [],
                "clicks": []}
        for f, m in self.fields.items():
            n = len(m.to_x4)
            cols["field"].append(pa.repeat(pa.scalar(f, pa.string()), n))
            cols["token"].append(m.src_tokens)
            cols["x4_token"].append(m.output_tokens())
            status = np.where(m.to_x4 >= 0, "mapped", np.where(m.to_x4 == RARE_CODE, "rare", "ambiguous"))
            cols["status"].append(pa.array(status, pa.string()))
            cols["round"].append(pa.array(m.round_of, pa.int8()))
            cols["occurrences"].append(pa.array(m.occurrences, pa.int64()))
            cols["clicks"].append(pa.array(m.clicks, pa.int64()))
        return pa.table({k: pa.concat_arrays(v) if v else pa.array([]) for k, v in cols.items()})

    def report(self, truth: pa.Table | None = None) -> dict:
        """Per field: ids, mapped / ambiguous / rare, shares of occurrences; rows matched per split; with the
        synthetic world's truth table (field, token, x4_token, rare), ``accuracy_vs_truth`` and wrong maps."""
        fields, tot = {}, {"ids": 0, "mapped": 0, "ambiguous": 0, "rare": 0, "occurrences": 0,
                           "occ_mapped": 0, "occ_rare": 0, "occ_ambiguous": 0}
        judged = _judge(self, truth) if truth is not None else None
        if judged is not None:
            tot.update(occ_correct=0, occ_wrong=0, wrong=0, truth_missing=0)
        for f, m in self.fields.items():
            occ = m.occurrences
            mapped, rare = m.to_x4 >= 0, m.to_x4 == RARE_CODE
            amb = m.to_x4 == UNMAPPED
            n_occ = int(occ.sum())
            r = {"ids": len(occ), "mapped": int(mapped.sum()), "ambiguous": int(amb.sum()),
                 "rare": int(rare.sum()), "mapped_by_fingerprint": int(np.sum(m.round_of == 0)),
                 "mapped_by_rows": int(np.sum(m.round_of > 0)), "occurrences": n_occ,
                 "share_mapped": _share(occ[mapped].sum(), n_occ), "share_rare": _share(occ[rare].sum(), n_occ),
                 "share_ambiguous": _share(occ[amb].sum(), n_occ), "x4_rare_values": m.x4_rare_values,
                 "rare_threshold": m.rare_threshold, "rare_consistent": m.rare_consistent,
                 "fingerprint_mismatch": m.fp_mismatch}
            for k, v in (("ids", r["ids"]), ("mapped", r["mapped"]), ("ambiguous", r["ambiguous"]),
                         ("rare", r["rare"]), ("occurrences", n_occ), ("occ_mapped", int(occ[mapped].sum())),
                         ("occ_rare", int(occ[rare].sum())), ("occ_ambiguous", int(occ[amb].sum()))):
                tot[k] += v
            if judged is not None:
                correct, wrong, missing = judged[f]
                r.update(accuracy_vs_truth=_share(occ[correct].sum(), n_occ), wrong=int(wrong.sum()),
                         wrong_share=_share(occ[wrong].sum(), n_occ), truth_missing=int(missing.sum()))
                tot["occ_correct"] += int(occ[correct].sum())
                tot["occ_wrong"] += int(occ[wrong].sum())
                tot["wrong"] += int(wrong.sum())
                tot["truth_missing"] += int(missing.sum())
            fields[f] = r
        total = {"ids": tot["ids"], "mapped": tot["mapped"], "ambiguous": tot["ambiguous"], "rare": tot["rare"],
                 "occurrences": tot["occurrences"], "share_mapped": _share(tot["occ_mapped"], tot["occurrences"]),
                 "share_rare": _share(tot["occ_rare"], tot["occurrences"]),
                 "share_ambiguous": _share(tot["occ_ambiguous"], tot["occurrences"])}
        if judged is not None:
            total.update(accuracy_vs_truth=_share(tot["occ_correct"], tot["occurrences"]), wrong=tot["wrong"],
                         wrong_share=_share(tot["occ_wrong"], tot["occurrences"]),
                         truth_missing=tot["truth_missing"])
        splits = {}
        for s, n in self.split_rows.items():
            w = self.weekday[s]
            splits[s] = {"rows": n, "rows_matched": self.rows_matched[s],
                         "share_matched": _share(self.rows_matched[s], n),
                         "weekday_recovered": int(np.count_nonzero(w >= 0))}
        return {"rows": sum(self.split_rows.values()), "occurrences_mapped": total["share_mapped"],
                **({"accuracy_vs_truth": total["accuracy_vs_truth"]} if judged is not None else {}),
                "rare_token": self.rare_token,
                "weekday_in_key": self.weekday_in_key, "rounds": self.rounds, "seconds": round(self.seconds, 1),
                "total": total, "fields": fields, "splits": splits}


def _share(a, n) -> float:
    return float(a) / n if n else 0.0


def _judge(al: Alignment, truth: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per field, per source code: (correct, wrong, not in truth) against the truth table."""
    missing_cols = {"field", "token", "x4_token", "rare"} - set(truth.column_names)
    if missing_cols:
        raise DataError("<truth>", f"truth table lacks columns {sorted(missing_cols)}",
                        expected="field, token, x4_token, rare")
    import pandas as pd

    t = pd.DataFrame({"field": truth.column("field").to_pylist(),
                      "token": pc.cast(truth.column("token"), pa.string()).to_pylist(),
                      "x4_token": pc.cast(truth.column("x4_token"), pa.string()).to_pylist(),
                      "rare": pc.fill_null(pc.cast(truth.column("rare"), pa.bool_()), False).to_pylist()})
    # a token listed several times (a merged bucket listing its content) is rare if any row says so
    g = t.groupby(["field", "token"], sort=False).agg(rare=("rare", "any"), x4=("x4_token", "first"),
                                                      n=("x4_token", "nunique")).reset_index()
    out = {}
    for f, m in al.fields.items():
        tf = g[g["field"] == f]
        idx = pd.Index(tf["token"].to_numpy(dtype=object)).get_indexer(
            m.src_tokens.to_numpy(zero_copy_only=False))
        missing = idx < 0
        safe = np.where(missing, 0, idx)
        t_rare = tf["rare"].to_numpy(dtype=bool)[safe] | (tf["n"].to_numpy()[safe] > 1) if len(tf) else \
            np.zeros(len(idx), bool)
        t_x4 = tf["x4"].to_numpy(dtype=object)[safe] if len(tf) else np.full(len(idx), None, object)
        ours = m.output_tokens().to_numpy(zero_copy_only=False)
        mapped, rare = m.to_x4 >= 0, m.to_x4 == RARE_CODE
        right_tok = np.asarray(ours.astype(object) == t_x4, dtype=bool)
        correct = ~missing & ((mapped & ~t_rare & right_tok) | (rare & t_rare))
        wrong = ~missing & ((mapped & (t_rare | ~right_tok)) | (rare & ~t_rare))
        out[f] = (correct, wrong, missing)
    return out


def align_source(src_files: dict[str, Path], x4_files: dict[str, Path], fields: list[str], *,
                 rare_token: str | None, batch_rows: int, max_rounds: int = 8,
                 rare_min_count: int | None = None) -> Alignment:
    """Align one source (x1 or x2, every split) to x4 (every split). See the module docstring.

    ``rare_token``: the normalized token of the source's merged rare bucket (x2: ``"x2:0"``), or None.
    ``rare_min_count``: x4 values seen fewer times are the bucket's content; default: inferred per field as
    the occurrences of the rarest non-merged source value (exact when the bucket is a count threshold).
    """
    t0 = time.time()
    fields = list(fields)
    if not fields:
        raise ConfigError("align: no fields to align")
    if len(set(fields)) != len(fields):
        raise ConfigError(f"align: duplicate field in {fields}")
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"align: batch_rows must be a positive integer (got {batch_rows!r})")
    if not isinstance(max_rounds, int) or max_rounds < 0:
        raise ConfigError(f"align: max_rounds must be an integer >= 0 (got {max_rounds!r})")
    if rare_min_count is not None and (not isinstance(rare_min_count, int) or rare_min_count < 1):
        raise ConfigError(f"align: rare_min_count must be a positive integer or null (got {rare_min_count!r})")
    if not src_files or not x4_files:
        raise ConfigError("align: both the source and x4 need at least one split file")
    where = Path(next(iter(src_files.values()))).parent
    src = _read_side(src_files, fields, "source")
    try:                                             # no spill outlives the call but the source's codes
        x4 = _read_side(x4_files, fields, "x4")
        try:
            al = _align(src, x4, fields, where, t0, rare_token=rare_token, batch_rows=batch_rows,
                        max_rounds=max_rounds, rare_min_count=rare_min_count)
        finally:
            x4.codes.close()
    except BaseException:
        src.codes.close()
        raise
    del src, x4
    _release()                        # before apply_alignment's Arrow buffers come on top of a stale heap
    return al


def _counts(codes: np.ndarray, clicked: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per code: (occurrences, clicks), int32 (fewer than 2^31 rows)."""
    return (np.bincount(codes, minlength=n).astype(np.int32),
            np.bincount(codes[clicked], minlength=n).astype(np.int32))


def _align(src: _Side, x4: _Side, fields: list[str], where: Path, t0: float, *, rare_token: str | None,
           batch_rows: int, max_rounds: int, rare_min_count: int | None) -> Alignment:
    """:func:`align_source` on the two sides read; the alignment keeps the source's codes (its spill)."""
    if src.rows != x4.rows:
        raise DataError(where, f"the source has {src.rows:,} rows over its splits ({', '.join(src.split_rows)}) "
                        f"but x4 has {x4.rows:,}: they are not the same events re-split, so they cannot be "
                        "aligned - set avazu.align: false to use the source's own ids",
                        expected="the same events as x4, re-split: equal row totals")
    clicks_s, clicks_4 = src.clicks, x4.clicks
    if clicks_s != clicks_4:
        raise DataError(where, f"the source has {clicks_s:,} clicks but x4 has {clicks_4:,} (both {src.rows:,} "
                        "rows): they are not the same events re-split - set avazu.align: false to use the "
                        "source's own ids", expected="the same events as x4, re-split: equal click totals")
    weekday_in_key = src.all_weekday and x4.all_weekday
    clicked_s, clicked_4 = src.codes.get(_LABEL) == 1, x4.codes.get(_LABEL) == 1
    state: dict[str, _Field] = {}
    for i, f in enumerate(fields):
        cs, c4 = src.codes.get(f), x4.codes.get(f)
        n_s, n_4 = len(src.tokens[f]), len(x4.tokens[f])
        (occ_s, clk_s), (occ_4, clk_4) = _counts(cs, clicked_s, n_s), _counts(c4, clicked_4, n_4)
        to_x4, from_src = np.full(n_s, UNMAPPED, np.int32), np.full(n_4, UNMAPPED, np.int32)
        bucket, threshold, consistent = -1, None, None
        if rare_token is not None and n_s:
            bucket = int(pc.index(src.tokens[f], rare_token).as_py())
        if bucket >= 0:
            to_x4[bucket] = RARE_CODE
            others = np.delete(occ_s, bucket)
            threshold = rare_min_count or (int(others.min()) if len(others) else int(occ_4.max(initial=0)) + 1)
            rare4 = occ_4 < threshold
            from_src[rare4] = RARE_CODE
            consistent = bool(occ_4[rare4].sum() == occ_s[bucket] and clk_4[rare4].sum() == clk_s[bucket])
        state[f] = _Field(f, i, occ_s, clk_s, occ_4, clk_4, to_x4, from_src, np.full(n_s, -1, np.int8),
                          bucket, threshold, consistent)
        del cs, c4
    del clicked_s, clicked_4
    # (a) fingerprints
    new = 0
    for f, fs in state.items():
        try:
            new += _match(fs, _mix(fs.fp("s") + _SALT_FP), _mix(fs.fp("4") + _SALT_FP), 0)
        except DataError as e:
            raise DataError(where, e.problem, field=f, expected=e.expected) from None
    rounds = [{"round": 0, "by": "fingerprint", "new": new, "seconds": round(time.time() - t0, 1)}]
    log.info("align: round 0 (fingerprints): %d ids mapped", new)
    # (b) iterative row matching
    for r in range(1, max_rounds + 1):
        t1 = time.time()
        active = [f for f, fs in state.items() if np.any(fs.to_x4 == UNMAPPED) and np.any(fs.from_src == UNMAPPED)]
        if not active:
            break
        tabs = {f: fs.tables() for f, fs in state.items()}
        tabs_s, tabs_4 = {f: t[0] for f, t in tabs.items()}, {f: t[1] for f, t in tabs.items()}
        sig_s = _signatures(src, tabs_s, {f: state[f].to_x4 == UNMAPPED for f in active}, batch_rows,
                            weekday_in_key)
        sig_4 = _signatures(x4, tabs_4, {f: state[f].from_src == UNMAPPED for f in active}, batch_rows,
                            weekday_in_key)
        del tabs, tabs_s, tabs_4
        new = 0
        for f in active:
            fs = state[f]
            new += _match(fs, _mix(_mix(fs.fp("s") + _SALT_FP) + sig_s.pop(f)),
                          _mix(_mix(fs.fp("4") + _SALT_FP) + sig_4.pop(f)), r)
        rounds.append({"round": r, "by": "rows", "new": new, "seconds": round(time.time() - t1, 1)})
        log.info("align: round %d (rows): %d ids mapped", r, new)
        if not new:
            break
    # (d) rows: matched rows and the weekday they carry in x4
    tabs = {f: fs.tables() for f, fs in state.items()}
    x4_names = list(x4.split_rows)
    matched, weekday, x4_split = _match_rows(src, x4, {f: t[0] for f, t in tabs.items()},
                                   {f: t[1] for f, t in tabs.items()}, batch_rows, weekday_in_key)
    del tabs
    per_split_w, per_split_m, per_split_x, pos = {}, {}, {}, 0
    for s, n in src.split_rows.items():
        per_split_w[s] = weekday[pos:pos + n].copy()
        per_split_x[s] = x4_split[pos:pos + n].copy()
        per_split_m[s] = int(np.count_nonzero(matched[pos:pos + n]))
        pos += n
    del matched, weekday, x4_split
    maps = {f: FieldMap(f, src.tokens[f], x4.tokens[f], fs.to_x4, fs.round_of, fs.occ_s, fs.clk_s, fs.bucket,
                        fs.rare_threshold, fs.rare_consistent, int(np.sum(fs.from_src == RARE_CODE)),
                        fs.fp_mismatch)
            for f, fs in state.items()}
    al = Alignment(maps, dict(src.split_rows), per_split_w, per_split_m, rounds, weekday_in_key, rare_token,
                   dict(src.files), src.codes, seconds=time.time() - t0, x4_split=per_split_x, x4_splits=x4_names)
    log.info("align: done in %.1fs", al.seconds)
    return al


def apply_alignment(alignment: Alignment, src_path: Path, out_path: Path, *, split: str, batch_rows: int) -> dict:
    """Rewrite one split of the source with mapped tokens (unmapped ids keep their token, the merged bucket
    becomes RARE) and x4's weekday / is_weekend where the source had none and the row was matched, plus a
    column :data:`X4_SPLIT`: the x4 split holding the same event (null where no x4 row was paired), which
    avazu_leakage reads (x2's rare bucket hides the raw tokens, so a row hash cannot find those events).
    Streams in row groups; the output has the input's schema plus that column. Returns counts."""
    if split not in alignment.split_rows:
        raise ConfigError(f"align: split '{split}' is not one the alignment was computed on "
                          f"({', '.join(alignment.split_rows)})")
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"align: batch_rows must be a positive integer (got {batch_rows!r})")
    src_path = Path(src_path)
    if not src_path.is_file():
        raise DataError(src_path, "file not found", expected=f"the normalized parquet of split '{split}'")
    fields = list(alignment.fields)
    n_expected = alignment.split_rows[split]
    # the file must be the one the alignment read: same rows, and one high-cardinality field checked per batch
    check = max(fields, key=lambda f: len(alignment.fields[f].src_tokens))
    pf = parquet_reader(src_path, [check])
    if pf.metadata.num_rows != n_expected:
        raise DataError(src_path, f"has {pf.metadata.num_rows:,} rows but split '{split}' had {n_expected:,} "
                        "when the alignment was computed", expected="the file the alignment was computed on")
    schema = pq.read_schema(src_path)
    schema = pa.schema([schema.field(i) for i in range(len(schema)) if schema.field(i).name != X4_SPLIT])
    in_names = list(schema.names)
    schema = schema.append(pa.field(X4_SPLIT, pa.dictionary(pa.int8(), pa.string())))     # no pandas metadata
    read = [c for c in in_names if c not in fields or c == check]
    x_split = alignment.x4_split.get(split)
    x_names = pa.array(alignment.x4_splits, pa.string())
    outs = {f: alignment.fields[f].output_tokens() for f in fields}
    status = {f: alignment.fields[f].to_x4 for f in fields}
    w_split = alignment.weekday[split]
    offset = alignment.offsets[split]
    counts = {"rows": 0, "tokens_mapped": 0, "tokens_rare": 0, "tokens_unmapped": 0, "weekday_recovered": 0}
    with pq.ParquetWriter(out_path, schema, **PARQUET_WRITE) as writer:
        pos = 0
        for batch in rebatch(row_group_batches(pf, columns=read), batch_rows):
            n = batch.num_rows
            if pos + n > n_expected:
                raise DataError(src_path, "has more rows than when the alignment was computed")
            cols = []
            rec = None
            for name in schema.names:
                if name in outs:
                    codes = alignment.codes.get(name, offset + pos, offset + pos + n)
                    if name == check:
                        got = batch.column(name)
                        got = got.dictionary_decode() if pa.types.is_dictionary(got.type) else got
                        want = alignment.fields[name].src_tokens.take(pa.array(codes))
                        if not pc.all(pc.equal(got, want)).as_py():
                            raise DataError(src_path, f"rows {pos + 1}..{pos + n} differ from the file the "
                                            "alignment was computed on", field=name,
                                            expected="the same file, unchanged")
                    st = status[name][codes]
                    counts["tokens_mapped"] += int(np.count_nonzero(st >= 0))
                    counts["tokens_rare"] += int(np.count_nonzero(st == RARE_CODE))
                    counts["tokens_unmapped"] += int(np.count_nonzero(st == UNMAPPED))
                    cols.append(outs[name].take(pa.array(codes)).cast(schema.field(name).type))
                elif name in ("weekday", "is_weekend"):
                    col = batch.column(name)
                    if rec is None:
                        wd = batch.column("weekday")
                        w = w_split[pos:pos + n]
                        rec = np.asarray(wd.is_null().to_numpy(zero_copy_only=False)) & (w >= 0)
                        counts["weekday_recovered"] += int(rec.sum())
                    if rec.any():
                        base = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.int8)
                        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False)) | rec
                        new = w if name == "weekday" else (w >= 5).astype(np.int8)
                        col = pa.array(np.where(rec, new, base), type=schema.field(name).type, mask=~valid)
                    cols.append(col)
                elif name == X4_SPLIT:
                    idx = (x_split[pos:pos + n] if x_split is not None and len(x_names)
                           else np.full(n, -1, np.int8))
                    cols.append(pa.DictionaryArray.from_arrays(pa.array(idx, pa.int8(), mask=idx < 0), x_names))
                else:
                    cols.append(batch.column(name))
            writer.write_batch(pa.record_batch(cols, schema=schema))
            pos += n
            counts["rows"] += n
    if pos != n_expected:
        raise DataError(src_path, f"has {pos:,} rows, expected {n_expected:,}")
    return counts


# ------------------------------------------------------------------------------------------ reports


def stage_report(reports: dict[str, dict], *, enabled: bool, sources: list[str], align: bool) -> dict:
    """The avazu_align report: whether the alignment ran (and why not) and, per aligned source, its
    :meth:`Alignment.report` (plus whatever the stage added, e.g. the written counts)."""
    if enabled:
        reason = None
    elif not align:
        reason = "avazu.align is false"
    elif "x4" not in sources:
        reason = "x4 is not among avazu.sources"
    else:
        reason = "neither x1 nor x2 is among avazu.sources"
    return {"dataset": "avazu", "enabled": bool(enabled), "reason": reason, "configured_sources": list(sources),
            "sources": dict(reports)}


def markdown(report: dict, title: str = "Avazu: x1 / x2 ids aligned to x4 tokens") -> str:
    """``reports/avazu/align.md`` from a :func:`stage_report`, from ``{source: report}`` or from one report."""
    lines = [f"# {title}", ""]
    if "fields" in report:
        reports = {"source": report}
    elif "enabled" in report:
        reports = report["sources"]
        if not report["enabled"]:
            lines += [f"Not run: {report['reason']}; later stages read the normalized sources as published "
                      "(x1 / x2 ids in their own namespaces).", ""]
    else:
        reports = report
    for src, rep in reports.items():
        t = rep["total"]
        truth = "accuracy_vs_truth" in t
        lines += [f"## {src}", "",
                  f"{rep['rows']:,} rows; {t['mapped']:,} of {t['ids']:,} ids mapped, {t['ambiguous']:,} "
                  f"ambiguous, {t['rare']:,} rare bucket(s); occurrences mapped {t['share_mapped']:.4%}, "
                  f"rare {t['share_rare']:.4%}, ambiguous {t['share_ambiguous']:.4%}"
                  + (f"; vs truth: {t['accuracy_vs_truth']:.4%} correct, {t['wrong']:,} wrong ids "
                     f"({t['wrong_share']:.4%} of occurrences)" if truth else "")
                  + f". Rounds: {', '.join(str(r['new']) for r in rep['rounds'])} new ids "
                  f"(fingerprints, then row matching); weekday in the row key: {rep['weekday_in_key']}.", "",
                  "| field | ids | mapped | ambiguous | rare | occ. mapped | occ. rare | occ. ambiguous |"
                  + (" accuracy vs truth | wrong |" if truth else ""),
                  "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if truth else "")]
        for f, r in rep["fields"].items():
            lines.append(f"| {f} | {r['ids']:,} | {r['mapped']:,} | {r['ambiguous']:,} | {r['rare']:,} | "
                         f"{r['share_mapped']:.4%} | {r['share_rare']:.4%} | {r['share_ambiguous']:.4%} |"
                         + (f" {r['accuracy_vs_truth']:.4%} | {r['wrong']:,} |" if truth else ""))
        lines += ["", "| split | rows | rows matched | share | weekday recovered |", "|---|---:|---:|---:|---:|"]
        for s, r in rep["splits"].items():
            lines.append(f"| {s} | {r['rows']:,} | {r['rows_matched']:,} | {r['share_matched']:.4%} | "
                         f"{r['weekday_recovered']:,} |")
        lines.append("")
    return "\n".join(lines)
