"""Paths shared by the Avazu stages (one module per stage beside this one). Imports nothing heavy on
purpose: every Avazu stage depends on this file (dvc.yaml), so it holds paths and one check only."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.core.errors import ConfigError

DATA = Path("data/avazu")
RAW = DATA / "raw"
NORMALIZED = DATA / "interim" / "base" / "normalized"     # base = per-source splits before sampling
ALIGNED = DATA / "interim" / "base" / "aligned"           # avazu_align: x1 / x2 with x4 tokens
SPLIT = DATA / "interim" / "base" / "split"
SAMPLE = DATA / "interim" / "sample"
VOCAB = DATA / "vocab"
ENCODED = DATA / "encoded"
LEAKAGE = DATA / "leakage"                                 # avazu_leakage: x4 valid/test events per row
PREDICTIONS = DATA / "predictions"                         # test predictions of the trained models (parquet)
REPORTS = Path("reports/avazu")
MODELS = Path("models/avazu")
CKPT = Path("models/.ckpt")                                # resume points of killed runs (never a DVC out)
TB = Path("reports/tb")
BASELINE_DIR = MODELS / "baseline"                         # avazu_train_baseline: model.pt + config.json
LLM_DIR = MODELS / "llm"                                   # avazu_llm_init: the HF-format LLM + tokenizer
PROTOCOLS = {"leak_free": "", "seed_leaky": "-seed"}     # LLM-CTR protocols -> suffix of their stage / outputs


def llm_phase_dirs(protocol: str = "leak_free") -> dict:
    """models/avazu/llm_phase<n><suffix>: the trainable parts of each phase under one protocol."""
    return {n: MODELS / f"llm_phase{n}{PROTOCOLS[protocol]}" for n in (1, 2)}

ParamsOpt = typer.Option("params.yaml", "--params", help="params file")


def need_source(allowed: list[str], source: str, key: str) -> None:
    if source not in allowed:
        raise ConfigError(f"{key}: source '{source}' is not listed ({allowed})")
