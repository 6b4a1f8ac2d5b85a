"""Stage avazu_train_baseline: the CTR baseline (``ctr`` with ``optim``) on ``train.sources``."""

from __future__ import annotations

import logging

from pipeline.core.io import atomic_outputs, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.models import CtrParams
from pipeline.ctr.params import OptimParams, TrainParams
from stages.avazu.common import BASELINE_DIR, CKPT, ENCODED, PREDICTIONS, REPORTS, TB, VOCAB, ParamsOpt

log = logging.getLogger(__name__)

PARAMS = ("seed", "ctr", "optim", "train")


def train_baseline(params: str = ParamsOpt) -> None:
    """Train ``ctr.model`` with ``optim.*`` on ``train.sources``; evaluate every source's valid/test (AUC,
    logloss, calibration, the oracle beside them); write the model and every source's test predictions
    (data/avazu/predictions/baseline/<source>/test.parquet)."""
    import torch  # imported here: the data stages share this CLI and need not pay for torch

    from pipeline.core.io import md5_file
    from pipeline.core.train import init_distributed, resumable
    from pipeline.ctr import baseline as bl
    from pipeline.ctr.data import EncodedAvazu
    from pipeline.ctr.predictions import write_predictions

    p = load_stage(params, PARAMS, (CtrParams, OptimParams, TrainParams))
    rank, world = init_distributed()
    enc = EncodedAvazu(VOCAB, ENCODED)
    with resumable(CKPT, "baseline", p.seed, p.ctr, p.optim, p.train, md5_file(enc.fmap_path), world) as ckpt:
        fit = bl.fit_ctr(p.seed, p.ctr, p.optim, p.train, enc, ckpt_dir=ckpt, tb_dir=TB / "baseline")
        report, test_logits = bl.baseline_report(fit, enc, p.ctr, p.optim, p.train)
        if rank != 0:
            return
        state, config, curve = bl.baseline_files(fit, enc, p.train)
        with atomic_outputs() as out:
            d = out.dir(BASELINE_DIR)
            torch.save(state, d / "model.pt")
            write_json(d / "config.json", config)
            write_json(out.file(REPORTS / "baseline.json"), report)
            write_json(out.file(REPORTS / "baseline_curve.json"), curve)
            pdir = out.dir(PREDICTIONS / "baseline")
            for split, (data, z) in test_logits.items():
                (pdir / split).parent.mkdir(parents=True, exist_ok=True)
                write_predictions(pdir / f"{split}.parquet", data, z)
    log.info("baseline %s/%s: x4 test AUC %s", p.ctr.model, p.optim.name,
             report["metrics"].get("x4/test", {}).get("auc"))
