"""End-to-end: `dvc repro` of the Amazon branch (targets only) in a scratch git+dvc repo, on a tiny world,
then `dvc exp run -S finetune.from=scratch`."""

import json
import shutil
import sys

import pytest

from tests.conftest import ran, scratch_dvc_repo, set_params
from tests.conftest import run_in as sh

pytestmark = pytest.mark.slow

TARGETS = ["amazon_plots"]          # pulls download -> etl -> pretrain matrix -> finetune foreach -> plots


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = scratch_dvc_repo(tmp_path_factory.mktemp("amazon_repo"))
    set_params(d, **{"amazon.synthetic.pool_users": 700, "amazon.synthetic.beauty_users": 80,
                     "amazon.synthetic.sports_users": 80, "amazon.synthetic.items_per_cluster": 40,
                     "amazon.synthetic.clusters_per_category": 2, "amazon.scales": [1500, 4000],
                     "amazon.vocab_size": 300, "amazon.max_len": 20, "pretrain.sizes": ["1x16"],
                     "pretrain.epochs": 1, "pretrain.num_negatives": 64, "pretrain.eval_negatives": 200,
                     "pretrain.eval_users": 100, "finetune.init_scale": 4000, "finetune.init_size": "1x16",
                     "finetune.epochs": 1})
    return d


def test_repro_then_exp_run_scratch(repo):
    out = sh(repo, "dvc", "repro", *TARGETS)
    got = ran(out.stdout + out.stderr)
    assert got == ["amazon_download", "amazon_etl", "amazon_finetune@beauty", "amazon_finetune@sports",
                   "amazon_plots", "amazon_pretrain@1500-1x16", "amazon_pretrain@4000-1x16"]
    rep = repo / "reports/amazon"
    etl = json.loads((rep / "etl.json").read_text())
    assert etl["pool_users_overlapping_finetune"] == 0 and etl["removed_finetune_users"] == 160
    for scale in (1500, 4000):
        for size in ("1x16",):
            r = json.loads((rep / "pretrain" / f"{scale}-{size}.json").read_text())
            assert r["protocol"] == "sampled_200" and r["synthetic"] is True and r["interactions"] >= scale
            assert 0 < r["params_non_embedding"] < r["params_total"]
            t = r["metrics"]["test"]
            assert 0.0 <= t["ndcg@5"] <= 1.0 and t["oracle_ndcg@5"] > t["ndcg@5"] - 0.2 and t["min_candidates"] == 201
    beauty = json.loads((rep / "finetune" / "beauty.json").read_text())
    assert beauty["protocol"] == "full_ranking" and beauty["from"] == "pretrained"
    assert set(beauty["variants"]) == {"scratch", "pretrained"} and beauty["variants"]["pretrained"]["init"] == "4000-1x16"
    for split in ("train", "valid", "test"):
        assert {"ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20", "oracle_ndcg@10"} <= set(beauty["metrics"][split])
    scaling = json.loads((rep / "plots" / "scaling.json").read_text())
    assert len(scaling) == 2 and (rep / "plots" / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert (rep / "plots" / "finetune.png").stat().st_size > 1000
    assert (repo / "models/amazon/pretrain/4000-1x16/model.pt").is_file()
    assert not (repo / "models/amazon/.ckpt").exists() or not list((repo / "models/amazon/.ckpt").iterdir())
    again = sh(repo, "dvc", "repro", *TARGETS)
    assert ran(again.stdout) == []

    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "pin")
    out = sh(repo, "dvc", "exp", "run", "-S", "finetune.from=scratch", *TARGETS)
    assert ran(out.stdout + out.stderr) == ["amazon_finetune@beauty", "amazon_finetune@sports", "amazon_plots"]
    beauty = json.loads((rep / "finetune" / "beauty.json").read_text())
    assert beauty["from"] == "scratch" and set(beauty["variants"]) == {"scratch"}


def test_study_reduced_grid_runs_the_study_stages_only_then_nothing(repo):
    """`dvc repro studies/amazon/dvc.yaml` on a reduced grid over the branch's data (already built above): only
    study stages run; the transfer table has scratch and pretrained for both recipes, the scaling table a fit
    per (recipe, scale); a second run does nothing."""
    spec = repo / "studies" / "amazon" / "dvc.yaml"
    text = spec.read_text()
    for old, new in (("dataset: [beauty, sports]", "dataset: [beauty]"), ("frac: [0.05, 0.2, 1.0]", "frac: [0.5]"),
                     ("scale: [20000, 80000]", "scale: [4000]"), ('size: ["1x32", "2x64", "3x96", "4x128"]',
                                                                          'size: ["1x16", "2x16"]')):
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("      recipe: [srt, recdag]\n      scale:", "      recipe: [srt]\n      scale:")
    spec.write_text(text)
    (repo / "studies" / "amazon" / "dvc.lock").unlink(missing_ok=True)
    set_params(repo, **{"finetune.srt.epochs_per_layer": 1, "finetune.srt.final_epochs": 1,
                        "finetune.srt.ewc_batches": 2, "finetune.srt.num_negatives": 32})
    out = sh(repo, "dvc", "repro", "studies/amazon/dvc.yaml")
    stages = sorted(s.split(":")[-1] for s in ran(out.stdout + out.stderr))
    assert stages == sorted(["amazon_study_pretrain@srt", "amazon_study_pretrain@recdag", "amazon_study_table",
                             *(f"amazon_transfer@{r}-beauty-0.5" for r in ("srt", "recdag")),
                             *(f"amazon_scaling@srt-4000-{z}" for z in ("1x16", "2x16"))])
    rep = repo / "reports" / "studies" / "amazon"
    t = json.loads((rep / "transfer.json").read_text())
    assert t["recipes"] == ["srt", "recdag"] and t["fracs"] == [0.5] and t["protocol"] == "full_ranking"
    cell = t["cells"]["beauty"]["srt"]["0.5"]
    assert cell["train_users"] < cell["users"] and cell["phases"] == ["unfreeze-1", "all"]
    assert 0 < cell["oracle_ndcg@10"] <= 1 and {"scratch", "pretrained"} <= set(cell)
    pre = json.loads((rep / "runs" / "pretrain-srt.json").read_text())
    assert pre["recipe"] == "srt" and pre["size"] == "1x16"
    s = json.loads((rep / "scaling.json").read_text())
    assert s["recipes"] == ["srt"] and set(s["fits"]["srt"]) == {"4000"} and len(s["rows"]) == 2
    assert s["fits"]["srt"]["4000"]["points"] == 2 and s["fits"]["srt"]["4000"]["alpha"] is not None
    for f in ("transfer.png", "scaling.png"):
        assert (rep / f).read_bytes().startswith(b"\x89PNG")
    assert "Transfer" in (rep / "tables.md").read_text()
    assert ran(sh(repo, "dvc", "repro", "studies/amazon/dvc.yaml").stdout) == []


def test_bad_input_exits_2_and_writes_nothing(repo):
    raw = repo / "data/amazon/raw"
    meta = next((raw / "meta").iterdir())
    meta.chmod(0o644)
    meta.write_text(meta.read_text() + '{"title": "no asin"}\n')
    shutil.rmtree(repo / "data/amazon/pretrain")
    r = sh(repo, sys.executable, "-m", "stages.cli", "amazon", "etl", ok=False)
    assert r.returncode == 2 and "missing asin" in r.stderr and "field 'asin'" in r.stderr
    assert not (repo / "data/amazon/pretrain").exists() and not list((repo / "data/amazon").glob(".*tmp*"))
