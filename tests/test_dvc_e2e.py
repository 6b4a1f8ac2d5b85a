"""End-to-end: `dvc repro` of the Avazu data branch and the CTR baseline in a scratch git repo, on a small
synthetic world. The other branches (LLM-CTR, Tenrec, Amazon) have their own end-to-end tests; here the
runs target the baseline stage so that only it and its upstream stages run."""

import json
import re
import sys
import time

import pyarrow.parquet as pq
import pytest

from tests.conftest import ran, run_in, scratch_dvc_repo, set_params, sh

pytestmark = pytest.mark.slow
TARGET = "avazu_train_baseline"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return scratch_dvc_repo(tmp_path_factory.mktemp("repo"), **{"avazu.synthetic.rows": 20_000, "ctr.hidden_units": [32, 32], "ctr.embedding_dim": 8,
                     "train.epochs": 2, "train.batch_size": 1024})


def test_repro_runs_the_branch_then_nothing(repo):
    out = sh(repo, "dvc", "repro", TARGET)
    assert ran(out) == ["avazu_align", "avazu_download", "avazu_normalize@x1", "avazu_normalize@x2",
                        "avazu_normalize@x4", "avazu_sample@x1", "avazu_sample@x2", "avazu_split_valid@x2", "avazu_train_baseline",
                        "avazu_vocab"]
    enc = repo / "data/avazu/encoded"
    assert sorted(p.name for p in enc.iterdir()) == ["x1", "x1_sample20", "x2", "x2_sample20", "x4"]
    assert sorted(p.name for p in (enc / "x2").iterdir()) == ["test.parquet", "train.parquet", "valid.parquet"]
    t = pq.read_table(enc / "x4" / "test.parquet")
    assert t.num_rows == 2000 and str(t.schema.field("site_id").type) == "int32"
    report = json.loads((repo / "reports/avazu/vocab.json").read_text())
    assert report["synthetic"] is True and report["splits"]["x2/valid"]["rows"] == 1600
    assert report["splits"]["x1_sample20/train"]["rows"] == 2800
    assert 0.7 < report["splits"]["x4/test"]["oracle_auc"] < 1.0
    ov = report["overlap_x4_test"]
    assert ov["occurrence_all_fields"] > 0.95 and ov["unaligned_occurrence_all_fields"] < 0.2   # alignment on
    align = json.loads((repo / "reports/avazu/align.json").read_text())
    for src in ("x1", "x2"):
        assert align["sources"][src]["accuracy_vs_truth"] >= 0.995 and align["sources"][src]["total"]["wrong"] == 0
    fmap = json.loads((repo / "data/avazu/vocab/feature_map.json").read_text())
    assert fmap["num_fields"] == 24
    baseline = json.loads((repo / "reports/avazu/baseline.json").read_text())
    assert baseline["model"] == "deepfm" and baseline["optimizer"] == "helen"
    for key in ("x4/valid", "x4/test", "x1/test", "x2/valid"):
        m = baseline["metrics"][key]
        assert 0.0 < m["auc"] < 1.0 and m["oracle_auc"] > 0.7 and "gap_to_oracle_auc" in m
    assert (repo / "models/avazu/baseline/model.pt").is_file() and (repo / "models/avazu/baseline/config.json").is_file()
    again = sh(repo, "dvc", "repro", TARGET)
    assert ran(again) == [] and "up to date" in again


