"""Leak control (pipeline.ctr.leakage): the stable row hash (a pure-Python reference, pinned values, the same
hash whatever the parquet layout, batch size, dictionary encoding or integer width), the conservative
exclusion rule with exact duplicate rows, the report's counts on tiny tables, the filtered writer, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import DataError
from pipeline.ctr import leakage as lk

FIELDS = ["C1", "site_id", "device_ip", "C14"]          # a stand-in for the 21 fields
COLS = lk.event_columns(FIELDS)
M64 = (1 << 64) - 1


def ref_value(v) -> int:
    """The documented value hash, written out in plain Python."""
    if v is None:
        return int(lk.NULL_HASH)
    h = 0xCBF29CE484222325
    for b in str(v).encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return ref_mix(h)


def ref_mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_row(values) -> int:
    h = int(lk.ROW_SEED)
    for v in values:
        h = ref_mix(h ^ ref_value(v))
    return h


# rows: (C1, site_id, device_ip, C14, hour_of_day, label, weekday)
A = ("1005", "1fbe01fe", "ddd2926e", "15706", 3, 0, 1)
B = ("1005", "1fbe01fe", "ddd2926e", "15706", 4, 0, 1)    # A one hour later
C = ("1002", "85f751fd", "x1:77", "20362", 3, 1, 2)       # an unmapped (namespaced) token
D = ("1005", None, "ddd2926e", "15706", 3, 0, 1)           # A with a null
E = ("1005", "", "ddd2926e", "15706", 3, 0, 1)             # A with an empty string
G = ("1005", "None", "ddd2926e", "15706", 3, 0, 1)         # A with the text "None"


def table(rows, *, hour_type=pa.int8(), weekday=True) -> pa.Table:
    cols = list(zip(*rows))
    data = {f: pa.array(cols[i], pa.string()) for i, f in enumerate(FIELDS)}
    data["hour_of_day"] = pa.array(cols[4], hour_type)
    data["label"] = pa.array(cols[5], pa.int8())
    if weekday:
        data["weekday"] = pa.array(cols[6], pa.int8())
    return pa.table(data)


def write(path, t: pa.Table, **kw):
    pq.write_table(t, path, **kw)
    return path


# ------------------------------------------------------------------------------------------------ the hash


def test_value_and_row_hashes_follow_the_documented_algorithm(tmp_path):
    vals = ["", "a", "1005", "x1:77", "ü", None, "None"]
    got = lk.value_hashes(pa.array(vals, pa.string()))
    assert [int(g) for g in got] == [ref_value(v) for v in vals]
    rows = [A, B, C, D, E, G]
    h = lk.row_hashes(write(tmp_path / "t.parquet", table(rows)), COLS)
    assert h.dtype == np.uint64 and [int(x) for x in h] == [ref_row(r[:6]) for r in rows]


def test_pinned_values():
    """Fixed numbers: a change of the algorithm (or of numpy's uint64 arithmetic) shows up here, not as a
    silently different leak count."""
    # the reference itself against published test vectors: FNV-1a 64 of "a", splitmix64's first output
    # from state 0 (the finaliser applied to 0 + 0x9E3779B97F4A7C15)
    h = 0xCBF29CE484222325
    h = ((h ^ ord("a")) * 0x100000001B3) & M64
    assert h == 0xAF63DC4C8601EC8C and ref_mix(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF
    assert int(lk.value_hashes(pa.array(["1005"]))[0]) == ref_value("1005") == 0x85A50189BE81769F
    assert ref_row(A[:6]) == 0x17D1ECC90FA97AF1


def test_same_values_same_hash_whatever_the_layout(tmp_path):
    rows = [A, B, C, D, E, G, A, C, A] * 3                   # duplicates, nulls, across row groups
    plain = lk.row_hashes(write(tmp_path / "plain.parquet", table(rows), use_dictionary=False), COLS, 1 << 20)
    variants = {
        "dict-small-row-groups": write(tmp_path / "d.parquet", table(rows), use_dictionary=True, row_group_size=4),
        "int64-hour-no-weekday": write(tmp_path / "w.parquet", table(rows, hour_type=pa.int64(), weekday=False)),
    }
    # Arrow dictionary-typed columns with a shuffled dictionary and unused entries, and large_string
    t = table(rows)
    cols = {}
    for name in t.column_names:
        col = t[name].combine_chunks()
        if name in FIELDS:
            values = sorted({v for v in col.to_pylist() if v is not None}, reverse=True) + ["unused", "zzz"]
            idx = pa.array([None if v is None else values.index(v) for v in col.to_pylist()], pa.int32())
            col = pa.DictionaryArray.from_arrays(idx, pa.array(values))
        cols[name] = col
    variants["arrow-dictionary"] = write(tmp_path / "a.parquet", pa.table(cols), row_group_size=5)
    big = {n: (pa.array(t[n].to_pylist(), pa.large_string()) if n in FIELDS else t[n]) for n in t.column_names}
    variants["large-string"] = write(tmp_path / "l.parquet", pa.table(big))
    variants["reordered-columns"] = write(tmp_path / "r.parquet", t.select(list(reversed(t.column_names))))
    for name, path in variants.items():
        for batch_rows in (1, 2, 7, 1000):
            assert np.array_equal(lk.row_hashes(path, COLS, batch_rows), plain), (name, batch_rows)
    # a dictionary column whose dictionary is larger than the batch hashes like the plain column
    assert np.array_equal(lk.value_hashes(cols["site_id"].slice(2, 3)), lk.value_hashes(t["site_id"].slice(2, 3)))
    assert np.array_equal(lk.value_hashes(t["hour_of_day"]), lk.value_hashes(pa.array([str(r[4]) for r in rows])))


def test_distinct_rows_get_distinct_hashes_and_column_order_matters(tmp_path):
    path = write(tmp_path / "t.parquet", table([A, B, C, D, E, G]))
    h = lk.row_hashes(path, COLS)
    assert len(set(h.tolist())) == 6                          # null, "" and "None" are three values
    assert not np.array_equal(lk.row_hashes(path, list(reversed(COLS))), h)
    # weekday is not part of the event (x1 has none): A with another weekday is the same event
    other_day = table([A[:6] + (5,), A[:6] + (None,)])
    h2 = lk.row_hashes(write(tmp_path / "w.parquet", other_day), COLS)
    assert h2[0] == h2[1] == h[0]
    assert lk.event_columns(FIELDS) == (*FIELDS, "hour_of_day", "label")


# ------------------------------------------------------------------------------------------------ the rule


def hashes_of(tmp_path, name, rows):
    return lk.row_hashes(write(tmp_path / f"{name}.parquet", table(rows)), COLS, 2)


def test_leaked_mask_is_conservative_with_duplicates(tmp_path):
    train = hashes_of(tmp_path, "train", [A, A, B, C, D, A])
    valid = hashes_of(tmp_path, "valid", [A, E])
    test = hashes_of(tmp_path, "test", [C, C, G])
    mask = lk.leaked_mask(train, [valid, test])
    assert mask.tolist() == [True, True, False, True, False, True]     # every copy of A goes
    assert np.array_equal(mask, lk.leaked_mask(train, np.concatenate([test, valid]), chunk=2))
    assert not lk.leaked_mask(train, np.zeros(0, np.uint64)).any()
    assert lk.leaked_mask(np.zeros(0, np.uint64), valid).shape == (0,)
    with pytest.raises(ValueError, match="uint64"):
        lk.leaked_mask(train.astype(np.int64), valid)


def test_leak_report_counts_both_sides(tmp_path):
    train = hashes_of(tmp_path, "train", [A, A, A, B, C, D])
    other = hashes_of(tmp_path, "other", [E, G])
    valid = hashes_of(tmp_path, "valid", [A, E])
    test = hashes_of(tmp_path, "test", [C, C, B, B, G])
    rep = lk.leak_report({"x1/train": train, "x2/train": other}, {"x4/valid": valid, "x4/test": test})
    assert rep["hash"] == lk.HASH_NAME
    assert rep["eval"]["x4/test"] == {"rows": 5, "distinct": 3, "duplicate_rows": 2}
    t = rep["train"]["x1/train"]
    assert (t["rows"], t["distinct"], t["duplicate_rows"]) == (6, 4, 2)
    assert (t["excluded_rows"], t["kept_rows"]) == (5, 1) and t["excluded_share"] == pytest.approx(5 / 6)
    v = t["by_eval"]["x4/valid"]                  # A: 3 copies in train, 1 in valid
    assert (v["leaked_rows"], v["paired_rows"], v["excess_rows"]) == (3, 1, 2)
    assert (v["eval_rows_in_train"], v["eval_share_in_train"]) == (1, 0.5)
    s = t["by_eval"]["x4/test"]                   # B: 1 vs 2, C: 1 vs 2
    assert (s["leaked_rows"], s["paired_rows"], s["excess_rows"]) == (2, 2, 0)
    assert (s["eval_rows_in_train"], s["leaked_share"]) == (4, pytest.approx(2 / 6))
    o = rep["train"]["x2/train"]
    assert o["excluded_rows"] == 2 and o["by_eval"]["x4/valid"]["leaked_rows"] == 1
    assert o["by_eval"]["x4/test"]["eval_rows_in_train"] == 1
    import json
    assert json.loads(json.dumps(rep)) == rep                  # JSON-safe
    assert lk.leak_report({"a": train}, {})["train"]["a"]["excluded_rows"] == 0


def test_write_kept_filters_rows_and_keeps_the_schema(tmp_path):
    rows = [A, B, C, D, E, G, A]
    src = write(tmp_path / "src.parquet", table(rows), row_group_size=3)
    keep = np.array([False, True, True, False, True, True, False])
    assert lk.write_kept(src, tmp_path / "dst.parquet", keep, batch_rows=2) == 4
    out = pq.read_table(tmp_path / "dst.parquet")
    assert out.schema == pq.read_schema(src) and out.to_pylist() == [r for r, k in zip(table(rows).to_pylist(), keep) if k]
    assert lk.write_kept(src, tmp_path / "none.parquet", np.zeros(7, bool)) == 0
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0
    with pytest.raises(DataError, match="keep mask has 3"):
        lk.write_kept(src, tmp_path / "bad.parquet", np.ones(3, bool))


def test_bad_input(tmp_path):
    path = write(tmp_path / "t.parquet", table([A]))
    with pytest.raises(DataError, match=r"t\.parquet, field 'device_model': missing column"):
        lk.row_hashes(path, [*COLS, "device_model"])
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="junk.parquet: not a readable parquet file"):
        lk.row_hashes(tmp_path / "junk.parquet", COLS)
    with pytest.raises(ValueError, match="batch_rows"):
        lk.row_hashes(path, COLS, 0)


def test_event_mask_uses_the_alignment_pairing_where_there_is_one(tmp_path):
    from pipeline.ctr.align import X4_SPLIT

    valid = hashes_of(tmp_path, "valid", [A])
    test = hashes_of(tmp_path, "test", [C])
    rows = [A, A, B, C, D]
    plain = write(tmp_path / "plain.parquet", table(rows))
    h = lk.row_hashes(plain, COLS)
    assert lk.mask_source(plain) == "row_hash"
    assert lk.event_mask(plain, h, [valid, test]).tolist() == [True, True, False, True, False]
    # aligned rows carry the x4 split of their paired event: that decides; unpaired rows (null) use the hash
    paired = table(rows).append_column(X4_SPLIT, pa.array(["valid", "train", None, None, "test"]).dictionary_encode())
    path = write(tmp_path / "aligned.parquet", paired)
    assert lk.mask_source(path) == "paired_rows"
    assert lk.event_mask(path, h, [valid, test]).tolist() == [True, False, False, True, True]


def test_the_report_records_the_masks_applied_beside_the_hash_rule():
    train, ev = np.array([1, 2, 3, 4], dtype=np.uint64), np.array([2], dtype=np.uint64)
    rep = lk.leak_report({"x2/train": train}, {"x4/test": ev})
    mask = np.array([False, True, True, False])          # the pairing also found row 3 (a rare-bucket row)
    lk.record_masks(rep, {"x2/train": mask}, {"x2/train": "paired_rows"})
    t = rep["train"]["x2/train"]
    assert (t["excluded_rows"], t["kept_rows"], t["hash_rule_excluded_rows"], t["excluded_by"]) == (2, 2, 1, "paired_rows")
    assert t["excluded_share"] == 0.5 and "paired" in rep["rule"]
    with pytest.raises(ValueError, match="mask of 3 rows for 4"):
        lk.record_masks(rep, {"x2/train": mask[:3]}, {"x2/train": "row_hash"})
