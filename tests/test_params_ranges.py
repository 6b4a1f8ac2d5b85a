"""Declared valid ranges: every ``int`` / ``float`` param of every section carries a ``Range``
(:mod:`pipeline.core.params`), a value outside it is a one-line ConfigError naming the dotted key, and the
bug report's cases fail the same way through ``recdag params check``.

The fields are found by walking the section classes (``pipeline.params.section_classes()``) through nested
dataclasses, lists and Optionals; a section that builds itself (``from_params``) is walked through the
classes it parses (:data:`CUSTOM`)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import types
import typing
from typing import Annotated, NamedTuple

import pytest
import yaml

from pipeline import params as allp
from pipeline.core.errors import ConfigError
from pipeline.core.params import SEED_KEY, ExpandUser, Range, Seed, field_key
from pipeline.ctr import models
from tests.conftest import ROOT, run_cli

PARAMS = ROOT / "params.yaml"


def _ctr_parts():
    """``ctr`` (CtrParams.from_params): the shared keys and one ``ctr.<name>`` per model with Options."""
    yield models.CtrShared, "ctr"
    for name, cls in models.MODELS.items():
        if cls.Options is not None:
            yield cls.Options, f"ctr.{name}"


CUSTOM = {models.CtrParams: _ctr_parts}   # section class with its own from_params -> the (class, prefix) it parses


class Field(NamedTuple):
    key: str                   # dotted params key
    base: type                 # int | float
    range: Range | None
    container: str             # "" | "list" | "optional"


def _visit(tp, key: str, container: str, out: list[Field]) -> None:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        if base in (int, float):
            ranges = [m for m in marks if isinstance(m, Range)]
            out.append(Field(key, base, ranges[0] if ranges else None, container))
        else:
            _visit(base, key, container, out)
    elif tp in (int, float):
        out.append(Field(key, tp, None, container))
    elif dataclasses.is_dataclass(tp):
        _walk(tp, key, out)
    elif origin is list:
        _visit(typing.get_args(tp)[0], key, "list", out)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not type(None):
                _visit(arg, key, container or "optional", out)
    else:
        assert origin not in (dict, tuple, set, frozenset), f"{key}: container {tp} is not walked by this test"


def _walk(cls, prefix: str, out: list[Field]) -> None:
    if hasattr(cls, "from_params"):
        assert cls in CUSTOM, f"{cls.__qualname__} builds itself (from_params): add its parts to CUSTOM"
        for part, part_prefix in CUSTOM[cls]():
            _walk(part, part_prefix, out)
        return
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        _visit(hints[f.name], f"{prefix}.{field_key(cls, f.name)}", "", out)


def numeric_fields() -> list[Field]:
    out = [Field(SEED_KEY, int, typing.get_args(Seed)[1], "")]
    for cls in allp.section_classes():
        _walk(cls, cls.SECTION, out)
    return out


FIELDS = numeric_fields()
RANGED = [f for f in FIELDS if f.range is not None]


def _bad_values(f: Field) -> list:
    """Values just outside each bound of ``f.range``."""
    r, step = f.range, (1 if f.base is int else 0.5)
    bad = []
    if r.ge is not None:
        bad.append(f.base(r.ge - step))
    if r.gt is not None:
        bad.append(f.base(r.gt))
    if r.le is not None:
        bad.append(f.base(r.le + step))
    if r.lt is not None:
        bad.append(f.base(r.lt))
    return [v for v in bad if not r.contains(v)]


def _boundaries(f: Field) -> list:
    """The closed bounds of ``f.range`` (valid by definition), and 0 where it is admitted besides the range."""
    r = f.range
    vals = [f.base(b) for b in (r.ge, r.le) if b is not None]
    return vals + ([f.base(0)] if r.zero_ok else [])


def _value(f: Field, v):
    return [v] if f.container == "list" else v


def _shown_key(f: Field) -> str:
    return f"{f.key}[0]" if f.container == "list" else f.key


def _ids(fields):
    return [f.key for f in fields]


# ---------------------------------------------------------------------------------------------- (a) coverage


def test_the_walk_finds_every_section_and_the_nested_fields():
    keys = {f.key for f in FIELDS}
    for cls in allp.section_classes():
        if cls.SECTION not in ("llm_eval",):                     # llm_eval has no numeric param
            assert any(k.startswith(cls.SECTION + ".") for k in keys), cls.SECTION
    for key in ("avazu.synthetic.rows", "ctr.hidden_units", "ctr.dcn.num_cross_layers", "ctr.dcnv2.num_cross_layers",
                "helen_study.sharpness.iters", "llm.tiny.vocab_size", "tenrec.synthetic.signal", "ann.recall_at",
                "amazon.scales", "pretrain.srt.max_momentum", "finetune.srt.ewc_lambda", "seed"):
        assert key in keys, key


def test_every_numeric_param_declares_its_range():
    missing = [f"{f.key} ({f.base.__name__})" for f in FIELDS if f.range is None]
    assert missing == [], "numeric params without a declared Range: " + ", ".join(missing)
    pointless = [f.key for f in RANGED if not _bad_values(f)]
    assert pointless == [], "Ranges with no bound: " + ", ".join(pointless)


def test_the_repo_params_are_inside_every_range():
    every = allp.load_everything(PARAMS)                         # raises on any out-of-range default
    assert every.seed == yaml.safe_load(PARAMS.read_text())["seed"]


# ------------------------------------------------------------------------------- (b) every field, out of range


@pytest.mark.parametrize("f", RANGED, ids=_ids(RANGED))
def test_out_of_range_value_names_the_key(f):
    for bad in _bad_values(f):
        with pytest.raises(ConfigError) as e:
            allp.load_everything(PARAMS, overrides={f.key: _value(f, bad)})
        msg = str(e.value)
        assert msg.startswith(f"{_shown_key(f)}: {bad!r} is out of range (expected "), msg
        assert "\n" not in msg


@pytest.mark.parametrize("f", RANGED, ids=_ids(RANGED))
def test_boundary_value_is_in_range(f):
    """A closed bound is accepted by the range (another check may still object: a cross-field one)."""
    for ok in _boundaries(f):
        try:
            allp.load_everything(PARAMS, overrides={f.key: _value(f, ok)})
        except ConfigError as e:
            assert "out of range" not in str(e) or not str(e).startswith(_shown_key(f)), str(e)


# ------------------------------------------------------------------------------ (c) the bug report's cases

REPORTED = [
    ("optim.lr_embed", -0.001), ("optim.lr_net", -1), ("optim.clip_norm", -1),
    ("train.lr_decay", 5), ("llm_train.lr_decay", 0.0), ("retrieval.lr_decay", 1.5), ("ranking.lr_decay", -0.3),
    ("train.min_lr", -1.0e-6), ("llm_train.min_lr", -1.0e-6), ("retrieval.min_lr", -1.0e-5),
    ("ranking.min_lr", -1.0e-5),
    ("train.embedding_regularizer", -0.01), ("train.net_regularizer", -0.01), ("pretrain.weight_decay", -1.0e-5),
    ("finetune.srt.ewc_lambda", -100.0),
    ("train.eval_every_steps", -1), ("train.checkpoint_every_steps", -1), ("llm_train.eval_every_steps", -25),
    ("llm_train.checkpoint_every_steps", -1), ("llm_study.eval_every_steps", -3),
    ("retrieval.checkpoint_every_steps", -50), ("ranking.checkpoint_every_steps", -50),
    ("llm_train.clip_norm", -10.0), ("retrieval.clip_norm", -1.0), ("ranking.clip_norm", -1.0),
    ("pretrain.clip_norm", -1.0),
    ("seed", 2**70),
    ("ctr.hidden_units", [0]),
]


def _shown(key, value) -> str:
    return f"{key}[0]: {value[0]!r}" if isinstance(value, list) else f"{key}: {value!r}"


@pytest.mark.parametrize("key, value", REPORTED, ids=[k for k, _ in REPORTED])
def test_reported_values_are_rejected(key, value):
    with pytest.raises(ConfigError) as e:
        allp.load_everything(PARAMS, overrides={key: value})
    assert str(e.value).startswith(f"{_shown(key, value)} is out of range (expected "), str(e.value)


@pytest.fixture
def params_copy(tmp_path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("key, value", REPORTED, ids=[k for k, _ in REPORTED])
def test_reported_values_fail_params_check_with_one_line(params_copy, capsys, key, value):
    data = yaml.safe_load(params_copy.read_text())
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    assert leaf in node, f"{key} is not a key of params.yaml"
    node[leaf] = value
    params_copy.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    rc = run_cli("params", "check", "--params", str(params_copy))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.splitlines() == [err]                                     # one line
    assert err.startswith(f"error: {_shown(key, value)} is out of range"), err


def test_ranges_in_the_message_say_what_zero_means():
    with pytest.raises(ConfigError, match=r"^train\.eval_every_steps: -1 is out of range \(expected \[0, inf\); "
                                          r"0 = once per epoch\)$"):
        allp.load_everything(PARAMS, overrides={"train.eval_every_steps": -1})
    with pytest.raises(ConfigError, match=r"^optim\.clip_norm: -1 is out of range \(expected \[0, inf\); 0 = off\)$"):
        allp.load_everything(PARAMS, overrides={"optim.clip_norm": -1})


def test_off_values_stay_valid():
    """0 where the code reads it as 'off' / 'all' / 'once per epoch', and 1 = no decay."""
    every = allp.load_everything(PARAMS, overrides={
        "optim.clip_norm": 0, "train.eval_every_steps": 0, "train.checkpoint_every_steps": 0, "train.lr_decay": 1,
        "train.min_lr": 0, "train.embedding_regularizer": 0, "llm_train.clip_norm": 0.0,
        "llm_study.eval_every_steps": 0, "retrieval.eval_users": 0, "ranking.targets_per_user": 0,
        "ranking.eval_users": 0, "pretrain.eval_users": 0, "finetune.srt.ewc_lambda": 0.0, "ctr.dropout": 0.0,
        "ctr.hidden_units": [], "ctr.dcn.num_cross_layers": 0})
    assert every.optim.clip_norm == 0.0 and every.train.lr_decay == 1.0 and every.ctr.hidden_units == []


# ------------------------------------------------------------------------------ remaining cross-field checks


@pytest.mark.parametrize("override, needle", [
    ({"ann.recall_at": [50, 300]}, "ann.recall_at[1]: 300 is not in [1, ann.top_k=200]"),
    ({"ann.ivf_nprobe": 512}, "ann.ivf_nprobe: 512 > ann.ivf_nlist 256"),
    ({"ranking.num_heads": 3}, "ranking.num_heads: 3 does not divide ranking.embedding_dim 32"),
    ({"tenrec.synthetic.rows": 1000}, "tenrec.synthetic.rows: 1000 must be >= 10 x tenrec.synthetic.users"),
    ({"llm.tiny.num_kv_heads": 3}, "llm.tiny.num_kv_heads: 3 must divide llm.tiny.num_heads"),
    ({"amazon.scales": [80000, 20000]}, "amazon.scales: [80000, 20000] must be non-empty, strictly increasing"),
    ({"pretrain.srt.base_momentum": 0.96}, "pretrain.srt.base_momentum: 0.96 > pretrain.srt.max_momentum 0.95"),
    ({"finetune.srt.epochs_per_layer": 0, "finetune.srt.final_epochs": 0},
     "finetune.srt.epochs_per_layer / final_epochs: the progressive schedule has no epoch"),
])
def test_cross_field_checks_remain(override, needle):
    with pytest.raises(ConfigError) as e:
        allp.load_everything(PARAMS, overrides=override)
    assert str(e.value).startswith(needle), str(e.value)
    assert "\n" not in str(e.value)


# -------------------------------------------------------------------------------------------------- paths

PATHS = ["avazu.local_dir", "avazu.layouts", "llm.local_path", "tenrec.local_dir", "amazon.local.beauty",
         "amazon.local.sports"]


@pytest.mark.parametrize("key", PATHS)
def test_path_params_expand_the_home_directory(key):
    every = allp.load_everything(PARAMS, overrides={key: "~/somewhere"})
    node = every
    for part in key.split("."):
        node = getattr(node, part)
    assert node == os.path.expanduser("~/somewhere") and not node.startswith("~")


def test_path_lists_expand_the_home_directory():
    every = allp.load_everything(PARAMS, overrides={"amazon.local.ratings": ["~/r.csv.gz"],
                                                    "amazon.local.metadata": ["~/m.json"]})
    assert every.amazon.local.ratings == [os.path.expanduser("~/r.csv.gz")]
    assert every.amazon.local.metadata == [os.path.expanduser("~/m.json")]


def test_path_params_are_userpaths():
    """Every str param named like a path is declared UserPath (ExpandUser)."""
    found = []

    def walk(cls, prefix):
        if cls in CUSTOM:
            return
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            tp, key = hints[f.name], f"{prefix}.{field_key(cls, f.name)}"
            if typing.get_origin(tp) is list:
                tp = typing.get_args(tp)[0]
            if dataclasses.is_dataclass(tp):
                walk(tp, key)
            elif typing.get_origin(tp) is Annotated and any(isinstance(m, ExpandUser) for m in typing.get_args(tp)):
                found.append(key)

    for cls in allp.section_classes():
        walk(cls, cls.SECTION)
    assert sorted(found) == sorted([*PATHS, "amazon.local.ratings", "amazon.local.metadata"])


# ------------------------------------------------------------------ copies made from CLI / study-matrix values


@pytest.mark.parametrize("section, changes, needle", [
    ("optim", {"rho": -0.01}, "optim.rho: -0.01 is out of range"),                       # helen-run --rho
    ("finetune", {"user_frac": 0.0}, "finetune.user_frac: 0.0 is out of range"),         # amazon study matrix
    ("pretrain", {"warmup": 1.0}, "pretrain.warmup: 1.0 is out of range"),
])
def test_validate_rechecks_the_ranges_of_a_replaced_copy(section, changes, needle):
    every = allp.load_everything(PARAMS)
    obj = getattr(every, section)
    obj.validate()
    with pytest.raises(ConfigError, match="^" + needle.replace(".", r"\.")):
        dataclasses.replace(obj, **changes).validate()
    srt = every.finetune.srt
    with pytest.raises(ConfigError, match=r"^finetune\.srt\.grad_accum: 0 is out of range"):
        dataclasses.replace(every.finetune, srt=dataclasses.replace(srt, grad_accum=0)).validate()
