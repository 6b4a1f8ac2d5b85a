"""Stage amazon_pretrain@<scale>-<size> (dvc.yaml matrix): the SASRec-style model on one scaled set."""

from __future__ import annotations

import logging

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.core.train import init_distributed, resumable
from pipeline.seqrec import etl
from pipeline.seqrec import run as rn
from pipeline.seqrec.params import AmazonParams, PretrainParams, run_name
from stages.amazon.common import MODELS, ORACLE, PRETRAIN_SETS, REPORTS, TB, TOKENIZER, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.scales", "amazon.max_title_tokens", "amazon.max_brand_tokens", "amazon.max_len", "pretrain")


def pretrain(scale: int, size: str, params: str = ParamsOpt) -> None:
    """Pretrain ``size`` ('<layers>x<hidden>') on the ``scale``-interaction set; sampled-negative NDCG@5."""
    p = load_stage(params, PARAMS, (AmazonParams, PretrainParams))
    a, pt = p.amazon, p.pretrain
    if scale not in a.scales:
        raise ConfigError(f"amazon.scales: {scale} is not listed ({a.scales})")
    name = run_name(scale, size)
    kw = dict(seed=p.seed, scale=scale, size=size, max_len=a.max_len, max_title=a.max_title_tokens,
              max_brand=a.max_brand_tokens, folder=PRETRAIN_SETS / etl.pretrain_name(scale),
              tok_file=TOKENIZER / "tokenizer.json")
    rank, world = init_distributed()          # torchrun: every rank trains on its shard, rank 0 writes
    with resumable(MODELS / ".ckpt", f"pretrain-{name}", *rn.pretrain_key(pt, **kw), world) as ckpt:
        model, cfg, report, extra = rn.pretrain_run(pt, **kw, oracle_dir=ORACLE, checkpoint_dir=ckpt,
                                                    tb_dir=TB / "pretrain" / name)
        if rank != 0:
            return
        with atomic_outputs() as out:
            rn.save_model(out.dir(MODELS / "pretrain" / name), model, rn.pretrain_model_config(
                model, cfg, vocab_size=extra["vocab_size"], trained_on=extra["trained_on"]))
            write_json(out.file(REPORTS / "pretrain" / f"{name}.json"), report)
            write_json(out.file(REPORTS / "pretrain" / f"{name}_curve.json"), extra["curve"])
    log.info("pretrain %s (%s): test NDCG@5 (%s) %.4f, %d params (%d non-embedding), %.1fs", name, cfg.recipe,
             cfg.protocol, report["test_ndcg@5"], report["params_total"], report["params_non_embedding"],
             report["wall_seconds"])
