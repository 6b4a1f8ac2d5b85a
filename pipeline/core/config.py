"""Typed params: params.yaml sections are loaded into frozen dataclasses.

An unknown key, a missing key or a value of the wrong type is a :class:`ConfigError` naming the key.
Defaults live in params.yaml: the dataclasses below have no defaults on purpose.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core.errors import ConfigError
from pipeline.ctr.llm_params import LlmParams
from pipeline.seqrec.params import AmazonParams, FinetuneParams, PretrainParams
from pipeline.tenrec.params import AnnParams, RankingParams, RetrievalParams, TenrecParams

AVAZU_SOURCES = ("x1", "x2", "x4")


@dataclass(frozen=True)
class AvazuSynthetic:
    """The embedded synthetic Avazu world (see pipeline.ctr.synthetic)."""

    rows: int             # events in the world (all three layouts are re-splits of these rows)
    mean_ctr: float       # target mean click probability of the planted teacher
    rank: int             # rank of the planted pairwise interactions
    temperature: float    # scales the teacher logit around its bias; larger = more separable


@dataclass(frozen=True)
class AvazuSplitValid:
    sources: list[str]    # sources whose published layout has no valid split (reczoo: only x2)
    frac: float           # share of train that becomes valid (click-stratified)


@dataclass(frozen=True)
class AvazuSample:
    sources: list[str]
    frac: float


@dataclass(frozen=True)
class AvazuParams:
    source: Literal["synthetic", "hf", "local"]
    sources: list[str]
    local_dir: str
    hf_revision: str
    layouts: str
    batch_rows: int
    synthetic: AvazuSynthetic
    split_valid: AvazuSplitValid
    sample: AvazuSample
    min_count: int
    baseline_sources: list[str]


@dataclass(frozen=True)
class CtrParams:
    """The CTR model (pipeline.ctr.models); model-specific keys apply to their model only."""

    model: Literal["dnn", "widedeep", "pnn", "deepfm", "dcn", "dlrm", "dcnv2"]
    encoder: Literal["none", "gated"]          # deepfm only: the field-gated encoder LLM-CTR reuses
    embedding_dim: int
    hidden_units: list[int]
    dropout: float
    batch_norm: bool
    num_cross_layers: int                       # dcn, dcnv2
    dcnv2_structure: Literal["parallel", "stacked", "crossnet_only", "stacked_parallel"]
    dlrm_interaction: Literal["dot", "cat"]


@dataclass(frozen=True)
class OptimParams:
    name: Literal["adam", "sam", "helen"]
    rho: float                 # sam, helen: perturbation radius
    bound: float               # helen: lower clamp of the frequency scale
    net_pert: bool             # helen: perturb dense weights too
    net_norm: Literal["global", "last_table"]   # helen: norm dividing the dense perturbation (see README)
    lr_embed: float
    lr_net: float
    clip_norm: float           # adam path: global grad-norm clipping (0 = off)


@dataclass(frozen=True)
class TrainParams:
    """The shared training loop (pipeline.core.train.LoopConfig)."""

    epochs: int
    batch_size: int
    eval_every_steps: int
    monitor: Literal["auc", "auc_minus_logloss"]
    patience: int
    lr_decay: float
    min_lr: float
    embedding_regularizer: float
    net_regularizer: float
    checkpoint_every_steps: int
    eval_batch_size: int


@dataclass(frozen=True)
class Params:
    seed: int
    avazu: AvazuParams
    ctr: CtrParams
    optim: OptimParams
    train: TrainParams
    llm: LlmParams              # the other branches' sections are declared in their domain modules,
    tenrec: TenrecParams        # each with a validate() that raises ConfigError naming the key
    retrieval: RetrievalParams
    ann: AnnParams
    ranking: RankingParams
    amazon: AmazonParams
    pretrain: PretrainParams
    finetune: FinetuneParams

    def validate(self) -> "Params":
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate()
        a = self.avazu
        _check_subset("avazu.sources", a.sources, AVAZU_SOURCES)
        if not a.sources:
            raise ConfigError("avazu.sources: must name at least one of x1, x2, x4")
        _check_subset("avazu.split_valid.sources", a.split_valid.sources, a.sources, "avazu.sources")
        _check_subset("avazu.sample.sources", a.sample.sources, a.sources, "avazu.sources")
        _check_subset("avazu.baseline_sources", a.baseline_sources, a.sources, "avazu.sources")
        if not a.baseline_sources:
            raise ConfigError("avazu.baseline_sources: must name at least one source to train on")
        t = self.train
        for key, v in (("train.epochs", t.epochs), ("train.batch_size", t.batch_size),
                       ("train.patience", t.patience), ("train.eval_batch_size", t.eval_batch_size),
                       ("ctr.embedding_dim", self.ctr.embedding_dim)):
            if v < 1:
                raise ConfigError(f"{key}: {v} must be >= 1")
        if not 0.0 <= self.ctr.dropout < 1.0:
            raise ConfigError(f"ctr.dropout: {self.ctr.dropout} is not in [0, 1)")
        if self.optim.rho < 0 or not 0.0 <= self.optim.bound <= 1.0:
            raise ConfigError("optim.rho must be >= 0 and optim.bound in [0, 1]")
        for key, frac in (("avazu.split_valid.frac", a.split_valid.frac), ("avazu.sample.frac", a.sample.frac)):
            if not 0.0 < frac < 1.0:
                raise ConfigError(f"{key}: {frac} is not in (0, 1)")
        if a.min_count < 1:
            raise ConfigError(f"avazu.min_count: {a.min_count} must be >= 1")
        if a.batch_rows < 1:
            raise ConfigError(f"avazu.batch_rows: {a.batch_rows} must be >= 1")
        if a.synthetic.rows < 1000:
            raise ConfigError(f"avazu.synthetic.rows: {a.synthetic.rows} is too small (>= 1000)")
        if not 0.0 < a.synthetic.mean_ctr < 1.0:
            raise ConfigError(f"avazu.synthetic.mean_ctr: {a.synthetic.mean_ctr} is not in (0, 1)")
        if a.source == "local" and not a.local_dir:
            raise ConfigError("avazu.local_dir: must be set when avazu.source is 'local'")
        return self


def _check_subset(key: str, values: list[str], allowed, allowed_name: str | None = None) -> None:
    for v in values:
        if v not in allowed:
            raise ConfigError(f"{key}: '{v}' is not one of {list(allowed)}"
                              + (f" (the entries of {allowed_name})" if allowed_name else ""))
    if len(set(values)) != len(values):
        raise ConfigError(f"{key}: duplicate entries in {values}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: '{value}' is not one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} ({value!r})")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {_type_name(tp)}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported param type {tp} for {key}")  # programming error, not user error


def from_mapping(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown, missing or mistyped keys raise ConfigError.
    A field whose params key is a Python keyword declares it as ``field(metadata={"key": "from"})``."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    keys = {f.name: f.metadata.get("key", f.name) for f in fields}
    names = list(keys.values())
    dot = f"{prefix}." if prefix else ""
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{dot}{unknown[0]}: unknown key (known keys here: {', '.join(names)})")
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(f"{dot}{missing[0]}: missing key")
    return cls(**{f.name: _convert(data[keys[f.name]], hints[f.name], f"{dot}{keys[f.name]}") for f in fields})


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    """Load and validate params.yaml. ``overrides`` maps dotted keys to values (used by tests)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_mapping(Params, data).validate()
