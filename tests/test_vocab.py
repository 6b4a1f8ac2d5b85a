"""vocab: FuxiCTR semantics, streaming counts, encoding, coverage."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ctr import vocab as vc


def _table(**cols):
    return pa.table({k: pa.array(v, pa.int8() if k in ("label", "hour_of_day", "weekday") else None)
                     for k, v in cols.items()})


@pytest.fixture
def split(tmp_path):
    t = _table(label=[0, 1, 0, 0, 1, 0, 0],
               site=["b", "a", "b", "c", "a", "d", "b"],        # b:3 a:2 c:1 d:1
               weekday=[1, 1, None, 2, 2, 2, 5])
    path = tmp_path / "train.parquet"
    pq.write_table(t, path)
    return path


def test_fuxictr_order_pad_oov(split):
    counts = vc.count_file(split, ["site", "weekday"], batch_rows=3)
    v = vc.build_vocab(counts, min_count=2)
    assert v["site"].tokens.to_pylist() == ["b", "a"]            # count desc
    assert v["site"].size == 4 and v["site"].oov_index == 3       # PAD + 2 + OOV
    assert v["weekday"].tokens.to_pylist() == ["2", "1"]          # nulls are not tokens
    v1 = vc.build_vocab(counts, min_count=1)
    assert v1["site"].tokens.to_pylist() == ["b", "a", "c", "d"]  # ties broken by token


def test_encode(split, tmp_path):
    v = vc.build_vocab(vc.count_file(split, ["site", "weekday"], 100), min_count=2)
    out = vc.Encoder(v).encode_file(split, tmp_path / "enc.parquet", batch_rows=2)
    t = pq.read_table(tmp_path / "enc.parquet")
    assert t.schema.field("site").type == pa.int32()
    assert t.column("site").to_pylist() == [1, 2, 1, 3, 2, 3, 1]
    assert t.column("weekday").to_pylist() == [2, 2, 3, 1, 1, 1, 3]   # null and rare '5' -> OOV
    assert out["oov"] == {"site": 2, "weekday": 2} and out["rows"] == 7 and out["clicks"] == 2
    assert t.column("label").to_pylist() == [0, 1, 0, 0, 1, 0, 0]


def test_streaming_counts_equal_whole_counts(tmp_path, monkeypatch):
    g = np.random.default_rng(0)
    toks = [f"t{i}" for i in g.zipf(1.3, 5000) % 700]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"f": toks}), path)
    monkeypatch.setattr(vc, "_COMPACT_AT", 50)                   # force many partial merges
    small = vc.count_file(path, ["f"], batch_rows=97)["f"]
    big = vc.count_file(path, ["f"], batch_rows=10**6)["f"]
    as_dict = lambda t: dict(zip(t["token"].to_pylist(), t["count"].to_pylist()))
    assert as_dict(small) == as_dict(big)
    assert sum(as_dict(big).values()) == 5000


def test_coverage():
    target = pa.table({"token": ["a", "b", "c"], "count": pa.array([6, 3, 1], pa.int64())})
    seen = pa.table({"token": ["a", "z"], "count": pa.array([1, 1], pa.int64())})
    c = vc.coverage(target, seen)
    assert c == {"distinct": pytest.approx(1 / 3), "occurrence": pytest.approx(0.6)}


def test_vocab_table_and_feature_map(split):
    v = vc.build_vocab(vc.count_file(split, ["site"], 100), min_count=2)
    t = vc.vocab_table(v).to_pydict()
    assert t["token"] == ["__PAD__", "b", "a", "__OOV__"] and t["index"] == [0, 1, 2, 3]
    fm = vc.feature_map(v, "demo", 2)
    assert fm["features"][0] == {"name": "site", "type": "categorical", "dtype": "int32", "vocab_size": 4,
                                 "padding_idx": 0, "oov_idx": 3}


@pytest.mark.parametrize("dict_lookup_at", [0, 8, 10**9])   # always the Python dict / adaptive / always Arrow
def test_both_lookups_encode_every_row_group_alike(tmp_path, monkeypatch, dict_lookup_at):
    """The encoder looks a row group's distinct values up with pc.index_in or, for a vocabulary much larger
    than them, with a dict built once: both give the reference ids (vocab order, OOV for rare and null)."""
    g = np.random.default_rng(1)
    toks = [f"t{i}" for i in g.zipf(1.2, 6000) % 900]
    toks[::37] = [None] * len(toks[::37])
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"label": pa.array(g.integers(0, 2, 6000), pa.int8()), "f": toks}), path,
                   row_group_size=500)                         # 12 row groups, each its own dictionary
    v = vc.build_vocab(vc.count_file(path, ["f"], 500), min_count=3)
    monkeypatch.setattr(vc.Encoder, "DICT_LOOKUP_AT", dict_lookup_at)
    out = vc.Encoder(v).encode_file(path, tmp_path / "enc.parquet", 500)
    index = {t: i for i, t in enumerate(v["f"].tokens.to_pylist(), 1)}
    want = [index.get(t, v["f"].oov_index) for t in toks]
    assert pq.read_table(tmp_path / "enc.parquet").column("f").to_pylist() == want
    assert out["oov"]["f"] == sum(w == v["f"].oov_index for w in want)
