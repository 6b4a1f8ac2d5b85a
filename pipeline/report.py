"""The cross-branch report: every branch's metrics → ``index.html`` (self-contained), ``summary.md`` and PNGs.

The report reads the metric and curve JSON files the branches write under ``reports/``; each figure is a
function of those files and is skipped (with the reason shown on the page) when its inputs are absent,
e.g. when a user runs only one branch. Every number shown carries its protocol and whether the data was
synthetic, copied from the metric file it came from. Images are PNGs written beside the page and also
embedded in it as data URIs, so the page opens offline from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

Metrics = dict[str, object]      # relative path under reports/ -> parsed JSON


@dataclass
class Figure:
    name: str                    # file stem of the PNG
    title: str
    caption: str
    png: bytes = b""
    missing: str = ""            # why it was not drawn (inputs absent)


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)   # (caption, header, rows)


# what the report reads: the branches' metrics and the study pipelines' (each pinned by its
# studies/<name>/dvc.lock, which the report stage declares as a dep); reports/sweeps is read apart
# (load_sweeps: `recdag sweep` results, a dep too); never reports/tb
READ_DIRS = ("avazu", "tenrec", "amazon", "studies")


def load_metrics(reports_dir: Path) -> Metrics:
    """Every JSON file under ``reports_dir``/{avazu, tenrec, amazon, studies} (recursively), keyed by its path
    relative to ``reports_dir``."""
    out: Metrics = {}
    for p in sorted(reports_dir.rglob("*.json")):
        parts = p.relative_to(reports_dir).parts
        if "tb" in parts or len(parts) < 2 or parts[0] not in READ_DIRS:
            continue
        try:
            out[p.relative_to(reports_dir).as_posix()] = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            log.warning("report: %s is not valid JSON (%s); skipped", p, e)
    return out


def _fig_png(draw: Callable, size=(6.4, 3.8), grid: tuple[int, int] | None = None, dpi: int = 100) -> bytes:
    """PNG bytes of ``draw(fig, ax)``; with ``grid`` (rows, cols), ``ax`` is the 2-D array of panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=size, dpi=dpi) if grid is None
               else plt.subplots(*grid, figsize=size, dpi=dpi, squeeze=False))
    try:
        draw(fig, ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})     # no version stamp: stable bytes
        return buf.getvalue()
    finally:
        plt.close(fig)


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def provenance(m: dict) -> str:
    """'dataset · split · protocol · synthetic|real' of a metric file, from its own fields."""
    parts = [str(m[k]) for k in ("dataset", "split", "protocol") if m.get(k) not in (None, "")]
    if "synthetic" in m:
        parts.append("synthetic data" if m["synthetic"] else "real data")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------------ figures


def _curve_key(rows: list) -> str | None:
    """The validation metric a curve file tracks: valid_auc, else the loop's monitor, else its first valid_*."""
    return next((k for k in ("valid_auc", "monitor") if k in rows[0]),
                next((k for k in rows[0] if k.startswith("valid_")), None))


