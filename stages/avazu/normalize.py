"""Stage avazu_normalize@<source>: a reczoo layout -> the unified schema (parquet per split)."""

from __future__ import annotations

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.ctr.normalize import normalize_source
from stages.avazu.common import NORMALIZED, RAW, ParamsOpt, load, need_source

def normalize(source: str = typer.Argument(..., help="x1 | x2 | x4"), params: str = ParamsOpt) -> None:
    """One source's published layout -> the unified schema (parquet per split)."""
    p, layouts = load(params)
    need_source(p.avazu, source)
    with atomic_outputs() as out:
        d = out.dir(NORMALIZED / source)
        stats = normalize_source(RAW / source, layouts[source], layouts.fields, d, p.avazu.batch_rows)
        write_json(d / "meta.json", {"source": source, "splits": stats})
