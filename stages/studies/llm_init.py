"""Stage llm_study_init@<variant> (studies/llm/dvc.yaml): the study's LLM in HF format — the tiny random
Qwen3, SmolLM2-135M with re-initialised weights, or SmolLM2-135M-Instruct pretrained."""

from __future__ import annotations

import logging

import typer

from pipeline.core.io import atomic_outputs
from pipeline.core.params import load_stage
from pipeline.ctr.params import LlmParams
from stages.avazu.common import ParamsOpt
from stages.studies.llm_common import LLM_STUDY_MODELS

log = logging.getLogger(__name__)

PARAMS = ("seed", "llm")


def llm_init(variant: str = typer.Argument(..., help="tiny | smollm2_random | smollm2"),
             params: str = ParamsOpt) -> None:
    """Build / convert VARIANT's LLM into models/studies/llm/VARIANT (llm.prompt and answer words checked)."""
    from pipeline.ctr.llm_init import init_llm
    from pipeline.ctr.llm_study import variant_llm

    p = load_stage(params, PARAMS, (LlmParams,))
    llm = variant_llm(p.llm, variant)
    with atomic_outputs() as out:
        info = init_llm(out.dir(LLM_STUDY_MODELS / variant), llm, p.seed)
    log.info("llm study %s: %s, %d parameters", variant, info["model_class"], info["num_parameters"])
