"""Stage amazon_etl: scaled pretraining sets + Beauty/Sports as RecBole atomic files, the BPE tokenizer."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from pipeline.core.io import atomic_outputs, read_json, write_json
from pipeline.seqrec import etl
from stages.amazon.common import (FINETUNE_SETS, ORACLE, PRETRAIN_SETS, RAW, REPORTS, TOKENIZER, ParamsOpt,
                                  load)

log = logging.getLogger(__name__)


def run_etl(params: str = ParamsOpt) -> None:
    """Filter, de-overlap and scale the pool; write the fine-tuning sets; train the item-text tokenizer."""
    p = load(params)
    a = p.amazon
    manifest = read_json(RAW / "manifest.json")
    ft_files = {n: (manifest["finetune"][n]["format"], RAW / manifest["finetune"][n]["path"])
                for n in a.finetune_datasets}
    finetune = {n: etl.read_finetune(fmt, path, n) for n, (fmt, path) in ft_files.items()}
    exclude = set().union(*(set(s.users) for s in finetune.values())) if finetune else set()
    with atomic_outputs() as out, tempfile.TemporaryDirectory(dir=".", prefix=".amazon-etl-") as work:
        pre, fin, tok_dir, ora = out.dir(PRETRAIN_SETS), out.dir(FINETUNE_SETS), out.dir(TOKENIZER), out.dir(ORACLE)
        report, pool_meta = etl.build_pretrain_sets(
            sorted((RAW / "ratings").iterdir()), sorted((RAW / "meta").iterdir()), exclude, pre, Path(work),
            scales=list(a.scales), min_inter=a.min_user_interactions, buckets=a.buckets, batch_rows=a.batch_rows,
            seed=p.seed)
        texts = (t for r in etl.iter_meta(pool_meta) for t in (r["title"], r["brand"]) if t)
        tok = etl.train_tokenizer(texts, a.vocab_size)
        tok.save(str(tok_dir / "tokenizer.json"))
        meta_needed = {i for s in finetune.values() for seq in s.items for i in seq}
        meta_all = etl.read_meta_dict(Path(work) / "meta.parquet", meta_needed)
        report["finetune"] = {}
        for n, seqs in finetune.items():
            meta = seqs.meta if seqs.meta is not None else (meta_all if ft_files[n][0] == "reviews" else None)
            st = etl.write_finetune(seqs, meta, fin / etl.finetune_name(n), etl.finetune_name(n),
                                    a.min_user_interactions)
            if meta is not None:
                items = sorted({i for seq in seqs.items for i in seq})
                _, _, cov = etl.tokenize_items(tok, [meta[i].title if i in meta else "" for i in items],
                                               [meta[i].brand if i in meta else "" for i in items],
                                               a.max_title_tokens, a.max_brand_tokens)
                st["tokenizer_coverage"] = cov
            st["format"] = ft_files[n][0]
            report["finetune"][n] = st
        report["pool_users_overlapping_finetune"] = _overlap(pre, exclude)
        report["tokenizer"] = {"vocab_size": tok.get_vocab_size(), "requested": a.vocab_size}
        if (RAW / "oracle").is_dir():
            for f in (RAW / "oracle").iterdir():
                shutil.copy2(f, ora / f.name)
        report.update(dataset="amazon pretraining pool + " + ", ".join(a.finetune_datasets),
                      split="all", protocol="etl counts", synthetic=(RAW / "oracle").is_dir(), source=a.source,
                      removed_finetune_users=len(exclude))
        write_json(out.file(REPORTS / "etl.json"), report)
    log.info("etl: %s", {k: v["interactions"] for k, v in report["scales"].items()})


def _overlap(pre: Path, exclude: set[str]) -> int:
    """Users of the written pretraining sets that are fine-tuning users: must be 0."""
    from pipeline.seqrec.formats import read_recbole

    n = 0
    for f in pre.glob("*/*.inter"):
        n += sum(1 for r in read_recbole(f) if r["user_id"] in exclude)
    return n
