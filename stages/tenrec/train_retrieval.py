"""Stage tenrec_train_retrieval: the two-tower retriever (sampled softmax, logQ, accidental-hit masking)."""

from __future__ import annotations

import logging
import time

from pipeline.core.io import atomic_outputs, md5_file, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.tenrec.params import RetrievalParams, TenrecParams
from stages.tenrec.common import CKPT, EMBEDDINGS, MODELS, PREPARED, RAW, REPORTS, TB, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "tenrec.min_clicks", "retrieval")


def train_retrieval(params: str = ParamsOpt) -> None:
    """Train the two towers on the train clicks; write the model, the item/query embeddings and the exact
    ``recall@k`` of the valid and test clicks (with the oracle's on synthetic data)."""
    import numpy as np
    import torch

    from pipeline.core.train import init_distributed, resumable
    from pipeline.tenrec import retrieval as rt
    from pipeline.tenrec.loop import curve
    from pipeline.tenrec.prepare import SEQ_FILE, load_sequences, split_users
    from pipeline.tenrec.reports import clean, prepared_dataset
    from pipeline.tenrec.synthetic import load_world

    p = load_stage(params, PARAMS, (TenrecParams, RetrievalParams))
    rp = p.retrieval
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    dataset, _ = prepared_dataset(read_json(PREPARED / "meta.json"))
    world = load_world(RAW)
    rank, ranks = init_distributed()          # torchrun: every rank trains on its shard, rank 0 writes
    with resumable(CKPT, "tenrec-retrieval", p.seed, p.tenrec.min_clicks, rp, md5_file(PREPARED / SEQ_FILE),
                   ranks) as ckpt:
        t0 = time.time()
        fit = rt.fit_retrieval(s, split, rp, seed=p.seed, checkpoint_dir=ckpt, tb_dir=TB / "retrieval")
        wall = time.time() - t0
        if rank != 0:                         # the one-off test evaluation and the files: rank 0 alone
            return
        test, items, tq = rt.evaluate_test(fit, s, world, rp.eval_batch_size)
        report = rt.retrieval_report(fit, s, split, rp, test, dataset=dataset, synthetic=world is not None,
                                     wall_seconds=wall)
        with atomic_outputs() as out:
            d = out.dir(MODELS / "retrieval")
            torch.save(fit.model.state_dict(), d / "model.pt")
            write_json(d / "config.json", fit.model.config)
            e = out.dir(EMBEDDINGS)
            np.savez(e / "embeddings.npz", items=items.numpy(), test_queries=tq.numpy(), eval_users=split.eval_users)
            write_json(out.file(REPORTS / "retrieval.json"), clean(report))
            write_json(out.file(REPORTS / "retrieval_curve.json"), curve(fit.state, rt.curve_keys(rp)))
    log.info("retrieval: test %s", test)
