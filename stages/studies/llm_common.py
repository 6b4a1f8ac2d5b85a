"""Paths of the LLM study (``studies/llm/dvc.yaml``; its stages run with ``wdir`` = the repo root). Holds paths
only: every LLM study stage depends on this file (and only they do)."""

from __future__ import annotations

from pathlib import Path

LLM_STUDY_MODELS = Path("models/studies/llm")       # one LLM folder per study variant (tiny | smollm2_random | smollm2)
LLM_STUDY_REPORTS = Path("reports/studies/llm")     # one metrics file per variant (runs/) and the table
