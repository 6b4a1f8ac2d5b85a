"""The ETL on a tiny synthetic world: filtering, disjoint users, nested scales, RecBole output, tokenizer."""

import json

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.seqrec import etl
from pipeline.seqrec import formats as fm
from pipeline.seqrec.params import AmazonSynthetic
from pipeline.seqrec.run import item_tokens, load_oracle, load_recbole_dataset
from pipeline.seqrec.synthetic import World

CFG = AmazonSynthetic(pool_users=400, beauty_users=60, sports_users=60, items_per_cluster=30,
                      clusters_per_category=2, mean_length=10.0, stay=0.6, concentration=0.3, missing_meta=0.05,
                      short_users=0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw") / "raw"
    raw.mkdir()
    info = World(CFG, seed=3).write(raw)
    out = tmp_path_factory.mktemp("etl")
    ft = {n: etl.read_finetune("reviews", raw / "finetune" / f"{n}.json", n) for n in ("beauty", "sports")}
    exclude = set(ft["beauty"].users) | set(ft["sports"].users)
    report, pool_meta = etl.build_pretrain_sets([raw / "ratings" / "ratings.csv"], [raw / "meta" / "meta.json"],
                                                exclude, out / "pre", out / "work", scales=[500, 2000], min_inter=5,
                                                buckets=3, batch_rows=500, seed=3)
    return raw, out, report, ft, exclude, info, pool_meta


def inter(path):
    return list(fm.read_recbole(path))


def test_pool_is_disjoint_from_beauty_and_sports(world):
    raw, out, report, ft, exclude, info, _ = world
    assert len(exclude) == 120 and report["pool"]["dropped_finetune_users"] > 0
    for s in (500, 2000):
        users = {r["user_id"] for r in inter(out / "pre" / f"amazon-pretrain-{s}" / f"amazon-pretrain-{s}.inter")}
        assert users and not users & exclude


def test_filters_scales_and_order(world):
    raw, out, report, *_ = world
    meta_asins = {m.asin for m in fm.read_metadata(raw / "meta" / "meta.json")}
    small = inter(out / "pre" / "amazon-pretrain-500" / "amazon-pretrain-500.inter")
    big = inter(out / "pre" / "amazon-pretrain-2000" / "amazon-pretrain-2000.inter")
    assert report["pool"]["dropped_no_meta"] > 0 and report["pool"]["short_users"] > 0
    for rows, scale in ((small, 500), (big, 2000)):
        assert scale <= len(rows) < scale + 200                                # whole users, overshoot < 1 user
        by_user = {}
        for r in rows:
            by_user.setdefault(r["user_id"], []).append(r)
        assert min(len(v) for v in by_user.values()) >= 5
        assert all(r["item_id"] in meta_asins for r in rows)
        for v in by_user.values():                                              # contiguous + chronological
            ts = [r["timestamp"] for r in v]
            assert ts == sorted(ts)
    small_users = {r["user_id"] for r in small}
    big_users = {r["user_id"] for r in big}
    assert small_users < big_users                                              # nested
    for u in small_users:                                                       # a sampled user keeps everything
        assert sum(r["user_id"] == u for r in small) == sum(r["user_id"] == u for r in big)
    assert report["scales"]["500"]["interactions"] == len(small)


def test_scale_larger_than_pool_names_the_key(world):
    with pytest.raises(ConfigError, match="amazon.scales"):
        etl.scale_thresholds(np.array([0.1, 0.5]), np.array([5, 6]), [100])


def test_finetune_sets_tokenizer_and_oracle(world, tmp_path):
    raw, out, report, ft, exclude, info, pool_meta = world
    tok = etl.train_tokenizer((t for r in etl.iter_meta(pool_meta) for t in (r["title"], r["brand"]) if t), 300)
    assert tok.token_to_id("[PAD]") == 0 and tok.token_to_id("[UNK]") == 1
    meta = etl.read_meta_dict(out / "work" / "meta.parquet", {i for s in ft["beauty"].items for i in s})
    st = etl.write_finetune(ft["beauty"], meta, tmp_path / "amazon-beauty", "amazon-beauty", 5)
    assert st["users"] == 60 and st["interactions"] == info["finetune"]["beauty"]
    ds = load_recbole_dataset(tmp_path / "amazon-beauty")
    assert ds.num_items == st["items"] and all(len(s) >= 5 for s in ds.seqs)
    title, brand, cov = item_tokens(ds, tok, 40, 8)
    assert title.shape == (ds.num_items + 1, 40) and brand.shape[1] == 8 and (title[0] == 0).all()
    assert cov["title"]["unk_rate"] < 0.05 and (title[1:, 0] != 0).float().mean() > 0.9
    # the oracle maps onto the dataset's indices; the planted process puts the test item high
    (tmp_path / "oracle").mkdir()
    for f in (raw / "oracle").iterdir():
        (tmp_path / "oracle" / f.name).write_bytes(f.read_bytes())
    o = load_oracle(tmp_path / "oracle", ds)
    assert o is not None and o.pi.shape == (60, 16) and np.allclose(o.pi.sum(1), 1, atol=1e-5)
    world_info = json.loads((raw / "oracle" / "world.json").read_text())
    assert world_info["stay"] == CFG.stay


def test_finetune_sets_in_one_call_and_no_pool_user_among_them(world, tmp_path):
    raw, out, report, ft, exclude, info, pool_meta = world
    tok = etl.train_tokenizer((t for r in etl.iter_meta(pool_meta) for t in (r["title"], r["brand"]) if t), 300)
    meta = etl.read_meta_dict(out / "work" / "meta.parquet", {i for s in ft.values() for q in s.items for i in q})
    rep = etl.write_finetune_sets(ft, {"beauty": "reviews", "sports": "reviews"}, meta, tmp_path, tok, min_inter=5,
                                  max_title=40, max_brand=8)
    assert set(rep) == {"beauty", "sports"} and rep["beauty"]["format"] == "reviews"
    assert rep["beauty"]["users"] == 60 and rep["beauty"]["tokenizer_coverage"]["title"]["unk_rate"] < 0.05
    assert (tmp_path / "amazon-sports" / "amazon-sports.item").is_file()
    assert etl.users_in_sets(out / "pre", exclude) == 0
    assert etl.users_in_sets(tmp_path, exclude) == info["finetune"]["beauty"] + info["finetune"]["sports"]
