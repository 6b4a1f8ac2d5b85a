"""Stage amazon_finetune@<dataset> (dvc.yaml foreach): Beauty / Sports from scratch or from pretrained.

With ``finetune.from: pretrained`` the stage also trains the scratch reference (same architecture, seed and
schedule), so the report and the plot always show pretrained beside scratch; ``from: scratch`` trains only
the scratch model.
"""

from __future__ import annotations

import logging
import shutil
import time

from pipeline.core.io import atomic_outputs, md5_file, write_json
from stages.amazon.common import (FINETUNE_SETS, MODELS, ORACLE, REPORTS, TB, TOKENIZER, ParamsOpt, load, run_name,
                                  size_of)

log = logging.getLogger(__name__)


def finetune(dataset: str, params: str = ParamsOpt) -> None:
    """Fine-tune on amazon-<dataset>; full-ranking NDCG/HR@5/10/20 on train, valid, test."""
    import torch

    from pipeline.core.errors import ConfigError
    from pipeline.core.seeding import derive_seed, seed_everything
    from pipeline.seqrec import etl as etl_mod
    from pipeline.seqrec import run as rn

    p = load(params)
    a, pt, f = p.amazon, p.pretrain, p.finetune
    if dataset not in a.finetune_datasets:
        raise ConfigError(f"amazon.finetune_datasets: '{dataset}' is not listed ({a.finetune_datasets})")
    layers, dim = size_of(p, f.init_size)
    init = run_name(f.init_scale, f.init_size)
    folder = FINETUNE_SETS / etl_mod.finetune_name(dataset)
    ds = rn.load_recbole_dataset(folder)
    tok = etl_mod.load_tokenizer(TOKENIZER / "tokenizer.json")
    oracle = rn.load_oracle(ORACLE, ds)
    variants = ["scratch", "pretrained"] if f.from_ == "pretrained" else ["scratch"]
    results, models, cov = {}, {}, None
    for variant in variants:
        item_repr = "text" if variant == "pretrained" else f.item_repr
        tokens = None
        if item_repr == "text":
            *tokens, cov = rn.item_tokens(ds, tok, a.max_title_tokens, a.max_brand_tokens)
        cfg = rn.RunConfig(item_repr=item_repr, layers=layers, dim=dim, heads=pt.heads, ffn_mult=pt.ffn_mult,
                           dropout=pt.dropout, max_len=a.max_len, loss=f.loss, num_negatives=pt.num_negatives,
                           neg_alpha=pt.neg_alpha, logq=pt.logq, epochs=f.epochs, batch_size=f.batch_size,
                           lr=f.lr, weight_decay=pt.weight_decay, clip_norm=pt.clip_norm, warmup=pt.warmup,
                           div_factor=pt.div_factor, final_div_factor=pt.final_div_factor, patience=f.patience,
                           protocol="full_ranking", eval_negatives=0, eval_users=0, mask_history=f.mask_history,
                           monitor="ndcg@10", seed=derive_seed(p.seed, "amazon-finetune", dataset) % 2**31)
        seed_everything(cfg.seed)
        model = rn.make_model(cfg, ds, tokens, tok.get_vocab_size())
        loaded = None
        init_md5 = ""
        if variant == "pretrained":
            path = MODELS / "pretrain" / init / "model.pt"
            loaded = rn.load_pretrained(model, path)
            init_md5 = md5_file(path)
        key = rn.run_key(cfg, variant, init_md5, md5_file(folder / f"{folder.name}.inter"),
                         md5_file(TOKENIZER / "tokenizer.json"))
        ckpt = MODELS / ".ckpt" / f"finetune-{dataset}-{variant}-{key}"
        t0 = time.time()
        res = rn.train_and_evaluate(cfg, ds, model, checkpoint_dir=ckpt, tb_dir=TB / "finetune" / f"{dataset}-{variant}",
                                    oracle=oracle)
        res["wall_seconds"] = round(time.time() - t0, 1)
        res["item_repr"] = item_repr
        res["init"] = init if loaded else None
        results[variant] = res
        models[variant] = (model, cfg, ckpt)
    main = results[f.from_]
    report = {"dataset": etl_mod.finetune_name(dataset), "split": "train, valid and test (leave-one-out)",
              "protocol": "full_ranking", "synthetic": oracle is not None, "from": f.from_,
              "users": len(ds.users), "items": ds.num_items, "interactions": ds.interactions, "size": f.init_size,
              "loss": f.loss, "mask_history": f.mask_history, "tokenizer_coverage": cov,
              "params_total": main["params_total"], "params_non_embedding": main["params_non_embedding"],
              "test_ndcg@10": main["metrics"]["test"]["ndcg@10"], "metrics": main["metrics"],
              "variants": {v: {k: r[k] for k in ("metrics", "params_total", "params_non_embedding", "best_epoch",
                                                  "epochs_run", "steps", "wall_seconds", "item_repr", "init")}
                           for v, r in results.items()}}
    if "oracle_ndcg@10" in main["metrics"]["test"]:
        report["test_oracle_ndcg@10"] = main["metrics"]["test"]["oracle_ndcg@10"]
    model, cfg, _ = models[f.from_]
    with atomic_outputs() as out:
        d = out.dir(MODELS / "finetune" / dataset)
        torch.save(model.state_dict(), d / "model.pt")
        write_json(d / "config.json", {"item_repr": cfg.item_repr, **model.config, "from": f.from_,
                                       "vocab_size": tok.get_vocab_size(), "num_items": ds.num_items,
                                       "items": ds.items})
        write_json(out.file(REPORTS / "finetune" / f"{dataset}.json"), report)
    for _, _, ckpt in models.values():
        shutil.rmtree(ckpt, ignore_errors=True)
    log.info("finetune %s (%s): test NDCG@10 %s", dataset, f.from_,
             {v: round(r["metrics"]["test"]["ndcg@10"], 4) for v, r in results.items()})
