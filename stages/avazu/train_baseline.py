"""Stage avazu_train_baseline: the CTR baseline (ctr.model with optim.*) on avazu.baseline_sources."""

from __future__ import annotations

import logging
import shutil

from pipeline.core.errors import ConfigError
from pipeline.core.io import atomic_outputs, write_json
from stages.avazu.common import MODELS, REPORTS, TB, Encoded, ParamsOpt, all_datasets, load

log = logging.getLogger(__name__)


def train_baseline(params: str = ParamsOpt) -> None:
    """Train ``ctr.model`` with ``optim.*`` on ``avazu.baseline_sources``; evaluate every source's valid/test."""
    import torch  # imported here: the data stages share this CLI and need not pay for torch

    from pipeline.core.io import md5_file
    from pipeline.core.train import init_distributed
    from pipeline.ctr import baseline as bl
    from pipeline.ctr.models import model_config

    p, layouts = load(params)
    a = p.avazu
    rank, world = init_distributed()
    enc = Encoded()
    datasets = {s: sorted(splits) for s, splits in all_datasets(a, layouts).items() if s in a.sources}
    for s in a.baseline_sources:
        if "valid" not in datasets[s]:
            raise ConfigError(f"avazu.baseline_sources: '{s}' has no valid split (add it to avazu.split_valid.sources)")

    train, valid = enc.tensors(a.baseline_sources, "train"), enc.tensors(a.baseline_sources, "valid")
    key = bl.run_key(p.seed, a.baseline_sources, p.ctr, p.optim, p.train, md5_file(enc.fmap_path), world)
    ckpt_dir = MODELS / ".ckpt" / f"baseline-{key}"
    trainer, model, state, wall = bl.fit_ctr(p, train, valid, vocab_sizes=enc.vocab_sizes, ckpt_dir=ckpt_dir,
                                             tb_dir=TB / "baseline")
    metrics = {}
    for source, splits in datasets.items():
        for split in ("valid", "test"):
            if split in splits:
                metrics[f"{source}/{split}"] = bl.split_metrics(trainer, enc.tensors(source, split))
    if rank != 0:
        return
    synthetic = valid.oracle is not None
    report = {
        "dataset": f"avazu ({', '.join(a.sources)}; {'synthetic' if synthetic else 'real'})",
        "synthetic": synthetic,
        "split": "valid and test of every source",
        "protocol": "pointwise CTR: AUC and logloss over every row of the split",
        "model": p.ctr.model, "encoder": p.ctr.encoder if p.ctr.model == "deepfm" else "none",
        "optimizer": p.optim.name, "train_sources": a.baseline_sources,
        "best_epoch": state.best_epoch, "epochs_run": len(state.history), "best_step": state.best_step,
        "wall_seconds": round(wall, 1), "metrics": metrics,
    }
    with atomic_outputs() as out:
        d = out.dir(MODELS / "baseline")
        torch.save(model.state_dict(), d / "model.pt")
        write_json(d / "config.json", {"model": model_config(model), "features": enc.features,
                                       "feature_map": str(enc.fmap_path)})
        write_json(out.file(REPORTS / "baseline.json"), report)
        write_json(out.file(REPORTS / "baseline_curve.json"), [
            {k: h[k] for k in ("epoch", "step", "train_loss", "valid_auc", "valid_logloss", "lr")}
            for h in state.history])
    shutil.rmtree(ckpt_dir, ignore_errors=True)       # done: the resume point is no longer needed
    log.info("baseline %s/%s: x4 test AUC %s", p.ctr.model, p.optim.name,
             metrics.get("x4/test", {}).get("auc"))
