"""Stage avazu_llm_init: the LLM of LLM-CTR in Hugging Face format under models/avazu/llm (tiny | hf | local)."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs
from pipeline.core.params import load_stage
from pipeline.ctr.params import LlmParams
from stages.avazu.common import LLM_DIR, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "llm")


def llm_init(params: str = ParamsOpt) -> None:
    """Build the embedded tiny Qwen3 + tokenizer, or fetch ``llm.name`` / copy ``llm.local_path``, into
    models/avazu/llm; check that it loads with AutoModelForCausalLM / AutoTokenizer and holds the answers."""
    from pipeline.ctr.llm_init import init_llm

    p = load_stage(params, PARAMS, (LlmParams,))
    with atomic_outputs() as out:
        info = init_llm(out.dir(LLM_DIR), p.llm, p.seed)
    log.info("LLM ready in %s: %s, %d parameters, prompt %d tokens", LLM_DIR, info["model_class"],
             info["num_parameters"], info["prompt_tokens"])