def training_curves(metrics: Metrics) -> Figure:
    """Every ``*curve*.json`` list of evaluations as small multiples: one panel per validation metric (AUC,
    NDCG@5, Recall@100, ... never on one axis), one line per training stage."""
    curves = {k: v for k, v in metrics.items() if "curve" in Path(k).stem and isinstance(v, list) and v}
    f = Figure("training_curves", "Training curves",
               "Validation metric per evaluation of every training stage, one panel per metric (the loop's monitor; "
               "validation split of each stage's own data).")
    panels: dict[str, list[tuple[str, list]]] = {}
    for name, rows in curves.items():
        key = _curve_key(rows) if isinstance(rows[0], dict) else None
        if key is not None:
            panels.setdefault(key, []).append((name, rows))
    if not panels:
        f.missing = "no *curve*.json files under reports/"
        return f
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)

    def draw(fig, axes):
        for ax, (key, series) in zip(axes.flat, sorted(panels.items())):
            for name, rows in series:
                x = [r.get("step", i) for i, r in enumerate(rows)]
                ax.plot(x, [r[key] for r in rows], marker="o", ms=3,
                        label=Path(name).stem.replace("_curve", "") + f" ({Path(name).parts[0]})")
            ax.set_title(key.replace("valid_", "valid "), fontsize=10)
            ax.set_xlabel("training step", fontsize=8)
            ax.set_ylabel(key.replace("valid_", ""), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")

    f.png = _fig_png(draw, size=(4.2 * cols, 3.1 * nrows), grid=(nrows, cols), dpi=90)
    f.caption += f" {len(panels)} panels: {', '.join(sorted(panels))}."
    return f


def _bar(labels, values, oracle=None, ylabel="", title_ax="", lo=None, colors=None):
    def draw(fig, ax):
        bars = ax.bar(labels, values, color=colors or "#4c72b0")
        for b, v in zip(bars, values):
            ax.annotate(f"{v:.4f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        if oracle is not None:
            ax.axhline(oracle, color="#c44e52", ls="--", label=f"oracle {oracle:.4f}")
            ax.legend(fontsize=8)
        vals = list(values) + ([oracle] if oracle is not None else [])
        bottom = lo if lo is not None else max(0.0, min(vals) - 0.05)
        ax.set_ylim(bottom, max(vals) + 0.02)
        ax.set_ylabel(ylabel)
        ax.set_title(title_ax, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    return draw


def _alignment_note(metrics: Metrics) -> str:
    """"x1 99.99% of occurrences mapped, 99.99% correct, ..." from reports/avazu/align.json ('' if absent)."""
    al = metrics.get("avazu/align.json")
    if not (isinstance(al, dict) and al.get("sources")):
        return ""
    return "x1 / x2 aligned to x4: " + ", ".join(
        f"{s} {100 * r.get('occurrences_mapped', 0):.2f}% of occurrences mapped"
        + (f", {100 * r['accuracy_vs_truth']:.2f}% correct" if r.get("accuracy_vs_truth") is not None else "")
        for s, r in al["sources"].items())


def _llm_protocol(ev: dict, name: str) -> str:
    return "-" if name == "baseline" else (ev.get("leakage_protocol") or {}).get(name, "seed_leaky")


def avazu_llm_vs_baseline(metrics: Metrics) -> Figure:
    f = Figure("avazu_llm_vs_baseline", "Avazu x4 test: baseline vs LLM-CTR phase 1 / phase 2",
               "AUC (left) and logloss (right) on x4 test of the baseline and the LLM-CTR phases, with the "
               "oracle (true click probabilities of the synthetic world) as the dashed line and, for logloss, "
               "the constant base-rate predictor dotted. `llm_phase<n>`: the leak-free protocol (x4 valid / "
               "test events dropped from LLM-CTR training); `llm_phase<n>_seed`: the seed's protocol, which "
               "trains on them (its figure is inflated by that leak).")
    ev = metrics.get("avazu/evaluation.json")
    if not isinstance(ev, dict):
        f.missing = "reports/avazu/evaluation.json is absent (run the LLM-CTR stages)"
        return f
    head = (ev.get("headline") or {}).get("x4_test_auc")
    if not head:
        f.missing = "evaluation.json has no x4/test figures (x4 not among llm_eval.sources)"
        return f
    ll = (ev.get("headline") or {}).get("x4_test_logloss") or {}
    names = [n for n in head if n != "oracle"]
    acc = _alignment_note(metrics)
    readout = (ev.get("llm") or {}).get("readout")
    f.caption += (f" [{provenance(ev)}; LLM trained on {', '.join(ev.get('llm_train_sources', []))}"
                  + (f"; answer readout {readout}" if readout else "") + (f"; {acc}" if acc else "") + "]")
    colors = [{"-": "#8c8c8c", "leak_free": "#4c72b0", "seed_leaky": "#dd8452"}[_llm_protocol(ev, n)] for n in names]
    auc = _bar(names, [head[n] for n in names], head.get("oracle"), "AUC", "x4 test AUC (grey baseline, blue "
               "leak-free, orange seed protocol)", colors=colors)
    loss = _bar(names, [ll.get(n) for n in names], ll.get("oracle"), "logloss", "x4 test logloss", colors=colors)

    def draw(fig, ax):
        ax.remove()
        left, right = fig.subplots(1, 2)
        auc(fig, left)
        loss(fig, right)
        if ll.get("base_rate") is not None:
            right.axhline(ll["base_rate"], color="#555555", ls=":", label=f"base rate {ll['base_rate']:.4f}")
            lo_, hi_ = right.get_ylim()
            right.set_ylim(lo_, max(hi_, ll["base_rate"] + 0.01))
            right.legend(fontsize=8)
        for a in (left, right):
            a.tick_params(axis="x", labelrotation=30)
    f.png = _fig_png(draw, size=(11.0, 4.2))
    return f


def avazu_reliability(metrics: Metrics) -> Figure:
    f = Figure("avazu_reliability", "Avazu x4 test: reliability of the baseline and the LLM-CTR phases",
               "Observed click rate against mean predicted probability in equal-mass bins (each bin the same "
               "number of x4 test rows; reports/avazu/reliability.json), one panel per model; the diagonal is "
               "perfect calibration, the oracle's bins (the synthetic world's true probabilities) show how far "
               "sampling noise alone moves a bin. ECE = the rows-weighted mean gap.")
    rows = [r for r in _rows(metrics.get("avazu/reliability.json")) if r.get("split") == "x4/test"]
    ev = metrics.get("avazu/evaluation.json")
    if not rows or not isinstance(ev, dict):
        f.missing = "reports/avazu/reliability.json has no x4/test bins (run avazu_evaluate_x4 with x4 evaluated)"
        return f
    m = (ev.get("metrics") or {}).get("x4/test", {})
    names = [n for n in ("baseline", "llm_phase1", "llm_phase2") if any(r["model"] == n for r in rows)]
    oracle = [r for r in rows if r["model"] == "oracle"]
    f.caption += f" [{provenance(ev)}]"

    def draw(fig, axes):
        top = max(max(r["mean_pred"], r["observed"]) for r in rows) * 1.05
        for ax, n in zip(axes[0], names):
            b = [r for r in rows if r["model"] == n]
            ax.plot([0, top], [0, top], color="#8c8c8c", lw=0.8, ls="--")
            if oracle:
                ax.plot([r["mean_pred"] for r in oracle], [r["observed"] for r in oracle], "o", ms=3,
                        color="#c44e52", alpha=0.6, label=f"oracle (ECE {_f4(m.get('oracle_ece'))})")
            ax.plot([r["mean_pred"] for r in b], [r["observed"] for r in b], "o-", ms=4, color="#4c72b0",
                    label=f"{n} (ECE {_f4((m.get(n) or {}).get('ece'))})")
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_aspect("equal")
            ax.set_xlabel("mean predicted p")
            ax.set_ylabel("observed click rate")
            ax.set_title(n, fontsize=9)
            ax.legend(fontsize=7, loc="upper left")
            ax.grid(alpha=0.3)
    f.png = _fig_png(draw, size=(4.0 * len(names), 4.0), grid=(1, len(names)), dpi=90)
    return f


HELEN = "studies/helen"
AMAZON_STUDY = "studies/amazon"


def _study_missing(study: str) -> str:
    return f"absent: the {study.split('/')[-1].capitalize()} study has not run (dvc repro {study}/dvc.yaml)"


STUDY_MISSING = _study_missing(HELEN)


def _study_figure(metrics: Metrics, f: Figure, file: str, key: str, draw: Callable[[dict], bytes],
                  extra: Callable[[dict], str] = lambda m: "", study: str = HELEN) -> Figure:
    """``f`` drawn by ``draw`` (PNG bytes from the file's JSON) from ``reports/<study>/<file>``, its caption
    completed by ``extra`` and the file's provenance; said missing when the study has not run (or ``key`` is
    empty)."""
    m = metrics.get(f"{study}/{file}")
    if not isinstance(m, dict) or not m.get(key):
        f.missing = f"reports/{study}/{file} {_study_missing(study)}"
        return f
    f.caption += f"{extra(m)} [{provenance(m)}]"
    f.png = draw(m)
    return f


def avazu_optimizers(metrics: Metrics) -> Figure:
    def draw(opt: dict) -> bytes:
        rows = opt["optimizers"]
        names = list(rows)
        oracle = next((r.get("oracle_auc") for r in rows.values() if r.get("oracle_auc") is not None), None)
        return _fig_png(_bar(names, [rows[n]["auc"] for n in names], oracle, "AUC", f"{opt.get('model', '')} x4 test"))

    return _study_figure(metrics, Figure(
        "avazu_optimizers", "Helen study: Adam vs SAM vs Helen on the embedded default",
        "x4 test AUC of the main baseline's CTR model and training config under each optimizer, on the default's "
        "full data (the study's helen_optimizers stage), oracle dashed."), "optimizers.json", "optimizers", draw)


def helen_table(metrics: Metrics) -> Figure:
    """The study's model × optimizer table as grouped bars of test AUC (oracle dashed)."""

    def draw(t: dict) -> bytes:
        models, opts = t["models"], t["optimizers"]

        def bars(fig, ax):
            width = 0.8 / max(1, len(opts))
            vals = []
            for j, o in enumerate(opts):
                ys = [t["cells"][m].get(o, {}).get("auc", float("nan")) for m in models]
                vals += [y for y in ys if y == y]
                ax.bar([i + (j - (len(opts) - 1) / 2) * width for i in range(len(models))], ys, width, label=o)
            if t.get("oracle_auc") is not None:
                ax.axhline(t["oracle_auc"], color="#c44e52", ls="--", label=f"oracle {t['oracle_auc']:.4f}")
                vals.append(t["oracle_auc"])
            ax.set_xticks(range(len(models)), models)
            ax.set_ylim(min(vals) - 0.01, max(vals) + 0.01)
            ax.set_ylabel(f"test AUC ({t.get('split')})")
            ax.legend(fontsize=8, ncol=4)
            ax.grid(axis="y", alpha=0.3)

        return _fig_png(bars, size=(9.0, 3.8))

    def extra(t: dict) -> str:
        return (f" Helen best for {t.get('helen_best_count')} of {len(t['models'])} models; "
                f"{t.get('train_rows', 0):,} train rows, {t.get('epochs')} epochs, rho {t.get('rho')}, "
                f"variant {t.get('helen_variant')}.")

    return _study_figure(metrics, Figure(
        "helen_table", "Helen study: 7 models × Adam / SAM / Helen",
        "Test AUC of every model under each optimizer on the study's smaller world (same data, seed and loop), "
        "oracle dashed."), "table.json", "cells", draw, extra)


def helen_rho(metrics: Metrics) -> Figure:
    from pipeline.ctr.study import rho_figure

    return _study_figure(metrics, Figure(
        "helen_rho", "Helen study: test AUC against rho (release vs recdag variant)",
        "Helen's test AUC and logloss against its perturbation radius rho on the study's world, one line per "
        "variant, Adam / SAM of the same model as references."), "rho.json", "series", rho_figure)


def helen_sharpness(metrics: Metrics) -> Figure:
    from pipeline.ctr.sharpness import sharpness_figure

    return _study_figure(metrics, Figure(
        "helen_sharpness", "Helen study: sharpness against feature frequency (the paper's Figure 1)",
        "Top Hessian eigenvalue of sampled feature values' embeddings against their training frequency, per "
        "optimizer, with per-bin medians and a log-log fit."), "sharpness.json", "models", sharpness_figure)


def amazon_transfer(metrics: Metrics) -> Figure:
    from pipeline.seqrec.study import transfer_figure

    def extra(t: dict) -> str:
        return (f" Pretrained above scratch at the smallest share in {t.get('transfer_holds_count')} of "
                f"{t.get('transfer_cells')} (dataset, recipe) pairs.")

    return _study_figure(metrics, Figure(
        "amazon_transfer", "Amazon study: does pretraining transfer where fine-tuning data is scarce?",
        "Test NDCG@10 (full ranking, leave-one-out, every user evaluated) against the seeded share of each "
        "catalogue's training users fine-tuned on: scratch dashed, pretrained solid, per recipe (srt = the "
        "release's, recdag = ours), oracle dotted."), "transfer.json", "cells", transfer_figure, extra,
        study=AMAZON_STUDY)


def amazon_scaling_study(metrics: Metrics) -> Figure:
    from pipeline.seqrec.study import scaling_figure

    def extra(s: dict) -> str:
        fits = "; ".join(f"{x} {int(sc):,}: alpha {fit['alpha']:.3f}" for x, per in s.get("fits", {}).items()
                         for sc, fit in per.items() if fit.get("alpha") is not None)
        return f" Fitted exponents: {fits}."

    return _study_figure(metrics, Figure(
        "amazon_scaling_study", "Amazon study: NDCG against model size, one line per data scale",
        "Test NDCG@5 (sampled_10000) against non-embedding parameters (log-log) for four sizes up to 4x128, "
        "one line per pretraining set with its fitted power law dotted, per recipe; oracle dashed."),
        "scaling.json", "rows", scaling_figure, extra, study=AMAZON_STUDY)


def tenrec_protocols(metrics: Metrics) -> Figure:
    f = Figure("tenrec_protocols", "Tenrec ranking: sampled_128 vs retrieved top-K, model vs oracle",
               "The ranker's click AUC, like-AUC, NDCG@20, Hit@1 and MRR under the two protocols (solid: model, "
               "hatched: oracle scoring by the world's true probabilities).")
    ev = metrics.get("tenrec/evaluate.json")
    if not isinstance(ev, dict) or not ev.get("metrics"):
        f.missing = "reports/tenrec/evaluate.json is absent (run the Tenrec branch)"
        return f
    protos = list(ev["metrics"])
    keys = [k for k in ("auc", "like_auc", "ndcg@20", "hr@1", "mrr") if k in ev["metrics"][protos[0]]]

    def draw(fig, ax):
        w = 0.8 / (2 * len(protos))
        for i, proto in enumerate(protos):
            m = ev["metrics"][proto]
            xs = [j + 2 * i * w for j in range(len(keys))]
            ax.bar(xs, [m.get(k) or 0 for k in keys], w, label=f"{proto} model")
            if ev.get("synthetic"):
                ax.bar([x + w for x in xs], [m.get(f"oracle_{k}") or 0 for k in keys], w, hatch="//",
                       alpha=0.5, label=f"{proto} oracle")
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(keys))], keys)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)

    f.caption += f" [{provenance(ev)}; {ev.get('encoder')} ranker, {ev.get('index')} index]"
    f.png = _fig_png(draw)
    return f


