"""Stage amazon_finetune@<dataset> (dvc.yaml foreach): Beauty / Sports from scratch or from pretrained.

With ``finetune.from: pretrained`` the stage also trains the scratch reference (same architecture, seed and
schedule), so the report and the plot always show pretrained beside scratch; ``from: scratch`` trains only
the scratch model.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, md5_file, write_json
from pipeline.core.params import load_stage
from pipeline.core.train import resumable
from pipeline.seqrec import etl
from pipeline.seqrec import run as rn
from pipeline.seqrec.params import CHECKS, AmazonParams, FinetuneParams, PretrainParams, run_name
from stages.amazon.common import FINETUNE_SETS, MODELS, ORACLE, REPORTS, TB, TOKENIZER, ParamsOpt

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
    folder, tok_file, init_file = (FINETUNE_SETS / etl.finetune_name(dataset), TOKENIZER / "tokenizer.json",
                                   MODELS / "pretrain" / init / "model.pt")
    ds, tok = rn.load_recbole_dataset(folder), etl.load_tokenizer(tok_file)
    oracle, data_md5 = rn.load_oracle(ORACLE, ds), (md5_file(folder / f"{folder.name}.inter"), md5_file(tok_file))
    results, models = {}, {}
    with ExitStack() as checkpoints:
        for variant in rn.finetune_variants(f.from_):
            cfg = rn.run_config(pt, size=f.init_size, max_len=a.max_len, seed=p.seed, run=dataset, finetune=f,
                                variant=variant)
            pretrained = init_file if variant == "pretrained" else None
            model, cov = rn.init_model(cfg, ds, tok, a.max_title_tokens, a.max_brand_tokens, pretrained=pretrained)
            ckpt = checkpoints.enter_context(resumable(MODELS / ".ckpt", f"finetune-{dataset}-{variant}", cfg, variant,
                                                       md5_file(pretrained) if pretrained else "", *data_md5))
            res = rn.train_and_evaluate(cfg, ds, model, checkpoint_dir=ckpt, oracle=oracle,
                                        tb_dir=TB / "finetune" / f"{dataset}-{variant}")
            results[variant] = {**res, "item_repr": cfg.item_repr, "init": init if pretrained else None}
            models[variant] = (model, cfg)
        model, cfg = models[f.from_]
        with atomic_outputs() as out:
            rn.save_model(out.dir(MODELS / "finetune" / dataset), model, rn.finetune_model_config(
                model, cfg, ds, from_=f.from_, vocab_size=tok.get_vocab_size()))
            write_json(out.file(REPORTS / "finetune" / f"{dataset}.json"),
                       rn.finetune_report(ds, results, f=f, synthetic=oracle is not None, coverage=cov))
    log.info("finetune %s (%s): test NDCG@10 %s", dataset, f.from_,
             {v: round(r["metrics"]["test"]["ndcg@10"], 4) for v, r in results.items()})
