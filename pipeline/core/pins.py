"""Pinned experiments: compare fresh metrics with the committed ones.

The committed ``dvc.lock`` and the metrics JSON under ``reports/`` (declared ``cache: false``) are the pin.
After a ``dvc repro`` the working tree holds fresh metrics; ``dvc metrics diff <rev> --all --json`` pairs
every numeric key of every declared metrics file across the two (DVC does the reading and flattening),
and :func:`compare` judges each pair by the rules of ``conf/check_metrics.yaml``:

* integers (counts, epochs, rows) must be equal, except the ones a training run *chooses* (the step or epoch
  of the best validation, the evaluations run): ``trained_counts`` gives them an absolute tolerance, since
  two validations within float noise of each other may swap which one is best (measured: OMP_NUM_THREADS=1
  moved one LLM-CTR phase's best step from 57 to 50 while every AUC stayed within 0.0014);
* floats must agree within an absolute tolerance: the first glob of ``tolerances`` that matches the
  ``file:key`` wins, else ``float_abs_tol``;
* keys matching an ``ignore`` glob (wall times, throughput) are shown but never fail;
* a key or file present on one side only is drift.
"""

from __future__ import annotations

import fnmatch
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.core.errors import ConfigError, RecdagError


@dataclass(frozen=True)
class PinRules:
    float_abs_tol: float
    tolerances: dict[str, float]     # glob over "file:key" -> absolute tolerance
    ignore: list[str]                # globs over "file:key" never judged
    trained_counts: dict[str, float] = field(default_factory=dict)   # glob -> abs tolerance of an integer

    @classmethod
    def load(cls, path: str | Path) -> "PinRules":
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: not found") from None
        unknown = set(data) - {"float_abs_tol", "tolerances", "ignore", "trained_counts"}
        if unknown:
            raise ConfigError(f"{path}: unknown key '{sorted(unknown)[0]}' "
                              "(known: float_abs_tol, tolerances, ignore, trained_counts)")
        try:
            return cls(float(data["float_abs_tol"]), {str(k): float(v) for k, v in (data.get("tolerances") or {}).items()},
                       [str(g) for g in data.get("ignore") or []],
                       {str(k): float(v) for k, v in (data.get("trained_counts") or {}).items()})
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {e!r} (expected float_abs_tol: number, tolerances: {{glob: number}}, "
                              "ignore: [glob], trained_counts: {glob: number})") from None

    def tolerance(self, name: str) -> float:
        for glob, tol in self.tolerances.items():
            if fnmatch.fnmatchcase(name, glob):
                return tol
        return self.float_abs_tol

    def count_tolerance(self, name: str) -> float:
        """0 (exact) for an integer, unless a ``trained_counts`` glob matches it."""
        return next((tol for glob, tol in self.trained_counts.items() if fnmatch.fnmatchcase(name, glob)), 0.0)

    def ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, g) for g in self.ignore)


@dataclass(frozen=True)
class Row:
    file: str
    key: str
    old: object
    new: object
    status: str        # ok | drift | ignored
    rule: str          # what it was judged by


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def judge(name: str, old, new, rules: PinRules) -> tuple[str, str]:
    if rules.ignored(name):
        return "ignored", "ignored"
    if old is None or new is None:
        return "drift", "present on both sides"
    if _is_int(old) and _is_int(new):
        tol = rules.count_tolerance(name)
        if tol:
            return ("ok" if abs(old - new) <= tol else "drift"), f"abs tol {tol:g} (trained count)"
        return ("ok" if old == new else "drift"), "exact (count)"
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        tol = rules.tolerance(name)
        o, n = float(old), float(new)
        if math.isnan(o) and math.isnan(n):
            return "ok", f"abs tol {tol:g}"
        return ("ok" if abs(o - n) <= tol else "drift"), f"abs tol {tol:g}"
    return ("ok" if old == new else "drift"), "exact"


def compare(diff: dict, rules: PinRules) -> list[Row]:
    """``diff`` is ``dvc metrics diff --all --json``'s output: {file: {key: {old, new, diff}}}."""
    rows = []
    for file, keys in sorted(diff.items()):
        if isinstance(keys, dict) and "error" in keys and not isinstance(keys.get("error"), dict):
            rows.append(Row(file, "(file)", None, None, "drift", f"unreadable: {keys['error']}"))
            continue
        for key, v in sorted(keys.items()):
            name = f"{file}:{key}"
            status, rule = judge(name, v.get("old"), v.get("new"), rules)
            rows.append(Row(file, key, v.get("old"), v.get("new"), status, rule))
    return rows


def dvc_metrics_diff(rev: str, cwd: str | Path = ".") -> dict:
    proc = subprocess.run([sys.executable, "-m", "dvc", "metrics", "diff", rev, "--all", "--json"], cwd=cwd,
                          capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RecdagError(f"dvc metrics diff {rev} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout or "{}")


def format_table(rows: list[Row], show_all: bool = False) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        return "—" if v is None else str(v)

    shown = [r for r in rows if show_all or r.status == "drift"]
    lines = ["| file | key | committed | fresh | Δ | status | rule |", "|---|---|---|---|---|---|---|"]
    for r in shown:
        delta = (f"{float(r.new) - float(r.old):+.3g}" if isinstance(r.old, (int, float))
                 and isinstance(r.new, (int, float)) and not isinstance(r.old, bool) else "")
        lines.append(f"| {r.file} | {r.key} | {fmt(r.old)} | {fmt(r.new)} | {delta} | {r.status} | {r.rule} |")
    n = {s: sum(r.status == s for r in rows) for s in ("ok", "drift", "ignored")}
    lines.append(f"\n{len(rows)} metrics: {n['ok']} within tolerance, {n['drift']} drifted, {n['ignored']} ignored")
    return "\n".join(lines)