def tenrec_faiss(metrics: Metrics) -> Figure:
    f = Figure("tenrec_faiss", "FAISS: recall vs queries per second",
               "The configured ANN index against exact (flat) search on the same test queries: recall of the "
               "ANN top-K against the exact top-K, and queries/s (bench/faiss_index.py sweeps flat, HNSW and "
               "IVF-PQ on 100k and 1M vectors).")
    ix = metrics.get("tenrec/index.json")
    if not isinstance(ix, dict) or "test" not in ix.get("metrics", {}):
        f.missing = "reports/tenrec/index.json is absent (run tenrec_build_index)"
        return f
    m = ix["metrics"]["test"]

    def draw(fig, ax):
        ax.scatter([m["exact_qps"]], [1.0], s=60, label="exact (flat)")
        ax.scatter([m["qps"]], [m["ann_recall_vs_exact"]], s=60, marker="s", label=str(ix.get("index")))
        ax.set_xscale("log")
        ax.set_xlabel("queries / s (log)")
        ax.set_ylabel(f"recall@{ix.get('top_k')} vs exact")
        ax.set_ylim(min(0.9, m["ann_recall_vs_exact"] - 0.02), 1.01)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    f.caption += f" [{provenance(ix)}; {ix.get('items')} items, {ix.get('queries')} queries]"
    f.png = _fig_png(draw)
    return f


