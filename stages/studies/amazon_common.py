"""Paths of the Amazon study (``studies/amazon/dvc.yaml``; its stages run with ``wdir`` = the repo root). Holds
paths only: every Amazon study stage depends on this file."""

from __future__ import annotations

from pathlib import Path

AMAZON_MODELS = Path("models/studies/amazon")          # pretrain/<recipe>/: the transfer study's init models
AMAZON_REPORTS = Path("reports/studies/amazon")        # transfer.json, scaling.json, tables.md, *.png
AMAZON_RUNS = AMAZON_REPORTS / "runs"                  # one metrics file per run: pretrain-, transfer-, scaling-
