"""Stage avazu_sample@<source>: seeded, click-stratified samples (x1_sample20, x2_sample20)."""

from __future__ import annotations

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import AvazuParams
from pipeline.ctr.schema import load_layouts
from pipeline.ctr.splits import read_labels, sample_name, stratified_mask, write_subsets
from stages.avazu.common import SAMPLE, ParamsOpt, need_source
from stages.avazu.datasets import source_splits

PARAMS = ("seed", "avazu.sources", "avazu.align", "avazu.layouts", "avazu.batch_rows", "avazu.split_valid.sources",
          "avazu.sample")


def sample(source: str = typer.Argument(..., help="x1 | x2"), params: str = ParamsOpt) -> None:
    """Seeded, click-stratified ``avazu.sample.frac`` of a source's train and valid splits."""
    p = load_stage(params, PARAMS, (AvazuParams,))
    a = p.avazu
    need_source(a.sample.sources, source, "avazu.sample.sources")
    splits = source_splits(load_layouts(a.layouts), a, source)
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
