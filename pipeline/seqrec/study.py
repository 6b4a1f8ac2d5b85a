"""The Amazon study (``studies/amazon/dvc.yaml``): does pretraining transfer where fine-tuning data is scarce,
under the seed's recipe and ours, and the scaling curve over more model sizes with a fitted power law.

Seed: Zivic et al., "Scaling Sequential Recommendation Models with Transformers" (SIGIR 2024). Its claims
measured here: (1) a model pretrained on a large catalogue-free (text) item representation transfers to a
new catalogue — fine-tuning from pretrained beats training from scratch, most where the target data is
small; (2) test NDCG grows as a power of the non-embedding parameter count (its Figure: one line per data
scale). Both are reported either way, with the oracle beside the models.

Records are the metric files of the study's stages; this module turns them into the transfer table, the
scaling table with its fits, the markdown tables and the two figures (also drawn by the report).
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np

from pipeline.seqrec.params import FinetuneParams, PretrainParams, parse_size

RECIPES = ("srt", "recdag")


def with_recipe(pt: PretrainParams, f: FinetuneParams | None, recipe: str, *, user_frac: float | None = None,
                sizes: list[str] | None = None):
    """``pretrain`` / ``finetune`` params with ``recipe`` for both (and the fine-tuning user share / the
    pretraining sizes replaced when given); the rest as in params.yaml."""
    if recipe not in RECIPES:
        from pipeline.core.errors import ConfigError

        raise ConfigError(f"recipe: '{recipe}' is not one of {list(RECIPES)}")
    pt = dataclasses.replace(pt, recipe=recipe, **({"sizes": sizes} if sizes else {}))
    if f is not None:
        f = dataclasses.replace(f, recipe=recipe, **({} if user_frac is None else {"user_frac": user_frac}))
        f.validate()
    pt.validate()
    return pt, f


def frac_name(frac: float) -> str:
    """A share as DVC writes the matrix value in stage and file names (``0.05``, ``1.0``)."""
    return str(float(frac))


# ------------------------------------------------------------------------------------------------ transfer


def transfer_record(report: dict, *, recipe: str, dataset: str, frac: float) -> dict:
    """One cell of the transfer grid from a fine-tuning report (:func:`run.finetune_report`)."""
    v = report["variants"]
    test = {k: r["metrics"]["test"] for k, r in v.items()}
    return {"recipe": recipe, "dataset": dataset, "user_frac": frac, "train_users": v["scratch"]["train_users"],
            "users": report["users"], "protocol": report["protocol"], "split": report["split"],
            "synthetic": report["synthetic"], "arch": report.get("arch"),
            "scratch": {k: test["scratch"][k] for k in ("ndcg@10", "hr@10", "ndcg@5")},
            "pretrained": {k: test["pretrained"][k] for k in ("ndcg@10", "hr@10", "ndcg@5")},
            "oracle_ndcg@10": test["scratch"].get("oracle_ndcg@10"),
            "epochs_run": {k: r["epochs_run"] for k, r in v.items()},
            "wall_seconds": {k: r["wall_seconds"] for k, r in v.items()},
            "phases": v["pretrained"].get("phases", [])}


def transfer_table(records: list[dict]) -> dict:
    """{datasets, recipes, fracs, cells[dataset][recipe][frac] = record, gains, verdict}: the gain is
    pretrained − scratch test NDCG@10 per cell; the claim holds for a (dataset, recipe) where the gain is
    positive at the smallest fraction."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    recipes = [x for x in RECIPES if any(r["recipe"] == x for r in records)]
    fracs = sorted({r["user_frac"] for r in records})
    cells: dict = {d: {x: {} for x in recipes} for d in datasets}
    for r in records:
        cells[r["dataset"]][r["recipe"]][frac_name(r["user_frac"])] = r
    gains = {d: {x: {k: round(c["pretrained"]["ndcg@10"] - c["scratch"]["ndcg@10"], 6) for k, c in cs.items()}
                 for x, cs in per.items()} for d, per in cells.items()}
    smallest = frac_name(fracs[0]) if fracs else None
    holds = {f"{d}/{x}": bool(g.get(smallest, 0.0) > 0) for d, per in gains.items() for x, g in per.items()}
    first = records[0] if records else {}
    return {"study": "amazon transfer", "dataset": "amazon-" + "/".join(datasets), "split": first.get("split"),
            "protocol": first.get("protocol"), "synthetic": first.get("synthetic"), "metric": "test ndcg@10",
            "datasets": datasets, "recipes": recipes, "fracs": fracs, "cells": cells, "gains": gains,
            "transfer_at_smallest_frac": holds, "transfer_holds_count": sum(holds.values()),
            "transfer_cells": len(holds)}


