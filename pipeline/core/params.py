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
scalar every branch shares (an integer in [0, 2**63)).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from pipeline.core.errors import ConfigError

SEED_KEY = "seed"


class UndeclaredParam(RuntimeError):
    """A stage read a params key it does not declare (its PARAMS / dvc.yaml ``params:``)."""


def check_seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"seed: expected an integer, got {value!r}")
    if not 0 <= value < 2**63:
        raise ConfigError(f"seed: {value} is not in [0, 2**63)")
    return value


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
    A field whose params key is a Python keyword declares it as ``field(metadata={"key": "from"})``.
    A dataclass with its own ``from_params(data, prefix)`` classmethod builds itself (e.g. a section with
    one sub-section per registered model)."""
    if hasattr(cls, "from_params"):
        return cls.from_params(data, prefix)
    hints = typing.get_type_hints(cls)
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
