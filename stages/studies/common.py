"""Paths of the Helen study (``studies/helen/dvc.yaml``; its stages run with ``wdir`` = the repo root). Holds
paths only: every study stage depends on this file."""

from __future__ import annotations

from pathlib import Path

HELEN_MODELS = Path("models/studies/helen")          # one folder per run: model.pt + config.json
HELEN_REPORTS = Path("reports/studies/helen")        # table, rho grid, sharpness, optimizers on the default
HELEN_RUNS = HELEN_REPORTS / "runs"                  # one metrics file per run