def transfer_figure(t: dict) -> bytes:
    """PNG, one panel per dataset: test NDCG@10 (full ranking) against the share of training users (log x),
    scratch dashed and pretrained solid per recipe, the oracle dotted."""
    plt = _pyplot()
    ds = t["datasets"]
    fig, axes = plt.subplots(1, len(ds), figsize=(4.6 * len(ds), 3.6), squeeze=False)
    colors = {"srt": "tab:orange", "recdag": "tab:blue"}
    for ax, d in zip(axes[0], ds):
        oracle = None
        for x in t["recipes"]:
            cs = t["cells"][d][x]
            fr = sorted(cs, key=float)
            xs = [float(k) for k in fr]
            for variant, style in (("scratch", "--"), ("pretrained", "-")):
                ax.plot(xs, [cs[k][variant]["ndcg@10"] for k in fr], style, marker="o", color=colors.get(x),
                        label=f"{x} {variant}")
            oracle = next((cs[k]["oracle_ndcg@10"] for k in fr if cs[k].get("oracle_ndcg@10") is not None), oracle)
        if oracle is not None:
            ax.axhline(oracle, color="black", ls=":", label=f"oracle {oracle:.3f}")
        ax.set_xscale("log")
        ax.set_xlabel("share of training users fine-tuned on")
        ax.set_ylabel(f"test NDCG@10 ({t.get('protocol')})")
        ax.set_title(f"amazon-{d}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig, plt)


# ------------------------------------------------------------------------------------------------ scaling


def power_law(x: list[float], y: list[float]) -> dict:
    """Least-squares fit of log y = log c + alpha · log x: {alpha, c, r2, points}; alpha None under 2 points
    or with a non-positive y."""
    if len(x) < 2 or min(y) <= 0 or len(set(x)) < 2:
        return {"alpha": None, "c": None, "r2": None, "points": len(x)}
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    alpha, logc = np.polyfit(lx, ly, 1)
    pred = logc + alpha * lx
    ss_res, ss_tot = float(((ly - pred) ** 2).sum()), float(((ly - ly.mean()) ** 2).sum())
    return {"alpha": round(float(alpha), 6), "c": round(float(math.exp(logc)), 8),
            "r2": round(1 - ss_res / ss_tot, 6) if ss_tot > 0 else None, "points": len(x)}


def scaling_record(report: dict, *, recipe: str) -> dict:
    t = report["metrics"]["test"]
    layers, hidden = parse_size(report["size"])
    return {"recipe": recipe, "dataset": report["dataset"], "size": report["size"], "layers": layers,
            "hidden": hidden, "scale": report["scale"],
            "interactions": report["interactions"], "params_non_embedding": report["params_non_embedding"],
            "params_total": report["params_total"], "test_ndcg@5": t["ndcg@5"], "valid_ndcg@5":
            report["metrics"]["valid"]["ndcg@5"], "oracle_test_ndcg@5": t.get("oracle_ndcg@5"),
            "protocol": report["protocol"], "split": report["split"], "synthetic": report["synthetic"],
            "best_epoch": report["best_epoch"], "wall_seconds": report["wall_seconds"]}


def scaling_table(records: list[dict]) -> dict:
    """{rows (recipe, scale, size order), fits[recipe][scale] = power law of test NDCG@5 in non-embedding
    parameters, data_fits[recipe][size] = power law in interactions}."""
    recipes = [x for x in RECIPES if any(r["recipe"] == x for r in records)]
    rows = sorted(records, key=lambda r: (recipes.index(r["recipe"]), r["scale"], r["params_non_embedding"]))
    fits = {x: {str(s): power_law([r["params_non_embedding"] for r in rows if r["recipe"] == x and r["scale"] == s],
                                  [r["test_ndcg@5"] for r in rows if r["recipe"] == x and r["scale"] == s])
                for s in sorted({r["scale"] for r in rows if r["recipe"] == x})} for x in recipes}
    data_fits = {x: {z: power_law([r["interactions"] for r in rows if r["recipe"] == x and r["size"] == z],
                                  [r["test_ndcg@5"] for r in rows if r["recipe"] == x and r["size"] == z])
                     for z in dict.fromkeys(r["size"] for r in rows if r["recipe"] == x)} for x in recipes}
    first = rows[0] if rows else {}
    return {"study": "amazon scaling", "dataset": "amazon-pretrain-<scale>", "split": first.get("split"),
            "protocol": first.get("protocol"), "synthetic": first.get("synthetic"), "metric": "test ndcg@5",
            "recipes": recipes, "rows": rows, "fits": fits, "data_fits": data_fits}


def scaling_figure(s: dict) -> bytes:
    """PNG, one panel per recipe: test NDCG@5 against non-embedding parameters (log-log), one line per data
    scale with its fitted power law dotted (exponent in the legend), the oracle as a grey band."""
    plt = _pyplot()
    recipes = s["recipes"]
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.8 * len(recipes), 3.7), squeeze=False)
    for ax, x in zip(axes[0], recipes):
        rows = [r for r in s["rows"] if r["recipe"] == x]
        for k, scale in enumerate(sorted({r["scale"] for r in rows})):
            pts = sorted((r["params_non_embedding"], r["test_ndcg@5"]) for r in rows if r["scale"] == scale)
            fit = s["fits"][x][str(scale)]
            lab = f"{scale:,} interactions" + (f" (alpha {fit['alpha']:.3f})" if fit["alpha"] is not None else "")
            line, = ax.plot(*zip(*pts), "o-", label=lab)
            if fit["alpha"] is not None:
                xs = np.geomspace(pts[0][0], pts[-1][0], 20)
                ax.plot(xs, fit["c"] * xs ** fit["alpha"], ":", color=line.get_color())
            orc = [r["oracle_test_ndcg@5"] for r in rows if r["scale"] == scale and r.get("oracle_test_ndcg@5")]
            if orc:
                ax.axhline(float(np.mean(orc)), color=line.get_color(), ls="--", lw=0.8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("non-embedding parameters")
        ax.set_ylabel(f"test NDCG@5 ({s.get('protocol')})")
        ax.set_title(f"recipe {x} (dashed: oracle per scale)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig, plt)


# ------------------------------------------------------------------------------------------------ markdown


def tables_markdown(t: dict, s: dict) -> str:
    lines = [f"## Transfer: test NDCG@10 ({t.get('protocol')}), scratch → pretrained, by share of training users", "",
             "| dataset | recipe | share | train users | scratch | pretrained | gain | oracle |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for d in t["datasets"]:
        for x in t["recipes"]:
            for k, c in sorted(t["cells"][d][x].items(), key=lambda kv: float(kv[0])):
                o = c.get("oracle_ndcg@10")
                lines.append(f"| {d} | {x} | {k} | {c['train_users']:,} | {c['scratch']['ndcg@10']:.4f} | "
                             f"{c['pretrained']['ndcg@10']:.4f} | {t['gains'][d][x][k]:+.4f} | "
                             f"{'' if o is None else f'{o:.4f}'} |")
    lines += ["", f"Pretraining helps at the smallest share in {t['transfer_holds_count']} of {t['transfer_cells']} "
              "(dataset, recipe) pairs.", "",
              f"## Scaling: test NDCG@5 ({s.get('protocol')}) against non-embedding parameters", "",
              "| recipe | interactions | size | non-emb. params | test NDCG@5 | oracle |", "|---|---:|---|---:|---:|---:|"]
    for r in s["rows"]:
        o = r.get("oracle_test_ndcg@5")
        lines.append(f"| {r['recipe']} | {r['interactions']:,} | {r['size']} | {r['params_non_embedding']:,} | "
                     f"{r['test_ndcg@5']:.4f} | {'' if o is None else f'{o:.4f}'} |")
    lines += ["", "| recipe | scale | alpha (NDCG@5 ∝ N^alpha) | R² | points |", "|---|---:|---:|---:|---:|"]
    for x, per in s["fits"].items():
        for scale, fit in per.items():
            a, r2 = fit["alpha"], fit["r2"]
            lines.append(f"| {x} | {int(scale):,} | {'' if a is None else f'{a:.4f}'} | "
                         f"{'' if r2 is None else f'{r2:.3f}'} | {fit['points']} |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
