"""Stage helen_optimizers (studies/helen/dvc.yaml): the main baseline's model and training config under Adam,
SAM and Helen on the embedded default's full data (the study's other stages use a smaller world).

The baseline stage already trained ``optim.name``; this stage trains the other two with every other knob
unchanged (same model, seed, data, learning rates, ρ, loop) and reads the baseline's figures from
``reports/avazu/baseline.json``, so the three share one config and the comparison costs two trainings.
"""

from __future__ import annotations

import dataclasses
import logging

from pipeline.core.io import atomic_outputs, read_json, write_json
from pipeline.core.params import load_stage
from pipeline.ctr.models import CtrParams
from pipeline.ctr.params import OptimParams, TrainParams
from stages.avazu.common import CKPT, ENCODED, REPORTS, TB, VOCAB, ParamsOpt
from stages.studies.common import HELEN_REPORTS

log = logging.getLogger(__name__)

PARAMS = ("seed", "ctr", "optim", "train")


def helen_optimizers(params: str = ParamsOpt) -> None:
    """Train ``ctr.model`` with the two optimizers other than ``optim.name``; compare all three on test."""
    from pipeline.core.io import md5_file
    from pipeline.core.train import init_distributed, resumable
    from pipeline.ctr import baseline as bl
    from pipeline.ctr.data import EncodedAvazu

    p = load_stage(params, PARAMS, (CtrParams, OptimParams, TrainParams))
    rank, world = init_distributed()
    enc = EncodedAvazu(VOCAB, ENCODED)
    baseline = read_json(REPORTS / "baseline.json")
    results = {}
    for name in bl.OPTIMIZERS:
        if name == p.optim.name:
            results[name] = bl.reported_run(baseline, p.train.sources)
            continue
        opt = dataclasses.replace(p.optim, name=name)
        with resumable(CKPT, f"compare-{name}", p.seed, p.ctr, opt, p.train, md5_file(enc.fmap_path), world) as ckpt:
            fit = bl.fit_ctr(p.seed, p.ctr, opt, p.train, enc, ckpt_dir=ckpt, tb_dir=TB / f"compare_{name}")
            results[name] = bl.fitted_run(fit, enc, p.train.sources)
        log.info("compare %s: %s", name, {s: round(m["auc"], 5) for s, m in results[name]["test"].items()})
    if rank != 0:
        return
    with atomic_outputs() as out:
        write_json(out.file(HELEN_REPORTS / "optimizers.json"), bl.optimizers_report(results, baseline, p.ctr, p.optim,
                                                                             p.train.sources))
