"""Small helpers the Tenrec reports share: the dataset label and JSON-safe values."""

from __future__ import annotations

import math


def dataset_name(scenario: str, synthetic: bool) -> str:
    """``tenrec QB-video (synthetic)``: the label every Tenrec report carries."""
    return f"tenrec {scenario} ({'synthetic' if synthetic else 'real'})"


def prepared_dataset(meta: dict) -> tuple[str, bool]:
    """(label, synthetic) of the prepared data from its ``meta.json`` (written by tenrec_prepare)."""
    synthetic = bool(meta.get("synthetic"))
    return dataset_name(meta["scenario"], synthetic), synthetic


def clean(d: dict) -> dict:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
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
