"""normalize: the three layouts decode to one schema with the same meaning."""

import datetime as dt
import gzip

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import DataError
from pipeline.ctr import normalize as nz
from pipeline.ctr.normalize import line_chunks, normalize_csv, normalize_source
from pipeline.ctr.schema import KAGGLE_COLUMNS

KAGGLE_ROWS = [  # hand-made rows in the raw Kaggle format
    "1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,"
    "ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79",
    "10000169349117863715,1,14102523,1005,1,85f751fd,c4e18dd6,50e219e0,9c13b419,2347f47a,f95efa07,a99f214a,"
    "96809ac8,711ee120,1,0,15704,320,50,1722,0,35,100084,79",
    "10000371904215119486,0,14102612,1002,0,85f751fd,c4e18dd6,50e219e0,9c13b419,2347f47a,f95efa07,0f2161f8,"
    "b3cf8def,8a4875bd,0,0,15704,320,50,1722,0,35,100084,79",
]


def write(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_x4_kaggle_rows_keep_their_meaning(tmp_path, layouts):
    src = write(tmp_path / "train.csv", KAGGLE_COLUMNS, KAGGLE_ROWS)
    stats = normalize_csv(src, layouts["x4"], layouts.fields, tmp_path / "out.parquet", 1000)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    raw = pd.read_csv(src, dtype=str)
    assert stats["rows"] == 3 and stats["clicks"] == 1 and stats["oracle"] is False
    assert list(out.label) == [0, 1, 0]
    for f in layouts.fields:                                    # raw tokens kept verbatim, no namespace
        assert list(out[f]) == list(raw[f])
    assert list(out.hour_of_day) == [0, 23, 12]
    # 2014-10-21 is a Tuesday, 25th a Saturday, 26th a Sunday (Monday = 0)
    assert list(out.weekday) == [dt.date(2014, 10, d).weekday() for d in (21, 25, 26)] == [1, 5, 6]
    assert list(out.is_weekend) == [0, 1, 1]
    assert "id" not in out.columns and "p_oracle" not in out.columns


def test_all_layouts_decode_to_the_same_events(tiny_raw, tmp_path, layouts):
    """Same world, three layouts: identical (label, hour_of_day) multisets; weekday where the layout has it."""
    frames = {}
    for src in ("x1", "x2", "x4"):
        out = tmp_path / src
        out.mkdir()
        normalize_source(tiny_raw / src, layouts[src], layouts.fields, out, batch_rows=1000)
        frames[src] = pd.concat([pq.read_table(p).to_pandas() for p in sorted(out.glob("*.parquet"))])
    key = ["p_oracle", "label", "hour_of_day"]
    ref = frames["x4"].sort_values(key)[key].reset_index(drop=True)
    for src in ("x1", "x2"):
        got = frames[src].sort_values(key)[key].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, ref)
    x2 = frames["x2"].sort_values(key).reset_index(drop=True)
    assert (x2.weekday.to_numpy() == frames["x4"].sort_values(key).weekday.to_numpy()).all()
    assert frames["x1"].weekday.isna().all() and frames["x1"].is_weekend.isna().all()
    assert frames["x1"].site_id.str.startswith("x1:").all()
    assert frames["x2"].device_ip.str.startswith("x2:").all()


def test_x2_six_digit_yyddhh_variant_is_detected(tmp_path, layouts):
    fields = list(layouts["x2"].columns)
    header = ["click", *fields, "hour"]
    vals = ",".join(str(i) for i in range(len(fields)))
    src = write(tmp_path / "train.csv", header, [f"1,{vals},142416", f"0,{vals},142500"])
    stats = normalize_csv(src, layouts["x2"], layouts.fields, tmp_path / "o.parquet", 100)
    out = pq.read_table(tmp_path / "o.parquet").to_pandas()
    assert stats["time"] == "datetime"
    assert list(out.hour_of_day) == [16, 0]
    assert list(out.weekday) == [4, 5]          # 2014-10-24 Friday, 2014-10-25 Saturday


def test_batch_size_does_not_change_the_output(tiny_raw, tmp_path, layouts):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    normalize_csv(tiny_raw / "x4" / "train.csv", layouts["x4"], layouts.fields, a, batch_rows=64,
                  oracle_path=tiny_raw / "x4" / "train.oracle.csv", block_size=4096)
    normalize_csv(tiny_raw / "x4" / "train.csv", layouts["x4"], layouts.fields, b, batch_rows=100_000,
                  oracle_path=tiny_raw / "x4" / "train.oracle.csv")
    assert pq.ParquetFile(a).metadata.num_row_groups > 1     # really streamed in several batches
    assert pq.read_table(a).equals(pq.read_table(b))


def _row_groups(path):
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


