"""Parameter sweeps run with ``dvc exp run -S key=v1,v2 ...`` turned into a table and a figure.

The input is what ``dvc exp show --json`` prints (DVC 3.x, checked against 3.67). The shape relied on::

    [                                          # one entry per baseline, "workspace" first, then HEAD
      {"rev": "workspace", "name": null, "data": {...}, "error": null, "experiments": null},
      {"rev": "<sha of HEAD>", "name": "main",  # branch name, or null for a commit that is no branch tip
       "data": {                               # the committed values: the sweep's baseline row
         "rev": "<sha>", "timestamp": "...",
         "params":  {"params.yaml": {"data": {"optim": {"rho": 0.05}}}},     # file -> {"data": nested dict}
         "metrics": {"reports/avazu/baseline.json": {"data": {"metrics": {"x4/test": {"auc": 0.8}}}}},
         "deps": {...}, "outs": {...}, "meta": {}},
       "error": null,
       "experiments": [                        # one entry per experiment of this commit (or null)
         {"name": "fusil-jaws",
          "revs": [{"rev": "<sha>", "name": "fusil-jaws", "data": {<as above>},
                    "error": null | {"msg": "Experiment run failed", "type": ""}}],   # revs[0]: the result
          "executor": null | {"state": "success" | "failed" | "queued" | "running", ...}},
         ...]},
      ...                                      # older commits only with --all-commits (-A)
    ]

A file entry under ``params`` / ``metrics`` may hold ``{"error": ...}`` instead of ``"data"`` (the file is
absent at that revision); it is read as empty. ``executor`` is null for an experiment run in the workspace
(``dvc exp run`` without ``--queue``) and once the queue was cleared. The ``workspace`` entry is **not** used:
after a workspace ``dvc exp run`` it holds that experiment's values, so the baseline row is the HEAD commit's
committed values. An experiment whose executor state is not ``success`` (failed, queued, running) or whose
``revs[0].error`` is set is skipped and counted (a failed experiment still shows the baseline's metrics).

A param is named as DVC shows it (``optim.rho``; ``other.yaml:key`` for another params file); a metric as
``<metrics file>:<dotted.key>``. Keys may hold '/' or '.' themselves (``metrics.x4/test.auc``), so a dotted
path is matched against the actual nested dict, longest key first at each level (:func:`lookup`).

The sweep (a JSON-able dict, ``"kind": "recdag-sweep"``) is what the stage writes as ``<name>.json``;
:func:`render_markdown` and :func:`sweep_figure` draw from it alone, and :func:`find_sweeps` loads them back.
"""

from __future__ import annotations

import difflib
import io
import json
import logging
import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import ConfigError, DataError, RecdagError

log = logging.getLogger(__name__)

KIND = "recdag-sweep"
VERSION = 1
DEFAULT_METRIC = "reports/avazu/baseline.json:metrics.x4/test.auc"
DEFAULT_PARAMS_FILE = "params.yaml"
NOTE_KEYS = ("dataset", "split", "protocol")
_MISSING = object()


# ------------------------------------------------------------------------------------------- reading DVC


def run_exp_show(all_commits: bool = False, cwd: str | Path = ".") -> list:
    """``dvc exp show --json`` (``--all-commits`` too when asked) run in ``cwd``, parsed."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise RecdagError(f"`dvc exp show --json` failed: {msg[-1] if msg else f'exit code {proc.returncode}'}")
    try:
        return _check_shape(json.loads(proc.stdout or "[]"), "`dvc exp show --json`")
    except json.JSONDecodeError as e:
        raise RecdagError(f"`dvc exp show --json` printed no valid JSON ({e})") from None


def read_exp_show(path: str | Path) -> list:
    """A saved ``dvc exp show --json`` dump."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"is not valid JSON ({e.msg} at line {e.lineno})",
                        expected="the output of `dvc exp show --json`") from None
    return _check_shape(obj, str(path))


def _check_shape(obj, where: str) -> list:
    if not isinstance(obj, list) or not all(isinstance(c, dict) and "rev" in c for c in obj):
        raise DataError(where, "is not a list of commits with a 'rev'",
                        expected="the output of DVC 3.x `dvc exp show --json`")
    return obj


