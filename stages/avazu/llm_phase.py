"""Stage avazu_llm_phase@<phase> (foreach 1, 2): LLM-CTR training with the shared loop over
``llm_train.sources``.

Phase 1 trains the projector (baseline embeddings and encoder frozen); phase 2 starts from phase 1's best
projector and trains encoder + projector. The outputs hold the trainable parts only, never the LLM.
"""

from __future__ import annotations

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import LLM_PHASES, LlmCtrParams, LlmParams, LlmTrainParams
from stages.avazu.common import (BASELINE_DIR, CKPT, ENCODED, LLM_DIR, LLM_PHASE_DIRS, REPORTS, TB, VOCAB,
                                 ParamsOpt)

PARAMS = ("seed", "llm.prompt", "llm.answer_tokens", "llm_ctr", "llm_train", "llm_phase${key}")


def llm_phase(phase: int = typer.Argument(..., min=1, max=2, help="1: projector; 2: encoder + projector"),
              params: str = ParamsOpt) -> None:
    """Train LLM-CTR phase 1 (projector) or 2 (encoder + projector) over ``llm_train.sources`` in order."""
    import torch

    from pipeline.core.train import init_distributed, resumable
    from pipeline.ctr.llm_train import LlmPaths, PhaseRun

    p = load_stage(params, PARAMS, (LlmParams, LlmCtrParams, LlmTrainParams, LLM_PHASES[phase]), item=phase)
    lr = getattr(p, f"llm_phase{phase}").lr
    rank, world = init_distributed()
    paths = LlmPaths(VOCAB, ENCODED, BASELINE_DIR, LLM_DIR, LLM_PHASE_DIRS)
    run = PhaseRun.build(phase, paths, seed=p.seed, llm=p.llm, llm_ctr=p.llm_ctr, train=p.llm_train)
    key = run.key_parts(p.seed, p.llm, p.llm_ctr, p.llm_train, lr, world)
    with resumable(CKPT, f"llm_phase{phase}", *key) as ckpt:
        result = run.fit(p.llm_train, lr=lr, eval_batch_size=p.llm_ctr.eval_batch_size, seed=p.seed,
                         checkpoint_root=ckpt, tb_root=TB / f"llm_phase{phase}")
        if rank != 0:
            return
        state, config, report = run.outputs(result, llm=p.llm, llm_ctr=p.llm_ctr, train=p.llm_train, lr=lr,
                                            llm_dir=LLM_DIR)
        with atomic_outputs() as out:
            d = out.dir(LLM_PHASE_DIRS[phase])
            torch.save(state, d / "model.pt")
            write_json(d / "config.json", config)
            write_json(out.file(REPORTS / f"llm_phase{phase}.json"), report)
            write_json(out.file(REPORTS / f"llm_phase{phase}_curve.json"), result["curve"])