@pytest.mark.parametrize("chunk", [200, 4096, 1 << 20])
def test_chunked_parse_equals_the_streamed_gz_file(tiny_raw, tmp_path, layouts, monkeypatch, chunk):
    """A plain .csv is read and parsed chunk by chunk (pyarrow's threads); the same bytes as .csv.gz
    are streamed block by block. Both give the same table and the same row groups (exactly batch_rows each),
    whatever the chunk size (200 bytes: about one row per chunk)."""
    src = tiny_raw / "x4" / "train.csv"
    gz = tmp_path / "train.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    monkeypatch.setattr(nz, "CSV_CHUNK", chunk)
    monkeypatch.setattr(nz, "PARSE_BLOCK", max(chunk // 4, 1024))    # a block holds whole rows
    a, b = tmp_path / "chunked.parquet", tmp_path / "streamed.parquet"
    sa = normalize_csv(src, layouts["x4"], layouts.fields, a, batch_rows=500)
    sb = normalize_csv(gz, layouts["x4"], layouts.fields, b, batch_rows=500, block_size=1000)
    assert sa == sb
    assert pq.read_table(a).equals(pq.read_table(b))
    groups = _row_groups(a)
    assert groups == _row_groups(b) and set(groups[:-1]) == {500} and sum(groups) == sa["rows"]


@pytest.mark.parametrize("body", [
    b"h1,h2\n1,2\n3,4\n5,6\n",
    b"h1,h2\r\n1,2\r\n3,4\r\n5,6",                         # CRLF, no final line end
    b"h1,h2\n",                                               # header only
    b"h1,h2",                                                  # header without a line end
    b"h1,h2\n1,2222222222222222\n3,4\n",                      # a row longer than the chunk
    b"h1,h2\n1,2\n3,4\n5,6\n7,8\n9,10\n",
])
def test_line_chunks_cut_at_line_ends(tmp_path, body):
    path = tmp_path / "f.csv"
    path.write_bytes(body)
    pieces = [p.to_pybytes() for p in line_chunks(path, chunk_bytes=8)]
    rows = body.split(b"\n", 1)[1] if b"\n" in body else b""
    assert b"".join(pieces) == rows                          # every data byte once, in order, no header
    assert all(pieces) and all(p.endswith(b"\n") for p in pieces[:-1])
    if rows.count(b"\n") >= 5:                                # short rows: really cut into several pieces
        assert len(pieces) >= 3


def test_short_row_in_a_later_chunk_is_located(tmp_path, layouts, monkeypatch):
    rows = KAGGLE_ROWS * 40
    rows[97] = rows[97].rsplit(",", 3)[0]                    # line 99 (header = line 1) lacks 3 fields
    src = write(tmp_path / "train.csv", KAGGLE_COLUMNS, rows)
    monkeypatch.setattr(nz, "CSV_CHUNK", 1000)
    out = tmp_path / "o.parquet"
    with pytest.raises(DataError) as e:
        normalize_csv(src, layouts["x4"], layouts.fields, out, batch_rows=16)
    assert e.value.row == 99 and "21 fields" in str(e.value)


def test_label_floats_are_accepted(tmp_path, layouts):
    rows = [r.replace(",0,14102100", ",0.0,14102100", 1) for r in KAGGLE_ROWS[:1]]
    src = write(tmp_path / "t.csv", KAGGLE_COLUMNS, rows)
    normalize_csv(src, layouts["x4"], layouts.fields, tmp_path / "o.parquet", 10)
    assert pq.read_table(tmp_path / "o.parquet").column("label").to_pylist() == [0]


@pytest.mark.parametrize("hour, hod, wd", [("14103023", 23, 3), ("14102700", 0, 0)])
def test_x4_hours(tmp_path, layouts, hour, hod, wd):
    row = KAGGLE_ROWS[0].replace("14102100", hour)
    src = write(tmp_path / "t.csv", KAGGLE_COLUMNS, [row])
    normalize_csv(src, layouts["x4"], layouts.fields, tmp_path / "o.parquet", 10)
    t = pq.read_table(tmp_path / "o.parquet").to_pandas()
    assert (t.hour_of_day[0], t.weekday[0]) == (hod, wd)
    assert np.issubdtype(t.hour_of_day.dtype, np.integer)


@pytest.mark.parametrize("exact", [False, True])
def test_rebatch_groups(exact):
    import pyarrow as pa

    from pipeline.core.io import rebatch

    sizes = [3, 0, 5, 1, 9, 2]
    batches = [pa.record_batch({"v": list(range(sum(sizes[:i]), sum(sizes[:i + 1])))}) for i in range(len(sizes))]
    groups = list(rebatch(batches, 4, combine=False, exact=exact))
    assert [v for g in groups for v in g.column("v").to_pylist()] == list(range(sum(sizes)))
    assert [g.num_rows for g in groups] == ([4, 4, 4, 4, 4] if exact else [8, 10, 2])
