"""Glue between typed params, the CTR zoo, the step rules and the one training loop: the CTR baseline's
run (avazu_train_baseline) and its re-runs under other optimizers (avazu_compare_optimizers)."""

from __future__ import annotations

import logging
import time

import numpy as np
from dataclasses import dataclass

from pipeline.core.data import TensorData
from pipeline.core.train import LoopConfig, LoopState, Trainer
from pipeline.ctr.data import EncodedAvazu
from pipeline.ctr.models import CTRModel, CtrParams, build_ctr_model, model_config
from pipeline.ctr.optim import build_step_rule
from pipeline.ctr.params import AVAZU_SOURCES, OptimParams, TrainParams
from pipeline.ctr.task import CtrTask, predict_logits, split_report

log = logging.getLogger(__name__)

PROTOCOL = ("pointwise CTR: AUC, logloss and calibration (equal-mass ECE, mean predicted vs observed CTR) "
            "over every row of the split")


def step_rule_for(model: CTRModel, optim: OptimParams):
    """Adam / SAM / Helen over the model's embedding tables (field i -> tables[i] of every group) and the
    rest of its parameters. Helen's ``optim.helen_variant`` decides where the 1-dim first-order tables go:
    ``recdag`` keeps them with their field's embeddings, ``release`` moves them to the dense group (lr_net)."""
    field_tables = [(i, t) for tables in model.embedding_groups().values() for i, t in enumerate(tables)]
    return build_step_rule(optim.name, field_tables=field_tables, embed_params=model.embedding_parameters(),
                           net_params=model.net_parameters(), lr_embed=optim.lr_embed, lr_net=optim.lr_net,
                           rho=optim.rho, bound=optim.bound, net_pert=optim.net_pert,
                           helen_variant=optim.helen_variant,
                           clip_norm=optim.clip_norm)


def loop_config(train: TrainParams, seed: int) -> LoopConfig:
    return LoopConfig(epochs=train.epochs, batch_size=train.batch_size, eval_every_steps=train.eval_every_steps,
                      patience=train.patience, lr_decay=train.lr_decay, min_lr=train.min_lr,
                      embedding_regularizer=train.embedding_regularizer, net_regularizer=train.net_regularizer,
                      checkpoint_every_steps=train.checkpoint_every_steps, eval_batch_size=train.eval_batch_size,
                      seed=seed)


@dataclass
class Fit:
    trainer: Trainer
    model: CTRModel
    state: LoopState
    wall_seconds: float

    def logits(self, data: TensorData) -> np.ndarray:
        """The fitted (best) model's click logits of every row of ``data`` (gathered over DDP ranks)."""
        t = self.trainer
        return predict_logits(t.raw_model, data, t.cfg.eval_batch_size, t.rank, t.world)

    def metrics(self, data: TensorData, logits=None) -> dict:
        """The fitted model's figures on ``data`` (:func:`~pipeline.ctr.task.split_report`: AUC, logloss,
        calibration; the oracle and the agreement with it on synthetic data)."""
        return split_report(data, self.logits(data) if logits is None else logits)


def fit_ctr(seed: int, ctr: CtrParams, optim: OptimParams, train: TrainParams, enc: EncodedAvazu, *, ckpt_dir,
            tb_dir=None, train_rows: int = 0) -> Fit:
    """Seed, build ``ctr``'s model and ``optim``'s step rule, and train them with the one loop on
    ``train.sources`` (train split; early stopping on their valid split), resuming from ``ckpt_dir`` if a
    killed run left a checkpoint there. ``train_rows`` > 0 trains on a seeded sample of that many train
    rows (the study pipelines' smaller world; validation stays whole)."""
    from pipeline.core.seeding import seed_everything

    enc.require("train.sources", train.sources, ("train", "valid"))
    train_data, valid = enc.tensors(train.sources, "train"), enc.tensors(train.sources, "valid")
    train_data = train_data.subsample(train_rows, seed)
    seed_everything(seed)
    model = build_ctr_model(ctr, enc.vocab_sizes)
    trainer = Trainer(model, step_rule_for(model, optim), loop_config(train, seed),
                      embedding_params=model.embedding_parameters(), checkpoint_dir=ckpt_dir,
                      task=CtrTask(train.monitor), tb_dir=tb_dir)
    t0 = time.time()
    state = trainer.fit(train_data, valid)
    return Fit(trainer, model, state, time.time() - t0)


