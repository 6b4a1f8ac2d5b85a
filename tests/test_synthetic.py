"""The synthetic Avazu world: published formats, planted structure, oracle sidecars, the alignment truth."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ctr.download import fetch_synthetic
from pipeline.ctr.normalize import normalize_source
from pipeline.ctr.schema import KAGGLE_COLUMNS
from pipeline.ctr.synthetic import ALIGNMENT_TRUTH, DEFAULT_DEVICE_ID, NO_APP, NO_SITE, generate_world

SPLITS = {"x1": ("train", "valid", "test"), "x2": ("train", "test"), "x4": ("train", "valid", "test")}


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
    dev = pd.DataFrame({f: world.strings(f) for f in ("device_id", "device_model")})
    dev = dev[dev.device_id != DEFAULT_DEVICE_ID]
    assert (dev.groupby("device_id").device_model.nunique() == 1).all()    # a device has one model


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


# ----------------------------------------------------------------------------------------------------
# Hard like the real files: shuffled ids, heavy tails with fingerprint ties, exact duplicates; the truth


@pytest.fixture(scope="module")
def normalized(tiny_raw, layouts, tmp_path_factory):
    """Every split of x1, x2, x4 normalized (exactly the tokens the pipeline sees), concatenated per source."""
    frames = {}
    for src in SPLITS:
        out = tmp_path_factory.mktemp(f"norm_{src}")
        normalize_source(tiny_raw / src, layouts[src], layouts.fields, out, batch_rows=1000)
        frames[src] = pd.concat([pq.read_table(out / f"{s}.parquet").to_pandas() for s in SPLITS[src]],
                                ignore_index=True)
    return frames


@pytest.fixture(scope="module")
def truth(tiny_raw):
    return {src: pq.read_table(tiny_raw / src / ALIGNMENT_TRUTH).to_pandas() for src in ("x1", "x2")}


def _raw(tiny_raw, src):
    return pd.concat([pd.read_csv(tiny_raw / src / f"{s}.csv", dtype=str) for s in SPLITS[src]], ignore_index=True)


def test_truth_sidecar_format(tiny_raw, truth, layouts):
    assert not (tiny_raw / "x4" / ALIGNMENT_TRUTH).exists()
    for src, t in truth.items():
        schema = pq.read_schema(tiny_raw / src / ALIGNMENT_TRUTH)
        assert [(f.name, f.type) for f in schema] == [("field", pa.string()), ("token", pa.string()),
                                                      ("x4_token", pa.string()), ("rare", pa.bool_())]
        assert not t.duplicated(["field", "token"]).any()                     # one row per (field, id)
        assert t.token.str.fullmatch(src + r":\d+").all()
        assert list(pd.unique(t.field)) == list(layouts.fields)              # field order, then id
        ids = t.token.str.split(":").str[1].astype(int)
        assert all(np.all(np.diff(ids[t.field == f].to_numpy()) > 0) for f in layouts.fields)
        assert (t.x4_token.isna() == t.rare).all()
    assert not truth["x1"].rare.any()
    assert set(truth["x2"].token[truth["x2"].rare]) == {"x2:0"} and truth["x2"].rare.sum() > 5


def test_ids_are_a_seeded_shuffle_in_disjoint_field_ranges(truth, layouts):
    """Per field a contiguous id range (fields in order, below the time-id bases), ids not monotone in the
    world's value index, x1 and x2 shuffled independently."""
    world = generate_world(6000, 7, fields=layouts.fields)        # the world behind tiny_raw
    order, id_of = {}, {}
    for src, t in truth.items():
        kept = t[~t.rare]
        ids = kept.token.str.split(":").str[1].astype(int).to_numpy()
        start = 0 if src == "x1" else 1                                       # x2: 0 is the OOV id
        t_base = layouts[src].time
        assert ids.max() < (t_base.base if t_base.kind == "hour_id" else t_base.mday_base)
        for f in layouts.fields:
            fid = ids[(kept.field == f).to_numpy()]
            assert fid.min() == start and fid.max() == start + len(fid) - 1   # contiguous, disjoint
            start += len(fid)
            id_of[src, f] = dict(zip(kept.x4_token[kept.field == f], fid))
            pos = {v: i for i, v in enumerate(world.values[f])}
            order[src, f] = fid[np.argsort([pos[v] for v in kept.x4_token[kept.field == f]])]
    big = [f for f in layouts.fields if len(order["x1", f]) >= 20]
    assert big and all(not np.all(np.diff(order["x1", f]) > 0) for f in big)   # not the value order
    for f in big:                                        # nor the frequency order, nor x2's order
        rho = np.corrcoef(np.arange(len(order["x1", f])), order["x1", f])[0, 1]
        assert abs(rho) < 0.5, (f, rho)
    common = {f: sorted(id_of["x2", f]) for f in big if len(id_of["x2", f]) >= 20}
    assert common and all(not np.array_equal(np.argsort([id_of["x1", f][v] for v in vs]),
                                             np.argsort([id_of["x2", f][v] for v in vs]))
                          for f, vs in common.items())