def test_predict_scores_as_the_stage_did_and_refuses_another_vocabulary(repo, tmp_path):
    """`recdag avazu predict` on an encoded split and on the raw CSV gives the stage's test figures and saved
    predictions; a vocabulary mismatch is one error line, exit 2, no output."""
    import shutil

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from sklearn.metrics import roc_auc_score

    baseline = json.loads((repo / "reports/avazu/baseline.json").read_text())
    m = baseline["metrics"]["x4/test"]
    for k in ("ece", "calibration_ratio", "base_rate_logloss", "normalized_entropy", "oracle_ece",
              "pearson_logit_vs_oracle", "spearman_logit_vs_oracle", "kl_oracle_model"):
        assert m[k] is not None, k
    assert 0 < m["spearman_logit_vs_oracle"] <= 1 and m["normalized_entropy"] < 1.05
    saved = pq.read_table(repo / "data/avazu/predictions/baseline/x4/test.parquet").to_pandas()
    assert list(saved.columns) == ["row", "label", "logit", "p", "p_oracle"] and len(saved) == m["rows"]
    assert roc_auc_score(saved["label"], saved["p"]) == pytest.approx(m["auc"], abs=1e-9)
    assert sorted(p.parent.name for p in (repo / "data/avazu/predictions/baseline").rglob("test.parquet")) == [
        "x1", "x2", "x4"]

    out = tmp_path / "enc.parquet"
    r = run_in(repo, "recdag", "avazu", "predict", "data/avazu/encoded/x4/test.parquet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    enc = pq.read_table(out).to_pandas()
    np.testing.assert_array_equal(enc["logit"].to_numpy(), saved["logit"].to_numpy())
    np.testing.assert_allclose(enc["p"].to_numpy(), 1 / (1 + np.exp(-enc["logit"].to_numpy(np.float64))), rtol=0,
                               atol=1e-7)
    raw_out = tmp_path / "raw.parquet"
    r = run_in(repo, "recdag", "avazu", "predict", "data/avazu/raw/x4/test.csv", "--layout", "x4", "--out", str(raw_out),
                "--batch-rows", "700")                                   # row groups not aligned with CSV blocks
    assert r.returncode == 0, r.stderr
    raw = pq.read_table(raw_out).to_pandas()
    np.testing.assert_allclose(raw["logit"].to_numpy(), saved["logit"].to_numpy(), rtol=0, atol=1e-6)
    ids = pacsv.read_csv(repo / "data/avazu/raw/x4/test.csv",
                         convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()}))["id"]
    assert raw["id"].tolist() == ids.to_pylist() and raw["row"].tolist() == list(range(len(raw)))
    assert not list(tmp_path.glob(".recdag-predict-*"))                 # temporary files removed

    def refused(*args, field):
        dst = tmp_path / "refused.parquet"
        r = run_in(repo, "recdag", "avazu", "predict", *args, "--out", str(dst), ok=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert lines[-1].startswith("error: ") and "vocabulary mismatch" in lines[-1] and f"'{field}'" in lines[-1]
        assert not dst.exists() and not list(tmp_path.glob(".refused*"))
        return lines[-1]

    # an id outside the model's vocabulary (data encoded with another, larger one)
    t = pq.read_table(repo / "data/avazu/encoded/x4/test.parquet")
    col = t.column("device_ip").to_numpy().copy()
    col[5] = 10_000_000
    bad = tmp_path / "bad.parquet"
    pq.write_table(t.set_column(t.schema.get_field_index("device_ip"), "device_ip", pa.array(col)), bad)
    assert "row 6" in refused(str(bad), field="device_ip")
    # another feature map (same sizes, other bytes): md5 recorded at training differs
    other = tmp_path / "vocab"
    shutil.copytree(repo / "data/avazu/vocab", other)
    fm = json.loads((other / "feature_map.json").read_text())
    fm["dataset_id"] = "someone else's"
    (other / "feature_map.json").write_text(json.dumps(fm))
    assert "config.json" in refused("data/avazu/encoded/x4/test.parquet", "--feature-map",
                                    str(other / "feature_map.json"), field="feature_map_md5")
    # a raw x1 CSV: its ids are not in the (x4-token) vocabulary until avazu_align maps them
    refused("data/avazu/raw/x1/test.csv", "--layout", "x1", field="C1")


def test_exp_run_reruns_only_the_baseline(repo):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "pin")
    out = sh(repo, "dvc", "exp", "run", "-S", "optim.rho=0.1", TARGET)
    assert ran(out) == ["avazu_train_baseline"]
    out = sh(repo, "dvc", "exp", "run", "-S", "ctr.model=dcnv2", "-S", "optim.name=adam", TARGET)
    assert ran(out) == ["avazu_train_baseline"]
    table = sh(repo, "dvc", "exp", "show", "--json")
    assert "0.1" in table and "dcnv2" in table and "gap_to_oracle_auc" in table


