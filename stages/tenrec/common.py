"""Paths and param loading shared by the Tenrec stages (one module per stage beside this one)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.core.config import Params, load_params
from pipeline.core.errors import ConfigError

DATA = Path("data/tenrec")
RAW = DATA / "raw"
PREPARED = DATA / "prepared"
EMBEDDINGS = DATA / "embeddings"
CANDIDATES = DATA / "candidates"
MODELS = Path("models/tenrec")
REPORTS = Path("reports/tenrec")
TB = Path("reports/tb/tenrec")
CKPT = Path("models/.ckpt")

ParamsOpt = typer.Option("params.yaml", "--params", help="params file")


def load(params_path: str) -> Params:
    return load_params(params_path)


def check_rerank(p: Params) -> None:
    if p.ranking.rerank_k > p.ann.top_k:
        raise ConfigError(f"ranking.rerank_k: {p.ranking.rerank_k} > ann.top_k {p.ann.top_k} "
                          "(the ranker re-ranks the first rerank_k ANN candidates)")


def check_pq(p: Params) -> None:
    if p.ann.index == "ivfpq" and p.retrieval.embedding_dim % p.ann.pq_m:
        raise ConfigError(f"ann.pq_m: {p.ann.pq_m} does not divide retrieval.embedding_dim "
                          f"{p.retrieval.embedding_dim}")


def oracle_world(raw: Path = RAW):
    """The synthetic world (planted factors) when the raw data is synthetic, else None."""
    from pipeline.tenrec.synthetic import WORLD, World

    path = raw / WORLD
    return World.load(path) if path.is_file() else None


def dataset_name(p: Params, synthetic: bool) -> str:
    return f"tenrec {p.tenrec.scenario} ({'synthetic' if synthetic else 'real'})"


def clean(d: dict) -> dict:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    import math

    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = clean(v)
        elif hasattr(v, "item"):
            v = v.item()
            out[k] = None if isinstance(v, float) and math.isnan(v) else v
        elif isinstance(v, float) and math.isnan(v):
            out[k] = None
        else:
            out[k] = v
    return out
