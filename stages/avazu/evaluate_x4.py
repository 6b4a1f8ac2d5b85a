"""Stage avazu_evaluate_x4: baseline vs LLM-CTR phase 1 vs phase 2 on the test split of every
``llm.eval_sources`` (x4 the headline), beside the oracle and the vocabulary overlap."""

from __future__ import annotations

import logging

from pipeline.core.config import load_params
from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, read_json, write_json
from stages.avazu.common import BASELINE_DIR, ENCODED, LLM_DIR, REPORTS, VOCAB, ParamsOpt
from stages.avazu.llm_phase import load_phase_model

log = logging.getLogger(__name__)

MODEL_NAMES = ("baseline", "llm_phase1", "llm_phase2")


def evaluate_x4(params: str = ParamsOpt) -> None:
    """x1/x2/x4 test AUC and logloss of the baseline and both LLM-CTR phases, beside the oracle."""
    from pipeline.ctr import llm as L
    from pipeline.ctr.llm_init import resolve_device, resolve_dtype
    from pipeline.ctr.llm_train import evaluate_split, evaluation_markdown

    p = load_params(params)
    l, a = p.llm, p.avazu
    features, sizes, datasets = L.feature_map(VOCAB / "feature_map.json")
    for i, s in enumerate(l.eval_sources):
        if s not in a.sources:
            raise ConfigError(f"llm.eval_sources[{i}]: '{s}' is not in avazu.sources {a.sources}")
        if "test" not in datasets.get(s, []):
            raise ConfigError(f"llm.eval_sources[{i}]: '{s}' has no encoded test split")
    device = resolve_device(l.device)
    dtype = resolve_dtype(l.dtype, device)
    baseline = L.load_baseline(BASELINE_DIR, features, sizes)
    baseline.model.to(device)
    bundle = L.load_bundle(LLM_DIR, prompt=l.prompt, answer_tokens=l.answer_tokens, dtype=dtype, device=device)
    models = {"baseline": (baseline.model, l.eval_batch_size * 4)}
    for phase in (1, 2):
        state, _ = load_phase_model(phase, p, features, device="cpu")
        proj, enc = L.split_state(state)
        models[f"llm_phase{phase}"] = (L.build_llm_ctr(baseline, bundle, projector_hidden=l.projector_hidden,
                                                        train_encoder=False, prompt_cache=l.prompt_cache,
                                                        projector_state=proj, encoder_state=enc),
                                       l.eval_batch_size)
    metrics = {}
    for s in l.eval_sources:
        metrics[f"{s}/test"] = evaluate_split(models, L.data_for(ENCODED, s, "test", features))
    synthetic = all("oracle_auc" in m for m in metrics.values())
    vocab_report = REPORTS / "vocab.json"
    overlap = None
    if vocab_report.is_file():
        ov = read_json(vocab_report).get("overlap_x4_test")
        if ov:
            overlap = {k: ov.get(k) for k in ("seen_in", "occurrence_all_fields",
                                               "in_domain_x4_train_occurrence_all_fields")}
    llm_info = read_json(LLM_DIR / "recdag_llm.json") if (LLM_DIR / "recdag_llm.json").is_file() else {}
    desc = (f"{llm_info.get('model_class', type(bundle.llm).__name__)} from llm.source={l.source}"
            + (f" ({l.name})" if l.source == "hf" else "")
            + f", {llm_info.get('num_parameters', 0):,} parameters, {str(dtype).replace('torch.', '')} on "
            f"{device.type}, prompt {len(bundle.prompt_ids)} tokens + {len(features)} soft tokens")
    report = {
        "dataset": f"avazu {', '.join(f'{s}/test' for s in l.eval_sources)} ({'synthetic' if synthetic else 'real'})",
        "synthetic": synthetic,
        "split": "test",
        "protocol": "pointwise CTR: AUC and logloss over every row of each test split",
        "models": list(MODEL_NAMES),
        "baseline_train_sources": list(a.baseline_sources),
        "llm_train_sources": list(l.train_sources),
        "llm": {"source": l.source, "description": desc, "prompt_cache": l.prompt_cache},
        "vocab_overlap_x4_test": overlap,
        "metrics": metrics,
    }
    if "x4/test" in metrics:
        m = metrics["x4/test"]
        report["headline"] = {
            "x4_test_auc": {**{n: m[n]["auc"] for n in MODEL_NAMES}, "oracle": m.get("oracle_auc")},
            "x4_test_logloss": {**{n: m[n]["logloss"] for n in MODEL_NAMES}, "oracle": m.get("oracle_logloss")},
            "llm_phase2_minus_baseline_auc": m["llm_phase2"]["auc"] - m["baseline"]["auc"],
        }
    with atomic_outputs() as out:
        write_json(out.file(REPORTS / "evaluation.json"), report)
        out.file(REPORTS / "evaluation.md").write_text(evaluation_markdown(report), encoding="utf-8")
    if "headline" in report:
        log.info("x4/test AUC: %s", report["headline"]["x4_test_auc"])
