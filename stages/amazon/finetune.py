"""Stage amazon_finetune@<dataset> (dvc.yaml foreach): Beauty / Sports from scratch or from pretrained.

With ``finetune.from: pretrained`` the stage also trains the scratch reference (same architecture, seed and
recipe), so the report and the plot always show pretrained beside scratch; ``from: scratch`` trains only
the scratch model. ``finetune.recipe: srt`` with EWC also reads the pretraining set of ``finetune.init_scale``
(the Fisher of the pretraining loss).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.core.train import init_distributed
from pipeline.seqrec import etl
from pipeline.seqrec import run as rn
from pipeline.seqrec.params import CHECKS, AmazonParams, FinetuneParams, PretrainParams, run_name
from stages.amazon.common import FINETUNE_SETS, MODELS, ORACLE, PRETRAIN_SETS, REPORTS, TB, TOKENIZER, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.finetune_datasets", "amazon.scales", "amazon.max_title_tokens", "amazon.max_brand_tokens",
          "amazon.max_len", "amazon.source", "amazon.local.finetune_format", "pretrain", "finetune")


def finetune(dataset: str, params: str = ParamsOpt) -> None:
    """Fine-tune on amazon-<dataset>; full-ranking NDCG/HR@5/10/20 on train, valid, test."""
    p = load_stage(params, PARAMS, (AmazonParams, PretrainParams, FinetuneParams), CHECKS)
    a, pt, f = p.amazon, p.pretrain, p.finetune
    if dataset not in a.finetune_datasets:
        raise ConfigError(f"amazon.finetune_datasets: '{dataset}' is not listed ({a.finetune_datasets})")
    init = run_name(f.init_scale, f.init_size)
    rank, _ = init_distributed()              # torchrun: every rank trains on its shard, rank 0 writes
    with ExitStack() as checkpoints:
        r = rn.finetune_runs(pt, f, seed=p.seed, dataset=dataset, max_len=a.max_len, max_title=a.max_title_tokens,
                             max_brand=a.max_brand_tokens, folder=FINETUNE_SETS / etl.finetune_name(dataset),
                             tok_file=TOKENIZER / "tokenizer.json", init_file=MODELS / "pretrain" / init / "model.pt",
                             init_name=init, pretrain_folder=PRETRAIN_SETS / etl.pretrain_name(f.init_scale),
                             oracle_dir=ORACLE, checkpoints=checkpoints, ckpt_root=MODELS / ".ckpt",
                             ckpt_name=f"finetune-{dataset}", tb_root=TB / "finetune")
        model, cfg = r["models"][f.from_]
        if rank != 0:
            return
        with atomic_outputs() as out:
            rn.save_model(out.dir(MODELS / "finetune" / dataset), model, rn.finetune_model_config(
                model, cfg, r["ds"], from_=f.from_, vocab_size=r["tok"].get_vocab_size()))
            write_json(out.file(REPORTS / "finetune" / f"{dataset}.json"),
                       rn.finetune_report(r["ds"], r["results"], f=f, synthetic=r["oracle"] is not None,
                                          coverage=r["coverage"]))
    log.info("finetune %s (%s, recipe %s): test NDCG@10 %s", dataset, f.from_, f.recipe,
             {v: round(x["metrics"]["test"]["ndcg@10"], 4) for v, x in r["results"].items()})
