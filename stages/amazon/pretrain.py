"""Stage amazon_pretrain@<scale>-<size> (dvc.yaml matrix): the SASRec-style model on one scaled set."""

from __future__ import annotations

import logging
import shutil
import time

from pipeline.core.io import atomic_outputs, md5_file, write_json
from stages.amazon.common import (MODELS, ORACLE, PRETRAIN_SETS, REPORTS, TB, TOKENIZER, ParamsOpt, load, run_name,
                                  size_of)

log = logging.getLogger(__name__)


def pretrain(scale: int, size: str, params: str = ParamsOpt) -> None:
    """Pretrain ``size`` ('<layers>x<hidden>') on the ``scale``-interaction set; sampled-negative NDCG@5."""
    import torch

    from pipeline.core.errors import ConfigError
    from pipeline.core.seeding import derive_seed, seed_everything
    from pipeline.seqrec import etl as etl_mod
    from pipeline.seqrec import run as rn

    p = load(params)
    a, pt = p.amazon, p.pretrain
    if scale not in a.scales:
        raise ConfigError(f"amazon.scales: {scale} is not listed ({a.scales})")
    layers, dim = size_of(p, size)
    name = run_name(scale, size)
    ds = rn.load_recbole_dataset(PRETRAIN_SETS / etl_mod.pretrain_name(scale))
    tok = etl_mod.load_tokenizer(TOKENIZER / "tokenizer.json")
    tokens = cov = None
    if pt.item_repr == "text":
        *tokens, cov = rn.item_tokens(ds, tok, a.max_title_tokens, a.max_brand_tokens)
    cfg = rn.RunConfig(item_repr=pt.item_repr, layers=layers, dim=dim, heads=pt.heads, ffn_mult=pt.ffn_mult,
                       dropout=pt.dropout, max_len=a.max_len, loss="sampled", num_negatives=pt.num_negatives,
                       neg_alpha=pt.neg_alpha, logq=pt.logq, epochs=pt.epochs, batch_size=pt.batch_size, lr=pt.lr,
                       weight_decay=pt.weight_decay, clip_norm=pt.clip_norm, warmup=pt.warmup,
                       div_factor=pt.div_factor, final_div_factor=pt.final_div_factor, patience=pt.patience,
                       protocol=f"sampled_{pt.eval_negatives}", eval_negatives=pt.eval_negatives,
                       eval_users=pt.eval_users, mask_history=True, monitor="ndcg@5",
                       seed=derive_seed(p.seed, "amazon-pretrain", name) % 2**31)
    seed_everything(cfg.seed)
    model = rn.make_model(cfg, ds, tokens, tok.get_vocab_size())
    key = rn.run_key(cfg, md5_file(PRETRAIN_SETS / etl_mod.pretrain_name(scale) / f"{etl_mod.pretrain_name(scale)}.inter"),
                     md5_file(TOKENIZER / "tokenizer.json"), a.max_title_tokens, a.max_brand_tokens)
    ckpt = MODELS / ".ckpt" / f"pretrain-{name}-{key}"
    t0 = time.time()
    res = rn.train_and_evaluate(cfg, ds, model, checkpoint_dir=ckpt, tb_dir=TB / "pretrain" / name,
                                oracle=rn.load_oracle(ORACLE, ds))
    wall = time.time() - t0
    report = {"dataset": etl_mod.pretrain_name(scale), "split": "train, valid and test (leave-one-out)",
              "protocol": cfg.protocol, "synthetic": (ORACLE / "world.json").is_file(), "scale": scale,
              "interactions": ds.interactions, "users": len(ds.users), "items": ds.num_items, "size": size,
              "layers": layers, "hidden": dim, "heads": pt.heads, "item_repr": pt.item_repr,
              "params_total": res["params_total"], "params_non_embedding": res["params_non_embedding"],
              "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"], "steps": res["steps"],
              "wall_seconds": round(wall, 1), "tokenizer_coverage": cov,
              "test_ndcg@5": res["metrics"]["test"]["ndcg@5"], "metrics": res["metrics"]}
    if "oracle_ndcg@5" in res["metrics"]["test"]:
        report["test_oracle_ndcg@5"] = res["metrics"]["test"]["oracle_ndcg@5"]
    with atomic_outputs() as out:
        d = out.dir(MODELS / "pretrain" / name)
        torch.save(model.state_dict(), d / "model.pt")
        write_json(d / "config.json", {"item_repr": pt.item_repr, **model.config,
                                       "vocab_size": tok.get_vocab_size(), "ffn_mult": pt.ffn_mult,
                                       "trained_on": etl_mod.pretrain_name(scale)})
        write_json(out.file(REPORTS / "pretrain" / f"{name}.json"), report)
        write_json(out.file(REPORTS / "pretrain" / f"{name}_curve.json"), _curve(res["history"]))
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("pretrain %s: test NDCG@5 (%s) %.4f, %d params (%d non-embedding), %.1fs", name, cfg.protocol,
             report["test_ndcg@5"], report["params_total"], report["params_non_embedding"], wall)


def _curve(history: list) -> list:
    return [{"epoch": h["epoch"], "step": h["step"], "train_loss": h["train_loss"],
             **{k: v for k, v in h.items() if k.startswith("valid_") and "@" in k}, "lr": h["lr"]} for h in history]
