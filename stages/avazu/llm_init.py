"""Stage llm_init: the LLM of LLM-CTR in Hugging Face format under models/llm (tiny | hf | local)."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.config import load_params
from pipeline.core.io import atomic_outputs, write_json
from stages.avazu.common import LLM_DIR, ParamsOpt

log = logging.getLogger(__name__)


def llm_init(params: str = ParamsOpt) -> None:
    """Build the embedded tiny Qwen3 + tokenizer, or fetch ``llm.name`` / copy ``llm.local_path``, into
    models/llm; check that it loads with AutoModelForCausalLM / AutoTokenizer and holds the answer tokens."""
    import torch

    from pipeline.ctr import llm_init as li

    p = load_params(params)
    l = p.llm
    with atomic_outputs() as out:
        d = out.dir(LLM_DIR)
        if l.source == "tiny":
            t = l.tiny
            info = li.build_tiny(d, prompt=l.prompt, answer_tokens=l.answer_tokens, seed=p.seed,
                                 hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                                 num_layers=t.num_layers, num_heads=t.num_heads, num_kv_heads=t.num_kv_heads,
                                 head_dim=t.head_dim, vocab_size=t.vocab_size,
                                 max_position_embeddings=t.max_position_embeddings)
        elif l.source == "hf":
            info = li.fetch_hf(l.name, l.revision, d)
        else:
            info = li.copy_local(Path(l.local_path), d)
        # load it back the way every later stage does: fails here, with a clear error, if it is unusable
        bundle = li.load_bundle(d, prompt=l.prompt, answer_tokens=l.answer_tokens, dtype=torch.float32,
                             device=torch.device("cpu"))
        cfg = bundle.llm.config
        info.update(model_class=type(bundle.llm).__name__, hidden_size=bundle.hidden_size,
                    num_layers=int(cfg.num_hidden_layers), num_parameters=sum(q.numel() for q in bundle.llm.parameters()),
                    prompt_tokens=len(bundle.prompt_ids), answer_tokens=list(l.answer_tokens),
                    answer_ids=bundle.answer_ids, embedding_rms=bundle.embedding_rms())
        write_json(d / li.INFO_FILE, info)
    log.info("LLM ready in %s: %s, %d parameters, prompt %d tokens", LLM_DIR, info["model_class"],
             info["num_parameters"], info["prompt_tokens"])
