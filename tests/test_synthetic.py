"""The synthetic Avazu world: published formats, planted structure, oracle sidecars."""

import numpy as np
import pandas as pd
import pytest

from pipeline.ctr.schema import KAGGLE_COLUMNS
from pipeline.ctr.synthetic import DEFAULT_DEVICE_ID, NO_APP, NO_SITE, generate_world


@pytest.fixture(scope="module")
def world():
    return generate_world(40_000, seed=3)


def test_deterministic_in_seed():
    a, b, c = generate_world(3000, 11), generate_world(3000, 11), generate_world(3000, 12)
    assert np.array_equal(a.click, b.click) and np.array_equal(a.p_click, b.p_click)
    assert all(np.array_equal(a.strings(f), b.strings(f)) for f in a.fields)
    assert not np.array_equal(a.p_click, c.p_click)


def test_teacher_mean_ctr_and_signal(world):
    from sklearn.metrics import roc_auc_score

    assert abs(world.p_click.mean() - 0.17) < 0.005
    assert abs(world.click.mean() - 0.17) < 0.01
    assert 0.75 < roc_auc_score(world.click, world.p_click) < 0.95   # learnable, not trivial


def test_site_and_app_traffic_are_exclusive(world):
    site, app = world.strings("site_id"), world.strings("app_id")
    is_site = site != NO_SITE[0]
    assert np.all((app == NO_APP[0]) == is_site)
    assert np.all(world.strings("app_category")[is_site] == NO_APP[2])
    assert np.all(world.strings("site_domain")[~is_site] == NO_SITE[1])
    assert 0.5 < is_site.mean() < 0.75


def test_correlated_fields(world):
    df = pd.DataFrame({f: world.strings(f) for f in ("site_id", "site_domain", "site_category", "C14", "C17")})
    site = df[df.site_id != NO_SITE[0]]
    top_domain_share = site.groupby("site_id").site_domain.agg(lambda s: s.value_counts(normalize=True).iloc[0])
    assert top_domain_share.mean() > 0.9                        # domain mostly determined by site
    assert (site.groupby("site_id").site_category.nunique() == 1).all()
    assert (df.groupby("C14").C17.nunique() == 1).all()         # creative -> C17


def test_heavy_tails(world):
    counts = pd.Series(world.strings("device_ip")).value_counts()
    assert (counts == 1).sum() > 0.2 * len(counts)              # many singletons
    dev = pd.Series(world.strings("device_id")).value_counts(normalize=True)
    assert dev.index[0] == DEFAULT_DEVICE_ID and 0.75 < dev.iloc[0] < 0.9


def test_rare_values_are_noisier():
    """First-order weights of rare values spread wider: their empirical CTR varies more."""
    w = generate_world(60_000, seed=5)
    df = pd.DataFrame({"v": w.strings("device_model"), "p": w.p_click})
    g = df.groupby("v").p.agg(["mean", "size"])
    assert g[g["size"] <= 5]["mean"].std() > g[g["size"] >= 200]["mean"].std()


def test_published_formats(tiny_raw):
    x4 = pd.read_csv(tiny_raw / "x4" / "train.csv", dtype=str)
    assert tuple(x4.columns) == KAGGLE_COLUMNS
    assert x4.hour.str.fullmatch(r"14102[1-9]\d\d|14103[0]\d\d").all()
    assert x4.click.isin(["0", "1"]).all()
    x1 = pd.read_csv(tiny_raw / "x1" / "train.csv")
    assert list(x1.columns) == ["label"] + [f"feat_{i}" for i in range(1, 23)]
    assert x1.dtypes.map(lambda d: d.kind == "i").all()          # every value an integer id
    assert x1.feat_22.between(1544248, 1544248 + 23).all()
    x2 = pd.read_csv(tiny_raw / "x2" / "train.csv")
    assert list(x2.columns)[:2] == ["click", "C1"] and list(x2.columns)[-3:] == ["hour", "mday", "wday"]
    assert x2.mday.between(645154, 645163).all() and x2.wday.between(645188, 645194).all()


def test_split_ratios_and_oracle_sidecars(tiny_raw):
    rows = {}
    for src, splits in {"x1": ["train", "valid", "test"], "x2": ["train", "test"],
                        "x4": ["train", "valid", "test"]}.items():
        for s in splits:
            n = len(pd.read_csv(tiny_raw / src / f"{s}.csv", usecols=[0]))
            p = pd.read_csv(tiny_raw / src / f"{s}.oracle.csv")
            assert list(p.columns) == ["p_click"] and len(p) == n and p.p_click.between(0, 1).all()
            rows[src, s] = n
    assert sum(v for (s, _), v in rows.items() if s == "x1") == 6000
    assert rows["x1", "train"] == 4200 and rows["x1", "test"] == 1200        # 7:1:2
    assert rows["x2", "train"] == 4800 and rows["x2", "test"] == 1200        # 8:2
    assert rows["x4", "valid"] == 600 and rows["x4", "test"] == 600          # 8:1:1


def test_x4_is_click_stratified(tiny_raw):
    ctr = {s: pd.read_csv(tiny_raw / "x4" / f"{s}.csv", usecols=["click"]).click.mean()
           for s in ("train", "valid", "test")}
    assert max(ctr.values()) - min(ctr.values()) < 0.003


def test_x2_replaces_rare_values_by_one_oov_id(tiny_raw, layouts):
    x2 = pd.concat([pd.read_csv(tiny_raw / "x2" / f"{s}.csv") for s in ("train", "test")])
    ids = x2[list(layouts.fields)].to_numpy().ravel()
    vals, counts = np.unique(ids, return_counts=True)
    assert (counts[vals != 0] >= 20).all()                    # every kept id is seen >= 20 times
    assert (ids == 0).mean() > 0.01                           # rare values collapsed into id 0


def test_same_rows_in_all_layouts(tiny_raw):
    """x1, x2 and x4 are re-splits of the same events: same labels and oracle multiset."""
    def oracle(src, splits):
        return np.sort(np.concatenate([pd.read_csv(tiny_raw / src / f"{s}.oracle.csv").p_click for s in splits]))
    a = oracle("x4", ["train", "valid", "test"])
    assert np.array_equal(a, oracle("x1", ["train", "valid", "test"]))
    assert np.array_equal(a, oracle("x2", ["train", "test"]))