def restore_pin(repo):
    """Back to the committed pin: params, lock and metrics from git, outputs from the DVC cache."""
    sh(repo, "git", "checkout", "--", ".")
    sh(repo, "dvc", "checkout", "--force", "--with-deps", TARGET)


def test_check_metrics_passes_on_the_pin_and_fails_on_drift(repo):
    restore_pin(repo)
    recdag = [sys.executable, "-m", "stages.cli", "check-metrics"]
    ok = run_in(repo, *recdag, ok=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 drifted" in ok.stdout and "every metric matches the pin" in ok.stdout
    set_params(repo, **{"optim.rho": 0.2, "train.epochs": 1})       # a deliberately changed experiment
    sh(repo, "dvc", "repro", TARGET)
    bad = run_in(repo, *recdag, ok=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    table = bad.stdout
    assert "| reports/avazu/baseline.json | epochs_run | 2 | 1 |" in table and "exact (count)" in table
    assert re.search(r"\| reports/avazu/baseline.json \| metrics\.x4/test\.auc \| [0-9.]+ \| [0-9.]+ \| [-+]", table)
    assert "drifted from the ones pinned at HEAD" in bad.stderr
    restore_pin(repo)


def test_queued_sweep_exp_show_and_plots(repo):
    restore_pin(repo)
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "optim.rho=0.02,0.05,0.1", TARGET)
    sh(repo, "dvc", "queue", "start", "-j", "1")
    deadline = time.time() + 600
    while time.time() < deadline:
        status = sh(repo, "dvc", "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(2)
    assert status.count("Success") == 3, status
    shown = json.loads(run_in(repo, "dvc", "exp", "show", "--json").stdout)
    rhos = {rev["data"]["params"]["params.yaml"]["data"]["optim"]["rho"]
            for commit in shown for exp in (commit.get("experiments") or []) for rev in exp["revs"]}
    assert {0.02, 0.05, 0.1} <= set(rhos)
    out = sh(repo, "dvc", "plots", "show", "-o", "dvc_plots", "--json")
    assert "baseline_curve.json" in out
    sh(repo, "dvc", "queue", "stop")


def test_sample_frac_reruns_only_sample_and_after(repo):
    sh(repo, "git", "checkout", "--", "params.yaml")
    set_params(repo, **{"avazu.sample.frac": 0.1})
    out = sh(repo, "dvc", "repro", TARGET)
    assert ran(out) == ["avazu_sample@x1", "avazu_sample@x2", "avazu_train_baseline", "avazu_vocab"]
    enc = repo / "data/avazu/encoded"
    assert (enc / "x1_sample10").is_dir() and not (enc / "x1_sample20").exists()


def test_only_x4(repo):
    set_params(repo, **{"avazu.sources": ["x4"], "avazu.split_valid.sources": [], "avazu.sample.sources": []})
    out = sh(repo, "dvc", "repro", TARGET)
    assert "avazu_download" in ran(out) and "avazu_vocab" in ran(out)
    assert sorted(p.name for p in (repo / "data/avazu/encoded").iterdir()) == ["x4"]
    report = json.loads((repo / "reports/avazu/vocab.json").read_text())
    assert report["overlap_x4_test"]["seen_in"] is None
    md = (repo / "reports/avazu/vocab.md").read_text()
    assert "None" not in md and "x4 is the only source" in md and "seen in x4/train" in md
