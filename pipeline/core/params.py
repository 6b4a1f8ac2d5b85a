"""Typed params machinery: params.yaml sections loaded into frozen dataclasses, per stage.

Core knows no branch. A branch declares each top-level section as a dataclass with a class attribute
``SECTION`` (its params.yaml key) in its own modules; a stage declares the keys it reads (``PARAMS`` in its
module, the same list as its ``params:`` in dvc.yaml, checked by ``recdag dag check``) and calls
:func:`load_stage` with the section classes it imports, which

* parses and validates only the sections those keys belong to (an unknown, missing or mistyped key is a
  :class:`ConfigError` naming the key; a mistake in another branch's section never stops this stage), and
* returns a :class:`ParamsView` through which only the declared keys can be read: reading an undeclared
  key raises :class:`UndeclaredParam` (a programming error: DVC would not re-run the stage when that key
  changes, so a stale result would look cached).

Defaults live in params.yaml: the dataclasses have no defaults on purpose. ``seed`` is the one top-level
scalar every branch shares (an integer in [0, 2**32): numpy's and scikit-learn's seed range).

Valid ranges are declared on the fields, not checked in stages: every ``int`` / ``float`` field is
``Annotated[int, Range(...)]`` (the aliases below name the common ones: :data:`PosFloat` for learning rates,
:data:`NonNegFloat` for regularisers and clip norms where 0 = off, :data:`Decay` for a factor in (0, 1], ...),
and :func:`_convert` raises the usual one-line ConfigError for a value outside it (``tests/test_params_ranges.py``
checks that every numeric field of every section declares one). A path param is :data:`UserPath` (a string
with ``~`` expanded).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import yaml

from pipeline.core.errors import ConfigError

SEED_KEY = "seed"


SEED_LIMIT = 2**32


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid range of a numeric param: ``ge``/``gt`` lower and ``le``/``lt`` upper bounds (None: open);
    ``zero_ok`` admits 0 besides the range (``0 = off`` for a positive interval or size); ``note`` says
    what 0 or the bound means in the error message."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    zero_ok: bool = False
    note: str = ""

    def describe(self) -> str:
        lo = f"[{_fmt(self.ge)}" if self.ge is not None else f"({_fmt(self.gt)}" if self.gt is not None else "(-inf"
        hi = f"{_fmt(self.le)}]" if self.le is not None else f"{_fmt(self.lt)})" if self.lt is not None else "inf)"
        text = f"{lo}, {hi}"
        if self.zero_ok:
            text = f"0 or {text}"
        return text + (f"; {self.note}" if self.note else "")

    def contains(self, v) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.zero_ok and v == 0:
            return True
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))


def _fmt(x) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    if x == 2**32:
        return "2**32"
    return str(x)


class ExpandUser:
    """Marker: a path param; ``~`` / ``~user`` is expanded (os.path.expanduser) when params are parsed."""


# The common ranges (a field with another range writes ``Annotated[float, Range(...)]`` itself).
PosFloat = Annotated[float, Range(gt=0)]                            # learning rates, temperatures, scales
NonNegFloat = Annotated[float, Range(ge=0)]                         # regularisers, clip norms (0 = off), rho
Prob = Annotated[float, Range(ge=0, le=1)]                          # probabilities, dropout, shares
OpenFrac = Annotated[float, Range(gt=0, lt=1)]                      # a strict share of a set
Decay = Annotated[float, Range(gt=0, le=1, note="1 = no decay")]    # multiplicative decay factors
PosInt = Annotated[int, Range(ge=1)]                                # sizes, counts, epochs, batch sizes
NonNegInt = Annotated[int, Range(ge=0)]                             # counts where 0 is meaningful
Interval = Annotated[int, Range(ge=0, note="0 = off")]              # step intervals, 0 switches it off
Seed = Annotated[int, Range(ge=0, lt=SEED_LIMIT)]
UserPath = Annotated[str, ExpandUser()]


class UndeclaredParam(RuntimeError):
    """A stage read a params key it does not declare (its PARAMS / dvc.yaml ``params:``)."""


def check_seed(value) -> int:
    return _convert(value, Seed, SEED_KEY)


def check_subset(key: str, values: list[str], allowed, allowed_name: str | None = None) -> None:
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
    if origin is Annotated:
        base, *marks = typing.get_args(tp)
        out = _convert(value, base, key)
        for mark in marks:
            if isinstance(mark, Range) and out is not None and not mark.contains(out):
                raise ConfigError(f"{key}: {value!r} is out of range (expected {mark.describe()})")
            if isinstance(mark, ExpandUser) and isinstance(out, str):
                out = os.path.expanduser(out)
        return out
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
        if not math.isfinite(value):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
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
    A field whose params key is a Python keyword declares it as ``field(metadata={"key": "from"})``.
    A dataclass with its own ``from_params(data, prefix)`` classmethod builds itself (e.g. a section with
    one sub-section per registered model)."""
    if hasattr(cls, "from_params"):
        return cls.from_params(data, prefix)
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = dataclasses.fields(cls)
    keys = {f.name: f.metadata.get("key", f.name) for f in fields}
    names = list(keys.values())
    dot = f"{prefix}." if prefix else ""
    check_keys(data, names, prefix)
    return cls(**{f.name: _convert(data[keys[f.name]], hints[f.name], f"{dot}{keys[f.name]}") for f in fields})


def check_keys(data: dict, names: list[str], prefix: str = "") -> None:
    """ConfigError naming the first key of ``data`` not in ``names``, then the first of ``names`` missing."""
    dot = f"{prefix}." if prefix else ""
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{dot}{unknown[0]}: unknown key (known keys here: {', '.join(names)})")
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(f"{dot}{missing[0]}: missing key")


