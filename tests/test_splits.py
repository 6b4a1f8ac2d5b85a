import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ctr.splits import sample_name, stratified_mask, write_subsets


def test_stratified_mask_exact_and_deterministic():
    y = (np.random.default_rng(0).random(10_000) < 0.17).astype(np.int8)
    m = stratified_mask(y, 0.1, seed=1, name="a")
    assert m.sum() == 1000
    assert abs(y[m].mean() - y.mean()) < 0.002
    assert np.array_equal(m, stratified_mask(y, 0.1, seed=1, name="a"))
    assert not np.array_equal(m, stratified_mask(y, 0.1, seed=2, name="a"))


def test_write_subsets_partition_keeps_order(tmp_path):
    t = pa.table({"label": pa.array(np.arange(100) % 2, pa.int8()), "x": np.arange(100)})
    pq.write_table(t, tmp_path / "in.parquet")
    m = np.zeros(100, bool)
    m[::7] = True
    n_sel, n_rest = write_subsets(tmp_path / "in.parquet", m, tmp_path / "a.parquet", tmp_path / "b.parquet", 9)
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert (n_sel, n_rest) == (15, 85)
    assert a.column("x").to_pylist() == list(range(0, 100, 7))
    assert sorted(a.column("x").to_pylist() + b.column("x").to_pylist()) == list(range(100))


def test_sample_name_follows_fraction():
    assert sample_name("x1", 0.2) == "x1_sample20"
    assert sample_name("x2", 0.05) == "x2_sample5"
    assert sample_name("x2", 0.125) == "x2_sample12.5"
