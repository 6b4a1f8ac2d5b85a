"""The Helen study (studies/helen/dvc.yaml, pipeline/ctr/study.py): records → table / rho grid, the smaller
world's seeded sample, the study's dvc.yaml exactness and an end-to-end `dvc repro` of a reduced grid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.core.data import TensorData
from pipeline.ctr import study
from tests.conftest import ROOT, ran, run_cli, scratch_dvc_repo, sh


def record(model, optimizer, auc, rho=0.05, variant="recdag", grid=False):
    name = study.run_name(model, optimizer, rho if grid else None, variant if grid else None)
    m = {"auc": auc, "logloss": 0.4 - auc / 10, "rows": 100, "oracle_auc": 0.85, "oracle_logloss": 0.33,
         "gap_to_oracle_auc": 0.85 - auc}
    return {"dataset": "avazu (x4; synthetic)", "split": "test of x4", "protocol": "pointwise", "synthetic": True,
            "run": name, "model": model, "optimizer": optimizer, "rho": rho, "helen_variant": variant,
            "train_rows": 1000, "epochs": 2, "train_sources": ["x4"], "headline_split": "x4/test",
            "best_epoch": 2, "epochs_run": 3, "best_valid_auc": auc, "wall_seconds": 1.0, "test": {"x4": m}}


def test_table_orders_models_and_optimizers_like_the_seed_and_says_who_wins():
    runs = [record("pnn", "helen", 0.80), record("dnn", "sam", 0.78), record("dnn", "adam", 0.79),
            record("pnn", "adam", 0.79), record("dnn", "helen", 0.77), record("pnn", "sam", 0.785),
            record("deepfm", "helen", 0.70, rho=0.01, grid=True)]
    t = study.study_table(runs)
    assert t["models"] == ["dnn", "pnn"] and t["optimizers"] == ["adam", "sam", "helen"]
    assert t["summary"]["pnn"]["best_optimizer"] == "helen" and t["summary"]["dnn"]["best_optimizer"] == "adam"
    assert t["summary"]["pnn"]["helen_minus_adam_auc"] == pytest.approx(0.01)
    assert t["summary"]["dnn"]["helen_minus_sam_auc"] == pytest.approx(-0.01)
    assert t["helen_best_count"] == 1 and t["oracle_auc"] == 0.85
    assert t["mean_auc"]["adam"] == pytest.approx(0.79)
    assert "deepfm" not in t["cells"]                                   # grid runs are not table cells
    md = study.table_markdown(t, study.rho_curve(runs))
    assert "| pnn | 0.7900 | 0.7850 | 0.8000 |" in md and "Helen is the best optimizer for 1 of 2" in md


def test_rho_curve_series_per_variant_sorted_with_adam_reference():
    runs = [record("deepfm", "helen", a, rho=r, variant=v, grid=True)
            for v, pts in (("release", [(0.1, 0.76), (0.01, 0.78)]), ("recdag", [(0.05, 0.77), (0.005, 0.775)]))
            for r, a in pts]
    runs.append(record("deepfm", "adam", 0.79))
    c = study.rho_curve(runs)
    assert [p["rho"] for p in c["series"]["release"]] == [0.01, 0.1]
    assert [p["rho"] for p in c["series"]["recdag"]] == [0.005, 0.05]
    assert c["best"]["release"] == {"rho": 0.01, "auc": 0.78}
    assert c["best_helen_minus_adam_auc"]["recdag"] == pytest.approx(-0.015)
    assert study.rho_figure(c).startswith(b"\x89PNG")
    assert study.rho_curve([record("deepfm", "adam", 0.79)]) == {"series": {}}


def test_run_names():
    assert study.run_name("pnn", "sam") == "pnn-sam"
    assert study.run_name("deepfm", "helen", 0.005, "release") == "deepfm-helen-rho0.005-release"


def test_subsample_is_seeded_in_file_order_and_whole_when_not_smaller():
    n = 1000
    d = TensorData(torch.arange(n, dtype=torch.int32).reshape(-1, 1), torch.zeros(n), torch.rand(n))
    a, b, c = d.subsample(100, 1), d.subsample(100, 1), d.subsample(100, 2)
    assert len(a) == 100 and torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert bool((a.x[1:, 0] > a.x[:-1, 0]).all())                       # file order kept
    assert torch.equal(a.oracle, d.oracle[a.x[:, 0].long()])
    assert d.subsample(0, 1) is d and d.subsample(5000, 1) is d


def test_params_section_is_validated(tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.core.params import load_stage

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = load_stage(ROOT / "params.yaml", ("helen_study",), (study.HelenStudyParams,))
    assert p.helen_study.train_rows == data["helen_study"]["train_rows"]
    data["helen_study"]["sharpness"]["bins"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="helen_study.sharpness.bins"):
        load_stage(bad, ("helen_study",), (study.HelenStudyParams,))


@pytest.mark.parametrize("pipeline", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "studies").glob("*/dvc.yaml")))
def test_study_dvc_yaml_is_exact(pipeline, capsys):
    rc = run_cli("dag", "check", "--dvc-yaml", str(ROOT / pipeline))
    out = capsys.readouterr()
    assert rc == 0 and "all exact" in out.out, out.out + out.err


def test_every_study_lock_is_committed_and_a_dep_of_the_report():
    """The report shows reports/studies/<name>/ when present; what it read is pinned by the study's dvc.lock,
    so that lock must be the report stage's dep (else a re-run study would leave a stale report)."""
    report = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    studies = sorted(p.parent.name for p in (ROOT / "studies").glob("*/dvc.yaml"))
    assert studies
    for name in studies:
        assert f"studies/{name}/dvc.lock" in report["deps"], name
        assert (ROOT / "studies" / name / "dvc.lock").is_file(), f"studies/{name}/dvc.lock is not committed"


