"""The aligner (pipeline/ctr/align.py): x1/x2 ids -> x4 tokens on tiny hand-made worlds with the exact
expected mapping, and on the synthetic generator's world against its truth sidecar."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import ConfigError, DataError
from pipeline.ctr.align import RARE, X4_SPLIT, align_source, apply_alignment, markdown, stage_report
from pipeline.ctr.schema import normalized_schema

F = ["a", "b"]
# four events over fields a, b: the small world most error tests start from
EVENTS = [(0, 5, 2, "a1", "b1"), (0, 5, 2, "a2", "b2"), (0, 5, 2, "a3", "b2"), (1, 5, 2, "a3", "b3")]


def _write(path: Path, rows: list[tuple], fields: list[str], with_weekday: bool) -> None:
    cols = {"label": [r[0] for r in rows]}
    for i, f in enumerate(fields):
        cols[f] = [r[3 + i] for r in rows]
    cols["hour_of_day"] = [r[1] for r in rows]
    cols["weekday"] = [r[2] if with_weekday else None for r in rows]
    cols["is_weekend"] = [None if w is None else int(w >= 5) for w in cols["weekday"]]
    pq.write_table(pa.table(cols, schema=normalized_schema(fields, with_oracle=False)), path)


def make_world(tmp_path: Path, events: list[tuple], fields: list[str] = F, *, ns: str = "x1:",
               with_weekday: bool = False, merged: dict[str, set] | None = None):
    """``events``: (label, hour, weekday, *x4 values). x4 gets them in order (train / test alternating);
    the source gets them reversed (train / valid / test in turn), every value relabelled to ``ns`` + an id
    (ids in reverse sorted order of the values; the values in ``merged[field]`` all become ``ns`` + "0").
    Returns (source files, x4 files, expected {field: {source token: x4 token or RARE}})."""
    merged = merged or {}
    relabel, expected = {}, {}
    for i, f in enumerate(fields):
        values = sorted({e[3 + i] for e in events}, reverse=True)
        ids = iter(range(1, len(values) + 1))
        relabel[f] = {v: f"{ns}0" if v in merged.get(f, ()) else f"{ns}{next(ids)}" for v in values}
        expected[f] = {t: (RARE if v in merged.get(f, ()) else v) for v, t in relabel[f].items()}
    (tmp_path / "x4").mkdir()
    (tmp_path / "src").mkdir()
    x4 = {s: tmp_path / "x4" / f"{s}.parquet" for s in ("train", "test")}
    _write(x4["train"], events[0::2], fields, True)
    _write(x4["test"], events[1::2], fields, True)
    src_rows = [(e[0], e[1], e[2], *(relabel[f][e[3 + i]] for i, f in enumerate(fields))) for e in events[::-1]]
    src = {s: tmp_path / "src" / f"{s}.parquet" for s in ("train", "valid", "test")}
    for k, s in enumerate(src):
        _write(src[s], src_rows[k::3], fields, with_weekday)
    return src, x4, expected


def mapping(al) -> dict[str, dict[str, str]]:
    t = al.mapping_table().to_pylist()
    out: dict[str, dict[str, str]] = {}
    for r in t:
        out.setdefault(r["field"], {})[r["token"]] = r["x4_token"]
    return out


def status(al) -> dict[tuple[str, str], str]:
    return {(r["field"], r["token"]): r["status"] for r in al.mapping_table().to_pylist()}


def align(src, x4, fields=F, **kw):
    kw.setdefault("rare_token", None)
    kw.setdefault("batch_rows", 3)            # tiny blocks: the streaming paths run over several blocks
    return align_source(src, x4, fields, **kw)


# ---------------------------------------------------------------------------------------------- mapping


def test_unique_fingerprints_map_directly(tmp_path):
    # a: counts 4,3,2,1 ; b: counts 1,2,3,4 ; all labels 0 -> every fingerprint unique
    a = ["a1"] * 4 + ["a2"] * 3 + ["a3"] * 2 + ["a4"]
    b = ["b4", "b3", "b4", "b2", "b4", "b3", "b1", "b4", "b2", "b3"]
    events = [(0, i % 24, i % 7, a[i], b[i]) for i in range(10)]
    src, x4, expected = make_world(tmp_path, events)
    al = align(src, x4)
    assert mapping(al) == expected
    rep = al.report()
    assert rep["fields"]["a"]["mapped_by_fingerprint"] == 4 and rep["fields"]["b"]["mapped_by_rows"] == 0
    assert rep["total"]["share_mapped"] == 1.0 and rep["total"]["ambiguous"] == 0


def test_ties_resolved_by_row_matching(tmp_path):
    # a1, a2 tie on (1 occurrence, 0 clicks); their rows differ in b (b1 vs b2, unique fingerprints)
    src, x4, expected = make_world(tmp_path, EVENTS)
    al = align(src, x4)
    assert mapping(al) == expected
    rep = al.report()
    assert rep["fields"]["a"]["mapped_by_fingerprint"] == 1 and rep["fields"]["a"]["mapped_by_rows"] == 2
    assert [r["new"] for r in rep["rounds"]][:2] == [4, 2]


def test_ties_resolved_by_hour_then_chained(tmp_path):
    # a1/a2 tie and b1/b2 tie; hours tell the pairs apart (a1 with b1 at 3h, a2 with b2 at 4h); a3/b3 anchor
    events = [(0, 3, 1, "a1", "b1"), (0, 4, 1, "a2", "b2"), (1, 9, 1, "a3", "b3")]
    src, x4, expected = make_world(tmp_path, events)
    assert mapping(align(src, x4)) == expected


def test_merged_rare_bucket_maps_to_rare(tmp_path):
    # x2-like: a7, a8 (seen once) merged into x2:0; inferred threshold = 4 (the rarest kept value)
    events = ([(0, h, 1, "a1", "b1") for h in range(5)] + [(1, h, 2, "a2", "b2") for h in range(4)]
              + [(0, 7, 3, "a7", "b1"), (1, 8, 3, "a8", "b2")])
    src, x4, expected = make_world(tmp_path, events, ns="x2:", with_weekday=True, merged={"a": {"a7", "a8"}})
    al = align(src, x4, rare_token="x2:0")
    assert expected["a"]["x2:0"] == RARE
    assert mapping(al) == expected
    fa = al.report()["fields"]["a"]
    assert (fa["rare"], fa["mapped"], fa["ambiguous"], fa["x4_rare_values"]) == (1, 2, 0, 2)
    assert fa["rare_consistent"] is True and fa["rare_threshold"] == 4
    assert fa["share_rare"] == pytest.approx(2 / 11)
    # an explicit threshold gives the same; a field without the bucket has no rare values
    al2 = align(src, x4, rare_token="x2:0", rare_min_count=2)
    assert mapping(al2) == expected
    assert al2.report()["fields"]["b"]["x4_rare_values"] == 0


def test_exact_duplicate_rows(tmp_path):
    # (a1, b1) twice at 3h (on two different days), (a2, b2) twice at 4h: a1/a2 and b1/b2 tie on (2, 0)
    events = [(0, 3, 1, "a1", "b1"), (0, 3, 2, "a1", "b1"), (0, 4, 1, "a2", "b2"), (0, 4, 1, "a2", "b2"),
              (1, 9, 5, "a3", "b3")]
    src, x4, expected = make_world(tmp_path, events)
    al = align(src, x4)
    assert mapping(al) == expected
    rep = al.report()
    assert sum(s["rows_matched"] for s in rep["splits"].values()) == 5
    # the duplicated source rows got x4's weekdays: the multiset {1, 2} for the 3h pair
    out = _apply_all(al, src, tmp_path)
    got = Counter((r["a"], r["hour_of_day"], r["weekday"], r["is_weekend"]) for r in out)
    assert got == Counter({("a1", 3, 1, 0): 1, ("a1", 3, 2, 0): 1, ("a2", 4, 1, 0): 2, ("a3", 9, 5, 1): 1})


def test_unresolvable_tie_stays_unmapped_and_is_counted(tmp_path):
    # a1, a2: same fingerprint, rows identical but for a (different days, which x1 does not see)
    events = [(0, 1, 1, "a1", "b1"), (0, 1, 2, "a2", "b1"), (1, 2, 3, "a3", "b2")]
    src, x4, expected = make_world(tmp_path, events)
    al = align(src, x4)
    m = mapping(al)
    tok = {v: t for t, v in expected["a"].items()}
    assert m["a"][tok["a3"]] == "a3" and m["b"] == expected["b"]
    assert m["a"][tok["a1"]] == tok["a1"] and m["a"][tok["a2"]] == tok["a2"]       # kept, never guessed
    st = status(al)
    assert st[("a", tok["a1"])] == st[("a", tok["a2"])] == "ambiguous"
    fa = al.report()["fields"]["a"]
    assert (fa["ids"], fa["mapped"], fa["ambiguous"]) == (3, 1, 2)
    assert fa["share_ambiguous"] == pytest.approx(2 / 3)
    rep = al.report()
    assert sum(s["rows_matched"] for s in rep["splits"].values()) == 1
    assert sum(s["weekday_recovered"] for s in rep["splits"].values()) == 1
    # when the two x4 rows share the date, the weekday is recovered for both, though the rows stay unpaired
    events[1] = (0, 1, 1, "a2", "b1")
    d = tmp_path / "same_day"
    d.mkdir()
    src2, x42, _ = make_world(d, events)
    rep2 = align(src2, x42).report()
    assert sum(s["rows_matched"] for s in rep2["splits"].values()) == 1
    assert sum(s["weekday_recovered"] for s in rep2["splits"].values()) == 3


def _apply_all(al, src, tmp_path) -> list[dict]:
    rows = []
    for split, path in src.items():
        out = tmp_path / f"{split}.aligned.parquet"
        apply_alignment(al, path, out, split=split, batch_rows=2)
        rows += pq.read_table(out).to_pylist()
    return rows


def test_apply_alignment_output(tmp_path):
    events = [(0, 5, 2, "a1", "b1"), (0, 5, 3, "a2", "b2"), (0, 5, 4, "a3", "b2"), (1, 5, 6, "a3", "b3"),
              (0, 7, 0, "a4", "b4"), (0, 7, 1, "a5", "b4")]           # a4/a5: an unresolvable tie
    src, x4, expected = make_world(tmp_path, events)
    al = align(src, x4)
    total = Counter()
    for split, path in src.items():
        out = tmp_path / f"{split}.aligned.parquet"
        c = apply_alignment(al, path, out, split=split, batch_rows=1)
        total.update(c)
        got = pq.read_schema(out).remove_metadata()
        assert got.remove(got.get_field_index(X4_SPLIT)) == pq.read_schema(path).remove_metadata()
        assert got.field(X4_SPLIT).type == pa.dictionary(pa.int8(), pa.string())
        assert pq.read_metadata(out).num_rows == c["rows"] == pq.read_metadata(path).num_rows
    assert total["rows"] == 6 and total["tokens_mapped"] == 10 and total["tokens_unmapped"] == 2
    assert total["weekday_recovered"] == 4 and total["tokens_rare"] == 0
    out = Counter()
    for split in src:
        for r in pq.read_table(tmp_path / f"{split}.aligned.parquet").to_pylist():
            out[(r["label"], r["hour_of_day"], r["weekday"], r["is_weekend"], r["a"], r["b"])] += 1
    tok = {v: t for t, v in expected["a"].items()}
    want = Counter({(0, 5, 2, 0, "a1", "b1"): 1, (0, 5, 3, 0, "a2", "b2"): 1, (0, 5, 4, 0, "a3", "b2"): 1,
                    (1, 5, 6, 1, "a3", "b3"): 1, (0, 7, None, None, tok["a4"], "b4"): 1,
                    (0, 7, None, None, tok["a5"], "b4"): 1})
    assert out == want


def test_apply_alignment_keeps_the_oracle_and_writes_rare(tmp_path):
    events = ([(0, h, 1, "a1", "b1") for h in range(5)] + [(1, h, 2, "a2", "b2") for h in range(4)]
              + [(0, 7, 3, "a7", "b1"), (1, 8, 3, "a8", "b2")])
    src, x4, _ = make_world(tmp_path, events, ns="x2:", with_weekday=True, merged={"a": {"a7", "a8"}})
    t = pq.read_table(src["train"])
    t = t.append_column(pa.field("p_oracle", pa.float32()), pa.array(np.linspace(0, 1, t.num_rows), pa.float32()))
    pq.write_table(t, src["train"])
    al = align(src, x4, rare_token="x2:0")
    out = tmp_path / "train.aligned.parquet"
    c = apply_alignment(al, src["train"], out, split="train", batch_rows=2)
    got = pq.read_table(out)
    assert got.column("p_oracle").to_pylist() == t.column("p_oracle").to_pylist()
    assert got.column("weekday").to_pylist() == t.column("weekday").to_pylist()   # x2 had them: untouched
    assert c["weekday_recovered"] == 0
    a = got.column("a").to_pylist()
    assert c["tokens_rare"] == a.count(RARE) >= 1 and set(a) <= {"a1", "a2", RARE}


# ---------------------------------------------------------------------------------------------- report


def test_report_counts_and_truth(tmp_path):
    events = [(0, 1, 1, "a1", "b1"), (0, 1, 2, "a2", "b1"), (1, 2, 3, "a3", "b2"), (0, 2, 3, "a4", "b2"),
              (0, 2, 3, "a4", "b3")]
    src, x4, expected = make_world(tmp_path, events)
    al = align(src, x4)
    truth_rows = [{"field": f, "token": t, "x4_token": v, "rare": False} for f, m in expected.items()
                  for t, v in m.items()]
    rep = al.report(pa.Table.from_pylist(truth_rows))
    fa, fb = rep["fields"]["a"], rep["fields"]["b"]
    assert (fa["ids"], fa["mapped"], fa["ambiguous"], fa["rare"]) == (4, 2, 2, 0)
    assert fa["occurrences"] == 5 and fa["share_mapped"] == pytest.approx(3 / 5)
    assert fa["accuracy_vs_truth"] == pytest.approx(3 / 5) and fa["wrong"] == 0
    assert fb["accuracy_vs_truth"] == 1.0 and rep["total"]["accuracy_vs_truth"] == pytest.approx(8 / 10)
    assert rep["rows"] == 5 and set(rep["splits"]) == {"train", "valid", "test"}
    assert sum(s["rows"] for s in rep["splits"].values()) == 5
    # a truth that disagrees on one mapped id (a3, seen once) and calls one id rare: two wrong ids
    tok = {v: t for t, v in expected["a"].items()}
    for r in truth_rows:
        if r["field"] == "a" and r["token"] == tok["a3"]:
            r["x4_token"] = "zz"
        if r["field"] == "b" and r["x4_token"] == "b3":
            r["x4_token"], r["rare"] = None, True
    rep = al.report(pa.Table.from_pylist(truth_rows))
    assert rep["fields"]["a"]["wrong"] == 1 and rep["fields"]["b"]["wrong"] == 1 and rep["total"]["wrong"] == 2
    assert rep["total"]["wrong_share"] == pytest.approx(2 / 10)
    assert json.loads(json.dumps(rep)) == rep                                   # plain JSON types only
    md = markdown({"x1": rep})
    assert "## x1" in md and "| a | 4 | 2 | 2 | 0 |" in md and "accuracy vs truth" in md
    assert markdown(al.report()).startswith("# ")
    stage = stage_report({"x1": rep}, enabled=True, sources=["x1", "x4"], align=True)
    assert stage["sources"]["x1"] is rep and stage["reason"] is None and "## x1" in markdown(stage)
    off = stage_report({}, enabled=False, sources=["x1", "x4"], align=False)
    assert off["reason"] == "avazu.align is false" and "Not run: avazu.align is false" in markdown(off)
    assert stage_report({}, enabled=False, sources=["x1"], align=True)["reason"] == "x4 is not among avazu.sources"
    assert rep["occurrences_mapped"] == rep["total"]["share_mapped"]


# ---------------------------------------------------------------------------------------------- errors


def test_row_totals_differ(tmp_path):
    src, x4, _ = make_world(tmp_path, EVENTS)
    _write(x4["test"], [(0, 1, 1, "a1", "b1")] * 3, F, True)                 # 2 + 3 rows instead of 2 + 2
    with pytest.raises(DataError, match=r"4 rows .* x4 has 5.*avazu\.align: false"):
        align(src, x4)


def test_clicks_differ(tmp_path):
    src, x4, _ = make_world(tmp_path, EVENTS)
    _write(x4["test"], [(1, 5, 2, "a2", "b2"), (1, 5, 2, "a3", "b3")], F, True)
    with pytest.raises(DataError, match=r"1 clicks but x4 has 2.*avazu\.align: false"):
        align(src, x4)


def test_field_whose_fingerprints_all_tie(tmp_path):
    # b: b1 and b2 both (2 occurrences, 1 click), nothing else: nothing to anchor on
    events = [(0, 1, 1, "a1", "b1"), (1, 2, 1, "a1", "b1"), (0, 3, 1, "a2", "b2"), (1, 4, 1, "a3", "b2")]
    src, x4, _ = make_world(tmp_path, events)
    with pytest.raises(DataError, match=r"field 'b'.*fingerprint.*nothing to anchor"):
        align(src, x4)


def test_missing_file_and_column(tmp_path):
    src, x4, _ = make_world(tmp_path, EVENTS)
    with pytest.raises(DataError, match=r"nope\.parquet: file not found \(split 'valid' of source\)"):
        align({**src, "valid": tmp_path / "nope.parquet"}, x4)
    with pytest.raises(DataError, match=r"train\.parquet, field 'c': missing column"):
        align(src, x4, fields=["a", "b", "c"])


def test_time_out_of_range(tmp_path):
    src, x4, _ = make_world(tmp_path, EVENTS)
    _write(x4["test"], [(0, 5, 2, "a2", "b2"), (1, 31, 2, "a3", "b3")], F, True)
    with pytest.raises(DataError, match=r"x4/test\.parquet, row 2, field 'hour_of_day': value 31 out of range"):
        align(src, x4)


def test_config_errors(tmp_path):
    src, x4, _ = make_world(tmp_path, EVENTS)
    with pytest.raises(ConfigError, match="batch_rows"):
        align(src, x4, batch_rows=0)
    with pytest.raises(ConfigError, match="max_rounds"):
        align(src, x4, max_rounds=-1)
    with pytest.raises(ConfigError, match="no fields"):
        align(src, x4, fields=[])
    with pytest.raises(ConfigError, match="rare_min_count"):
        align(src, x4, rare_min_count=0)
    al = align(src, x4)
    with pytest.raises(ConfigError, match="split 'dev' is not one"):
        apply_alignment(al, src["train"], tmp_path / "o.parquet", split="dev", batch_rows=10)
    with pytest.raises(DataError, match="rows but split 'train' had"):          # another split's file
        apply_alignment(al, src["test"], tmp_path / "o.parquet", split="train", batch_rows=10)
    _write(src["valid"], [(0, 5, 2, "x1:2", "x1:1")], F, False)                 # same size, other rows
    with pytest.raises(DataError, match="differ from the file the alignment was computed on"):
        apply_alignment(al, src["valid"], tmp_path / "o.parquet", split="valid", batch_rows=10)


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic_world_against_truth(tiny_raw, layouts, tmp_path):
    """The generator's own world (heavy tails, fingerprint ties, exact duplicates, x2's OOV bucket):
    >= 99.5% of occurrences mapped right and <= 0.1% wrong against its truth sidecar; x1's recovered
    weekdays give back x4's rows (as a multiset)."""
    from pipeline.ctr.normalize import normalize_source

    fields = list(layouts.fields)
    for s in ("x1", "x2", "x4"):
        (tmp_path / s).mkdir()
        normalize_source(tiny_raw / s, layouts[s], layouts.fields, tmp_path / s, 4096)
    x4 = {sp: tmp_path / "x4" / f"{sp}.parquet" for sp in layouts["x4"].splits}
    missing = []
    for s, rare in (("x1", None), ("x2", f"{layouts['x2'].namespace}0")):
        src = {sp: tmp_path / s / f"{sp}.parquet" for sp in layouts[s].splits}
        al = align_source(src, x4, fields, rare_token=rare, batch_rows=2048)
        sidecar = tiny_raw / s / "alignment_truth.parquet"
        rep = al.report(pq.read_table(sidecar) if sidecar.is_file() else None)
        assert rep["total"]["share_mapped"] + rep["total"]["share_rare"] >= 0.995, rep["total"]
        if "accuracy_vs_truth" in rep["total"]:
            assert rep["total"]["accuracy_vs_truth"] >= 0.995, rep["total"]
            assert rep["total"]["wrong_share"] <= 0.001, rep["total"]
        else:
            missing.append(s)
        if s == "x1":
            _check_rows_are_x4_rows(al, src, x4, fields, tmp_path)
    if missing:
        pytest.skip(f"no truth sidecar {tiny_raw}/<src>/alignment_truth.parquet for {missing} yet "
                    "(the synthetic writer does not produce it): accuracy vs truth not checked")


def _check_rows_are_x4_rows(al, src, x4, fields, tmp_path):
    cols = ["label", "hour_of_day", "weekday", *fields]
    x4_rows = Counter(tuple(r.values()) for p in x4.values() for r in pq.read_table(p, columns=cols).to_pylist())
    got, recovered = Counter(), 0
    for split, path in src.items():
        out = tmp_path / f"x1_{split}.aligned.parquet"
        apply_alignment(al, path, out, split=split, batch_rows=1000)
        for r in pq.read_table(out, columns=cols).to_pylist():
            if r["weekday"] is not None and not any(str(r[f]).startswith("x1:") for f in fields):
                got[tuple(r.values())] += 1
                recovered += 1
    assert recovered >= 0.99 * sum(al.split_rows.values())
    assert not (got - x4_rows), "aligned x1 rows that are no x4 row"
