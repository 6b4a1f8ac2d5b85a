"""The Helen study (``studies/helen/dvc.yaml``): the seed's model × optimizer table, Helen's rho grid in both
variants, and the records, tables and figures they are reported with.

The seed (Zhu et al., "Helen: Optimizing CTR Prediction Models with Frequency-wise Hessian Eigenvalue
Regularization", WWW 2024; release github.com/NUS-HPC-AI-Lab/Helen) compares seven CTR models (DNN,
WideDeep, PNN, DeepFM, DCN, DLRM, DCNv2) trained with Adam, SAM and Helen. The study trains every cell with
the main pipeline's library and loop (:func:`pipeline.ctr.baseline.fit_ctr`) on the main DAG's encoded data,
with one difference that keeps it inside a session's budget: a **smaller seeded world** — a seeded sample of
``helen_study.train_rows`` rows of ``train.sources``' train split (validation and test stay whole) and
``helen_study.epochs`` epochs. Every cell of the table shares data, seed, loop and every other knob; only the
model (and its ``ctr.<model>`` options) and the optimizer change.

Pure functions of records: no stage paths, no params.yaml reading.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import ClassVar

from pipeline.core.params import PosInt

STUDY_MODELS = ("dnn", "widedeep", "pnn", "deepfm", "dcn", "dlrm", "dcnv2")   # the seed's Table 2 order
STUDY_OPTIMIZERS = ("adam", "sam", "helen")


@dataclass(frozen=True)
class HelenSharpness:
    """The sharpness-by-frequency measurement (:mod:`pipeline.ctr.sharpness`) on the study's Adam / SAM /
    Helen runs of one model (the stage's argument; the paper's Figure 1 uses PNN)."""

    bins: PosInt               # log-spaced training-frequency bins
    values_per_bin: PosInt     # feature values sampled per bin (the same sample for every optimizer)
    max_rows_per_value: PosInt  # training rows per value (seeded subsample beyond this)
    iters: PosInt              # power-iteration steps


@dataclass(frozen=True)
class HelenStudyParams:
    """params.yaml ``helen_study``: the study's smaller world and its sharpness measurement. The grids
    themselves (models × optimizers, rho × variant) are the ``matrix`` of ``studies/helen/dvc.yaml``."""

    SECTION: ClassVar[str] = "helen_study"

    train_rows: PosInt         # seeded sample of train.sources' train split each study run trains on
    epochs: PosInt             # replaces train.epochs in every study run (the rest of `train` is shared)
    sharpness: HelenSharpness


def run_name(model: str, optimizer: str, rho: float | None = None, variant: str | None = None) -> str:
    """``<model>-<optimizer>`` for a table cell; ``<model>-helen-rho<rho>-<variant>`` for a rho-grid run."""
    if rho is None and variant is None:
        return f"{model}-{optimizer}"
    return f"{model}-{optimizer}-rho{rho:g}-{variant}"


def run_record(fit, enc, sources: list[str], *, name: str, model: str, optimizer: str, rho: float,
               variant: str, train_rows: int, epochs: int, protocol: str) -> dict:
    """One study run's metrics file: test figures of each train source beside the oracle, the best epoch,
    epochs run and wall time."""
    test = {s: fit.metrics(enc.tensors(s, "test")) for s in sources}
    first = test[sources[0]]
    kind = "synthetic" if "oracle_auc" in first else "real"
    return {
        "dataset": f"avazu ({', '.join(sources)}; {kind}; train: a seeded sample of {train_rows:,} rows)",
        "split": f"test of {', '.join(sources)}", "protocol": protocol,
        "synthetic": "oracle_auc" in first,
        "run": name, "model": model, "optimizer": optimizer, "rho": rho, "helen_variant": variant,
        "train_rows": train_rows, "epochs": epochs, "train_sources": list(sources),
        "headline_split": f"{sources[0]}/test",
        "best_epoch": fit.state.best_epoch, "epochs_run": len(fit.state.history),
        "best_valid_auc": max((h["valid_auc"] for h in fit.state.history), default=None),
        "wall_seconds": round(fit.wall_seconds, 1),
        "test": test,
    }


def _cell(run: dict) -> dict:
    m = run["test"][run["headline_split"].split("/")[0]]
    out = {"auc": m["auc"], "logloss": m["logloss"], "best_epoch": run["best_epoch"],
           "epochs_run": run["epochs_run"], "wall_seconds": run["wall_seconds"]}
    for k in ("gap_to_oracle_auc", "ece", "calibration_ratio", "spearman_logit_vs_oracle"):
        if k in m:
            out[k] = m[k]
    return out


def is_rho_run(run: dict) -> bool:
    return "-rho" in run["run"]


def study_table(runs: list[dict]) -> dict:
    """The model × optimizer table (cells: test AUC, logloss, oracle gap, ECE, calibration ratio, Spearman
    agreement with the oracle, best epoch, wall time) from the
    table runs (rho-grid runs are left to :func:`rho_curve`), with each model's best optimizer and
    Helen − Adam / Helen − SAM AUC differences."""
    cells = [r for r in runs if not is_rho_run(r)]
    if not cells:
        return {"models": [], "optimizers": [], "cells": {}}
    models = [m for m in STUDY_MODELS if any(r["model"] == m for r in cells)]
    models += sorted({r["model"] for r in cells} - set(models))
    optimizers = [o for o in STUDY_OPTIMIZERS if any(r["optimizer"] == o for r in cells)]
    table = {m: {r["optimizer"]: _cell(r) for r in cells if r["model"] == m} for m in models}
    first = cells[0]
    oracle = first["test"][first["headline_split"].split("/")[0]]
    summary = {}
    for m, row in table.items():
        best = max(row, key=lambda o: row[o]["auc"])
        s = {"best_optimizer": best}
        for other in ("adam", "sam"):
            if "helen" in row and other in row:
                s[f"helen_minus_{other}_auc"] = row["helen"]["auc"] - row[other]["auc"]
        summary[m] = s
    wins = sum(1 for s in summary.values() if s["best_optimizer"] == "helen")
    return {
        "dataset": first["dataset"], "split": first["headline_split"], "protocol": first["protocol"],
        "synthetic": first["synthetic"], "train_rows": first["train_rows"], "epochs": first["epochs"],
        "rho": first["rho"], "helen_variant": first["helen_variant"],
        "oracle_auc": oracle.get("oracle_auc"), "oracle_logloss": oracle.get("oracle_logloss"),
        "models": models, "optimizers": optimizers, "cells": table, "summary": summary,
        "helen_best_count": wins,
        "mean_auc": {o: sum(table[m][o]["auc"] for m in models if o in table[m])
                     / max(1, sum(1 for m in models if o in table[m])) for o in optimizers},
    }


def rho_curve(runs: list[dict]) -> dict:
    """Helen's test AUC / logloss against rho, one series per variant, beside the same model's Adam (and
    SAM) table runs as flat references."""
    grid = [r for r in runs if is_rho_run(r)]
    if not grid:
        return {"series": {}}
    model = grid[0]["model"]
    series: dict[str, list[dict]] = {}
    for r in sorted(grid, key=lambda r: (r["helen_variant"], r["rho"])):
        series.setdefault(r["helen_variant"], []).append(dict(rho=r["rho"], **_cell(r)))
    refs = {r["optimizer"]: _cell(r) for r in runs if not is_rho_run(r) and r["model"] == model
            and r["optimizer"] in ("adam", "sam")}
    best = {v: max(pts, key=lambda p: p["auc"]) for v, pts in series.items()}
    out = {"dataset": grid[0]["dataset"], "split": grid[0]["headline_split"], "protocol": grid[0]["protocol"],
           "model": model, "train_rows": grid[0]["train_rows"], "series": series, "references": refs,
           "best": {v: {"rho": b["rho"], "auc": b["auc"]} for v, b in best.items()}}
    if "adam" in refs:
        out["best_helen_minus_adam_auc"] = {v: b["auc"] - refs["adam"]["auc"] for v, b in best.items()}
    return out


def _fmt(x, nd=4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def table_markdown(table: dict, curve: dict) -> str:
    """reports/studies/helen/table.md: the 7 × 3 table and the rho grid as Markdown."""
    lines = ["# Helen study: model × optimizer", ""]
    if not table.get("cells"):
        return "\n".join(lines + ["No table runs found.", ""])
    lines += [f"Dataset: {table['dataset']}; {table['split']}; {table['protocol']}.",
              f"Smaller world: {table['train_rows']:,} train rows (seeded sample), {table['epochs']} epochs; "
              f"rho {table['rho']:g}, Helen variant `{table['helen_variant']}`."]
    if table.get("oracle_auc") is not None:
        lines.append(f"Oracle (true click probabilities): AUC {table['oracle_auc']:.4f}, "
                     f"logloss {table['oracle_logloss']:.4f}.")
    lines += ["", "| model | " + " | ".join(f"{o} AUC" for o in table["optimizers"])
              + " | " + " | ".join(f"{o} logloss" for o in table["optimizers"])
              + " | best | Helen − Adam | best epoch (" + "/".join(table["optimizers"]) + ") | wall s ("
              + "/".join(table["optimizers"]) + ") |",
              "|---|" + "---:|" * (2 * len(table["optimizers"])) + "---|---:|---|---|"]
    for m in table["models"]:
        row = table["cells"][m]
        get = lambda o, k: row[o][k] if o in row else None  # noqa: E731
        s = table["summary"][m]
        lines.append(f"| {m} | " + " | ".join(_fmt(get(o, "auc")) for o in table["optimizers"]) + " | "
                     + " | ".join(_fmt(get(o, "logloss")) for o in table["optimizers"])
                     + f" | {s['best_optimizer']} | {_fmt(s.get('helen_minus_adam_auc'), 4)} | "
                     + "/".join(_fmt(get(o, "best_epoch")) for o in table["optimizers"]) + " | "
                     + "/".join(_fmt(get(o, "wall_seconds"), 0) for o in table["optimizers"]) + " |")
    lines += ["", f"Helen is the best optimizer for {table['helen_best_count']} of {len(table['models'])} models. "
              "Mean AUC: " + ", ".join(f"{o} {v:.4f}" for o, v in table["mean_auc"].items()) + ".", ""]
    if curve.get("series"):
        lines += [f"## Helen's rho grid ({curve['model']}, both variants)", "",
                  "| variant | rho | AUC | logloss | best epoch |", "|---|---:|---:|---:|---:|"]
        for v, pts in curve["series"].items():
            lines += [f"| {v} | {p['rho']:g} | {p['auc']:.4f} | {p['logloss']:.4f} | {p['best_epoch']} |"
                      for p in pts]
        for o, ref in curve.get("references", {}).items():
            lines.append(f"| {o} (reference) | – | {ref['auc']:.4f} | {ref['logloss']:.4f} | {ref['best_epoch']} |")
        if "best_helen_minus_adam_auc" in curve:
            lines += ["", "Best Helen − Adam AUC: " + ", ".join(
                f"{v} {d:+.4f} (rho {curve['best'][v]['rho']:g})" for v, d in curve["best_helen_minus_adam_auc"].items())
                + "."]
        lines.append("")
    return "\n".join(lines)


def rho_figure(curve: dict) -> bytes:
    """PNG: test AUC (left) and logloss (right) against rho (log x), one line per Helen variant, Adam / SAM
    as horizontal references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "auc", "test AUC"), (axes[1], "logloss", "test logloss")):
        for v, pts in curve.get("series", {}).items():
            ax.plot([p["rho"] for p in pts], [p[key] for p in pts], marker="o", label=f"Helen ({v})")
        for (o, ref), style in zip(curve.get("references", {}).items(), ("--", ":")):
            ax.axhline(ref[key], linestyle=style, color="grey", label=o)
        ax.set_xscale("log")
        ax.set_xlabel("rho (optim.rho)")
        ax.set_ylabel(f"{label} ({curve.get('split', '')})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Helen's rho on the study world ({curve.get('model', '')}, "
                 f"{curve.get('train_rows', 0):,} train rows)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()

