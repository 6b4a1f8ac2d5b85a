"""Stage tenrec_train_ranking: the Fastformer (or Transformer) ranker with click and like heads."""

from __future__ import annotations

import logging
import shutil
import time

from pipeline.core.io import atomic_outputs, md5_file, write_json
from stages.tenrec.common import CKPT, MODELS, PREPARED, REPORTS, TB, ParamsOpt, clean, dataset_name, load

log = logging.getLogger(__name__)


def train_ranking(params: str = ParamsOpt) -> None:
    """Train ``ranking.encoder`` on the train clicks (+ negatives); early stopping on the valid clicks under
    the sampled protocol; write the model and the training curve."""
    import torch

    from pipeline.core.io import read_json
    from pipeline.tenrec.loop import run_key
    from pipeline.tenrec.prepare import SEQ_FILE, load_sequences, split_users
    from pipeline.tenrec.ranking import fit_ranking

    p = load(params)
    rp = p.ranking
    s = load_sequences(PREPARED)
    split = split_users(s, p.tenrec.min_clicks)
    key = run_key(p.seed, p.tenrec.min_clicks, rp, md5_file(PREPARED / SEQ_FILE))
    ckpt = CKPT / f"tenrec-ranking-{key}"
    t0 = time.time()
    model, trainer, state, valid = fit_ranking(s, split, rp, seed=p.seed, checkpoint_dir=ckpt,
                                               tb_dir=TB / f"ranking-{rp.encoder}")
    wall = time.time() - t0
    best = max(state.history, key=lambda h: h["monitor"]) if state.history else {}
    synthetic = bool(read_json(PREPARED / "meta.json").get("synthetic"))
    report = {"dataset": dataset_name(p, synthetic), "synthetic": synthetic,
              "split": "valid (second-to-last click)", "protocol": valid.protocol, "encoder": rp.encoder,
              "num_layers": rp.num_layers, "parameters": sum(x.numel() for x in model.parameters()),
              "best_epoch": state.best_epoch, "epochs_run": len(state.history), "wall_seconds": round(wall, 1),
              "valid": {k[len("valid_"):]: v for k, v in best.items() if k.startswith("valid_")}}
    with atomic_outputs() as out:
        d = out.dir(MODELS / "ranking")
        torch.save(model.state_dict(), d / "model.pt")
        write_json(d / "config.json", model.config)
        write_json(out.file(REPORTS / "ranking_train.json"), clean(report))
        write_json(out.file(REPORTS / "ranking_curve.json"), [
            {k: h.get(k) for k in ("epoch", "step", "train_loss", f"valid_ndcg_{rp.ndcg_k}", "valid_auc",
                                   "valid_like_auc", "lr")} for h in state.history])
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("ranking %s: best valid %s", rp.encoder, report["valid"])
