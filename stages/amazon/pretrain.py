"""Stage amazon_pretrain@<scale>-<size> (dvc.yaml matrix): the SASRec-style model on one scaled set."""

from __future__ import annotations

import logging

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, md5_file, write_json
from pipeline.core.params import load_stage
from pipeline.core.train import resumable
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
    name, folder = run_name(scale, size), PRETRAIN_SETS / etl.pretrain_name(scale)
    tok_file = TOKENIZER / "tokenizer.json"
    ds, tok = rn.load_recbole_dataset(folder), etl.load_tokenizer(tok_file)
    cfg = rn.run_config(pt, size=size, max_len=a.max_len, seed=p.seed, run=name)
    model, cov = rn.init_model(cfg, ds, tok, a.max_title_tokens, a.max_brand_tokens)
    with resumable(MODELS / ".ckpt", f"pretrain-{name}", cfg, md5_file(folder / f"{folder.name}.inter"),
                   md5_file(tok_file), a.max_title_tokens, a.max_brand_tokens) as ckpt:
        res = rn.train_and_evaluate(cfg, ds, model, checkpoint_dir=ckpt, tb_dir=TB / "pretrain" / name,
                                    oracle=rn.load_oracle(ORACLE, ds))
        report = rn.pretrain_report(ds, cfg, res, scale=scale, size=size, synthetic=(ORACLE / "world.json").is_file(),
                                    coverage=cov)
        with atomic_outputs() as out:
            rn.save_model(out.dir(MODELS / "pretrain" / name), model,
                          rn.pretrain_model_config(model, cfg, vocab_size=tok.get_vocab_size(), trained_on=ds.name))
            write_json(out.file(REPORTS / "pretrain" / f"{name}.json"), report)
            write_json(out.file(REPORTS / "pretrain" / f"{name}_curve.json"), rn.learning_curve(res["history"]))
    log.info("pretrain %s: test NDCG@5 (%s) %.4f, %d params (%d non-embedding), %.1fs", name, cfg.protocol,
             report["test_ndcg@5"], report["params_total"], report["params_non_embedding"], res["wall_seconds"])
