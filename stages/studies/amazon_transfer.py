"""Stage amazon_transfer@<recipe>-<dataset>-<frac> (studies/amazon/dvc.yaml): one cell of the transfer grid —
scratch and pretrained fine-tuning with ``RECIPE`` on a seeded share ``FRAC`` of the catalogue's training users
(valid / test: every user), from the study's ``RECIPE`` pretrained model."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import ExitStack

import typer

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.seqrec import etl
from pipeline.seqrec import run as rn
from pipeline.seqrec import study
from pipeline.seqrec.params import CHECKS, AmazonParams, FinetuneParams, PretrainParams
from stages.amazon.common import FINETUNE_SETS, ORACLE, PRETRAIN_SETS, TOKENIZER, ParamsOpt
from stages.studies.amazon_common import AMAZON_MODELS, AMAZON_RUNS

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.scales", "amazon.max_title_tokens", "amazon.max_brand_tokens", "amazon.max_len",
          "amazon.finetune_datasets", "amazon.source", "amazon.local.finetune_format", "pretrain", "finetune")


def amazon_transfer(recipe: str = typer.Argument(..., help="srt | recdag"),
                    dataset: str = typer.Argument(..., help="beauty | sports"),
                    frac: float = typer.Argument(..., help="share of training users in (0, 1]"),
                    params: str = ParamsOpt) -> None:
    """Fine-tune on amazon-DATASET from scratch and from the study's RECIPE pretrained model, both with RECIPE,
    on FRAC of the training users; full-ranking test NDCG@10 beside the oracle."""
    p = load_stage(params, PARAMS, (AmazonParams, PretrainParams, FinetuneParams), CHECKS)
    a = p.amazon
    if dataset not in a.finetune_datasets:
        raise ConfigError(f"amazon.finetune_datasets: '{dataset}' is not listed ({a.finetune_datasets})")
    f0 = p.finetune
    pt, f = study.with_recipe(p.pretrain, f0, recipe, user_frac=frac)
    f = dataclasses.replace(f, from_="pretrained")                          # both variants, whatever from says
    name = f"{recipe}-{dataset}-{study.frac_name(frac)}"
    with ExitStack() as checkpoints:
        r = rn.finetune_runs(pt, f, seed=p.seed, dataset=dataset, max_len=a.max_len, max_title=a.max_title_tokens,
                             max_brand=a.max_brand_tokens, folder=FINETUNE_SETS / etl.finetune_name(dataset),
                             tok_file=TOKENIZER / "tokenizer.json",
                             init_file=AMAZON_MODELS / "pretrain" / recipe / "model.pt",
                             init_name=f"study-{recipe}-{f.init_scale}-{f.init_size}",
                             pretrain_folder=PRETRAIN_SETS / etl.pretrain_name(f.init_scale), oracle_dir=ORACLE,
                             checkpoints=checkpoints, ckpt_root=AMAZON_MODELS / ".ckpt", ckpt_name=f"transfer-{name}",
                             tb_root=None)
        report = rn.finetune_report(r["ds"], r["results"], f=f, synthetic=r["oracle"] is not None,
                                    coverage=r["coverage"])
        with atomic_outputs() as out:
            write_json(out.file(AMAZON_RUNS / f"transfer-{name}.json"),
                       {**study.transfer_record(report, recipe=recipe, dataset=dataset, frac=frac), "report": report})
    log.info("amazon transfer %s: test NDCG@10 %s", name,
             {v: round(x["metrics"]["test"]["ndcg@10"], 4) for v, x in r["results"].items()})
