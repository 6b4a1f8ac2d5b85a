"""Stage amazon_etl: scaled pretraining sets + Beauty/Sports as RecBole atomic files, the BPE tokenizer."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from pipeline.core.io import atomic_outputs, json_field, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.seqrec import etl as lib
from pipeline.seqrec.params import AmazonParams, FinetuneParams, PretrainParams
from stages.amazon.common import FINETUNE_SETS, ORACLE, PRETRAIN_SETS, RAW, REPORTS, TOKENIZER, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "amazon.finetune_datasets", "amazon.scales", "amazon.min_user_interactions", "amazon.vocab_size",
          "amazon.max_title_tokens", "amazon.max_brand_tokens", "amazon.batch_rows", "amazon.buckets",
          "pretrain.item_repr", "finetune.item_repr")


def etl(params: str = ParamsOpt) -> None:
    """Filter, de-overlap and scale the pool; write the fine-tuning sets; train the item-text tokenizer.

    With ``item_repr: text`` the item text must exist: pool metadata without any title/brand
    (``pretrain.item_repr``), a fine-tuning set without a text column or without any text
    (``finetune.item_repr``) is a DataError here, before the hours of pretraining."""
    p = load_stage(params, PARAMS, (AmazonParams, PretrainParams, FinetuneParams))
    a = p.amazon
    pool_text, ft_text = p.pretrain.item_repr == "text", p.finetune.item_repr == "text"
    manifest = read_json(RAW / "manifest.json")
    ft_files = {}
    for n in a.finetune_datasets:
        entry = json_field(json_field(manifest, "finetune", RAW / "manifest.json", dict), n, RAW / "manifest.json",
                           dict)
        ft_files[n] = (entry.get("format"), RAW / str(entry.get("path")))
    finetune = {n: lib.read_finetune(fmt, path, n) for n, (fmt, path) in ft_files.items()}
    for n, (fmt, path) in ft_files.items():
        if ft_text and fmt != "reviews":                      # reviews: text from the pool metadata, below
            lib.require_item_text(n, fmt, path, finetune[n])
    exclude = set().union(*(set(s.users) for s in finetune.values())) if finetune else set()
    with atomic_outputs() as out, tempfile.TemporaryDirectory(dir=".", prefix=".amazon-etl-") as work:
        pre, fin, tok_dir, ora = out.dir(PRETRAIN_SETS), out.dir(FINETUNE_SETS), out.dir(TOKENIZER), out.dir(ORACLE)
        report, pool_meta = lib.build_pretrain_sets(
            sorted((RAW / "ratings").iterdir()), sorted((RAW / "meta").iterdir()), exclude, pre, Path(work),
            scales=list(a.scales), min_inter=a.min_user_interactions, buckets=a.buckets, batch_rows=a.batch_rows,
            seed=p.seed, need_text=pool_text)
        texts = (t for r in lib.iter_meta(pool_meta) for t in (r["title"], r["brand"]) if t)
        tok = lib.train_tokenizer(texts, a.vocab_size)
        tok.save(str(tok_dir / "tokenizer.json"))
        meta_needed = {i for s in finetune.values() for seq in s.items for i in seq}
        meta_all = lib.read_meta_dict(Path(work) / "meta.parquet", meta_needed)
        for n, (fmt, path) in ft_files.items():
            if ft_text and fmt == "reviews":
                lib.require_item_text(n, fmt, path, finetune[n], meta_all)
        report["finetune"] = lib.write_finetune_sets(
            finetune, {n: fmt for n, (fmt, _) in ft_files.items()}, meta_all, fin, tok,
            min_inter=a.min_user_interactions, max_title=a.max_title_tokens, max_brand=a.max_brand_tokens)
        report["pool_users_overlapping_finetune"] = lib.users_in_sets(pre, exclude)
        report["tokenizer"] = {"vocab_size": tok.get_vocab_size(), "requested": a.vocab_size}
        if (RAW / "oracle").is_dir():
            for f in (RAW / "oracle").iterdir():
                shutil.copy2(f, ora / f.name)
        report.update(dataset="amazon pretraining pool + " + ", ".join(a.finetune_datasets),
                      split="all", protocol="etl counts", synthetic=(RAW / "oracle").is_dir(),
                      source=manifest["source"], removed_finetune_users=len(exclude))
        write_json(out.file(REPORTS / "etl.json"), report)
    log.info("etl: %s", {k: v["interactions"] for k, v in report["scales"].items()})
