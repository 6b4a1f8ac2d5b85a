"""Stage avazu_normalize@<source>: a reczoo layout -> the unified schema (parquet per split)."""

from __future__ import annotations

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.normalize import normalize_source
from pipeline.ctr.params import AvazuParams
from pipeline.ctr.schema import load_layouts
from stages.avazu.common import NORMALIZED, RAW, ParamsOpt, need_source

PARAMS = ("avazu.sources", "avazu.layouts", "avazu.batch_rows", "avazu.out_of_window")


def normalize(source: str = typer.Argument(..., help="x1 | x2 | x4"), params: str = ParamsOpt) -> None:
    """One source's published layout -> the unified schema (parquet per split)."""
    a = load_stage(params, PARAMS, (AvazuParams,)).avazu
    need_source(a.sources, source, "avazu.sources")
    layouts = load_layouts(a.layouts)
    with atomic_outputs() as out:
        d = out.dir(NORMALIZED / source)
        stats = normalize_source(RAW / source, layouts[source], layouts.fields, d, a.batch_rows,
                                 out_of_window=a.out_of_window)
        write_json(d / "meta.json", {"source": source, "splits": stats})
