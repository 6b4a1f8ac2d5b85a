"""Stages llm_phase1 / llm_phase2: LLM-CTR training with the shared loop over ``llm.train_sources``.

Phase 1 trains the projector (baseline embeddings and encoder frozen); phase 2 starts from phase 1's best
projector and trains encoder + projector. The outputs hold the trainable parts only, never the LLM.
"""

from __future__ import annotations

import logging
import shutil

import typer

from pipeline.core.config import Params, load_params
from pipeline.core.errors import ConfigError, DataError
from pipeline.core.io import atomic_outputs, read_json, write_json
from stages.avazu.common import (BASELINE_DIR, ENCODED, LLM_DIR, LLM_PHASE_DIRS, MODELS, REPORTS, TB, VOCAB,
                                 ParamsOpt)

log = logging.getLogger(__name__)

# the llm.* keys a phase reads besides llm.prompt_cache and llm.phase<n> (dvc.yaml lists the same)
PHASE_KEYS = ("prompt", "answer_tokens", "dtype", "device", "projector_hidden", "train_sources", "epochs",
              "batch_size", "eval_batch_size", "eval_every_steps", "patience", "lr_decay", "min_lr", "clip_norm",
              "checkpoint_every_steps")


def check_sources(p: Params, datasets: dict) -> None:
    for i, s in enumerate(p.llm.train_sources):
        if s not in datasets:
            raise ConfigError(f"llm.train_sources[{i}]: '{s}' is not an encoded dataset (feature_map.json lists "
                              f"{sorted(datasets)}; the samples are named after avazu.sample.frac)")
        if "valid" not in datasets[s] or "train" not in datasets[s]:
            raise ConfigError(f"llm.train_sources[{i}]: '{s}' needs train and valid splits (it has {datasets[s]})")


def load_phase_model(phase: int, p: Params, features: list[str], *, device):
    """State dict and config of a finished phase, checked against the current params."""
    import torch

    d = LLM_PHASE_DIRS[phase]
    for f in (d / "model.pt", d / "config.json"):
        if not f.is_file():
            raise DataError(f, f"phase {phase} output missing", expected=f"the output of llm_phase{phase}")
    cfg = read_json(d / "config.json")
    for key, now in (("prompt", p.llm.prompt), ("answer_tokens", list(p.llm.answer_tokens)),
                     ("features", features), ("projector_hidden", p.llm.projector_hidden)):
        if cfg.get(key) != now:
            raise DataError(d / "config.json", f"trained with {key}={cfg.get(key)!r}, params say {now!r}",
                            field=key, expected=f"re-run llm_phase{phase} (dvc repro)")
    state = torch.load(d / "model.pt", weights_only=True, map_location=device)
    return state, cfg


