"""Paths and param resolution shared by the Amazon stages (one module per stage beside this one)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.core.config import Params, load_params
from pipeline.core.errors import ConfigError
from pipeline.seqrec.params import parse_size

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


def load(params_path: str) -> Params:
    """params.yaml plus the Amazon branch's cross-section checks (each naming its key)."""
    p = load_params(params_path)
    f, pt = p.finetune, p.pretrain
    if f.init_scale not in p.amazon.scales:
        raise ConfigError(f"finetune.init_scale: {f.init_scale} is not one of amazon.scales {p.amazon.scales}")
    if f.init_size not in pt.sizes:
        raise ConfigError(f"finetune.init_size: '{f.init_size}' is not one of pretrain.sizes {pt.sizes}")
    if f.from_ == "pretrained" and pt.item_repr != "text":
        raise ConfigError("finetune.from: 'pretrained' needs pretrain.item_repr 'text' (an id-based model has "
                          "no weights for another catalogue's items)")
    if p.amazon.source == "local" and p.amazon.local.finetune_format == "s3rec" and (
            f.from_ == "pretrained" or f.item_repr == "text"):
        raise ConfigError("finetune.item_repr: S3-Rec files carry no item text; use finetune.item_repr: id and "
                          "finetune.from: scratch")
    return p


def run_name(scale: int, size: str) -> str:
    parse_size(size)
    return f"{scale}-{size}"


def size_of(p: Params, size: str) -> tuple[int, int]:
    if size not in p.pretrain.sizes:
        raise ConfigError(f"pretrain.sizes: '{size}' is not listed ({p.pretrain.sizes})")
    return parse_size(size)
