"""Stage tenrec_encoder_scaling: training-step time of the ranker's Fastformer vs Transformer encoder (same
width, heads and depth as ``ranking.*``) over ``encoder_scaling.lengths`` — the linear vs quadratic cost the
ranker's encoder choice is about. Timings, so never pinned (check-metrics ignores ``*_ms*``);
``bench/fastformer.py`` is the full benchmark (up to 2048, peak memory, the targets)."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.tenrec.params import EncoderScalingParams, RankingParams
from stages.tenrec.common import REPORTS, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "ranking.embedding_dim", "ranking.num_heads", "ranking.ffn_dim", "ranking.num_layers",
          "encoder_scaling")


def encoder_scaling(params: str = ParamsOpt) -> None:
    """Time one training step of each encoder at each length; write reports/tenrec/encoder_scaling.json."""
    import torch

    from pipeline.tenrec.fastformer import time_encoder

    p = load_stage(params, PARAMS, (RankingParams, EncoderScalingParams))
    rp = p.ranking
    rows = [time_encoder(kind, n, dim=rp.embedding_dim, heads=rp.num_heads, ffn_dim=rp.ffn_dim,
                         num_layers=rp.num_layers, seed=p.seed)
            for n in p.encoder_scaling.lengths for kind in ("fastformer", "transformer")]
    for r in rows:
        log.info("%-11s L=%4d  %.1f ms/step", r["encoder"], r["length"], r["step_ms"])
    report = {"dataset": "random inputs (no data)", "synthetic": True, "split": "n/a",
              "protocol": f"training-step time, batch 8, {torch.get_num_threads()} threads, median of 3",
              "dim": rp.embedding_dim, "heads": rp.num_heads, "layers": rp.num_layers, "timings": rows}
    with atomic_outputs() as out:
        write_json(out.file(REPORTS / "encoder_scaling.json"), report)
