"""Stage avazu_sample@<source>: seeded, click-stratified samples (x1_sample20, x2_sample20)."""

from __future__ import annotations

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.ctr.splits import read_labels, sample_name, stratified_mask, write_subsets
from stages.avazu.common import SAMPLE, ParamsOpt, load, need_source, source_splits

def sample(source: str = typer.Argument(..., help="x1 | x2"), params: str = ParamsOpt) -> None:
    """Seeded, click-stratified ``avazu.sample.frac`` of a source's train and valid splits."""
    p, layouts = load(params)
    a = p.avazu
    need_source(a, source, "avazu.sample.sources")
    splits = source_splits(a, layouts, source)
    name = sample_name(source, a.sample.frac)
    rows = {}
    with atomic_outputs() as out:
        d = out.dir(SAMPLE / source)
        for split in ("train", "valid"):
            if split not in splits:
                continue
            mask = stratified_mask(read_labels(splits[split]), a.sample.frac, p.seed, f"sample/{source}/{split}")
            rows[split] = write_subsets(splits[split], mask, d / f"{split}.parquet", None, a.batch_rows)[0]
        write_json(d / "meta.json", {"name": name, "source": source, "frac": a.sample.frac, "rows": rows})
