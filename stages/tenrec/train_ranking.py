"""Stage tenrec_train_ranking: the Fastformer (or Transformer) ranker with click and like heads."""

from __future__ import annotations

import logging
import time

from pipeline.core.io import atomic_outputs, md5_file, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.tenrec.params import RankingParams, TenrecParams
from stages.tenrec.common import CKPT, MODELS, PREPARED, REPORTS, TB, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "tenrec.min_clicks", "ranking")


def train_ranking(params: str = ParamsOpt) -> None:
    """Train ``ranking.encoder`` on the train clicks (+ negatives); early stopping on the valid clicks under
    the sampled protocol; write the model and the training curve."""
    import torch

    from pipeline.core.train import init_distributed, resumable
    from pipeline.tenrec import ranking as rk
    from pipeline.tenrec.loop import curve
    from pipeline.tenrec.prepare import SEQ_FILE, load_sequences, split_users
    from pipeline.tenrec.reports import clean, prepared_dataset

    p = load_stage(params, PARAMS, (TenrecParams, RankingParams))
    rp = p.ranking
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    dataset, synthetic = prepared_dataset(read_json(PREPARED / "meta.json"))
    rank, world = init_distributed()          # torchrun: every rank trains on its shard, rank 0 writes
    with resumable(CKPT, "tenrec-ranking", p.seed, p.tenrec.min_clicks, rp, md5_file(PREPARED / SEQ_FILE),
                   world) as ckpt:
        t0 = time.time()
        fit = rk.fit_ranking(s, split, rp, seed=p.seed, checkpoint_dir=ckpt, tb_dir=TB / f"ranking-{rp.encoder}")
        if rank != 0:
            return
        report = rk.ranking_train_report(fit, rp, dataset=dataset, synthetic=synthetic,
                                         wall_seconds=time.time() - t0)
        with atomic_outputs() as out:
            d = out.dir(MODELS / "ranking")
            torch.save(fit.model.state_dict(), d / "model.pt")
            write_json(d / "config.json", fit.model.config)
            write_json(out.file(REPORTS / "ranking_train.json"), clean(report))
            write_json(out.file(REPORTS / "ranking_curve.json"), curve(fit.state, rk.curve_keys(rp)))
    log.info("ranking %s: best valid %s", rp.encoder, report["valid"])
