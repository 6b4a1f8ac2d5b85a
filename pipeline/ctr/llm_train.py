"""Training and evaluation of LLM-CTR with the shared loop.

A phase trains over ``llm_train.sources`` in order: one :class:`~pipeline.core.train.Trainer` fit per
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

import torch

from pipeline.core.calibration import ECE_BINS
from pipeline.core.data import TensorData
from pipeline.core.errors import DataError
from pipeline.core.io import load_weights, read_json
from pipeline.core.optim import PlainAdam
from pipeline.core.seeding import derive_seed, seed_everything
from pipeline.core.train import LoopConfig, Trainer
from pipeline.ctr import llm as L
from pipeline.ctr.data import EncodedAvazu
from pipeline.ctr.llm import LlmCtr
from pipeline.ctr.llm_init import INFO_FILE, resolve_device, resolve_dtype
from pipeline.ctr.params import LlmCtrParams, LlmTrainParams
from pipeline.ctr.task import CtrTask, beside_oracle, predict_logits, sigmoid, split_report

log = logging.getLogger(__name__)

PROTOCOL = "pointwise CTR: AUC and logloss over every row of the split"
READOUT_INIT_ROWS = 8192     # first rows of the first train source that initialise an affine readout
MODEL_NAMES = ("baseline", "llm_phase1", "llm_phase2")           # the leak-free protocol's models
SEED_NAMES = ("llm_phase1_seed", "llm_phase2_seed")             # the same trained under the seed's (leaky) one


def loop_config(train: LlmTrainParams, eval_batch_size: int, seed: int) -> LoopConfig:
    return LoopConfig(epochs=train.epochs, batch_size=train.batch_size, eval_every_steps=train.eval_every_steps,
                      patience=train.patience, lr_decay=train.lr_decay, min_lr=train.min_lr,
                      checkpoint_every_steps=train.checkpoint_every_steps, eval_batch_size=eval_batch_size,
                      seed=seed)


@dataclass
class LlmPaths:
    """Where the LLM-CTR stages find their inputs (the stages own the paths; the library reads them)."""

    vocab: Path
    encoded: Path
    baseline: Path
    llm: Path
    phases: dict                     # {1: Path, 2: Path}
    leakage: Path | None = None      # avazu_leakage's masks: given = the leak_free protocol (rows dropped)

    @property
    def protocol(self) -> str:
        return "leak_free" if self.leakage is not None else "seed_leaky"


@dataclass
class SourceData:
    name: str
    train: TensorData
    valid: TensorData
    excluded: dict | None = None     # rows dropped as x4 valid / test events (leak_free), per split


def drop_leaked(data: TensorData, leakage: Path | None, dataset: str, split: str) -> tuple[TensorData, int]:
    """``data`` without the rows avazu_leakage marked as x4 valid / test events (``leakage`` None: the
    seed's protocol, nothing dropped). Returns (data, rows dropped)."""
    if leakage is None:
        return data, 0
    path = Path(leakage) / dataset / f"{split}.npy"
    if not path.is_file():
        raise DataError(path, "leakage mask missing", expected=f"{dataset}/{split} written by avazu_leakage")
    mask = np.load(path)
    if len(mask) != len(data):
        raise DataError(path, f"has {len(mask):,} rows, {data.name} has {len(data):,}",
                        expected="the mask of this encoded split (re-run avazu_leakage)")
    return data.select(~mask), int(mask.sum())


def fit_sources(model: LlmCtr, sources: list[SourceData], *, lr: float, clip_norm: float, loop: LoopConfig,
                checkpoint_root: Path, tb_root: Path | None = None) -> dict:
    """Train ``model`` over ``sources`` in order; returns per-source results and the joined curve."""
    params = model.trainable_parameters()
    if not params:
        raise ValueError("the model has no trainable parameters")
    results, curve, step0 = {}, [], 0
    for i, src in enumerate(sources):
        rule = PlainAdam([], params, lr_embed=lr, lr_net=lr, clip_norm=clip_norm)
        trainer = Trainer(model, rule, loop, embedding_params=[], task=CtrTask("auc"),
                          checkpoint_dir=Path(checkpoint_root) / f"{i}-{src.name}",
                          tb_dir=(Path(tb_root) / src.name) if tb_root else None)
        t0 = time.perf_counter()
        state = trainer.fit(src.train, src.valid)
        wall = time.perf_counter() - t0
        if not state.finished:                        # LoopConfig.max_steps (tests): stopped as if killed
            return {"sources": results, "curve": curve, "interrupted": src.name}
        z = predict_logits(trainer.raw_model, src.valid, loop.eval_batch_size, trainer.rank, trainer.world)
        best = split_report(src.valid, z)             # the best weights are loaded by fit
        rows_seen = state.global_step * loop.batch_size
        results[src.name] = {
            "train_rows": len(src.train), "valid_rows": len(src.valid),
            "valid_auc": float(best["auc"]), "valid_logloss": float(best["logloss"]),
            **{f"valid_{k}": best[k] for k in ("ece", "calibration_ratio", "normalized_entropy",
                                                "pearson_logit_vs_oracle", "spearman_logit_vs_oracle",
                                                "kl_oracle_model") if k in best},
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


def llm_info(llm_dir: Path) -> dict:
    f = Path(llm_dir) / INFO_FILE
    return read_json(f) if f.is_file() else {}


def load_phase(paths: LlmPaths, phase: int, *, prompt: str, answer_tokens: list[str], features: list[str],
               projector_hidden: int, readout: str, projector: str = "per_field", device="cpu") -> tuple[dict, dict]:
    """State dict and config of a finished phase, checked against the current params."""
    d = paths.phases[phase]
    for f in (d / "model.pt", d / "config.json"):
        if not f.is_file():
            raise DataError(f, f"phase {phase} output missing", expected=f"the output of avazu_llm_phase@{phase}")
    cfg = read_json(d / "config.json")
    for key, now in (("prompt", prompt), ("answer_tokens", list(answer_tokens)), ("features", features),
                     ("projector_hidden", projector_hidden), ("readout", readout), ("projector", projector)):
        was = cfg.get(key, "per_field" if key == "projector" else None)     # written before the option existed
        if was != now:
            raise DataError(d / "config.json", f"trained with {key}={was!r}, params say {now!r}",
                            field=key, expected=f"re-run avazu_llm_phase@{phase} (dvc repro)")
    return load_weights(d / "model.pt", map_location=device), cfg


@dataclass
class PhaseRun:
    """One LLM-CTR phase, built from the baseline, the LLM and (phase 2) phase 1's projector."""

    phase: int
    model: LlmCtr
    bundle: object
    enc: EncodedAvazu
    sources: list[SourceData]
    dtype: torch.dtype
    device: torch.device
    fingerprints: list[str]
    protocol: str = "seed_leaky"     # leak_free: x4 valid / test events dropped from training and validation

    @classmethod
    def build(cls, phase: int, paths: LlmPaths, *, seed: int, llm, llm_ctr: LlmCtrParams,
              train: LlmTrainParams) -> "PhaseRun":
        """Phase 1: a seeded projector, encoder frozen. Phase 2: phase 1's best projector, encoder trained."""
        enc = EncodedAvazu(paths.vocab, paths.encoded)
        enc.require("llm_train.sources", train.sources, ("train", "valid"))
        device = resolve_device(llm_ctr.device)
        dtype = resolve_dtype(llm_ctr.dtype, device)
        phase1 = (load_phase(paths, 1, prompt=llm.prompt, answer_tokens=llm.answer_tokens, features=enc.features,
                             projector_hidden=llm_ctr.projector_hidden, readout=llm_ctr.readout,
                             projector=llm_ctr.projector)[0]
                  if phase == 2 else None)
        baseline = L.load_baseline(paths.baseline, enc.features, enc.vocab_sizes)
        bundle = L.load_bundle(paths.llm, prompt=llm.prompt, answer_tokens=llm.answer_tokens, dtype=dtype,
                               device=device)
        fingerprints = [L.dir_fingerprint(paths.baseline), L.dir_fingerprint(paths.llm)]
        seed_everything(derive_seed(seed, f"llm_phase{phase}") % 2**63)
        sources = []
        for s in train.sources:
            (tr, n_tr), (va, n_va) = (drop_leaked(enc.tensors(s, sp), paths.leakage, s, sp) for sp in ("train", "valid"))
            sources.append(SourceData(s, tr, va, {"train": n_tr, "valid": n_va}))
        if phase == 1:
            model = L.build_llm_ctr(baseline, bundle, projector_hidden=llm_ctr.projector_hidden, train_encoder=False,
                                    prompt_cache=llm_ctr.prompt_cache, readout=llm_ctr.readout,
                                    projector=llm_ctr.projector,
                                    seed=derive_seed(seed, "llm", "projector") % 2**63)
            first = sources[0].train                  # the affine readout starts at its rate, unit-variance logits
            model.init_readout(first.x[:READOUT_INIT_ROWS], float(first.y.float().mean()) if len(first) else 0.5)
        else:
            model = L.build_llm_ctr(baseline, bundle, projector_hidden=llm_ctr.projector_hidden, train_encoder=True,
                                    prompt_cache=llm_ctr.prompt_cache, projector_state=L.split_state(phase1)[0],
                                    projector=llm_ctr.projector,
                                    readout=llm_ctr.readout, readout_state=L.part_state(phase1, "readout"))
            fingerprints.append(L.dir_fingerprint(paths.phases[1]))
        log.info("phase %d: %d trainable parameters (%s), LLM %s in %s on %s, prompt %d tokens, cache %s", phase,
                 sum(q.numel() for q in model.trainable_parameters()),
                 "projector" if phase == 1 else "encoder + projector", type(bundle.llm).__name__, dtype, device,
                 model.num_prompt_tokens, llm_ctr.prompt_cache)
        return cls(phase, model, bundle, enc, sources, dtype, device, fingerprints, paths.protocol)

    def key_parts(self, seed: int, llm, llm_ctr: LlmCtrParams, train: LlmTrainParams, lr: float, world: int):
        """Everything the run depends on, for its resume folder (prompt_cache aside: same maths)."""
        ctr = {k: v for k, v in llm_ctr.__dict__.items() if k != "prompt_cache"}
        return (seed, self.phase, llm.prompt, list(llm.answer_tokens), ctr, train, lr, self.fingerprints,
                L.dir_fingerprint(self.enc.fmap_path.parent), str(self.dtype), world)

    def fit(self, train: LlmTrainParams, *, lr: float, eval_batch_size: int, seed: int, checkpoint_root: Path,
            tb_root: Path | None) -> dict:
        return fit_sources(self.model, self.sources, lr=lr, clip_norm=train.clip_norm,
                           loop=loop_config(train, eval_batch_size, seed), checkpoint_root=checkpoint_root,
                           tb_root=tb_root)

    def outputs(self, result: dict, *, llm, llm_ctr: LlmCtrParams, train: LlmTrainParams, lr: float,
                llm_dir: Path) -> tuple[dict, dict, dict]:
        """(state_dict, config.json, metrics report) of the finished phase."""
        synthetic = all(s.valid.oracle is not None for s in self.sources)
        for s in self.sources:
            r = result["sources"][s.name]
            o = beside_oracle({"auc": r["valid_auc"]}, s.valid)
            r.update({k: o[k] for k in ("oracle_auc", "oracle_logloss", "gap_to_oracle_auc") if k in o})
        info = llm_info(llm_dir)
        n_train = sum(q.numel() for q in self.model.trainable_parameters())
        report = {
            "dataset": f"avazu {' then '.join(train.sources)} ({'synthetic' if synthetic else 'real'})",
            "synthetic": synthetic,
            "split": "valid split of each train source (best checkpoint of that source's fit)",
            "protocol": PROTOCOL, "leakage_protocol": self.protocol,
            "rows_excluded": {s.name: s.excluded for s in self.sources}, "phase": self.phase,
            "trains": "projector" if self.phase == 1 else "encoder + projector", "lr": lr,
            "readout": llm_ctr.readout, "projector": llm_ctr.projector,
            "train_sources": list(train.sources), "prompt_cache": llm_ctr.prompt_cache,
            "dtype": str(self.dtype).replace("torch.", ""), "device": self.device.type,
            "llm": info.get("source"), "llm_parameters": info.get("num_parameters"),
            "prompt_tokens": self.model.num_prompt_tokens, "trainable_parameters": n_train,
            "metrics": result["sources"],
        }
        config = {"phase": self.phase, "train_encoder": self.phase == 2, "features": self.enc.features,
                  "projector": llm_ctr.projector, "projector_hidden": llm_ctr.projector_hidden,
                  "readout": llm_ctr.readout,
                  "readout_state": {k: float(v) for k, v in self.model.readout.state_dict().items()},
                  "hidden_size": self.bundle.hidden_size,
                  "prompt": llm.prompt, "prompt_tokens": self.model.num_prompt_tokens,
                  "answer_tokens": list(llm.answer_tokens), "answer_ids": self.bundle.answer_ids,
                  "train_sources": list(train.sources), "leakage_protocol": self.protocol,
                  "rows_excluded": {s.name: s.excluded for s in self.sources},
                  "baseline_fingerprint": self.fingerprints[0],
                  "llm_fingerprint": self.fingerprints[1]}
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return state, config, report


def evaluate_split(models: dict[str, tuple[object, int]], data: TensorData) -> tuple[dict, dict]:
    """Every model's figures on ``data`` (:func:`~pipeline.ctr.task.split_report`: AUC, logloss,
    calibration, and on synthetic data the oracle and each model's gap and agreement with it), and each
    model's logits (for the prediction files and the reliability diagram)."""
    y = data.y.numpy()
    out: dict = {"rows": len(data), "ctr": float(y.mean()) if len(y) else None}
    logits = {}
    for name, (model, bs) in models.items():
        t0 = time.perf_counter()
        logits[name] = predict_logits(model, data, bs)
        seconds = round(time.perf_counter() - t0, 2)
        m = split_report(data, logits[name])
        for k in ("oracle_auc", "oracle_logloss", "oracle_ece"):      # the split's, not the model's
            if k in m:
                out[k] = m.pop(k)
        m.pop("rows")
        out["base_rate_logloss"] = m.pop("base_rate_logloss")
        m.pop("ctr")
        m["seconds"] = seconds
        out[name] = m
        log.info("%s %s: AUC %.5f logloss %.5f ECE %.4f (%.1fs)", data.name, name, m["auc"], m["logloss"], m["ece"],
                 m["seconds"])
    return out, logits


def evaluate_x4(paths: LlmPaths, *, llm, llm_ctr: LlmCtrParams, eval_sources: list[str],
                vocab_report: Path | None = None, seed_phases: dict | None = None) -> dict:
    """The baseline and both phases on the test split of every ``eval_sources`` beside the oracle, with the
    vocabulary overlap of x4/test (from the vocab report) and what each model was trained on. ``paths.phases``
    are the leak-free phases; ``seed_phases`` ({1: dir, 2: dir}), when given, the seed-protocol (leaky) ones,
    scored beside them as ``llm_phase<n>_seed``."""
    enc = EncodedAvazu(paths.vocab, paths.encoded)
    enc.require("llm_eval.sources", eval_sources, ("test",))
    device = resolve_device(llm_ctr.device)
    dtype = resolve_dtype(llm_ctr.dtype, device)
    baseline = L.load_baseline(paths.baseline, enc.features, enc.vocab_sizes)
    baseline.model.to(device)
    bundle = L.load_bundle(paths.llm, prompt=llm.prompt, answer_tokens=llm.answer_tokens, dtype=dtype, device=device)
    models = {"baseline": (baseline.model, llm_ctr.eval_batch_size * 4)}
    phase_cfg = {}
    runs = [(n, paths, f"llm_phase{n}") for n in (1, 2)]
    if seed_phases:
        runs += [(n, LlmPaths(paths.vocab, paths.encoded, paths.baseline, paths.llm, seed_phases), f"llm_phase{n}_seed")
                 for n in (1, 2)]
    for phase, where, name in runs:
        state, phase_cfg[name] = load_phase(where, phase, prompt=llm.prompt, answer_tokens=llm.answer_tokens,
                                            features=enc.features, projector_hidden=llm_ctr.projector_hidden,
                                            readout=llm_ctr.readout, projector=llm_ctr.projector)
        proj, encoder = L.split_state(state)
        models[name] = (L.build_llm_ctr(baseline, bundle, projector_hidden=llm_ctr.projector_hidden,
                                        train_encoder=False, prompt_cache=llm_ctr.prompt_cache, projector_state=proj,
                                        encoder_state=encoder, readout=llm_ctr.readout,
                                        readout_state=L.part_state(state, "readout"), projector=llm_ctr.projector),
                        llm_ctr.eval_batch_size)
    metrics, predictions = {}, {}
    for s in eval_sources:
        data = enc.tensors(s, "test")
        metrics[f"{s}/test"], logits = evaluate_split(models, data)
        predictions[f"{s}/test"] = (data, logits)
    synthetic = all("oracle_auc" in m for m in metrics.values())
    overlap = None
    if vocab_report is not None and Path(vocab_report).is_file():
        ov = read_json(vocab_report).get("overlap_x4_test")
        if ov:
            overlap = {k: ov.get(k) for k in ("seen_in", "occurrence_all_fields",
                                               "in_domain_x4_train_occurrence_all_fields")}
    info = llm_info(paths.llm)
    desc = (f"{info.get('model_class', type(bundle.llm).__name__)} from llm.source={info.get('source')}"
            + (f" ({info['name']})" if info.get("name") else "")
            + f", {info.get('num_parameters', 0):,} parameters, {str(dtype).replace('torch.', '')} on "
            f"{device.type}, prompt {len(bundle.prompt_ids)} tokens + {len(enc.features)} soft tokens")
    report = {
        "dataset": f"avazu {', '.join(f'{s}/test' for s in eval_sources)} ({'synthetic' if synthetic else 'real'})",
        "synthetic": synthetic, "split": "test",
        "protocol": "pointwise CTR: AUC, logloss and calibration (equal-mass ECE, mean predicted vs observed CTR, "
                    "normalized entropy) over every row of each test split",
        "models": list(models),
        "leakage_protocol": {n: c.get("leakage_protocol", "seed_leaky") for n, c in phase_cfg.items()},
        "rows_excluded": {n: c.get("rows_excluded") for n, c in phase_cfg.items()},
        "baseline_train_sources": list(baseline.train_sources),
        "llm_train_sources": list(phase_cfg["llm_phase2"].get("train_sources", [])),
        "llm": {"source": info.get("source"), "description": desc, "prompt_cache": llm_ctr.prompt_cache,
                "readout": llm_ctr.readout},
        "vocab_overlap_x4_test": overlap,
        "metrics": metrics,
    }
    if "x4/test" in metrics:
        m = metrics["x4/test"]
        report["headline"] = {
            "x4_test_auc": {**{n: m[n]["auc"] for n in models}, "oracle": m.get("oracle_auc")},
            "x4_test_logloss": {**{n: m[n]["logloss"] for n in models}, "oracle": m.get("oracle_logloss"),
                                "base_rate": m["base_rate_logloss"]},
            "x4_test_ece": {**{n: m[n]["ece"] for n in models}, "oracle": m.get("oracle_ece")},
            "llm_phase2_minus_baseline_auc": m["llm_phase2"]["auc"] - m["baseline"]["auc"],
        }
    return report, predictions


def reliability_rows(predictions: dict) -> list[dict]:
    """reports/avazu/reliability.json (a DVC plots file): the equal-mass reliability bins of every model,
    and of the oracle on synthetic data, on every evaluated split."""
    from pipeline.core.calibration import reliability_bins

    rows = []
    for split, (data, logits) in predictions.items():
        scorers = {n: sigmoid(z) for n, z in logits.items()}
        if data.oracle is not None:
            scorers["oracle"] = data.oracle.numpy()
        for name, p in scorers.items():
            for i, b in enumerate(reliability_bins(data.y.numpy(), p)):
                rows.append({"split": split, "model": name, "bin": i, **b})
    return rows


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
    lines += ["", f"Calibration (equal-mass ECE over {ECE_BINS} bins; ratio = mean predicted / observed CTR; NE = "
                  "logloss / base-rate logloss, < 1 beats the constant predictor)"
              + (" and agreement with the oracle (Pearson / Spearman of logits against logit(p_true), mean "
                 "KL(p_true ‖ p̂) in nats)" if report["synthetic"] else "") + ":", "",
              "| split | model | ECE | mean pred | observed | ratio | NE |"
              + (" Pearson | Spearman | KL |" if report["synthetic"] else ""),
              "|---|---|" + "---:|" * (8 if report["synthetic"] else 5)]
    for split, m in report["metrics"].items():
        for n in names:
            r = m[n]
            lines.append(f"| {split} | {n} | {f(r['ece'])} | {f(r['mean_pred'])} | {f(m['ctr'])} | "
                         f"{f(r['calibration_ratio'])} | {f(r['normalized_entropy'])} |"
                         + (f" {f(r.get('pearson_logit_vs_oracle'))} | {f(r.get('spearman_logit_vs_oracle'))} | "
                            f"{f(r.get('kl_oracle_model'))} |" if report["synthetic"] else ""))
        if m.get("oracle_ece") is not None:
            lines.append(f"| {split} | oracle | {f(m['oracle_ece'])} | | {f(m['ctr'])} | | "
                         f"{f(m['oracle_logloss'] / m['base_rate_logloss'] if m.get('base_rate_logloss') else None)} |"
                         " 1 | 1 | 0 |")
    ov = report.get("vocab_overlap_x4_test")
    if ov and ov.get("occurrence_all_fields") is not None:
        lines += ["", f"Vocabulary overlap: {100 * ov['occurrence_all_fields']:.1f}% of x4/test tokens (by occurrence, "
                      f"all fields) were seen in {ov['seen_in']}, against "
                      f"{100 * ov['in_domain_x4_train_occurrence_all_fields']:.1f}% in x4/train: the LLM-CTR models "
                      "trained on x1/x2 samples only see x4 through that share of its tokens; the baseline was "
                      f"trained on {', '.join(report['baseline_train_sources'])}."]
    prot = report.get("leakage_protocol") or {}
    if prot:
        excl = report.get("rows_excluded") or {}
        lines += ["", "Protocols: " + "; ".join(
            f"`{n}` {p}" + (f" ({', '.join(f'{s}: {sum(v.values()):,} rows dropped' for s, v in excl[n].items())})"
                            if p == "leak_free" and excl.get(n) else "") for n, p in prot.items()) + ". "
            "`leak_free` drops the training / validation rows that are x4 valid / test events (avazu_leakage); "
            "`seed_leaky` keeps them, as the seed's protocol does: its figures are inflated by that leak."]
    h = report.get("headline")
    if h:
        lines += ["", "x4/test AUC: " + ", ".join(f"{k} {f(v)}" for k, v in h["x4_test_auc"].items()) + "."]
        if h["x4_test_logloss"].get("base_rate") is not None:
            lines += ["", f"x4/test logloss of the constant base-rate predictor: {f(h['x4_test_logloss']['base_rate'])}."]
    return "\n".join(lines) + "\n"
