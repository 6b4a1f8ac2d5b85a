"""Paths shared by the Amazon stages (one module per stage beside this one); params live in
``pipeline.seqrec.params`` and each stage loads only the keys it declares (its ``PARAMS``)."""

from __future__ import annotations

from pathlib import Path

import typer

DATA = Path("data/amazon")
RAW = DATA / "raw"
PRETRAIN_SETS = DATA / "pretrain"
FINETUNE_SETS = DATA / "finetune"
TOKENIZER = DATA / "tokenizer"
ORACLE = DATA / "oracle"
MODELS = Path("models/amazon")
REPORTS = Path("reports/amazon")
TB = Path("reports/tb/amazon")

ParamsOpt = typer.Option("params.yaml", "--params", help="params file")