def llm_phase(phase: int = typer.Argument(..., min=1, max=2, help="1: projector; 2: encoder + projector"),
              params: str = ParamsOpt) -> None:
    """Train LLM-CTR phase 1 (projector) or 2 (encoder + projector) over ``llm.train_sources`` in order."""
    import torch

    from pipeline.core.seeding import derive_seed, seed_everything
    from pipeline.core.train import init_distributed
    from pipeline.ctr import llm as L
    from pipeline.ctr.baseline import run_key
    from pipeline.ctr.llm_init import resolve_device, resolve_dtype
    from pipeline.ctr.llm_train import SourceData, fit_sources, loop_config

    p = load_params(params)
    l = p.llm
    rank, world = init_distributed()
    features, sizes, datasets = L.feature_map(VOCAB / "feature_map.json")
    check_sources(p, datasets)
    device = resolve_device(l.device)
    dtype = resolve_dtype(l.dtype, device)
    phase1_state = load_phase_model(1, p, features, device="cpu")[0] if phase == 2 else None
    baseline = L.load_baseline(BASELINE_DIR, features, sizes)
    bundle = L.load_bundle(LLM_DIR, prompt=l.prompt, answer_tokens=l.answer_tokens, dtype=dtype, device=device)
    fingerprints = [L.dir_fingerprint(BASELINE_DIR), L.dir_fingerprint(LLM_DIR)]
    seed_everything(derive_seed(p.seed, f"llm_phase{phase}") % 2**63)
    if phase == 1:
        model = L.build_llm_ctr(baseline, bundle, projector_hidden=l.projector_hidden, train_encoder=False,
                                prompt_cache=l.prompt_cache, seed=derive_seed(p.seed, "llm", "projector") % 2**63)
    else:
        proj, _ = L.split_state(phase1_state)
        model = L.build_llm_ctr(baseline, bundle, projector_hidden=l.projector_hidden, train_encoder=True,
                                prompt_cache=l.prompt_cache, projector_state=proj)
        fingerprints.append(L.dir_fingerprint(LLM_PHASE_DIRS[1]))
    lr = (l.phase1 if phase == 1 else l.phase2).lr
    # the resume folder is keyed by everything the run depends on (prompt_cache aside: same maths)
    key = run_key(p.seed, phase, {k: getattr(l, k) for k in (*PHASE_KEYS, f"phase{phase}")}, fingerprints,
                  L.dir_fingerprint(VOCAB), str(dtype), world)
    ckpt_root = MODELS / ".ckpt" / f"llm_phase{phase}-{key}"
    sources = [SourceData(s, L.data_for(ENCODED, s, "train", features), L.data_for(ENCODED, s, "valid", features))
               for s in l.train_sources]
    log.info("phase %d: %d trainable parameters (%s), LLM %s in %s on %s, prompt %d tokens, cache %s", phase,
             sum(q.numel() for q in model.trainable_parameters()),
             "projector" if phase == 1 else "encoder + projector", type(bundle.llm).__name__, dtype, device,
             model.num_prompt_tokens, l.prompt_cache)
    result = fit_sources(model, sources, lr=lr, clip_norm=l.clip_norm, loop=loop_config(l, p.seed),
                         checkpoint_root=ckpt_root, tb_root=TB / f"llm_phase{phase}")
    if rank != 0:
        return
    synthetic = all(s.valid.oracle is not None for s in sources)
    if synthetic:
        from pipeline.core.train import ctr_metrics

        for s in sources:
            o = ctr_metrics(s.valid.y.numpy(), s.valid.oracle.numpy())
            r = result["sources"][s.name]
            r.update(oracle_auc=o["auc"], oracle_logloss=o["logloss"], gap_to_oracle_auc=o["auc"] - r["valid_auc"])
    llm_info = read_json(LLM_DIR / "recdag_llm.json") if (LLM_DIR / "recdag_llm.json").is_file() else {}
    report = {
        "dataset": f"avazu {' then '.join(l.train_sources)} ({'synthetic' if synthetic else 'real'})",
        "synthetic": synthetic,
        "split": "valid split of each train source (best checkpoint of that source's fit)",
        "protocol": "pointwise CTR: AUC and logloss over every row of the split",
        "phase": phase, "trains": "projector" if phase == 1 else "encoder + projector", "lr": lr,
        "train_sources": list(l.train_sources), "prompt_cache": l.prompt_cache, "dtype": str(dtype).replace("torch.", ""),
        "device": device.type, "llm": llm_info.get("source", l.source), "llm_parameters": llm_info.get("num_parameters"),
        "prompt_tokens": model.num_prompt_tokens,
        "trainable_parameters": sum(q.numel() for q in model.trainable_parameters()),
        "metrics": result["sources"],
    }
    config = {"phase": phase, "train_encoder": phase == 2, "features": features,
              "projector_hidden": l.projector_hidden, "hidden_size": bundle.hidden_size, "prompt": l.prompt,
              "prompt_tokens": model.num_prompt_tokens, "answer_tokens": list(l.answer_tokens),
              "answer_ids": bundle.answer_ids, "train_sources": list(l.train_sources),
              "baseline_fingerprint": fingerprints[0], "llm_fingerprint": fingerprints[1]}
    with atomic_outputs() as out:
        d = out.dir(LLM_PHASE_DIRS[phase])
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, d / "model.pt")
        write_json(d / "config.json", config)
        write_json(out.file(REPORTS / f"llm_phase{phase}.json"), report)
        write_json(out.file(REPORTS / f"llm_phase{phase}_curve.json"), result["curve"])
    shutil.rmtree(ckpt_root, ignore_errors=True)
