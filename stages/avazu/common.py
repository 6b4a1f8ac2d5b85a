"""Paths and param resolution shared by the Avazu stages (one module per stage beside this one)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.core.config import AvazuParams, Params, load_params
from pipeline.core.errors import ConfigError
from pipeline.core.io import read_json
from pipeline.ctr.schema import Layouts, load_layouts
from pipeline.ctr.splits import sample_name

DATA = Path("data/avazu")
RAW = DATA / "raw"
NORMALIZED = DATA / "interim" / "base" / "normalized"     # base = per-source splits before sampling
SPLIT = DATA / "interim" / "base" / "split"
SAMPLE = DATA / "interim" / "sample"
VOCAB = DATA / "vocab"
ENCODED = DATA / "encoded"
REPORTS = Path("reports/avazu")
MODELS = Path("models")
TB = Path("reports/tb")
BASELINE_DIR = MODELS / "baseline"                         # avazu_train_baseline: model.pt + config.json
LLM_DIR = MODELS / "llm"                                   # llm_init: the HF-format LLM + tokenizer
LLM_PHASE_DIRS = {1: MODELS / "llm_phase1", 2: MODELS / "llm_phase2"}   # trainable parts only

ParamsOpt = typer.Option("params.yaml", "--params", help="params file")


def load(params_path: str) -> tuple[Params, Layouts]:
    p = load_params(params_path)
    return p, load_layouts(p.avazu.layouts)


def need_source(a: AvazuParams, source: str, key: str = "avazu.sources") -> None:
    allowed = {"avazu.sources": a.sources, "avazu.split_valid.sources": a.split_valid.sources,
               "avazu.sample.sources": a.sample.sources}[key]
    if source not in allowed:
        raise ConfigError(f"{key}: source '{source}' is not listed ({allowed})")


def source_splits(a: AvazuParams, layouts: Layouts, source: str) -> dict[str, Path]:
    """Where each split of a (base) source lives after normalize / split_valid, resolved from params."""
    norm = NORMALIZED / source
    splits = {s: norm / f"{s}.parquet" for s in layouts[source].splits}
    if source in a.split_valid.sources:
        splits.update(train=SPLIT / source / "train.parquet", valid=SPLIT / source / "valid.parquet")
    return {s: splits[s] for s in ("train", "valid", "test") if s in splits}


def all_datasets(a: AvazuParams, layouts: Layouts) -> dict[str, dict[str, Path]]:
    """Every dataset the vocab stage encodes: the base sources, then their samples."""
    out = {s: source_splits(a, layouts, s) for s in a.sources}
    for s in a.sample.sources:
        out[sample_name(s, a.sample.frac)] = {sp: SAMPLE / s / f"{sp}.parquet" for sp in ("train", "valid")
                                              if sp in out[s]}
    return out


class Encoded:
    """The vocab stage's encoded splits, read as tensors (torch is imported only when one is read, so the
    data stages sharing this CLI need not pay for it), with the feature map they were encoded with."""

    def __init__(self) -> None:
        self.fmap_path = VOCAB / "feature_map.json"
        fmap = read_json(self.fmap_path)
        self.features = [f["name"] for f in fmap["features"]]
        self.vocab_sizes = [f["vocab_size"] for f in fmap["features"]]

    def tensors(self, sources: str | list[str], split: str):
        """One split of one source, or of several concatenated."""
        from pipeline.core.data import TensorData

        srcs = [sources] if isinstance(sources, str) else list(sources)
        return TensorData.from_parquet([ENCODED / s / f"{split}.parquet" for s in srcs], self.features,
                                       name=f"{'+'.join(srcs)}/{split}")
