"""Amazon params: sections, each stage's declared keys, the cross-section checks, the run config; the plots."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.core.errors import ConfigError
from pipeline.core.params import UndeclaredParam, load_stage
from pipeline.seqrec import plots
from pipeline.seqrec.params import CHECKS, SECTIONS, run_name
from pipeline.seqrec.run import run_config
from stages.amazon import download, etl, finetune, plots as plots_stage, pretrain

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
STAGES = {"amazon_download": download, "amazon_etl": etl, "amazon_pretrain": pretrain,
          "amazon_finetune": finetune, "amazon_plots": plots_stage}


def test_sections_and_stage_params_match_dvc_yaml():
    assert [c.SECTION for c in SECTIONS] == ["amazon", "pretrain", "finetune"]
    assert all("SECTION" not in {f.name for f in dataclasses.fields(c)} for c in SECTIONS)
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, module in STAGES.items():
        block = dvc[name].get("do", dvc[name])
        assert list(module.PARAMS) == block["params"], name
        load_stage(PARAMS, module.PARAMS, SECTIONS, CHECKS)                 # the repo's params load


def test_a_stage_reads_only_what_it_declares():
    p = load_stage(PARAMS, plots_stage.PARAMS, SECTIONS, CHECKS)
    assert p.pretrain.sizes and p.amazon.scales
    with pytest.raises(UndeclaredParam, match="amazon.max_len"):
        p.amazon.max_len
    with pytest.raises(UndeclaredParam, match="pretrain.lr"):
        p.pretrain.lr


@pytest.mark.parametrize("over,match", [
    ({"finetune.init_scale": 123}, "finetune.init_scale: 123 is not one of amazon.scales"),
    ({"finetune.init_size": "9x64"}, "finetune.init_size: '9x64' is not one of pretrain.sizes"),
    ({"pretrain.item_repr": "id"}, "finetune.from: 'pretrained' needs pretrain.item_repr 'text'"),
    ({"amazon.source": "local", "amazon.local.finetune_format": "s3rec", "amazon.local.ratings": ["r.csv"],
      "amazon.local.metadata": ["m.json"], "amazon.local.beauty": "b", "amazon.local.sports": "s"},
     "finetune.item_repr: S3-Rec files carry no item text"),
])
def test_cross_section_checks_name_the_key(over, match):
    with pytest.raises(ConfigError, match=match):
        load_stage(PARAMS, finetune.PARAMS, SECTIONS, CHECKS, overrides=over)
    load_stage(PARAMS, pretrain.PARAMS, SECTIONS, CHECKS, overrides=over)   # no finetune section: not checked


def test_run_config_pretrain_and_finetune():
    p = load_stage(PARAMS, finetune.PARAMS, SECTIONS, CHECKS)
    pt, f = p.pretrain, p.finetune
    pre = run_config(pt, size=pt.sizes[0], max_len=7, seed=1, run=run_name(20000, pt.sizes[0]))
    assert (pre.loss, pre.protocol, pre.monitor, pre.epochs, pre.lr, pre.max_len) == (
        "sampled", f"sampled_{pt.eval_negatives}", "ndcg@5", pt.epochs, pt.lr, 7)
    assert (pre.layers, pre.dim) == tuple(int(x) for x in pt.sizes[0].split("x")) and pre.item_repr == pt.item_repr
    scratch = run_config(pt, size=f.init_size, max_len=7, seed=1, run="beauty", finetune=f)
    warm = run_config(pt, size=f.init_size, max_len=7, seed=1, run="beauty", finetune=f, variant="pretrained")
    assert (scratch.loss, scratch.protocol, scratch.monitor, scratch.epochs, scratch.lr) == (
        f.loss, "full_ranking", "ndcg@10", f.epochs, f.lr)
    assert scratch.item_repr == f.item_repr and warm.item_repr == "text" and warm.seed == scratch.seed
    assert scratch.seed != run_config(pt, size=f.init_size, max_len=7, seed=1, run="sports", finetune=f).seed
    assert scratch.weight_decay == pt.weight_decay and scratch.heads == pt.heads
    with pytest.raises(ConfigError, match="pretrain.sizes: '3x8' is not listed"):
        run_config(pt, size="3x8", max_len=7, seed=1, run="x")


def _pre(n, ndcg, oracle=0.5):
    m = {"ndcg@5": ndcg, "oracle_ndcg@5": oracle}
    return {"interactions": n, "params_total": 10, "params_non_embedding": 4, "protocol": "sampled_10",
            "metrics": {"train": m, "valid": m, "test": m}}


def test_plots_from_reports(tmp_path):
    scaling = plots.scaling_rows({("1x8", 100): _pre(100, 0.1), ("1x8", 200): _pre(200, 0.2),
                                  ("2x8", 100): _pre(100, 0.15), ("2x8", 200): _pre(200, 0.25)})
    assert [(r["size"], r["scale"], r["test_ndcg@5"]) for r in scaling][:2] == [("1x8", 100, 0.1), ("1x8", 200, 0.2)]
    t = {"ndcg@5": 0.1, "ndcg@10": 0.2, "ndcg@20": 0.3, "hr@10": 0.4, "oracle_ndcg@10": 0.5}
    var = {"metrics": {"test": t}, "params_total": 10, "params_non_embedding": 4}
    fine = plots.finetune_rows({"beauty": {"protocol": "full_ranking", "variants": {"scratch": var, "pretrained": var}}})
    assert [r["run"] for r in fine] == ["beauty/scratch", "beauty/pretrained"] and fine[0]["test_hr@10"] == 0.4
    plots.scaling_png(scaling, tmp_path / "s.png")
    plots.finetune_png(fine, tmp_path / "f.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "f.png").stat().st_size > 1000
    md = plots.tables(scaling, fine)
    assert "| 1x8 | 100 | 10 / 4 | 0.1000 | 0.1000 | 0.1000 | 0.5000 |" in md
    assert "| beauty/scratch | 0.1000 |" in md
