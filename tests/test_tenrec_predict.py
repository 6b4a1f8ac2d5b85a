"""Tenrec predictions as outputs: tenrec_evaluate's data/tenrec/predictions files and oracle agreement, and
``recdag tenrec predict`` on a tiny trained ranker (stages run in-process on a tiny synthetic world; the ANN
candidates are written by hand, with empty slots and missed held-out clicks, instead of training a
retriever)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from pipeline.core.calibration import logit, oracle_agreement
from pipeline.core.ranking import MISSED, rank_metrics, target_ranks
from pipeline.tenrec import ranking as rk
from pipeline.tenrec.prepare import load_sequences, split_users
from tests.conftest import ROOT, leftovers, run_cli, set_params

TINY = {"tenrec.synthetic.users": 300, "tenrec.synthetic.items": 600, "tenrec.synthetic.rows": 12_000,
        "tenrec.synthetic.categories": 8, "ann.top_k": 50, "ann.recall_at": [10, 50], "ranking.epochs": 1,
        "ranking.batch_size": 256, "ranking.eval_users": 150, "ranking.sampled_negatives": 49,
        "ranking.eval_batch_size": 1000, "ranking_eval.rerank_k": 20, "ranking.targets_per_user": 2}
K = 20
COLUMNS = ["user", "item", "slot", "label", "like", "logit_click", "p_click", "logit_like", "p_like"]
ORACLE = ["p_true_click", "p_true_like"]


def _hand_candidates(root) -> None:
    """candidates.npz + meta.json as tenrec_build_index writes them: 50 distinct items per test query, the
    held-out click among them for about half the users, the last 7 slots empty (-1) for every fifth."""
    s = load_sequences(root / "data/tenrec/prepared")
    split = split_users(s, 3)
    g = np.random.default_rng(0)
    cands = np.stack([g.choice(np.arange(1, s.n_items + 1), size=50, replace=False) for _ in split.eval_users])
    for r, item in enumerate(split.test_item):
        cands[r][cands[r] == item] = -1 if r % 2 else cands[r][cands[r] == item]
        if r % 2 == 0 and item not in cands[r]:
            cands[r, g.integers(0, K)] = item
    cands[::5, K - 7:K] = -1
    d = root / "data/tenrec/candidates"
    d.mkdir(parents=True)
    np.savez(d / "candidates.npz", eval_users=split.eval_users, test=cands)
    (d / "meta.json").write_text(json.dumps({"index": "hnsw", "top_k": 50}))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A scratch project after download, prepare, train-ranking and evaluate (in-process, a few seconds)."""
    root = tmp_path_factory.mktemp("tenrec_predict")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    set_params(root, **TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for stage in ("download", "prepare", "train-ranking"):
            assert run_cli("tenrec", stage) == 0, stage
        _hand_candidates(root)
        assert run_cli("tenrec", "evaluate") == 0
    return root


def _seed(root) -> int:
    return yaml.safe_load((root / "params.yaml").read_text())["seed"]


def assert_sigmoid(p: np.ndarray, z: np.ndarray) -> None:
    """``p`` is float32 ``torch.sigmoid(z)``: to the bit on most entries, within a few ulps on the rest
    (torch's vectorised sigmoid rounds an element by where it falls in the tensor, and the ranker's
    probabilities are taken on its [rows, 2] output batch by batch, as the metrics always were)."""
    q = torch.sigmoid(torch.from_numpy(np.array(z, np.float32))).numpy()
    ulps = np.abs(p.view(np.int32).astype(np.int64) - q.view(np.int32))
    assert p.dtype == np.float32 and ulps.max() <= 4 and (ulps == 0).mean() > 0.9


def _predict(root, *args: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        return run_cli("tenrec", "predict", *args)


def _metrics_from_file(df: pd.DataFrame, users: int) -> dict:
    """ndcg@K, hr@1, mrr (pipeline.core.ranking) and pooled AUC / like-AUC from a prediction file alone;
    ``users`` evaluated users (one without any valid candidate would have no row: a miss)."""
    row, _ = pd.factorize(df["user"])
    c = int(df["slot"].max()) + 1
    p = np.zeros((row.max() + 1, c), np.float32)
    valid = np.zeros(p.shape, bool)
    positive = np.zeros(p.shape, bool)
    p[row, df["slot"]] = df["p_click"]
    valid[row, df["slot"]] = True
    positive[row, df["slot"]] = df["label"] == 1
    ranks = np.r_[target_ranks(p, positive, valid), np.full(users - p.shape[0], MISSED)]
    out = rank_metrics(ranks, ndcg=(K,), hr=(1,), mrr=True)
    out["auc"] = roc_auc_score(df["label"], df["p_click"].astype(np.float64))
    out["like_auc"] = roc_auc_score(df["like"], df["p_like"].astype(np.float64)) if df["like"].any() else None
    return out


@pytest.mark.parametrize("protocol,name", [("sampled", "sampled_50"), ("retrieved", "retrieved_top_20")])
def test_predict_matches_the_evaluate_stage(world, tmp_path, protocol, name):
    out = tmp_path / "sub" / f"{protocol}.parquet"
    assert _predict(world, "--protocol", protocol, "--out", str(out)) == 0
    t = pq.read_table(out)
    assert t.schema.names == COLUMNS + ORACLE and t.schema.metadata[b"protocol"].decode() == name
    df = t.to_pandas()
    assert_sigmoid(df["p_click"].to_numpy(), df["logit_click"].to_numpy())
    assert_sigmoid(df["p_like"].to_numpy(), df["logit_like"].to_numpy())
    ev = json.loads((world / "reports/tenrec/evaluate.json").read_text())
    m = ev["metrics"][name]
    cands = np.load(world / "data/tenrec/candidates/candidates.npz")["test"][:, :K]
    idx = rk.eval_users(split_users(load_sequences(world / "data/tenrec/prepared"), 3), 150, _seed(world), "test")
    expected_rows = ev["users"] * 50 if protocol == "sampled" else int((cands[idx] > 0).sum())
    assert len(df) == expected_rows and ev["users"] == 150 == df["user"].nunique()
    assert df.groupby("user")["label"].sum().max() == 1 and (df["like"] <= df["label"]).all()
    again = _metrics_from_file(df, ev["users"])
    for key in (f"ndcg@{K}", "hr@1", "mrr", "auc", "like_auc"):
        assert again[key] == m[key], key
    if protocol == "retrieved":
        assert 0 < m["positive_in_candidates"] < 1 and df["slot"].max() == K - 1
    # the same numbers as the stage's own prediction file
    stage = pq.read_table(world / f"data/tenrec/predictions/test_{name}.parquet")
    assert stage.equals(t)
    assert not leftovers(tmp_path)


def test_predict_valid_split_is_the_training_monitor_set(world, tmp_path):
    out = tmp_path / "valid.parquet"
    assert _predict(world, "--split", "valid", "--raw", str(tmp_path / "no_raw"), "--out", str(out)) == 0
    df = pq.read_table(out).to_pandas()
    assert list(df.columns) == COLUMNS                            # no world: no oracle columns
    s = load_sequences(world / "data/tenrec/prepared")
    split = split_users(s, 3)
    idx = rk.eval_users(split, 150, _seed(world), "valid")
    pos = df[df["label"] == 1]
    assert (pos["slot"] == 0).all() and len(pos) == 150
    assert np.array_equal(pos["item"].to_numpy(), s.item_raw[split.valid_item[idx]])


@pytest.mark.parametrize("case", ["n_items", "n_categories"])
def test_vocabulary_mismatch_is_one_line_and_writes_nothing(world, tmp_path, capsys, case):
    model = tmp_path / "model"
    shutil.copytree(world / "models/tenrec/ranking", model)
    cfg = json.loads((model / "config.json").read_text())
    have = cfg[case]
    cfg[case] = have + 3
    (model / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "p.parquet"
    capsys.readouterr()
    assert _predict(world, "--model", str(model), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert f"config.json, field '{case}'" in err and str(have + 3) in err and str(have) in err
    assert "expected the prepared data the model was trained on" in err
    assert not out.exists() and not leftovers(tmp_path)


def _not_ranker(model):
    (model / "config.json").write_text(json.dumps({"n_users": 300, "n_items": 600, "n_categories": 8,
                                                   "embedding_dim": 32, "hidden_units": [64]}))


def _no_weights(model):
    (model / "model.pt").unlink()


def _other_weights(model):
    cfg = json.loads((model / "config.json").read_text())
    cfg["embedding_dim"] = 16
    (model / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("break_it,needle", [(_not_ranker, "config.json: not a Tenrec ranker's config"),
                                             (_no_weights, "model.pt: missing"),
                                             (_other_weights, "model.pt: does not load into the ranker")])
def test_bad_model_folder_is_one_line(world, tmp_path, capsys, break_it, needle):
    model = tmp_path / "model"
    shutil.copytree(world / "models/tenrec/ranking", model)
    break_it(model)
    out = tmp_path / "p.parquet"
    capsys.readouterr()
    assert _predict(world, "--model", str(model), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and not out.exists()


def test_bad_options_are_config_errors(world, tmp_path, capsys):
    out = tmp_path / "p.parquet"
    capsys.readouterr()
    assert _predict(world, "--protocol", "retrieved", "--split", "valid", "--out", str(out)) == 2
    assert "test clicks only" in capsys.readouterr().err
    assert _predict(world, "--protocol", "popular", "--out", str(out)) == 2
    assert "--protocol: 'popular'" in capsys.readouterr().err
    assert _predict(world, "--protocol", "retrieved", "--candidates", str(tmp_path / "none.npz"), "--out",
                    str(out)) == 2
    assert "none.npz: missing" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_reports_oracle_agreement_and_writes_predictions(world):
    ev = json.loads((world / "reports/tenrec/evaluate.json").read_text())
    assert "calibration" in ev["protocol_notes"] and "ECE" in ev["protocol_notes"]["calibration"]
    for name in ("sampled_50", "retrieved_top_20"):
        m = ev["metrics"][name]
        assert -1 <= m["pearson_logit_vs_oracle"] <= 1 and -1 <= m["spearman_logit_vs_oracle"] <= 1
        assert m["kl_oracle_model"] > 0
        df = pq.read_table(world / f"data/tenrec/predictions/test_{name}.parquet").to_pandas()
        assert list(df.columns) == COLUMNS + ORACLE
        a = oracle_agreement(df["logit_click"], df["p_true_click"])
        assert a["spearman_logit_vs_oracle"] == pytest.approx(m["spearman_logit_vs_oracle"], abs=1e-3)
        assert (df["p_true_like"] <= df["p_true_click"]).all()
    assert sorted(p.name for p in (world / "data/tenrec/predictions").iterdir()) == [
        "test_retrieved_top_20.parquet", "test_sampled_50.parquet"]
    md = (world / "reports/tenrec/evaluate.md").read_text()
    assert "| mrr | pearson_logit_vs_oracle | spearman_logit_vs_oracle |" in md
    oracle_rows = [line for line in md.splitlines() if "| oracle |" in line]
    assert len(oracle_rows) == 2 and all(line.endswith("| n/a | n/a |") for line in oracle_rows)


def test_oracle_agreement_of_an_increasing_function_of_the_oracle(world):
    df = pq.read_table(world / "data/tenrec/predictions/test_sampled_50.parquet").to_pandas()
    p = df["p_true_click"].to_numpy(np.float64)
    exact = oracle_agreement(logit(p), p)
    assert exact["pearson_logit_vs_oracle"] == pytest.approx(1)
    assert exact["kl_oracle_model"] == pytest.approx(0, abs=1e-12)
    warped = oracle_agreement(np.exp(logit(p)) - 2.0, p)               # increasing, not affine, miscalibrated
    assert warped["spearman_logit_vs_oracle"] == pytest.approx(1) and warped["pearson_logit_vs_oracle"] < 1
    assert warped["kl_oracle_model"] > 0
    assert oracle_agreement(-logit(p), p)["spearman_logit_vs_oracle"] == pytest.approx(-1)


def test_scores_are_sigmoid_of_logits_and_the_writer_streams_by_users(world, tmp_path):
    s = load_sequences(world / "data/tenrec/prepared")
    split = split_users(s, 3)
    model = rk.load_ranker_dir(world / "models/tenrec/ranking", s)
    assert set(model.config) == set(rk.RANKER_CONFIG)
    cs = rk.candidate_set(s, split, "test", "sampled", n_neg=9, n_users=40, max_len=model.max_len, seed=1)
    sc = rk.score_candidates(model, cs, 64)
    assert_sigmoid(sc.p_click.ravel(), sc.logit_click.ravel())
    assert_sigmoid(sc.p_like.ravel(), sc.logit_like.ravel())
    assert rk.evaluate_candidates(model, cs, 5, 64) == rk.candidate_metrics(sc, cs, 5)
    run = rk.ScoredSet(cs, sc)
    n = rk.write_predictions(tmp_path / "one.parquet", s, run)
    assert rk.write_predictions(tmp_path / "many.parquet", s, run, batch_rows=25) == n == 400
    many = pq.ParquetFile(tmp_path / "many.parquet")
    assert many.metadata.num_row_groups > 1
    assert many.read().equals(pq.read_table(tmp_path / "one.parquet"))
