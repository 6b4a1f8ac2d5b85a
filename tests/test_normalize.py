"""normalize: the three layouts decode to one schema with the same meaning."""

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.ctr.normalize import normalize_csv, normalize_source
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
