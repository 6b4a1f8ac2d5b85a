"""Stage llm_study_run@<variant> (studies/llm/dvc.yaml): LLM-CTR phase 1 + phase 2 with VARIANT's LLM on the
study's leak-free sample, scored on the sampled x4 test rows beside the baseline and the oracle."""

from __future__ import annotations

import logging

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.llm_study import LlmStudyParams
from pipeline.ctr.params import LlmCtrParams, LlmParams, LlmPhase1Params, LlmPhase2Params, LlmTrainParams
from stages.avazu.common import BASELINE_DIR, CKPT, ENCODED, LEAKAGE, VOCAB, ParamsOpt
from stages.studies.llm_common import LLM_STUDY_MODELS, LLM_STUDY_REPORTS

log = logging.getLogger(__name__)

PARAMS = ("seed", "llm.prompt", "llm.answer_tokens", "llm_ctr", "llm_train", "llm_phase1", "llm_phase2",
          "llm_study")


def llm_run(variant: str = typer.Argument(..., help="tiny | smollm2_random | smollm2"),
            params: str = ParamsOpt) -> None:
    """Train both phases with models/studies/llm/VARIANT and write reports/studies/llm/runs/VARIANT.json."""
    from pipeline.core.train import resumable
    from pipeline.ctr import llm as L
    from pipeline.ctr.data import EncodedAvazu
    from pipeline.core.errors import ConfigError
    from pipeline.ctr.llm_study import VARIANTS, run_study

    p = load_stage(params, PARAMS, (LlmParams, LlmCtrParams, LlmTrainParams, LlmPhase1Params, LlmPhase2Params,
                                    LlmStudyParams))
    if variant not in VARIANTS:
        raise ConfigError(f"llm-run: variant '{variant}' is not one of {list(VARIANTS)}")
    llm_dir = LLM_STUDY_MODELS / variant
    enc = EncodedAvazu(VOCAB, ENCODED)
    key = (p.seed, variant, p.llm.prompt, list(p.llm.answer_tokens), p.llm_ctr, p.llm_train, p.llm_phase1.lr,
           p.llm_phase2.lr, p.llm_study, L.dir_fingerprint(llm_dir), L.dir_fingerprint(BASELINE_DIR),
           L.dir_fingerprint(enc.fmap_path.parent))
    with resumable(CKPT, f"study-llm-{variant}", *key) as ckpt:
        record = run_study(variant, llm_dir=llm_dir, enc=enc, baseline_dir=BASELINE_DIR, leakage=LEAKAGE,
                           seed=p.seed, llm=p.llm, llm_ctr=p.llm_ctr, train=p.llm_train, lr1=p.llm_phase1.lr,
                           lr2=p.llm_phase2.lr, study=p.llm_study, checkpoint_root=ckpt)
        with atomic_outputs() as out:
            write_json(out.file(LLM_STUDY_REPORTS / "runs" / f"{variant}.json"), record)
    log.info("llm study %s: phase 2 x4 test AUC %.4f", variant, record["metrics"]["llm_phase2"]["auc"])
