"""Stage avazu_llm_phase@<phase>[-seed] (foreach): LLM-CTR training with the shared loop over
``llm_train.sources``, under one protocol.

Phase 1 trains the projector (baseline embeddings and encoder frozen); phase 2 starts from phase 1's best
projector and trains encoder + projector. ``leak_free`` (stages @1, @2) drops the rows of the training and
validation sets that are x4 valid / test events (avazu_leakage); ``seed_leaky`` (@1-seed, @2-seed) keeps
them, as the seed's protocol does, so the report shows the leak's size. The outputs hold the trainable
parts only, never the LLM.
"""

from __future__ import annotations

import typer

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.params import LLM_PHASES, LlmCtrParams, LlmParams, LlmTrainParams
from stages.avazu.common import (BASELINE_DIR, CKPT, ENCODED, LEAKAGE, LLM_DIR, PROTOCOLS, REPORTS, TB, VOCAB,
                                 ParamsOpt, llm_phase_dirs)

PARAMS = ("seed", "llm.prompt", "llm.answer_tokens", "llm_ctr", "llm_train", "llm_phase${item.phase}")


def llm_phase(phase: int = typer.Argument(..., min=1, max=2, help="1: projector; 2: encoder + projector"),
              protocol: str = typer.Option("leak_free", help="leak_free | seed_leaky (x4 eval rows kept)"),
              params: str = ParamsOpt) -> None:
    """Train LLM-CTR phase 1 (projector) or 2 (encoder + projector) over ``llm_train.sources`` in order."""
    import torch

    from pipeline.core.errors import ConfigError
    from pipeline.core.train import init_distributed, resumable
    from pipeline.ctr.llm_train import LlmPaths, PhaseRun

    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol: '{protocol}' is not one of {list(PROTOCOLS)}")
    p = load_stage(params, PARAMS, (LlmParams, LlmCtrParams, LlmTrainParams, LLM_PHASES[phase]),
                   item={"phase": phase})
    lr = getattr(p, f"llm_phase{phase}").lr
    rank, world = init_distributed()
    dirs = llm_phase_dirs(protocol)
    paths = LlmPaths(VOCAB, ENCODED, BASELINE_DIR, LLM_DIR, dirs, leakage=LEAKAGE if protocol == "leak_free" else None)
    run = PhaseRun.build(phase, paths, seed=p.seed, llm=p.llm, llm_ctr=p.llm_ctr, train=p.llm_train)
    key = run.key_parts(p.seed, p.llm, p.llm_ctr, p.llm_train, lr, world) + (protocol,)
    name = f"llm_phase{phase}{PROTOCOLS[protocol]}"
    with resumable(CKPT, name, *key) as ckpt:
        result = run.fit(p.llm_train, lr=lr, eval_batch_size=p.llm_ctr.eval_batch_size, seed=p.seed,
                         checkpoint_root=ckpt, tb_root=TB / name)
        if rank != 0:
            return
        state, config, report = run.outputs(result, llm=p.llm, llm_ctr=p.llm_ctr, train=p.llm_train, lr=lr,
                                            llm_dir=LLM_DIR)
        with atomic_outputs() as out:
            d = out.dir(dirs[phase])
            torch.save(state, d / "model.pt")
            write_json(d / "config.json", config)
            write_json(out.file(REPORTS / f"{name}.json"), report)
            write_json(out.file(REPORTS / f"{name}_curve.json"), result["curve"])