def tenrec_encoder_scaling(metrics: Metrics) -> Figure:
    f = Figure("tenrec_encoder_scaling", "Fastformer vs Transformer: step time over sequence length",
               "Training-step time (forward + backward) of the ranker's encoder at the ranker's width and depth.")
    es = metrics.get("tenrec/encoder_scaling.json")
    if not isinstance(es, dict) or not es.get("timings"):
        f.missing = "reports/tenrec/encoder_scaling.json is absent (run tenrec_encoder_scaling)"
        return f

    def draw(fig, ax):
        for kind in ("fastformer", "transformer"):
            rows = [r for r in es["timings"] if r["encoder"] == kind]
            ax.plot([r["length"] for r in rows], [r["step_ms"] for r in rows], marker="o", label=kind)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel("ms / training step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    f.caption += f" [{es.get('protocol')}; dim {es.get('dim')}, {es.get('layers')} layers]"
    f.png = _fig_png(draw)
    return f


def _rows(obj) -> list:
    return obj if isinstance(obj, list) else []


def amazon_scaling(metrics: Metrics) -> Figure:
    f = Figure("amazon_scaling", "Amazon: pretraining scaling curve",
               "Test NDCG@5 (sampled_10000) against the number of pretraining interactions, one line per model "
               "size; the oracle (the world's planted next-item distribution) dotted.")
    rows = _rows(metrics.get("amazon/plots/scaling.json"))
    if not rows:
        f.missing = "reports/amazon/plots/scaling.json is absent (run the Amazon branch)"
        return f

    def draw(fig, ax):
        for size in dict.fromkeys(r["size"] for r in rows):
            pts = sorted((r["interactions"], r["test_ndcg@5"]) for r in rows if r["size"] == size)
            ax.plot(*zip(*pts), marker="o", label=f"model {size}")
        orc = sorted({(r["interactions"], r["oracle_test_ndcg@5"]) for r in rows if r.get("oracle_test_ndcg@5")})
        if orc:
            ax.plot(*zip(*orc), ls=":", color="gray", label="oracle")
        ax.set_xscale("log")
        ax.set_xlabel("pretraining interactions")
        ax.set_ylabel("test NDCG@5 (sampled_10000)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    f.caption += f" [protocol {rows[0].get('protocol')}]"
    f.png = _fig_png(draw)
    return f


def amazon_finetune(metrics: Metrics) -> Figure:
    f = Figure("amazon_finetune", "Amazon: fine-tuning from scratch vs from pretrained",
               "Test NDCG@10 (full ranking, leave-one-out) on each fine-tuning catalogue, oracle dashed.")
    rows = _rows(metrics.get("amazon/plots/finetune.json"))
    if not rows:
        f.missing = "reports/amazon/plots/finetune.json is absent (run the Amazon branch)"
        return f

    def draw(fig, ax):
        ax.bar([r["run"] for r in rows], [r["test_ndcg@10"] for r in rows], color="#4c72b0")
        for i, r in enumerate(rows):
            if r.get("oracle_test_ndcg@10"):
                ax.hlines(r["oracle_test_ndcg@10"], i - 0.4, i + 0.4, colors="#c44e52", linestyles="--")
        ax.set_ylabel("test NDCG@10 (full ranking)")
        ax.tick_params(axis="x", labelsize=8, rotation=20)
        ax.grid(axis="y", alpha=0.3)

    f.caption += f" [protocol {rows[0].get('protocol')}]"
    f.png = _fig_png(draw)
    return f


LLM_STUDY = "studies/llm"


def llm_study(metrics: Metrics) -> Figure:
    def draw(t: dict) -> bytes:
        variants = t["variants"]

        def panel(fig, ax):
            import numpy as np

            x = np.arange(len(variants))
            for i, (ph, color) in enumerate((("llm_phase1", "#8fb0d9"), ("llm_phase2", "#4c72b0"))):
                vals = [t["rows"][v][f"{ph}_auc"] for v in variants]
                errs = [t["rows"][v][f"{ph}_auc_se"] or 0 for v in variants]
                ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, yerr=errs, capsize=3, color=color,
                       label=ph.replace("llm_", ""))
            ax.axhline(t["baseline"]["auc"], color="#8c8c8c", ls="-", label=f"baseline {t['baseline']['auc']:.4f}")
            if t["oracle"].get("auc") is not None:
                ax.axhline(t["oracle"]["auc"], color="#c44e52", ls="--", label=f"oracle {t['oracle']['auc']:.4f}")
            ax.set_xticks(x, [f"{v}\n{t['rows'][v]['llm']}" for v in variants], fontsize=7)
            lo = min(t["rows"][v][f"{ph}_auc"] for v in variants for ph in ("llm_phase1", "llm_phase2"))
            ax.set_ylim(max(0.5, lo - 0.06), (t["oracle"].get("auc") or t["baseline"]["auc"]) + 0.02)
            ax.set_ylabel("x4 test AUC (± bootstrap s.e.)")
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(axis="y", alpha=0.3)

        return _fig_png(panel, size=(8.0, 4.0))

    return _study_figure(metrics, Figure(
        "llm_study", "LLM study: does the LLM's pretraining matter? (tiny random Qwen3, random SmolLM2-135M, "
        "pretrained SmolLM2-135M)",
        "x4 test AUC of LLM-CTR phase 1 and phase 2 with three LLMs, same leak-free sample, budget and seed, "
        "beside the baseline CTR model (whose frozen embeddings they read) and the oracle, on the same sampled "
        "rows; error bars: bootstrap standard error over those rows."),
        "table.json", "rows", draw,
        lambda t: "".join(f"; pretrained − random, {ph.replace('llm_', '')}: {v['auc']:+.4f} ± {v['se']:.4f}"
                          for ph, v in (t.get("pretrained_minus_random") or {}).items()), study=LLM_STUDY)


FIGURES: list[tuple[str, Callable[[Metrics], Figure]]] = [
    ("All branches", training_curves),
    ("Avazu / LLM-CTR", avazu_llm_vs_baseline),
    ("Avazu / LLM-CTR", avazu_reliability),
    ("LLM study (studies/llm)", llm_study),
    ("Helen study (studies/helen)", avazu_optimizers),
    ("Helen study (studies/helen)", helen_table),
    ("Helen study (studies/helen)", helen_rho),
    ("Helen study (studies/helen)", helen_sharpness),
    ("Tenrec", tenrec_protocols),
    ("Tenrec", tenrec_faiss),
    ("Tenrec", tenrec_encoder_scaling),
    ("Amazon scaling", amazon_scaling),
    ("Amazon scaling", amazon_finetune),
    ("Amazon study (studies/amazon)", amazon_transfer),
    ("Amazon study (studies/amazon)", amazon_scaling_study),
]


# ------------------------------------------------------------------------------------------------ tables


def _flat(d, prefix="") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(_flat(v, f"{prefix}{k}."))
            elif isinstance(v, (int, float, str, bool)):
                out[f"{prefix}{k}"] = v
    return out


def metric_tables(metrics: Metrics) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per metric file (not curves): its numeric leaves, with the file's provenance as caption."""
    tables = []
    for name, m in metrics.items():
        if not isinstance(m, dict) or "curve" in Path(name).stem:
            continue
        flat = {k: v for k, v in _flat(m).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not flat:
            continue
        rows = [[k, _fmt(v)] for k, v in flat.items()][:400]
        tables.append((f"reports/{name} — {provenance(m) or 'no provenance fields'}", ["key", "value"], rows))
    return tables


# ------------------------------------------------------------------------------------------------ render


def load_sweeps(reports_dir: Path) -> dict[str, dict]:
    """The sweeps ``recdag sweep`` wrote (``reports/sweeps/<name>.json``, built from ``dvc exp show --json``;
    committed, and a dep of the report stage), with the PNG it drew beside each when present."""
    out = {}
    for p in sorted((reports_dir / "sweeps").glob("*.json")):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            log.warning("report: %s is not valid JSON (%s); skipped", p, e)
            continue
        if isinstance(d, dict) and d.get("kind") == "recdag-sweep":
            png = p.with_suffix(".png")
            out[p.stem] = {**d, "_png": png.read_bytes() if png.is_file() else b""}
    return out


def sweep_section(sweeps: dict[str, dict]) -> Section:
    """One figure (the sweep's own plot) and one table (every experiment's params and metrics) per sweep."""
    sec = Section("Sweeps (recdag sweep)")
    for name, d in sweeps.items():
        params = [x["label"] for x in d.get("params", [])]
        mets = [x["label"] for x in d.get("metrics", [])]
        rows = d.get("rows", [])
        commits = ", ".join(c.get("name") or c.get("rev", "")[:7] for c in d.get("commits", []))
        cap = (f"{len(rows)} experiments from `dvc exp show --json` at {commits or 'an unknown commit'}; "
               f"{d.get('note', '')}")
        fig = Figure(f"sweep_{name}", f"Sweep {name}: {', '.join(mets)} against {', '.join(params)}", cap,
                     png=d.get("_png", b""), missing="" if d.get("_png") else "the sweep's PNG is absent")
        sec.figures.append(fig)
        sec.tables.append((f"reports/sweeps/{name}.json — {d.get('note', '')}", ["experiment", *params, *mets],
                           [[r.get("name", ""), *(_fmt(r.get("params", {}).get(k)) for k in params),
                             *(_fmt(r.get("metrics", {}).get(k)) for k in mets)] for r in rows]))
    return sec


def build(metrics: Metrics, figures=None, sweeps: dict[str, dict] | None = None) -> list[Section]:
    sections: dict[str, Section] = {}
    for title, fn in figures or FIGURES:
        try:
            fig = fn(metrics)
        except (KeyError, TypeError, ValueError) as e:     # a malformed input file: say so, draw the rest
            fig = Figure(fn.__name__, fn.__name__, "", missing=f"inputs malformed: {e!r}")
        sections.setdefault(title, Section(title)).figures.append(fig)
    if sweeps:
        sw = sweep_section(sweeps)
        sections[sw.title] = sw
    sec = Section("Every metric file")
    sec.tables = metric_tables(metrics)
    sections[sec.title] = sec
    return list(sections.values())


def render_html(sections: list[Section], synthetic_any: bool, found: list[Finding] | None = None,
                prov: dict | None = None) -> str:
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>recdag report</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;"
         "padding:2px 6px;text-align:left}figure{margin:1em 0}figcaption{font-size:13px;color:#555}"
         ".missing{color:#a00;font-style:italic}details{margin:0.3em 0}"
         "#findings td,#findings th{font-size:13px;vertical-align:top}.v-reproduced{color:#176b2c}"
         ".v-not-reproduced{color:#a00}.v-not-applicable{color:#666}#provenance{font-size:12px;color:#444;"
         "border-left:3px solid #ccc;padding-left:0.6em}</style></head><body>",
         "<h1>recdag report</h1>"]
    if prov is not None:
        h.append("<div id='provenance'>" + "<br>".join(html.escape(x) for x in provenance_lines(prov)) + "</div>")
    h.append("<h2 id='what-this-run-found'>What this run found</h2>")
    h.append(findings_html(found or []))
    if synthetic_any:
        h.append("<p><b>Some figures below come from the embedded synthetic worlds</b> (each figure and table "
                 "says which); on synthetic data the oracle (the generator's true probabilities) is shown "
                 "beside the model.</p>")
    for s in sections:
        h.append(f"<h2 id='{anchor(s.title)}'>{html.escape(s.title)}</h2>")
        for f in s.figures:
            h.append(f"<h3>{html.escape(f.title)}</h3>")
            if f.missing:
                h.append(f"<p class='missing'>not drawn: {html.escape(f.missing)}</p>")
                continue
            data = base64.b64encode(f.png).decode()
            h.append(f"<figure><img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
        for caption, header, rows in s.tables:
            h.append(f"<details><summary>{html.escape(caption)}</summary><table><tr>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>")
            h.extend("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            h.append("</table></details>")
    h.append("</body></html>")
    return "\n".join(h)


def render_markdown(sections: list[Section], plots_rel: str, headline: list[str],
                    found: list[Finding] | None = None, prov: dict | None = None) -> str:
    md = ["# recdag report", "", "Generated by the `report` stage from every branch's metrics "
          "(`reports/index.html` is the same with every table).", ""]
    if prov is not None:
        md += [f"> {x}  " for x in provenance_lines(prov)] + [""]
    md.extend(findings_markdown(found or []))
    md.extend(headline)
    for s in sections:
        if s.title == "Every metric file":
            continue
        md += [f"## {s.title}", ""]
        for f in s.figures:
            if f.missing:
                md += [f"- *{f.title}*: not drawn ({f.missing})", ""]
            else:
                md += [f"![{f.title}]({plots_rel}/{f.name}.png)", "", f"*{f.caption}*", ""]
    return "\n".join(md)


def _row(*cells) -> str:
    return "| " + " | ".join(_fmt(c) for c in cells) + " |"


def headline(metrics: Metrics) -> list[str]:
    """The few numbers a reader wants first, each with its protocol and data kind."""
    md = ["## Headline", ""]
    b = metrics.get("avazu/baseline.json")
    if isinstance(b, dict):
        md += [f"**Avazu CTR baseline** ({b.get('model')}, {b.get('optimizer')}; {provenance(b)})", "",
               "| split | AUC | logloss | ECE | mean pred / observed | oracle AUC | oracle logloss | Spearman vs oracle |",
               "|---|---|---|---|---|---|---|---|"]
        for split, m in b.get("metrics", {}).items():
            md.append(_row(split, m.get("auc"), m.get("logloss"), m.get("ece"), m.get("calibration_ratio"),
                           m.get("oracle_auc"), m.get("oracle_logloss"), m.get("spearman_logit_vs_oracle")))
        md.append("")
    o = metrics.get(f"{HELEN}/optimizers.json")
    if isinstance(o, dict):
        md += [f"**Adam vs SAM vs Helen** (Helen study on the default; {o.get('model')}, {o.get('headline_split')}; "
               f"{provenance(o)})", "",
               "| optimizer | AUC | logloss | oracle AUC | best epoch | wall s |", "|---|---|---|---|---|---|"]
        for n, m in o.get("optimizers", {}).items():
            md.append(_row(n, m.get("auc"), m.get("logloss"), m.get("oracle_auc"), m.get("best_epoch"),
                           m.get("wall_seconds")))
        md.append("")
    t = metrics.get(f"{HELEN}/table.json")
    if isinstance(t, dict) and t.get("cells"):
        opts = t["optimizers"]
        md += [f"**Helen study: {len(t['models'])} models × {' / '.join(opts)}** (test AUC; {t.get('train_rows', 0):,} "
               f"train rows, rho {t.get('rho')}, variant {t.get('helen_variant')}; oracle AUC {_fmt(t.get('oracle_auc'))}; "
               f"{provenance(t)})", "", "| model | " + " | ".join(opts) + " | best |", "|---" * (len(opts) + 2) + "|"]
        for m in t["models"]:
            md.append(_row(m, *(t["cells"][m].get(o, {}).get("auc") for o in opts), t["summary"][m]["best_optimizer"]))
        md.append("")
    ev = metrics.get("avazu/evaluation.json")
    if isinstance(ev, dict) and ev.get("headline"):
        h = ev["headline"]
        md += [f"**LLM-CTR vs baseline on x4 test** ({provenance(ev)}; LLM trained on "
               f"{', '.join(ev.get('llm_train_sources', []))}; answer readout "
               f"{(ev.get('llm') or {}).get('readout', 'seed')})", "",
               "| model | leakage protocol | train rows excluded | AUC | logloss | ECE | mean pred / observed | "
               "Pearson / Spearman vs oracle (logits) |", "|---|---|---|---|---|---|---|---|"]
        x4 = (ev.get("metrics") or {}).get("x4/test", {})
        for n in h["x4_test_auc"]:
            excl = (ev.get("rows_excluded") or {}).get(n)
            n_excl = sum(sum(v.values()) for v in excl.values() if v) if excl else ("-" if n in ("oracle", "baseline") else 0)
            c = x4.get(n) or {}
            agree = (f"{_fmt(c.get('pearson_logit_vs_oracle'))} / {_fmt(c.get('spearman_logit_vs_oracle'))}"
                     if "pearson_logit_vs_oracle" in c else "-")
            md.append(_row(n, "-" if n == "oracle" else _llm_protocol(ev, n), n_excl, h["x4_test_auc"][n],
                           h["x4_test_logloss"].get(n), (h.get("x4_test_ece") or {}).get(n),
                           c.get("calibration_ratio", 1.0 if n == "oracle" else None), agree))
        if h["x4_test_logloss"].get("base_rate") is not None:
            md.append(_row("constant base rate", "-", "-", 0.5, h["x4_test_logloss"]["base_rate"], "-", 1.0, "-"))
        note = _alignment_note(metrics)
        md += ([""] + [note + "."] if note else []) + [""]
    te = metrics.get("tenrec/evaluate.json")
    if isinstance(te, dict) and te.get("metrics"):
        keys = ("auc", "like_auc", "ndcg@20", "hr@1", "mrr")
        md += [f"**Tenrec ranking** ({te.get('encoder')}; {provenance(te)})", "",
               "| protocol | scorer | AUC | like-AUC | NDCG@20 | Hit@1 | MRR |", "|---|---|---|---|---|---|---|"]
        for proto, m in te["metrics"].items():
            md.append(_row(proto, "model", *(m.get(k) for k in keys)))
            if te.get("synthetic"):
                md.append(_row(proto, "oracle", *(m.get(f"oracle_{k}") for k in keys)))
        md.append("")
    sc = _rows(metrics.get("amazon/plots/scaling.json"))
    if sc:
        md += ["**Amazon pretraining scaling**", "",
               "| size | interactions | params (non-emb.) | test NDCG@5 | oracle | protocol |", "|---|---|---|---|---|---|"]
        for r in sc:
            md.append(_row(r["size"], r["interactions"], r.get("params_non_embedding"), r["test_ndcg@5"],
                           r.get("oracle_test_ndcg@5"), r.get("protocol")))
        md.append("")
    ft = _rows(metrics.get("amazon/plots/finetune.json"))
    if ft:
        md += ["**Amazon fine-tuning**", "", "| run | test NDCG@10 | HR@10 | oracle NDCG@10 | protocol |",
               "|---|---|---|---|---|"]
        for r in ft:
            md.append(_row(r["run"], r["test_ndcg@10"], r.get("test_hr@10"), r.get("oracle_test_ndcg@10"),
                           r.get("protocol")))
        md.append("")
    tr = metrics.get(f"{AMAZON_STUDY}/transfer.json")
    if isinstance(tr, dict) and tr.get("cells"):
        md += [f"**Amazon study: transfer where data is scarce** (test NDCG@10, {tr.get('protocol')}; "
               f"{provenance(tr)})", "", "| dataset | recipe | share of users | scratch | pretrained | oracle |",
               "|---|---|---|---|---|---|"]
        for d, per in tr["cells"].items():
            for x, cs in per.items():
                for k, c in sorted(cs.items(), key=lambda kv: float(kv[0])):
                    md.append(_row(d, x, k, c["scratch"]["ndcg@10"], c["pretrained"]["ndcg@10"], c.get("oracle_ndcg@10")))
        md.append("")
    return md


# ------------------------------------------------------------------------------------------------ what this run found


@dataclass
class Finding:
    """One row of the page's first table: a seed's claim, what this run measured (beside the oracle and, where
    one exists, the seed's own recipe), a one-word verdict and the section holding the evidence."""

    branch: str
    claim: str
    measured: str
    oracle: str
    seed_recipe: str
    verdict: str                 # reproduced | not reproduced | not applicable
    section: str                 # the Section title the row links to
    source: str = ""             # the metric file's dataset · split · protocol · synthetic|real


def _f4(v) -> str:
    return "–" if v is None else f"{v:.4f}"


def findings(metrics: Metrics) -> list[Finding]:
    """The seeds' central claims against this run's metric files (rows only for the files present)."""
    out: list[Finding] = []
    ev = metrics.get("avazu/evaluation.json")
    if isinstance(ev, dict) and ev.get("headline"):
        a = ev["headline"]["x4_test_auc"]
        base, p2, seed2 = a.get("baseline"), a.get("llm_phase2"), a.get("llm_phase2_seed")
        out.append(Finding(
            "Avazu / LLM-CTR", "a frozen LLM fed the CTR model's embeddings as soft tokens matches or beats that CTR "
            "model on x4 (seed 000)", f"x4 test AUC: phase 2 {_f4(p2)} vs baseline {_f4(base)} "
            f"({(p2 or 0) - (base or 0):+.4f}, leak-free)", _f4(a.get("oracle")),
            f"seed's leaky protocol: phase 2 {_f4(seed2)}",
            "reproduced" if p2 is not None and base is not None and p2 >= base else "not reproduced", "Avazu / LLM-CTR",
            provenance(ev)))
    ls = metrics.get("studies/llm/table.json")
    if isinstance(ls, dict) and ls.get("pretrained_minus_random"):
        d = ls["pretrained_minus_random"]["llm_phase2"]
        r = ls["rows"]
        out.append(Finding(
            "Avazu / LLM-CTR", "the LLM's pretraining carries knowledge LLM-CTR uses on Avazu's anonymised features "
            "(seed 000's premise; published gains come from text features)",
            f"x4 test AUC, phase 2: pretrained SmolLM2-135M {_f4(r['smollm2']['llm_phase2_auc'])} vs the same "
            f"shapes randomly initialised {_f4(r['smollm2_random']['llm_phase2_auc'])} ({d['auc']:+.4f} ± "
            f"{d['se']:.4f}); baseline {_f4(ls['baseline']['auc'])}", _f4(ls["oracle"].get("auc")),
            f"tiny random Qwen3: {_f4(r.get('tiny', {}).get('llm_phase2_auc'))}",
            "reproduced" if d["auc"] > 2 * d["se"] else "not reproduced", "LLM study (studies/llm)", provenance(ls)))
    t, o = metrics.get("studies/helen/table.json"), metrics.get("studies/helen/optimizers.json")
    if isinstance(t, dict) and t.get("cells"):
        n, best = len(t["models"]), t.get("helen_best_count", 0)
        opt = (o or {}).get("optimizers", {}) if isinstance(o, dict) else {}
        default = (f"; default DeepFM: Helen {_f4(opt['helen']['auc'])}, Adam {_f4(opt['adam']['auc'])}, "
                   f"SAM {_f4(opt['sam']['auc'])}") if {"helen", "adam", "sam"} <= set(opt) else ""
        out.append(Finding(
            "Avazu / Helen", "Helen (frequency-scaled SAM on embeddings) beats Adam and SAM across CTR models",
            f"Helen best for {best} of {n} models{default}", _f4(t.get("oracle_auc")),
            f"Helen as released (variant {t.get('helen_variant')}, rho {t.get('rho')})",
            "reproduced" if best > n / 2 else "not reproduced", "Helen study (studies/helen)", provenance(t)))
    te = metrics.get("tenrec/evaluate.json")
    if isinstance(te, dict) and te.get("metrics"):
        m = te["metrics"].get("sampled_128") or next(iter(te["metrics"].values()))
        out.append(Finding(
            "Tenrec", "a benchmark (two-tower retrieval → Fastformer ranker with click and like heads): no single "
            "claim", f"ranker click AUC {_f4(m.get('auc'))}, like AUC {_f4(m.get('like_auc'))} (sampled_128)",
            f"{_f4(m.get('oracle_auc'))} / {_f4(m.get('oracle_like_auc'))}", "–", "not applicable", "Tenrec",
            provenance(te)))
    tr = metrics.get("studies/amazon/transfer.json")
    if isinstance(tr, dict) and tr.get("cells"):
        small, full = str(tr["fracs"][0]), str(tr["fracs"][-1])
        gains = {x: [tr["gains"][d][x].get(small) for d in tr["datasets"]] for x in tr["recipes"]}
        full_g = [tr["gains"][d][x].get(full) for d in tr["datasets"] for x in tr["recipes"]]
        srt = ", ".join(f"{g:+.3f}" for g in gains.get("srt", []) if g is not None)
        rec = ", ".join(f"{g:+.3f}" for g in gains.get("recdag", []) if g is not None)
        out.append(Finding(
            "Amazon", "a transformer pretrained on scaled Amazon data transfers to a new catalogue (pretrained > "
            "scratch)", f"test NDCG@10 gain of pretrained over scratch with {float(small):.0%} of the users: recdag "
            f"{rec or '–'}; with all users {min(full_g):+.3f}..{max(full_g):+.3f}",
            " / ".join(f"{d} {_f4(tr['cells'][d][tr['recipes'][0]][small].get('oracle_ndcg@10'))}"
                       for d in tr["datasets"]),
            f"srt recipe: {srt or '–'}",
            "reproduced" if tr.get("transfer_holds_count", 0) > tr.get("transfer_cells", 0) / 2 else "not reproduced",
            "Amazon study (studies/amazon)", provenance(tr)))
    sc = metrics.get("studies/amazon/scaling.json")
    if isinstance(sc, dict) and sc.get("fits"):
        fits = {x: {k: v for k, v in per.items() if v.get("alpha") is not None} for x, per in sc["fits"].items()}
        show = lambda x: "; ".join(f"{int(k):,}: alpha {v['alpha']:.3f} (R² {v['r2']:.2f})"   # noqa: E731
                                   for k, v in fits.get(x, {}).items())
        holds = any(v["alpha"] > 0.05 and (v.get("r2") or 0) >= 0.8 for per in fits.values() for v in per.values())
        orc = sorted({r.get("oracle_test_ndcg@5") for r in sc.get("rows", []) if r.get("oracle_test_ndcg@5")})
        out.append(Finding(
            "Amazon", "test NDCG grows as a power of the model's non-embedding parameters (one curve per data scale)",
            f"recdag: {show('recdag') or '–'}", " / ".join(_f4(v) for v in orc) or "–", f"srt: {show('srt') or '–'}",
            "reproduced" if holds else "not reproduced", "Amazon study (studies/amazon)", provenance(sc)))
    return out


def anchor(title: str) -> str:
    """The HTML id of a section."""
    return "sec-" + "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def findings_markdown(rows: list[Finding]) -> list[str]:
    if not rows:
        return []
    md = ["## What this run found", "",
          "| branch | the seed's claim | measured | oracle | seed's recipe | verdict |", "|---|---|---|---|---|---|"]
    md += [f"| {r.branch} | {r.claim} | {r.measured} ({r.source}) | {r.oracle} | {r.seed_recipe} | **{r.verdict}** |"
           for r in rows]
    return md + [""]


def findings_html(rows: list[Finding]) -> str:
    if not rows:
        return "<p class='missing'>no branch metrics to summarise</p>"
    head = "".join(f"<th>{c}</th>" for c in ("branch", "the seed's claim", "measured", "oracle", "seed's recipe",
                                              "verdict"))
    body = "".join(
        f"<tr><td><a href='#{anchor(r.section)}'>{html.escape(r.branch)}</a></td><td>{html.escape(r.claim)}</td>"
        f"<td>{html.escape(r.measured)}<br><small>{html.escape(r.source)}</small></td><td>{html.escape(r.oracle)}</td>"
        f"<td>{html.escape(r.seed_recipe)}</td>"
        f"<td class='v-{r.verdict.replace(' ', '-')}'><b>{html.escape(r.verdict)}</b></td></tr>" for r in rows)
    return f"<table id='findings'><tr>{head}</tr>{body}</table>"


# ------------------------------------------------------------------------------------------------ provenance


def _git(root: Path, *args: str) -> str | None:
    import subprocess

    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def _flat_params(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def provenance_info(root: Path = Path(".")) -> dict:
    """What produced the page: commit (and whether code or params had uncommitted changes), UTC date, params that differ from the
    committed params.yaml (an experiment's), library versions, CPU/GPU, and whether the branch metrics are the
    committed pin. Every field is None where it cannot be known (no git, no params.yaml)."""
    import datetime
    import os
    import platform
    from importlib import metadata

    import yaml

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    commit = _git(root, "rev-parse", "--short", "HEAD")
    # dirty: changed code or params; the run's own outputs (reports/, dvc.lock files) do not count
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)reports",
                  ":(exclude)dvc.lock", ":(exclude)studies/*/dvc.lock")
    fresh = _git(root, "status", "--porcelain", "--", *(f"reports/{d}" for d in READ_DIRS))
    params_diff = None
    committed = _git(root, "show", "HEAD:params.yaml")
    if committed is not None and (root / "params.yaml").is_file():
        old = _flat_params(yaml.safe_load(committed))
        new = _flat_params(yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")))
        params_diff = {k: {"committed": old.get(k), "used": new.get(k)} for k in sorted(set(old) | set(new))
                       if old.get(k) != new.get(k)}
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:                                     # noqa: BLE001 (a broken CUDA setup: say none)
        gpu = None
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip()),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "params_changed": params_diff, "python": platform.python_version(),
            "versions": {n: version(n) for n in ("torch", "transformers", "faiss-cpu", "dvc", "numpy")},
            "cpu": f"{cpu} × {os.cpu_count()}", "gpu": gpu,
            "metrics_are_the_pin": None if fresh is None else not fresh.strip()}


def provenance_lines(p: dict) -> list[str]:
    """The provenance block as short lines (the same on the page and in summary.md)."""
    commit = p.get("commit") or "unknown (not a git checkout)"
    dirty = {True: " with uncommitted changes", False: ", clean", None: ""}[p.get("dirty")]
    changed = p.get("params_changed")
    if changed is None:
        params = "unknown (no committed params.yaml to compare)"
    elif not changed:
        params = "params.yaml as committed"
    else:
        params = "; ".join(f"{k}: {v['committed']!r} → {v['used']!r}" for k, v in list(changed.items())[:20])
    pin = {True: "the committed pin (reports/ unchanged from HEAD)",
           False: "fresh: re-computed here, the files differ from HEAD's pin (`recdag check-metrics` says whether "
                  "within tolerance)", None: "unknown"}[p.get("metrics_are_the_pin")]
    v = ", ".join(f"{k} {x}" for k, x in (p.get("versions") or {}).items() if x)
    return [f"commit {commit}{dirty}; generated {p.get('date_utc')} UTC", f"params: {params}",
            f"Python {p.get('python')}, {v}", f"CPU {p.get('cpu')}; GPU {p.get('gpu') or 'none'}",
            f"metrics: {pin}"]
