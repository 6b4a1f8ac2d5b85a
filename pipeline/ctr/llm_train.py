"""Training and evaluation of LLM-CTR with the shared loop.

A phase trains over ``llm.train_sources`` in order: one :class:`~pipeline.core.train.Trainer` fit per
source (fresh Adam over the trainable parameters, validation on that source's valid split by AUC, early
stopping, lr reduction, best reload), each continuing from the previous source's best weights. Every fit
keeps its resume point in its own folder, so a killed stage re-runs the finished sources as no-ops
(their ``last.pt`` says finished) and resumes the interrupted one at its step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.data import TensorData
from pipeline.core.train import LoopConfig, Trainer, ctr_metrics
from pipeline.ctr.llm import LlmCtr, LlmCtrTask, predict
from pipeline.ctr.llm_params import LlmParams
from pipeline.ctr.optim import PlainAdam

log = logging.getLogger(__name__)


def loop_config(llm: LlmParams, seed: int) -> LoopConfig:
    return LoopConfig(epochs=llm.epochs, batch_size=llm.batch_size, eval_every_steps=llm.eval_every_steps,
                      monitor="auc", patience=llm.patience, lr_decay=llm.lr_decay, min_lr=llm.min_lr,
                      checkpoint_every_steps=llm.checkpoint_every_steps, eval_batch_size=llm.eval_batch_size,
                      seed=seed)


@dataclass
class SourceData:
    name: str
    train: TensorData
    valid: TensorData


def fit_sources(model: LlmCtr, sources: list[SourceData], *, lr: float, clip_norm: float, loop: LoopConfig,
                checkpoint_root: Path, tb_root: Path | None = None) -> dict:
    """Train ``model`` over ``sources`` in order; returns per-source results and the joined curve."""
    params = model.trainable_parameters()
    if not params:
        raise ValueError("the model has no trainable parameters")
    results, curve, step0 = {}, [], 0
    for i, src in enumerate(sources):
        rule = PlainAdam([], params, lr_embed=lr, lr_net=lr, clip_norm=clip_norm)
        trainer = Trainer(model, rule, loop, embedding_params=[], task=LlmCtrTask("auc"),
                          checkpoint_dir=Path(checkpoint_root) / f"{i}-{src.name}",
                          tb_dir=(Path(tb_root) / src.name) if tb_root else None)
        t0 = time.perf_counter()
        state = trainer.fit(src.train, src.valid)
        wall = time.perf_counter() - t0
        if not state.finished:                        # LoopConfig.max_steps (tests): stopped as if killed
            return {"sources": results, "curve": curve, "interrupted": src.name}
        best = trainer.evaluate(src.valid)            # the best weights are loaded by fit
        rows_seen = state.global_step * loop.batch_size
        results[src.name] = {
            "train_rows": len(src.train), "valid_rows": len(src.valid),
            "valid_auc": float(best["auc"]), "valid_logloss": float(best["logloss"]),
            "best_step": state.best_step, "steps": state.global_step, "evaluations": len(state.history),
            "stopped_early": bool(state.stopped), "wall_seconds": round(wall, 2),
            "train_samples_per_s": round(min(rows_seen, len(src.train) * loop.epochs) / wall, 1) if wall else None,
        }
        for h in state.history:
            curve.append({"source": src.name, "step": step0 + h["step"], "source_step": h["step"],
                          "epoch": h["epoch"], "train_loss": h["train_loss"], "valid_auc": h["valid_auc"],
                          "valid_logloss": h["valid_logloss"], "lr": h["lr"]})
        step0 += state.global_step
        log.info("%s: best valid AUC %.5f at step %d (%d steps, %.1fs)", src.name, best["auc"], state.best_step,
                 state.global_step, wall)
    return {"sources": results, "curve": curve, "interrupted": None}


def score(y: np.ndarray, p: np.ndarray) -> dict:
    m = ctr_metrics(y, p)
    return {"auc": m["auc"], "logloss": m["logloss"]}


def evaluate_split(models: dict[str, tuple[object, int]], data: TensorData) -> dict:
    """AUC/logloss of every model on ``data`` beside the oracle's (synthetic data) and each model's gap."""
    y = data.y.numpy()
    out: dict = {"rows": len(data), "ctr": float(y.mean()) if len(y) else None}
    oracle = score(y, data.oracle.numpy()) if data.oracle is not None else None
    if oracle:
        out["oracle_auc"], out["oracle_logloss"] = oracle["auc"], oracle["logloss"]
    for name, (model, bs) in models.items():
        t0 = time.perf_counter()
        m = score(y, predict(model, data, bs))
        m["seconds"] = round(time.perf_counter() - t0, 2)
        if oracle:
            m["gap_to_oracle_auc"] = oracle["auc"] - m["auc"]
        out[name] = m
        log.info("%s %s: AUC %.5f logloss %.5f (%.1fs)", data.name, name, m["auc"], m["logloss"], m["seconds"])
    return out


def evaluation_markdown(report: dict) -> str:
    """The evaluation table: one row per (split, model), the oracle beside each split."""
    names = report["models"]
    lines = [f"# LLM-CTR evaluation ({'synthetic' if report['synthetic'] else 'real'} data)", "",
             f"Protocol: {report['protocol']}. LLM: {report['llm']['description']}.", "",
             "| split | rows | " + " | ".join(f"{n} AUC" for n in names) + " | oracle AUC | "
             + " | ".join(f"{n} logloss" for n in names) + " | oracle logloss |",
             "|---|---:|" + "---:|" * (2 * len(names) + 2)]

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    for split, m in report["metrics"].items():
        lines.append(f"| {split} | {m['rows']:,} | " + " | ".join(f(m[n]["auc"]) for n in names)
                     + f" | {f(m.get('oracle_auc'))} | " + " | ".join(f(m[n]["logloss"]) for n in names)
                     + f" | {f(m.get('oracle_logloss'))} |")
    ov = report.get("vocab_overlap_x4_test")
    if ov and ov.get("occurrence_all_fields") is not None:
        lines += ["", f"Vocabulary overlap: {100 * ov['occurrence_all_fields']:.1f}% of x4/test tokens (by occurrence, "
                      f"all fields) were seen in {ov['seen_in']}, against "
                      f"{100 * ov['in_domain_x4_train_occurrence_all_fields']:.1f}% in x4/train: the LLM-CTR models "
                      "trained on x1/x2 samples only see x4 through that share of its tokens; the baseline was "
                      f"trained on {', '.join(report['baseline_train_sources'])}."]
    h = report.get("headline")
    if h:
        lines += ["", "x4/test AUC: " + ", ".join(f"{k} {f(v)}" for k, v in h["x4_test_auc"].items()) + "."]
    return "\n".join(lines) + "\n"
