"""Stage avazu_split_valid@<source> (DESIGN.md's split_x2): a click-stratified share of train becomes valid."""

from __future__ import annotations

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import AvazuParams
from pipeline.ctr.splits import read_labels, stratified_mask, write_subsets
from stages.avazu.common import SPLIT, ParamsOpt, need_source
from stages.avazu.datasets import base_dir

PARAMS = ("seed", "avazu.sources", "avazu.align", "avazu.batch_rows", "avazu.split_valid")


def split_valid(source: str = typer.Argument(..., help="a source without a valid split (x2)"),
                params: str = ParamsOpt) -> None:
    """Seeded, click-stratified share of train becomes valid (reczoo's x2 has none)."""
    p = load_stage(params, PARAMS, (AvazuParams,))
    a = p.avazu
    need_source(a.split_valid.sources, source, "avazu.split_valid.sources")
    src = base_dir(source, a.sources, a.align) / "train.parquet"
    mask = stratified_mask(read_labels(src), a.split_valid.frac, p.seed, f"split_valid/{source}")
    with atomic_outputs() as out:
        d = out.dir(SPLIT / source)
        n_valid, n_train = write_subsets(src, mask, d / "valid.parquet", d / "train.parquet", a.batch_rows)
        write_json(d / "meta.json", {"source": source, "frac": a.split_valid.frac,
                                     "rows": {"train": n_train, "valid": n_valid}})