def base_splits(enc: EncodedAvazu, splits=("valid", "test")) -> list[tuple[str, str]]:
    """(source, split) of every encoded base source (x1/x2/x4, not the samples) that has the split."""
    return [(s, sp) for s in enc.datasets if s in AVAZU_SOURCES for sp in splits if sp in enc.datasets[s]]


def baseline_report(fit: Fit, enc: EncodedAvazu, ctr: CtrParams, optim: OptimParams, train: TrainParams,
                    keep_logits: tuple[str, ...] = ("test",)) -> tuple[dict, dict]:
    """reports/avazu/baseline.json (every base source's valid/test figures beside the oracle), and the
    (data, logits) of the ``keep_logits`` splits by ``"<source>/<split>"`` (the test predictions)."""
    metrics, kept = {}, {}
    for s, sp in base_splits(enc):
        data = enc.tensors(s, sp)
        z = fit.logits(data)
        metrics[f"{s}/{sp}"] = fit.metrics(data, z)
        if sp in keep_logits:
            kept[f"{s}/{sp}"] = (data, z)
    synthetic = all("oracle_auc" in m for m in metrics.values())
    sources = [s for s in enc.datasets if s in AVAZU_SOURCES]
    return {
        "dataset": f"avazu ({', '.join(sources)}; {'synthetic' if synthetic else 'real'})",
        "synthetic": synthetic, "split": "valid and test of every source", "protocol": PROTOCOL,
        "model": ctr.model, "encoder": getattr(ctr.options, "encoder", "none"),
        "optimizer": optim.name, "train_sources": list(train.sources),
        "best_epoch": fit.state.best_epoch, "epochs_run": len(fit.state.history), "best_step": fit.state.best_step,
        "wall_seconds": round(fit.wall_seconds, 1), "metrics": metrics,
    }, kept


def baseline_files(fit: Fit, enc: EncodedAvazu, train: TrainParams) -> tuple[dict, dict, list]:
    """(state_dict, config.json, curve rows) of the trained baseline: ``config.json`` holds the constructor
    arguments (``build_model(**config["model"])`` rebuilds it), the fields and the sources it trained on."""
    from pipeline.core.io import md5_file

    config = {"model": model_config(fit.model), "features": enc.features, "feature_map": str(enc.fmap_path),
              "feature_map_md5": md5_file(enc.fmap_path), "train_sources": list(train.sources)}
    curve = [{k: h[k] for k in ("epoch", "step", "train_loss", "valid_auc", "valid_logloss", "lr")}
             for h in fit.state.history]
    return fit.model.state_dict(), config, curve


# ------------------------------------------------------------------------------------------------ optimizers

OPTIMIZERS = ("adam", "sam", "helen")


def reported_run(baseline: dict, sources: list[str]) -> dict:
    """The run avazu_train_baseline made (read from its report), in the comparison's form."""
    return {"source": "avazu_train_baseline", "best_epoch": baseline["best_epoch"],
            "epochs_run": baseline["epochs_run"], "wall_seconds": baseline["wall_seconds"],
            "test": {s: baseline["metrics"][f"{s}/test"] for s in sources}}


def fitted_run(fit: Fit, enc: EncodedAvazu, sources: list[str]) -> dict:
    return {"source": "avazu_compare_optimizers", "best_epoch": fit.state.best_epoch,
            "epochs_run": len(fit.state.history), "wall_seconds": round(fit.wall_seconds, 1),
            "test": {s: fit.metrics(enc.tensors(s, "test")) for s in sources}}


def optimizers_report(results: dict, baseline: dict, ctr: CtrParams, optim: OptimParams, sources: list[str]) -> dict:
    """reports/avazu/optimizers.json: Adam vs SAM vs Helen on each train source's test split."""
    first = sources[0]
    return {
        "dataset": baseline["dataset"], "synthetic": baseline["synthetic"],
        "split": f"test of {', '.join(sources)}",
        "protocol": PROTOCOL + "; same model, data, seed and loop for every optimizer",
        "model": ctr.model, "train_sources": list(sources), "rho": optim.rho, "bound": optim.bound,
        "headline_split": f"{first}/test",
        "optimizers": {n: dict(r["test"][first], best_epoch=r["best_epoch"], epochs_run=r["epochs_run"],
                               wall_seconds=r["wall_seconds"], trained_by=r["source"])
                       for n, r in results.items()},
        "per_source": {n: r["test"] for n, r in results.items()},
    }
