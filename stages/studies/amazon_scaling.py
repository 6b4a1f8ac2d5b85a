"""Stage amazon_scaling@<recipe>-<scale>-<size> (studies/amazon/dvc.yaml): one point of the scaling curve —
``SIZE`` pretrained with ``RECIPE`` on the main DAG's ``SCALE``-interaction set (sizes beyond pretrain.sizes)."""

from __future__ import annotations

import logging

import typer

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.core.train import resumable
from pipeline.seqrec import etl
from pipeline.seqrec import run as rn
from pipeline.seqrec import study
from pipeline.seqrec.params import AmazonParams, PretrainParams, run_name
from stages.amazon.common import ORACLE, PRETRAIN_SETS, TOKENIZER, ParamsOpt
from stages.studies.amazon_common import AMAZON_MODELS, AMAZON_RUNS

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.scales", "amazon.max_title_tokens", "amazon.max_brand_tokens", "amazon.max_len", "pretrain")


def amazon_scaling(recipe: str = typer.Argument(..., help="srt | recdag"),
                   scale: int = typer.Argument(..., help="one of amazon.scales"),
                   size: str = typer.Argument(..., help="'<layers>x<hidden>', e.g. 4x128"),
                   params: str = ParamsOpt) -> None:
    """Pretrain SIZE with RECIPE on the SCALE set (every other knob from pretrain.*); test NDCG@5 (sampled)."""
    p = load_stage(params, PARAMS, (AmazonParams, PretrainParams))
    a = p.amazon
    if scale not in a.scales:
        raise ConfigError(f"amazon.scales: {scale} is not listed ({a.scales})")
    pt, _ = study.with_recipe(p.pretrain, None, recipe, sizes=[size])
    kw = dict(seed=p.seed, scale=scale, size=size, max_len=a.max_len, max_title=a.max_title_tokens,
              max_brand=a.max_brand_tokens, folder=PRETRAIN_SETS / etl.pretrain_name(scale),
              tok_file=TOKENIZER / "tokenizer.json")
    name = f"{recipe}-{run_name(scale, size)}"
    with resumable(AMAZON_MODELS / ".ckpt", f"scaling-{name}", *rn.pretrain_key(pt, **kw)) as ckpt:
        _, _, report, _ = rn.pretrain_run(pt, **kw, oracle_dir=ORACLE, checkpoint_dir=ckpt, tb_dir=None)
        with atomic_outputs() as out:
            write_json(out.file(AMAZON_RUNS / f"scaling-{name}.json"),
                       {**study.scaling_record(report, recipe=recipe), "report": report})
    log.info("amazon scaling %s: test NDCG@5 %.4f (%d non-embedding params, %.1fs)", name, report["test_ndcg@5"],
             report["params_non_embedding"], report["wall_seconds"])
