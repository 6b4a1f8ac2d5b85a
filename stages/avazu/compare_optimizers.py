"""Stage avazu_compare_optimizers: the baseline's model and training config under Adam, SAM and Helen.

The baseline stage already trained ``optim.name``; this stage trains the other two with every other knob
unchanged (same model, seed, data, learning rates, ρ, loop) and reads the baseline's figures from
``reports/avazu/baseline.json``, so the three share one config and the comparison costs two trainings.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil

from pipeline.core.io import atomic_outputs, read_json, write_json
from stages.avazu.common import MODELS, REPORTS, TB, Encoded, ParamsOpt, load

log = logging.getLogger(__name__)
OPTIMIZERS = ("adam", "sam", "helen")


def compare_optimizers(params: str = ParamsOpt) -> None:
    """Train ``ctr.model`` with the two optimizers other than ``optim.name``; compare all three on test."""
    from pipeline.core.io import md5_file
    from pipeline.core.train import init_distributed
    from pipeline.ctr import baseline as bl

    p, _ = load(params)
    a = p.avazu
    rank, world = init_distributed()
    enc = Encoded()
    train, valid = enc.tensors(a.baseline_sources, "train"), enc.tensors(a.baseline_sources, "valid")
    tests = {s: enc.tensors(s, "test") for s in a.baseline_sources}
    baseline = read_json(REPORTS / "baseline.json")
    results = {}
    for name in OPTIMIZERS:
        if name == p.optim.name:
            results[name] = {"source": "avazu_train_baseline", "best_epoch": baseline["best_epoch"],
                             "epochs_run": baseline["epochs_run"], "wall_seconds": baseline["wall_seconds"],
                             "test": {s: baseline["metrics"][f"{s}/test"] for s in tests}}
            continue
        opt = dataclasses.replace(p.optim, name=name)
        key = bl.run_key(p.seed, a.baseline_sources, p.ctr, opt, p.train, md5_file(enc.fmap_path), world)
        ckpt_dir = MODELS / ".ckpt" / f"compare-{name}-{key}"
        trainer, _, state, wall = bl.fit_ctr(p, train, valid, vocab_sizes=enc.vocab_sizes, ckpt_dir=ckpt_dir,
                                             tb_dir=TB / f"compare_{name}", optim=opt)
        results[name] = {"source": "avazu_compare_optimizers", "best_epoch": state.best_epoch,
                         "epochs_run": len(state.history), "wall_seconds": round(wall, 1),
                         "test": {s: bl.split_metrics(trainer, d) for s, d in tests.items()}}
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info("compare %s: %s", name, {s: round(m["auc"], 5) for s, m in results[name]["test"].items()})
    if rank != 0:
        return
    first = a.baseline_sources[0]
    report = {
        "dataset": baseline["dataset"], "synthetic": baseline["synthetic"],
        "split": f"test of {', '.join(a.baseline_sources)}",
        "protocol": "pointwise CTR: AUC and logloss over every row of the split; same model, data, seed and "
                    "loop for every optimizer",
        "model": p.ctr.model, "train_sources": a.baseline_sources, "rho": p.optim.rho, "bound": p.optim.bound,
        "headline_split": f"{first}/test",
        "optimizers": {n: dict(r["test"][first], best_epoch=r["best_epoch"], epochs_run=r["epochs_run"],
                               wall_seconds=r["wall_seconds"], trained_by=r["source"])
                       for n, r in results.items()},
        "per_source": {n: r["test"] for n, r in results.items()},
    }
    with atomic_outputs() as out:
        write_json(out.file(REPORTS / "optimizers.json"), report)
