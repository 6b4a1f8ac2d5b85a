"""Every branch's params sections together, for tools and tests (``recdag params check``); no stage uses this.

Core knows no branch (:mod:`pipeline.core.params` takes the section classes it is given), so the aggregate
lives here, at the top of the library. The sections are *collected*, not listed: every dataclass with a
``SECTION`` class attribute found among the attributes of the branch params modules below (adding a
section to one of those modules needs no edit here; a new params module does), and every cross-section
check in a module's ``CHECKS`` list.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.core.params import SEED_KEY, Check, load_all, read_params
from pipeline.ctr import models as ctr_models
from pipeline.ctr import params as ctr_params
from pipeline.ctr import llm_study as ctr_llm_study
from pipeline.ctr import study as ctr_study
from pipeline.seqrec import params as seqrec_params
from pipeline.tenrec import params as tenrec_params

MODULES = (ctr_params, ctr_models, ctr_study, ctr_llm_study, tenrec_params, seqrec_params)


def section_classes(modules=MODULES) -> tuple[type, ...]:
    """The section dataclasses of ``modules`` (each once, in module then attribute order). Two different
    classes claiming one params.yaml key is a programming error."""
    found: dict[str, type] = {}
    for module in modules:
        for obj in vars(module).values():
            section = getattr(obj, "SECTION", None)
            if not (isinstance(obj, type) and dataclasses.is_dataclass(obj) and isinstance(section, str)):
                continue
            if found.setdefault(section, obj) is not obj:
                raise TypeError(f"params section '{section}' is claimed by both {found[section].__module__}."
                                f"{found[section].__qualname__} and {obj.__module__}.{obj.__qualname__}")
    return tuple(found.values())


def checks(modules=MODULES) -> list[Check]:
    """Every module's cross-section checks (``CHECKS``), each once."""
    out: list[Check] = []
    for module in modules:
        for check in getattr(module, "CHECKS", ()):
            if check not in out:
                out.append(check)
    return out


def load_everything(path: str | Path = "params.yaml", overrides: dict | None = None):
    """``seed`` and every section of every branch, validated (cross-section checks included); a
    :class:`~pipeline.core.errors.ConfigError` names the first bad key."""
    return load_all(path, section_classes(), checks(), overrides=overrides)


def unclaimed_keys(path: str | Path = "params.yaml", overrides: dict | None = None) -> list[str]:
    """Top-level keys of ``path`` that no section claims (``seed`` aside), in file order."""
    claimed = {cls.SECTION for cls in section_classes()} | {SEED_KEY}
    return [k for k in read_params(path, overrides) if k not in claimed]