# ---------------------------------------------------------------------------------------- key addressing


def lookup(tree, dotted: str):
    """The value at ``dotted`` in nested dicts whose keys may contain '.' or '/': at each level the longest
    key that is ``dotted`` itself or a prefix of it followed by '.', backtracking to shorter keys when the
    rest of the path does not resolve. Returns ``_MISSING`` when nothing matches."""
    if not isinstance(tree, dict):
        return _MISSING
    if dotted in tree:
        hit = tree[dotted]
        return hit
    for key in sorted((k for k in tree if isinstance(k, str) and dotted.startswith(k + ".")), key=len,
                      reverse=True):
        value = lookup(tree[key], dotted[len(key) + 1:])
        if value is not _MISSING:
            return value
    return _MISSING


def _flat_keys(tree, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves (non-dict values) of nested dicts: the keys a user can address."""
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out.extend(_flat_keys(v, path) if isinstance(v, dict) else [path])
    return out


def _suggest(wanted: str, candidates) -> str:
    close = difflib.get_close_matches(wanted, sorted(set(candidates)), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _file_data(section: dict | None, file: str) -> dict:
    entry = (section or {}).get(file)
    data = entry.get("data") if isinstance(entry, dict) else None
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Key:
    """A param or metric: the file DVC reads it from and the dotted key inside."""

    file: str
    key: str

    @property
    def label(self) -> str:
        return f"{self.file}:{self.key}"


def _split_spec(spec: str, files: list[str]) -> tuple[str | None, str]:
    """``file:key`` when ``spec`` starts with a known file and ':', else (None, spec)."""
    for f in sorted(files, key=len, reverse=True):
        if spec.startswith(f + ":"):
            return f, spec[len(f) + 1:]
    return None, spec


def resolve_param(spec: str, datas: list[dict]) -> Key:
    """Which params file holds ``spec`` (``params.yaml`` first) across the runs' ``data`` dicts."""
    files = sorted({f for d in datas for f in (d.get("params") or {})},
                   key=lambda f: (f != DEFAULT_PARAMS_FILE, f))
    file, key = _split_spec(spec, files)
    for f in [file] if file else files:
        if any(lookup(_file_data(d.get("params"), f), key) is not _MISSING for d in datas):
            return Key(f, key)
    known = [k for d in datas for f in files for k in _flat_keys(_file_data(d.get("params"), f))]
    where = file or (", ".join(files) if files else "no params file")
    raise ConfigError(f"unknown param '{spec}': not in {where} of any run of this commit{_suggest(key, known)}")


def resolve_metric(spec: str, datas: list[dict]) -> Key:
    """``<metrics file>:<dotted.key>`` (or a bare key found in exactly one metrics file)."""
    files = sorted({f for d in datas for f in (d.get("metrics") or {})})
    file, key = _split_spec(spec, files)
    if file is None and ":" in spec:
        wanted = spec.split(":", 1)[0]
        raise ConfigError(f"unknown metrics file '{wanted}' in --metric {spec}: DVC reports "
                          f"{', '.join(files) if files else 'no metrics file'} for this commit"
                          f"{_suggest(wanted, files)}")
    candidates = [file] if file else files
    found = [f for f in candidates
             if any(lookup(_file_data(d.get("metrics"), f), key) is not _MISSING for d in datas)]
    if len(found) > 1:
        raise ConfigError(f"metric key '{key}' is in several metrics files ({', '.join(found)}); "
                          f"name one: --metric <file>:{key}")
    if not found:
        known = [k for d in datas for f in candidates for k in _flat_keys(_file_data(d.get("metrics"), f))]
        where = file or ("any metrics file (" + ", ".join(files) + ")" if files else "any metrics file")
        raise ConfigError(f"unknown metric key '{key}' in {where} of any run of this commit"
                          f"{_suggest(key, known)}")
    return Key(found[0], key)


# ------------------------------------------------------------------------------------------ the sweep


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(v):
    """A JSON number, or a string that is one (``"1e-3"`` as YAML 1.1 reads it); else ``_MISSING``."""
    if _is_number(v):
        return v
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return _MISSING
        return f if math.isfinite(f) else _MISSING
    return _MISSING


def _runs(exp_show: list, all_commits: bool) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(commits used, runs = baseline + finished experiments, skipped counts by state)."""
    commits = [c for c in exp_show if c.get("rev") != "workspace"]
    if not commits:
        raise RecdagError("`dvc exp show` lists no commit: sweeps need a git commit with experiments "
                          "(`git commit`, then `dvc exp run --queue -S key=v1,v2` and `dvc queue start`)")
    if not all_commits:
        commits = commits[:1]                                     # HEAD comes right after the workspace
    runs, skipped = [], {}
    for c in commits:
        commit = {"rev": c["rev"], "name": c.get("name")}
        finished = []
        for e in c.get("experiments") or []:
            revs = e.get("revs") or [{}]
            tip = revs[0] if isinstance(revs[0], dict) else {}
            state = (e.get("executor") or {}).get("state") or "success"
            if state == "success" and tip.get("error"):
                state = "failed"
            if state != "success" or not isinstance(tip.get("data"), dict):
                skipped[state] = skipped.get(state, 0) + 1
                log.info("sweep: skipped %s experiment %s", state, e.get("name") or tip.get("name") or tip.get("rev"))
                continue
            finished.append({"name": tip.get("name") or e.get("name") or str(tip.get("rev"))[:7],
                             "rev": tip.get("rev"), "baseline": False, "commit": commit, "data": tip["data"]})
        if not finished and (all_commits and c is not commits[0]):
            continue                                              # an old commit without experiments
        if c.get("error") or not isinstance(c.get("data"), dict):
            log.warning("sweep: commit %s has no readable data (%s); no baseline row", c["rev"][:7],
                        (c.get("error") or {}).get("msg", "no data"))
        else:
            label = "baseline" if not all_commits else f"baseline ({c.get('name') or c['rev'][:7]})"
            runs.append({"name": label, "rev": c["rev"], "baseline": True, "commit": commit, "data": c["data"]})
        runs.extend(finished)
    if not any(not r["baseline"] for r in runs):
        head = commits[0]
        extra = f" ({_skipped_text(skipped)} skipped)" if skipped else ""
        scope = "any commit" if all_commits else f"commit {head['rev'][:7]}" + (
            f" ({head['name']})" if head.get("name") else "")
        raise RecdagError(f"no finished experiments for {scope}{extra}: run some with "
                          f"`dvc exp run --queue -S key=v1,v2` then `dvc queue start`")
    return [{"rev": c["rev"], "name": c.get("name")} for c in commits], runs, skipped


def _skipped_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(skipped.items()))


def default_name(params: list[str]) -> str:
    return "sweep_" + "_".join(p.replace(":", "_").replace(".", "_").replace("/", "_") for p in params)


def _param_label(k: Key) -> str:
    return k.key if k.file == DEFAULT_PARAMS_FILE else k.label


def build(exp_show: list, params: list[str], metrics: list[str] | None = None, *, name: str | None = None,
          all_commits: bool = False) -> dict:
    """The sweep of ``metrics`` against ``params`` over the experiments of HEAD (every commit when
    ``all_commits``), as a JSON-able dict: rows sorted by the params, the baseline row(s) marked."""
    if not params:
        raise ConfigError("a sweep needs at least one --param (e.g. --param optim.rho)")
    metrics = list(metrics or [DEFAULT_METRIC])
    if len(set(params)) != len(params) or len(set(metrics)) != len(metrics):
        raise ConfigError("a --param or --metric is given twice")
    commits, runs, skipped = _runs(exp_show, all_commits)
    datas = [r["data"] for r in runs]
    pkeys = [resolve_param(p, datas) for p in params]
    mkeys = [resolve_metric(m, datas) for m in metrics]
    plabels = [_param_label(k) for k in pkeys]

    rows = []
    for r in runs:
        pvals, mvals = {}, {}
        for i, (k, label) in enumerate(zip(pkeys, plabels)):
            raw = lookup(_file_data(r["data"].get("params"), k.file), k.key)
            if raw is _MISSING or raw is None:
                pvals[label] = None
                continue
            num = _number(raw)
            if num is _MISSING and i == 0:
                raise ConfigError(f"param '{label}' is not numeric ({r['name']}: {raw!r}); the first --param "
                                  f"is the x axis of the sweep and must be a number")
            if num is _MISSING and not isinstance(raw, (str, bool)):
                raise ConfigError(f"param '{label}' is a {type(raw).__name__}, not a number or a name "
                                  f"({r['name']}: {raw!r})")
            pvals[label] = raw if num is _MISSING else num
        for k in mkeys:
            raw = lookup(_file_data(r["data"].get("metrics"), k.file), k.key)
            if isinstance(raw, (dict, list)):
                inner = ", ".join(list(raw)[:6]) if isinstance(raw, dict) else f"{len(raw)} items"
                raise ConfigError(f"metric '{k.label}' is not a number but a {type(raw).__name__} ({inner}); "
                                  f"address one value inside it")
            num = _number(raw) if raw is not _MISSING and raw is not None else _MISSING
            mvals[k.label] = None if num is _MISSING else num
            if num is _MISSING:
                log.warning("sweep: %s has no numeric %s", r["name"], k.label)
        rows.append({"name": r["name"], "rev": r["rev"], "baseline": r["baseline"], "commit": r["commit"]["rev"],
                     "params": pvals, "metrics": mvals})
    rows.sort(key=lambda row: (tuple(_sort_key(row["params"][p]) for p in plabels), not row["baseline"],
                               row["name"]))

    base = next((r["data"] for r in runs if r["baseline"]), datas[0])
    meta = []
    for k in mkeys:
        src = _file_data(base.get("metrics"), k.file) or next(
            (_file_data(d.get("metrics"), k.file) for d in datas if _file_data(d.get("metrics"), k.file)), {})
        meta.append({"label": k.label, "file": k.file, "key": k.key,
                     **{n: src[n] for n in NOTE_KEYS if isinstance(src.get(n), (str, int, float))}})
    notes, files = [], list(dict.fromkeys(m["file"] for m in meta))
    for f in files:
        m = next(m for m in meta if m["file"] == f)
        note = " · ".join(f"{n}: {m[n]}" for n in NOTE_KEYS if n in m)
        if note:
            notes.append(note if len(files) == 1 else f"{f}: {note}")
    n_exp = sum(not r["baseline"] for r in rows)
    log.info("sweep: %d experiments + %d baseline row(s)%s", n_exp, len(rows) - n_exp,
             f"; skipped {_skipped_text(skipped)}" if skipped else "")
    return {
        "kind": KIND, "version": VERSION,
        "name": name or default_name(params),
        "params": [{"label": lab, "file": k.file, "key": k.key} for lab, k in zip(plabels, pkeys)],
        "metrics": meta,
        "commit": commits[0],
        "all_commits": all_commits,
        "commits": commits,
        "note": "; ".join(notes),
        "skipped": dict(sorted(skipped.items())),
        "rows": rows,
    }


def _sort_key(v):
    if v is None:
        return (2, 0.0, "")
    if _is_number(v):
        return (0, float(v), "")
    return (1, 0.0, str(v))


# ------------------------------------------------------------------------------------------ rendering


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _title(report: dict) -> str:
    ys = ", ".join(m["label"] for m in report["metrics"])
    xs = ", ".join(p["label"] for p in report["params"])
    return f"{ys} vs {xs}"


def _commit_text(report: dict) -> str:
    if report.get("all_commits"):
        return f"{len(report.get('commits') or [])} commits (--all-commits)"
    c = report["commit"]
    return f"commit `{c['rev'][:7]}`" + (f" ({c['name']})" if c.get("name") else "")


def render_markdown(report: dict) -> str:
    """The sweep as a Markdown page: a header (what, which commit, dataset/split/protocol, skips) and one
    table row per run, sorted by the params (the order of the JSON)."""
    plabels = [p["label"] for p in report["params"]]
    mlabels = [m["label"] for m in report["metrics"]]
    rows = report["rows"]
    n_exp = sum(not r["baseline"] for r in rows)
    lines = [f"# Sweep `{report['name']}`", "", f"{_title(report)}", "",
             f"- {_commit_text(report)}: {n_exp} experiment{'s' if n_exp != 1 else ''} + baseline"]
    if report.get("skipped"):
        lines.append(f"- skipped: {_skipped_text(report['skipped'])}")
    if report.get("note"):
        lines.append(f"- {report['note']}")
    lines += ["", "| experiment | rev | " + " | ".join(_cell(p) for p in plabels + mlabels) + " |",
              "|---|---|" + "---:|" * (len(plabels) + len(mlabels))]
    for r in rows:
        name = f"**{r['name']}**" if r["baseline"] else r["name"]
        cells = [_cell(name), f"`{str(r['rev'])[:7]}`"]
        cells += [_cell(_fmt(r["params"].get(p))) for p in plabels]
        cells += [_fmt(r["metrics"].get(m)) for m in mlabels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sweep_figure(report: dict) -> bytes:
    """PNG bytes of a sweep (the dict :func:`build` returns / ``<name>.json`` holds): each metric against the
    first param, one line per metric (and per value of the other params), points marked, the baseline
    marked with a star; log x when every x > 0 and they span at least 10x."""
    if not isinstance(report, dict) or report.get("kind") != KIND:
        raise DataError("sweep report", "is not a recdag sweep", expected=f'"kind": "{KIND}"')
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plabels = [p["label"] for p in report["params"]]
    x_label, group_labels = plabels[0], plabels[1:]
    metrics = report["metrics"]
    rows = [r for r in report["rows"] if _is_number(r["params"].get(x_label))]
    groups = sorted({tuple(r["params"].get(g) for g in group_labels) for r in rows},
                    key=lambda t: tuple(_sort_key(v) for v in t))
    xs_all = [float(r["params"][x_label]) for r in rows]

    one_file = len({m["file"] for m in metrics}) == 1
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        baseline_labelled = False
        for m in metrics:
            for g in groups:
                pts = [r for r in rows if tuple(r["params"].get(k) for k in group_labels) == g
                       and _is_number(r["metrics"].get(m["label"]))]
                if not pts:
                    continue
                pts.sort(key=lambda r: (float(r["params"][x_label]), not r["baseline"]))
                parts = [m["key"] if one_file else m["label"]] if len(metrics) > 1 else []
                parts += [f"{k}={_fmt(v)}" for k, v in zip(group_labels, g)]
                line, = ax.plot([r["params"][x_label] for r in pts], [r["metrics"][m["label"]] for r in pts],
                                marker="o", markersize=5, linewidth=1.5, label=", ".join(parts) or None)
                base = [r for r in pts if r["baseline"]]
                if base:
                    ax.plot([r["params"][x_label] for r in base], [r["metrics"][m["label"]] for r in base],
                            linestyle="none", marker="*", markersize=15, color=line.get_color(),
                            markeredgecolor="black", zorder=3,
                            label=None if baseline_labelled else "baseline")
                    baseline_labelled = True
        if xs_all and min(xs_all) > 0 and max(xs_all) >= 10 * min(xs_all):
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        y_label = (metrics[0]["label"] if len(metrics) == 1
                   else f"{metrics[0]['file']}" if one_file else "metric value")
        ax.set_ylabel(y_label, fontsize=10 if len(y_label) <= 40 else 8)
        title = f"{report['name']} · {_commit_text(report).replace('`', '')}"
        if report.get("note"):
            title += "\n" + "\n".join(textwrap.wrap(report["note"], 100))
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        entries = len(ax.get_legend_handles_labels()[1])
        if entries > 3:                                                 # many lines: the legend goes aside
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
            fig.set_size_inches(9.6, 4.0)
        elif entries:
            ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight",
                    metadata={"Software": None})                        # no version stamp: stable bytes
        return buf.getvalue()
    finally:
        plt.close(fig)


def find_sweeps(folder: str | Path) -> list[dict]:
    """Every sweep ``<folder>/*.json`` (by file name); other JSON files and unreadable ones are skipped."""
    root = Path(folder)
    out = []
    if not root.is_dir():
        return out
    for p in sorted(root.glob("*.json")):
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("sweep: %s is not readable JSON (%s); skipped", p, e)
            continue
        if isinstance(obj, dict) and obj.get("kind") == KIND:
            out.append(obj)
    return out