def check_ranges(obj, prefix: str) -> None:
    """The declared types and ranges of an already-built section checked again (ConfigError naming the
    key): for a copy made with ``dataclasses.replace`` from a value params.yaml parsing never saw (a CLI or
    study-matrix value), whose ``validate()`` then calls this."""
    def mapping(o) -> dict:
        return {field_key(type(o), f.name): (mapping(v) if dataclasses.is_dataclass(v := getattr(o, f.name)) else v)
                for f in dataclasses.fields(o)}

    from_mapping(type(obj), mapping(obj), prefix)


def field_key(cls, name: str) -> str:
    """The params key of dataclass field ``name`` (``from_`` -> ``from``)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("key", f.name)
    return name


def read_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> dict:
    """params.yaml as a mapping; ``overrides`` maps dotted keys to values (tests, tools)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


Check = tuple[tuple[str, ...], Callable[[dict], None]]   # (sections it needs, fn(sections by name))


def parse_sections(data: dict, schema: dict[str, type], names, checks: list[Check] = (), *,
                   path: str = "params.yaml") -> dict[str, Any]:
    """Parse and validate the sections ``names`` of ``data`` (``seed`` included when named); then every
    cross-section check whose sections are all among them."""
    out: dict[str, Any] = {}
    for name in names:
        if name == SEED_KEY:
            if SEED_KEY not in data:
                raise ConfigError(f"seed: missing key in {path}")
            out[name] = check_seed(data[SEED_KEY])
            continue
        if name not in schema:
            raise KeyError(f"params section '{name}' is not declared by this branch")  # programming error
        if name not in data:
            raise ConfigError(f"{name}: missing section in {path}")
        obj = _convert(data[name], schema[name], name)
        if hasattr(obj, "validate"):
            obj.validate()
        out[name] = obj
    for needs, fn in checks:
        if all(n in out for n in needs):
            fn(out)
    return out


def _tree(keys) -> dict:
    """Dotted keys -> nested dict; ``True`` marks a key whose whole subtree is declared."""
    tree: dict = {}
    for key in keys:
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            nxt = node.setdefault(p, {})
            if nxt is True:
                break
            node = nxt
        else:
            node[leaf] = True
    return tree


class ParamsView:
    """Read access to the declared keys only (see module docstring). ``view.real`` is the underlying
    object (a dataclass, or the dict of sections at the root) for code that needs the whole of a section
    it declared whole."""

    __slots__ = ("_obj", "_allowed", "_path")

    def __init__(self, obj, allowed: dict, path: str = ""):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str):
        obj = self._obj
        if name.startswith("__"):
            raise AttributeError(name)
        if isinstance(obj, dict):
            key = name
            if name not in obj:
                raise UndeclaredParam(f"this stage reads params section '{name}' but does not declare it (add "
                                      "it to the stage's PARAMS and dvc.yaml params, e.g. `recdag dag write`)")
            value = obj[name]
        else:
            if not hasattr(obj, name):
                raise AttributeError(name)
            key = field_key(type(obj), name)
            value = getattr(obj, name)
        dotted = f"{self._path}.{key}" if self._path else key
        sub = self._allowed.get(key)
        if sub is None:
            raise UndeclaredParam(f"this stage reads params key '{dotted}' but does not declare it (add it to "
                                  "the stage's PARAMS and dvc.yaml params, e.g. `recdag dag write`)")
        if sub is True:
            return value
        return ParamsView(value, sub, dotted)

    def __setattr__(self, name, value):
        raise AttributeError("params are read-only")

    @property
    def real(self):
        return self._obj

    def __repr__(self) -> str:
        return f"ParamsView({self._path or 'params'}: {sorted(self._allowed)})"


def expand(keys, item=None) -> list[str]:
    """Substitute dvc.yaml foreach templates in declared keys: ``${item}`` / ``${key}`` by ``item`` (a
    scalar), ``${item.<name>}`` by ``item[<name>]`` (``item`` a mapping)."""
    if item is None:
        return list(keys)
    out = []
    for k in keys:
        if isinstance(item, dict):
            for name, v in item.items():
                k = k.replace("${item.%s}" % name, str(v))
        else:
            k = k.replace("${item}", str(item)).replace("${key}", str(item))
        out.append(k)
    return out


def _schema(sections) -> dict[str, type]:
    return {cls.SECTION: cls for cls in sections}


def load_stage(path: str | Path, keys, sections=(), checks: list[Check] = (), *, item=None,
               overrides: dict | None = None) -> ParamsView:
    """Load, for one stage, the sections its declared ``keys`` live in (``sections``: their dataclasses)
    and return the view of those keys. ``${item}`` in a key is replaced by ``item`` (dvc.yaml foreach)."""
    keys = expand(keys, item)
    if any("${" in k for k in keys):
        raise KeyError(f"unexpanded template in declared params {keys}")  # programming error
    names = list(dict.fromkeys(k.split(".")[0] for k in keys))
    data = read_params(path, overrides)
    return ParamsView(parse_sections(data, _schema(sections), names, checks, path=str(path)), _tree(keys))


def load_all(path: str | Path, sections, checks: list[Check] = (), *,
             overrides: dict | None = None) -> types.SimpleNamespace:
    """``seed`` and every section of ``sections``, unrestricted (tools and tests)."""
    schema = _schema(sections)
    data = read_params(path, overrides)
    return types.SimpleNamespace(**parse_sections(data, schema, [SEED_KEY, *schema], checks, path=str(path)))
