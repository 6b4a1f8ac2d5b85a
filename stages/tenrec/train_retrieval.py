"""Stage tenrec_train_retrieval: the two-tower retriever (sampled softmax, logQ, accidental-hit masking)."""

from __future__ import annotations

import logging
import shutil
import time

from pipeline.core.io import atomic_outputs, md5_file, write_json
from stages.tenrec.common import (CKPT, EMBEDDINGS, MODELS, PREPARED, REPORTS, TB, ParamsOpt, clean, dataset_name,
                                  load, oracle_world)

log = logging.getLogger(__name__)


def train_retrieval(params: str = ParamsOpt) -> None:
    """Train the two towers on the train clicks; write the model, the item/query embeddings and the exact
    Recall@k of the valid and test clicks (with the oracle's on synthetic data)."""
    import numpy as np
    import torch

    from pipeline.tenrec.loop import run_key
    from pipeline.tenrec import retrieval as rt
    from pipeline.tenrec.prepare import SEQ_FILE, load_sequences, split_users

    p = load(params)
    rp = p.retrieval
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    key = run_key(p.seed, p.tenrec.min_clicks, rp, md5_file(PREPARED / SEQ_FILE))
    ckpt = CKPT / f"tenrec-retrieval-{key}"
    t0 = time.time()
    model, trainer, state, valid, test = rt.fit_retrieval(s, split, rp, seed=p.seed, checkpoint_dir=ckpt,
                                                          tb_dir=TB / "retrieval")
    wall = time.time() - t0
    model.eval()
    items = model.all_item_vecs()
    tq = rt.user_vectors(model, test, rp.eval_batch_size)
    world = oracle_world()
    metrics = {"test": rt.recall_from_ranks(rt.target_ranks(lambda a, b: tq[a:b] @ items.T, test, len(test)),
                                            rt.EXACT_KS)}
    if world is not None:
        o = rt.recall_from_ranks(rt.oracle_ranks(world, s, test), rt.EXACT_KS)
        metrics["test"].update({f"oracle_{k}": v for k, v in o.items()})
    best = max(state.history, key=lambda h: h["monitor"]) if state.history else {}
    metrics[f"valid ({len(valid)} users)"] = {k[len("valid_"):]: v for k, v in best.items() if k.startswith("valid_")}
    report = {"dataset": dataset_name(p, world is not None), "synthetic": world is not None,
              "split": "leave-last-out: valid = second-to-last click, test = last click",
              "protocol": "full_ranking (exact search over every item, the user's earlier clicks excluded)",
              "users": len(test), "items": s.n_items, "train_rows": int(split.n_train.sum()),
              "sampler": rp.sampler, "num_negatives": rp.num_negatives, "logq_correction": rp.logq_correction,
              "best_epoch": state.best_epoch, "epochs_run": len(state.history), "wall_seconds": round(wall, 1),
              "metrics": metrics}
    with atomic_outputs() as out:
        d = out.dir(MODELS / "retrieval")
        torch.save(model.state_dict(), d / "model.pt")
        write_json(d / "config.json", model.config)
        e = out.dir(EMBEDDINGS)
        np.savez(e / "embeddings.npz", items=items.numpy(), test_queries=tq.numpy(), eval_users=split.eval_users)
        write_json(out.file(REPORTS / "retrieval.json"), clean(report))
        write_json(out.file(REPORTS / "retrieval_curve.json"), [
            {k: h[k] for k in ("epoch", "step", "train_loss", f"valid_recall_{rp.monitor_k}", "lr")}
            for h in state.history])
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("retrieval: test %s", metrics["test"])
