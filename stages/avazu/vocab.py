"""Stage avazu_vocab: one vocabulary per field, int32 encoding of every split, the vocab report."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr import vocab as vc
from pipeline.ctr.params import AvazuParams
from pipeline.ctr.report import build_vocab_report, vocab_report_markdown
from pipeline.ctr.schema import load_layouts
from stages.avazu.common import ENCODED, NORMALIZED, REPORTS, VOCAB, ParamsOpt
from stages.avazu.datasets import all_datasets, base_dir

log = logging.getLogger(__name__)

PARAMS = ("avazu.sources", "avazu.align", "avazu.layouts", "avazu.batch_rows", "avazu.split_valid.sources",
          "avazu.sample", "avazu.min_count")


def vocab(params: str = ParamsOpt) -> None:
    """One vocabulary per field over all sources' train splits; int32-encode every split; vocab report."""
    a = load_stage(params, PARAMS, (AvazuParams,)).avazu
    layouts = load_layouts(a.layouts)
    fields = layouts.feature_fields
    datasets = all_datasets(a, layouts)
    per_source = {}
    for s in a.sources:
        log.info("counting tokens of %s/train", s)
        per_source[s] = vc.count_file(datasets[s]["train"], fields, a.batch_rows)
    unaligned = {s: vc.count_file(NORMALIZED / s / "train.parquet", fields, a.batch_rows)     # overlap, align off
                 for s in a.sources if base_dir(s, a.sources, a.align) != NORMALIZED / s} or None
    counts = vc.merge_counts(list(per_source.values()))
    vocab_ = vc.build_vocab(counts, a.min_count)
    encoder = vc.Encoder(vocab_)
    split_stats = {}
    with atomic_outputs() as out:
        vdir, edir = out.dir(VOCAB), out.dir(ENCODED)
        for name, splits in datasets.items():
            (edir / name).mkdir()
            for split, path in splits.items():
                log.info("encoding %s/%s", name, split)
                split_stats[f"{name}/{split}"] = encoder.encode_file(path, edir / name / f"{split}.parquet",
                                                                     a.batch_rows)
        fmap = vc.feature_map(vocab_, "avazu_" + "_".join(a.sources), a.min_count)
        fmap["datasets"] = {n: sorted(s) for n, s in datasets.items()}
        write_json(vdir / "feature_map.json", fmap)
        vc.vocab_table(vocab_).to_pandas().to_parquet(vdir / "vocab.parquet", index=False)
        synthetic = any("oracle" in st for st in split_stats.values())   # only the synthetic world has one
        report = build_vocab_report(a, fields, vocab_, per_source, datasets, split_stats, synthetic, unaligned)
        write_json(out.file(REPORTS / "vocab.json"), report)
        out.file(REPORTS / "vocab.md").write_text(vocab_report_markdown(report), encoding="utf-8")
