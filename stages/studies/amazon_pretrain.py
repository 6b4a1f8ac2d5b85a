"""Stage amazon_study_pretrain@<recipe> (studies/amazon/dvc.yaml): the transfer study's pretrained model —
``finetune.init_size`` on the ``finetune.init_scale`` set, trained with ``RECIPE`` (srt | recdag)."""

from __future__ import annotations

import logging

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.core.train import resumable
from pipeline.seqrec import etl
from pipeline.seqrec import run as rn
from pipeline.seqrec import study
from pipeline.seqrec.params import CHECKS, AmazonParams, FinetuneParams, PretrainParams
from stages.amazon.common import ORACLE, PRETRAIN_SETS, TOKENIZER, ParamsOpt
from stages.studies.amazon_common import AMAZON_MODELS, AMAZON_RUNS

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.scales", "amazon.max_title_tokens", "amazon.max_brand_tokens", "amazon.max_len",
          "amazon.finetune_datasets", "amazon.source", "amazon.local.finetune_format", "pretrain", "finetune")


def amazon_pretrain(recipe: str = typer.Argument(..., help="srt | recdag"), params: str = ParamsOpt) -> None:
    """Pretrain finetune.init_size on the finetune.init_scale set with RECIPE for the architecture and the
    procedure (every other knob from pretrain.*)."""
    p = load_stage(params, PARAMS, (AmazonParams, PretrainParams, FinetuneParams), CHECKS)
    a, f = p.amazon, p.finetune
    pt, _ = study.with_recipe(p.pretrain, None, recipe)
    kw = dict(seed=p.seed, scale=f.init_scale, size=f.init_size, max_len=a.max_len, max_title=a.max_title_tokens,
              max_brand=a.max_brand_tokens, folder=PRETRAIN_SETS / etl.pretrain_name(f.init_scale),
              tok_file=TOKENIZER / "tokenizer.json")
    with resumable(AMAZON_MODELS / ".ckpt", f"pretrain-{recipe}", *rn.pretrain_key(pt, **kw)) as ckpt:
        model, cfg, report, extra = rn.pretrain_run(pt, **kw, oracle_dir=ORACLE, checkpoint_dir=ckpt, tb_dir=None)
        with atomic_outputs() as out:
            rn.save_model(out.dir(AMAZON_MODELS / "pretrain" / recipe), model, rn.pretrain_model_config(
                model, cfg, vocab_size=extra["vocab_size"], trained_on=extra["trained_on"]))
            write_json(out.file(AMAZON_RUNS / f"pretrain-{recipe}.json"), report)
    log.info("amazon study pretrain (%s): test NDCG@5 %.4f", recipe, report["test_ndcg@5"])
