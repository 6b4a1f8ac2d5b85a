"""Stage avazu_evaluate_x4: baseline vs LLM-CTR phase 1 vs phase 2 on the test split of every
``llm_eval.sources`` (x4 the headline), beside the oracle and the vocabulary overlap; the leak-free models
beside the same trained under the seed's (leaky) protocol."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import LlmCtrParams, LlmEvalParams, LlmParams
from stages.avazu.common import (BASELINE_DIR, ENCODED, LLM_DIR, PREDICTIONS, REPORTS, VOCAB, ParamsOpt,
                                 llm_phase_dirs)

log = logging.getLogger(__name__)

PARAMS = ("llm.prompt", "llm.answer_tokens", "llm_ctr", "llm_eval")


def evaluate_x4(params: str = ParamsOpt) -> None:
    """x1/x2/x4 test AUC, logloss and calibration of the baseline and both LLM-CTR phases, beside the oracle;
    every model's test predictions (data/avazu/predictions/evaluation/<model>/<source>/test.parquet) and the
    reliability bins (reports/avazu/reliability.json)."""
    from pipeline.ctr.llm_train import LlmPaths, evaluate_x4 as run_evaluation, evaluation_markdown, reliability_rows
    from pipeline.ctr.predictions import write_predictions

    p = load_stage(params, PARAMS, (LlmParams, LlmCtrParams, LlmEvalParams))
    paths = LlmPaths(VOCAB, ENCODED, BASELINE_DIR, LLM_DIR, llm_phase_dirs("leak_free"))
    report, predictions = run_evaluation(paths, llm=p.llm, llm_ctr=p.llm_ctr, eval_sources=p.llm_eval.sources,
                            vocab_report=REPORTS / "vocab.json", seed_phases=llm_phase_dirs("seed_leaky"))
    with atomic_outputs() as out:
        write_json(out.file(REPORTS / "evaluation.json"), report)
        out.file(REPORTS / "evaluation.md").write_text(evaluation_markdown(report), encoding="utf-8")
        write_json(out.file(REPORTS / "reliability.json"), reliability_rows(predictions))
        d = out.dir(PREDICTIONS / "evaluation")
        for split, (data, logits) in predictions.items():
            for name, z in logits.items():
                (d / name / split).parent.mkdir(parents=True, exist_ok=True)
                write_predictions(d / name / f"{split}.parquet", data, z)
    if "headline" in report:
        log.info("x4/test AUC: %s", report["headline"]["x4_test_auc"])