def test_truth_decodes_x1_rows_into_x4_rows(normalized, truth, layouts):
    """Decoding every x1 token through the truth gives exactly x4's tokens, per field and as whole rows."""
    x1, x4 = normalized["x1"], normalized["x4"]
    t = truth["x1"]
    decoded = pd.DataFrame({f: x1[f].map(dict(zip(t.token[t.field == f], t.x4_token[t.field == f])))
                            for f in layouts.fields})
    assert not decoded.isna().any().any()                                     # every x1 token in the truth
    for f in layouts.fields:
        assert np.array_equal(np.sort(decoded[f].to_numpy()), np.sort(x4[f].to_numpy())), f
    key = [*layouts.fields, "label", "hour_of_day"]
    decoded["label"], decoded["hour_of_day"] = x1.label, x1.hour_of_day
    a = decoded[key].sort_values(key).reset_index(drop=True)
    b = x4[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_x2_oov_over_the_whole_world(normalized, truth, layouts):
    """x2's OOV id is exactly the values seen < 20 times over ALL splits (not the train split alone)."""
    x2, x4, t = normalized["x2"], normalized["x4"], truth["x2"]
    assert layouts["x2"].oov_min_count == 20
    train_only_rare = 0
    for f in layouts.fields:
        counts = x4[f].value_counts()
        tf = t[(t.field == f) & ~t.rare]
        assert set(tf.x4_token) == set(counts.index[counts >= 20]), f
        rare_occ = int(counts[counts < 20].sum())
        assert int((x2[f] == "x2:0").sum()) == rare_occ, f
        assert (rare_occ > 0) == bool(((t.field == f) & t.rare).any())
        train = x2[f].iloc[:4800].value_counts()                              # x2/train comes first
        train_only_rare += int(((train < 20) & (train.index != "x2:0")).sum())
    assert train_only_rare > 0          # kept ids seen < 20 times in train: the count is the whole world's


def test_fingerprints_agree_between_x1_x2_and_x4(normalized, truth, layouts):
    """(occurrences, clicks) of every mapped id over all splits equals its x4 value's: the fingerprint the
    alignment starts from is in the data."""
    x4 = normalized["x4"]
    for src in ("x1", "x2"):
        df, t = normalized[src], truth[src]
        for f in layouts.fields:
            tf = t[(t.field == f) & ~t.rare]
            a = df.groupby(f).label.agg(["size", "sum"]).loc[tf.token].to_numpy()
            b = x4.groupby(f).label.agg(["size", "sum"]).loc[tf.x4_token].to_numpy()
            assert np.array_equal(a, b), (src, f)


def test_exact_duplicate_rows(tiny_raw, layouts):
    """~1.5% of the events are repeated verbatim: every field, hour and label (x4: only the Kaggle id is
    fresh), in every layout; the same events are the duplicates in x1 and x4."""
    x4, x1 = _raw(tiny_raw, "x4"), _raw(tiny_raw, "x1")
    assert not x4.id.duplicated().any()
    cols4 = [c for c in x4.columns if c != "id"]
    dup4 = x4.duplicated(cols4)
    assert 0.01 < dup4.mean() < 0.025
    assert x1.duplicated().sum() >= dup4.sum()             # x1 has no date: at least the same repeats
    world = generate_world(6000, 7, fields=layouts.fields)
    key = pd.DataFrame({f: world.index[f] for f in world.fields} | {"day": world.day, "hour": world.hour})
    dup = key.duplicated(keep=False).to_numpy()
    groups = key[dup].groupby(list(key.columns)).ngroup().to_numpy()
    for col in (world.click, world.p_click):               # a duplicate shares label and true p
        per_group = pd.Series(col[dup]).groupby(groups).nunique()
        assert (per_group == 1).all()
    assert (np.diff(world.day.astype(int) * 24 + world.hour) >= 0).all()    # still in time order
    assert generate_world(6000, 7, fields=layouts.fields, dup_share=0.0).rows == 6000


def test_device_ip_fingerprints_mostly_tie(world):
    """Heavy tails: most device_ip / device_id values are seen once or twice, and nearly all share their
    (occurrences, clicks) fingerprint with another value (real Avazu: 6.7M device_ips, most seen 1-3 times)."""
    for f, tie_share in (("device_ip", 0.95), ("device_id", 0.95), ("site_id", 0.5)):
        df = pd.DataFrame({"v": world.index[f], "c": world.click}).groupby("v").c.agg(["size", "sum"])
        tied = df.duplicated(keep=False)
        assert tied.mean() > tie_share, (f, tied.mean())
    ip = pd.Series(world.index["device_ip"]).value_counts()
    assert (ip == 1).mean() > 0.45 and (ip <= 3).mean() > 0.7 and ip.iloc[0] / ip.sum() < 0.03


def test_synthetic_fetch_writes_truth_but_md5s_only_the_split_csvs(tmp_path, layouts):
    m = fetch_synthetic(["x1", "x2", "x4"], layouts, tmp_path, rows=2000, seed=1, mean_ctr=0.17, rank=4,
                        temperature=1.0)
    for src, splits in SPLITS.items():
        assert set(m[src]["md5"]) == set(splits)
        assert (tmp_path / src / ALIGNMENT_TRUTH).is_file() == (src != "x4")
    again = tmp_path / "again"
    fetch_synthetic(["x2"], layouts, again, rows=2000, seed=1, mean_ctr=0.17, rank=4, temperature=1.0)
    assert (again / "x2" / ALIGNMENT_TRUTH).read_bytes() == (tmp_path / "x2" / ALIGNMENT_TRUTH).read_bytes()
