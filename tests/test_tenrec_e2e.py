"""End-to-end: `dvc repro tenrec_evaluate` of the Tenrec branch in a scratch git+dvc repo on a tiny world,
then `dvc exp run` with the transformer encoder and the flat index; plus in-process stage failures."""

import json
import shutil

import pytest

from tests.conftest import ROOT, leftovers, ran, run_cli, scratch_dvc_repo, set_params, sh

pytestmark = pytest.mark.slow

TINY = {"tenrec.synthetic.users": 300, "tenrec.synthetic.items": 600, "tenrec.synthetic.rows": 12_000,
        "tenrec.synthetic.categories": 8, "retrieval.epochs": 2, "retrieval.batch_size": 512,
        "retrieval.eval_users": 0, "retrieval.num_negatives": 31, "ann.top_k": 50, "ann.recall_at": [10, 50],
        "ann.ivf_nlist": 8, "ann.ivf_nprobe": 4, "ranking.epochs": 2, "ranking.batch_size": 256,
        "ranking.eval_users": 0, "ranking.sampled_negatives": 49, "ranking_eval.rerank_k": 20,
        "ranking.targets_per_user": 2}
STAGES = ["tenrec_build_index", "tenrec_download", "tenrec_evaluate", "tenrec_prepare", "tenrec_train_ranking",
          "tenrec_train_retrieval"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = scratch_dvc_repo(tmp_path_factory.mktemp("tenrec_repo"))
    set_params(d, **TINY)
    return d


def test_repro_runs_the_tenrec_branch(repo):
    out = sh(repo, "dvc", "repro", "tenrec_evaluate")
    assert ran(out) == STAGES                                      # no other branch's stage ran
    header = (repo / "data/tenrec/raw/QB-video.csv").open().readline().strip()
    assert header == "user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age"
    prep = json.loads((repo / "reports/tenrec/prepare.json").read_text())
    assert prep["synthetic"] is True and prep["ctr_rows"] + prep["dropped_in_history"] == prep["rows"]
    retr = json.loads((repo / "reports/tenrec/retrieval.json").read_text())
    t = retr["metrics"]["test"]
    assert 0 <= t["recall@50"] <= t["recall@200"] <= 1 and t["oracle_recall@200"] > t["oracle_recall@10"]
    curve = json.loads((repo / "reports/tenrec/retrieval_curve.json").read_text())
    assert curve and all(0 <= row["valid_recall@100"] <= 1 for row in curve)
    idx = json.loads((repo / "reports/tenrec/index.json").read_text())
    assert idx["index"] == "hnsw" and idx["metrics"]["test"]["ann_recall_vs_exact"] > 0.8
    ev = json.loads((repo / "reports/tenrec/evaluate.json").read_text())
    assert ev["protocol"] == ["sampled_50", "retrieved_top_20"] and ev["encoder"] == "fastformer"
    s = ev["metrics"]["sampled_50"]
    for key in ("auc", "ndcg@20", "hr@1", "mrr", "oracle_auc", "oracle_ndcg@20", "oracle_mrr"):
        assert 0.0 <= s[key] <= 1.0, key
    assert s["oracle_auc"] > 0.6 and s["positive_in_candidates"] == 1.0
    r = ev["metrics"]["retrieved_top_20"]
    assert r["positive_in_candidates"] < 1.0 and r["hr@1"] <= r["positive_in_candidates"]
    md = (repo / "reports/tenrec/evaluate.md").read_text()
    assert "| sampled_50 | oracle |" in md and "| ndcg@20 | hr@1 | mrr |" in md
    assert all("valid_ndcg@20" in row for row in json.loads((repo / "reports/tenrec/ranking_curve.json").read_text()))
    for path in ("models/tenrec/retrieval/model.pt", "models/tenrec/ranking/model.pt",
                 "data/tenrec/candidates/candidates.npz", "data/tenrec/embeddings/embeddings.npz"):
        assert (repo / path).is_file(), path
    assert not list((repo / "models").glob(".ckpt/tenrec-*"))       # resume points removed after success
    again = sh(repo, "dvc", "repro", "tenrec_evaluate")
    assert ran(again) == []


def test_exp_run_switches_encoder_and_index(repo):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "pin")
    out = sh(repo, "dvc", "exp", "run", "-S", "ranking.encoder=transformer", "tenrec_evaluate")
    assert ran(out) == ["tenrec_evaluate", "tenrec_train_ranking"]
    ev = json.loads((repo / "reports/tenrec/evaluate.json").read_text())
    assert ev["encoder"] == "transformer"
    out = sh(repo, "dvc", "exp", "run", "-S", "ann.index=flat", "tenrec_evaluate")
    assert ran(out) == ["tenrec_build_index", "tenrec_evaluate"]
    idx = json.loads((repo / "reports/tenrec/index.json").read_text())
    m = idx["metrics"]["test"]
    assert idx["index"] == "flat" and m["ann_recall_vs_exact"] == 1.0 and m["recall@50"] == m["exact_recall@50"]
    out = sh(repo, "dvc", "exp", "run", "-S", "ranking_eval.rerank_k=10", "tenrec_evaluate")
    assert ran(out) == ["tenrec_evaluate"]                        # its own section: the ranker is not retrained
    ev = json.loads((repo / "reports/tenrec/evaluate.json").read_text())
    assert ev["protocol"] == ["sampled_50", "retrieved_top_10"]


def test_bad_local_file_fails_cleanly_with_nothing_written(tmp_path, monkeypatch, capsys):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "tenrec_download"
    local.mkdir()
    (local / "QB-video.csv").write_text("user_id,item_id,click,follow,like,share,video_category,watching_times,"
                                        "gender,age\n1,5,1,0,0,0,3,2,1,2\n1,6,0,0,0,0,\\N,0,1,2\n"
                                        "2,5,3,0,0,0,3,0,1,2\n")
    set_params(tmp_path, **{"tenrec.source": "local", "tenrec.local_dir": str(local)})
    assert run_cli("tenrec", "download") == 0
    assert run_cli("tenrec", "prepare") == 2
    err = capsys.readouterr().err
    assert "row 4, field 'click'" in err and "expected 0 or 1" in err
    assert not (tmp_path / "data/tenrec/prepared").exists() and not leftovers(tmp_path)
    set_params(tmp_path, **{"tenrec.local_dir": ""})
    assert run_cli("tenrec", "download") == 2
    assert "tenrec.local_dir" in capsys.readouterr().err