@pytest.mark.slow
def test_study_repro_runs_its_grid_and_upstream_only_then_nothing(tmp_path):
    """`dvc repro studies/helen/dvc.yaml` (a reduced grid) runs the Avazu data stages and the baseline it
    needs, never LLM-CTR / Tenrec / Amazon / report; a second run does nothing; no study stage is upstream of
    the main DAG's report (it reads the study's pin through studies/helen/dvc.lock, a plain file)."""
    repo = scratch_dvc_repo(tmp_path / "repo", **{
        "avazu.synthetic.rows": 20_000, "ctr.hidden_units": [16], "ctr.embedding_dim": 4, "train.epochs": 1,
        "train.batch_size": 1024, "helen_study.train_rows": 4000, "helen_study.epochs": 2,
        "helen_study.sharpness.bins": 4, "helen_study.sharpness.values_per_bin": 3,
        "helen_study.sharpness.max_rows_per_value": 64, "helen_study.sharpness.iters": 5})
    spec = repo / "studies" / "helen" / "dvc.yaml"
    text = spec.read_text()
    text = text.replace("model: [dnn, widedeep, pnn, deepfm, dcn, dlrm, dcnv2]", "model: [pnn, deepfm]")
    text = text.replace("rho: [0.005, 0.01, 0.02, 0.05, 0.1]", "rho: [0.01, 0.1]")
    spec.write_text(text)
    (repo / "studies" / "helen" / "dvc.lock").unlink(missing_ok=True)
    out = sh(repo, "dvc", "repro", "studies/helen/dvc.yaml")
    stages = [s.split(":")[-1] for s in ran(out)]               # "studies/helen/dvc.yaml:helen_run@pnn-adam"
    assert {"avazu_download", "avazu_vocab", "avazu_train_baseline"} <= set(stages)
    assert {s for s in stages if s.startswith("helen_")} == {
        "helen_optimizers", "helen_run@pnn-adam", "helen_run@pnn-sam", "helen_run@pnn-helen",
        "helen_run@deepfm-adam", "helen_run@deepfm-sam", "helen_run@deepfm-helen",
        "helen_rho@0.01-release", "helen_rho@0.01-recdag", "helen_rho@0.1-release", "helen_rho@0.1-recdag",
        "helen_table", "helen_sharpness"}
    assert not [s for s in stages if s.startswith(("avazu_llm", "avazu_evaluate", "tenrec", "amazon", "report"))]
    reports = repo / "reports" / "studies" / "helen"
    table = json.loads((reports / "table.json").read_text())
    assert table["models"] == ["pnn", "deepfm"] and set(table["cells"]["pnn"]) == {"adam", "sam", "helen"}
    assert table["train_rows"] == 4000 and table["oracle_auc"] > 0.7
    curve = json.loads((reports / "rho.json").read_text())
    assert [p["rho"] for p in curve["series"]["release"]] == [0.01, 0.1] and "adam" in curve["references"]
    opt = json.loads((reports / "optimizers.json").read_text())
    assert set(opt["optimizers"]) == {"adam", "sam", "helen"}
    assert opt["optimizers"]["helen"]["trained_by"] == "avazu_train_baseline"
    sharp = json.loads((reports / "sharpness.json").read_text())
    assert sharp["model"] == "pnn" and sharp["synthetic"] is True
    for f in ("rho.png", "sharpness.png"):
        assert (reports / f).read_bytes().startswith(b"\x89PNG")
    assert (repo / "studies" / "helen" / "dvc.lock").is_file()
    again = sh(repo, "dvc", "repro", "studies/helen/dvc.yaml")
    assert ran(again) == []
    upstream = sh(repo, "dvc", "dag", "--md", "report")                  # the report and every stage it needs
    assert "avazu_evaluate_x4" in upstream and "helen_" not in upstream


def test_llm_study_table_and_its_markdown():
    from pipeline.ctr.llm_study import VARIANTS, study_table, table_markdown

    def run(v, p1, p2, se=0.01):
        m = {"auc": 0.77, "auc_se": se, "logloss": 0.40, "ece": 0.01, "oracle_auc": 0.84, "oracle_logloss": 0.35}
        return {"dataset": "d", "split": "s", "protocol": "p", "synthetic": True, "llm_model": "M",
                "llm_parameters": 10, "llm_random_init": v != "smollm2", "train_seconds": 1.0,
                "metrics": {"baseline": m, "llm_phase1": dict(m, auc=p1), "llm_phase2": dict(m, auc=p2),
                            "oracle_auc_se": 0.008}}

    runs = {"tiny": run("tiny", 0.76, 0.761), "smollm2_random": run("smollm2_random", 0.75, 0.76),
            "smollm2": run("smollm2", 0.78, 0.80, se=0.02)}
    assert list(runs) == list(VARIANTS)
    t = study_table(runs)
    d = t["pretrained_minus_random"]
    assert d["llm_phase2"]["auc"] == pytest.approx(0.04) and d["llm_phase2"]["se"] == pytest.approx((0.02**2 + 0.01**2) ** 0.5)
    assert t["baseline"]["auc"] == 0.77 and t["oracle"] == {"auc": 0.84, "logloss": 0.35, "auc_se": 0.008}
    md = table_markdown(t)
    assert "| smollm2: M (10 parameters, pretrained) | 0.7800 ± 0.0200 | 0.8000 ± 0.0200 |" in md
    assert "phase2 +0.0400 ± 0.0224" in md
