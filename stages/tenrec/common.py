"""Paths and the ``--params`` option shared by the Tenrec stages (one module per stage beside this one).
Nothing else: whatever a stage module imports is a code dependency of its DVC stage."""

from __future__ import annotations

from pathlib import Path

import typer

DATA = Path("data/tenrec")
RAW = DATA / "raw"
PREPARED = DATA / "prepared"
EMBEDDINGS = DATA / "embeddings"
CANDIDATES = DATA / "candidates"
PREDICTIONS = DATA / "predictions"
MODELS = Path("models/tenrec")
REPORTS = Path("reports/tenrec")
TB = Path("reports/tb/tenrec")
CKPT = Path("models/.ckpt")

ParamsOpt = typer.Option("params.yaml", "--params", help="params file")
