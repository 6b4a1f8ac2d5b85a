"""Glue between typed params and the CTR zoo, the step rules and the one training loop."""

from __future__ import annotations

import logging

from pipeline.core.config import CtrParams, OptimParams, TrainParams
from pipeline.core.data import TensorData
from pipeline.core.train import LoopConfig, ctr_metrics, run_key  # noqa: F401  (run_key: re-exported)
from pipeline.ctr.models import CTRModel, build_model
from pipeline.ctr.optim import build_step_rule

log = logging.getLogger(__name__)


def model_kwargs(ctr: CtrParams) -> dict:
    """Constructor arguments for ``ctr.model``: the shared ones plus that model's own keys only."""
    kw = {"embedding_dim": ctr.embedding_dim, "hidden_units": list(ctr.hidden_units), "dropout": ctr.dropout,
          "batch_norm": ctr.batch_norm}
    if ctr.model == "deepfm":
        kw["encoder"] = ctr.encoder
    elif ctr.encoder != "none":
        log.warning("ctr.encoder=%s applies to deepfm only; %s has no encoder", ctr.encoder, ctr.model)
    if ctr.model in ("dcn", "dcnv2"):
        kw["num_cross_layers"] = ctr.num_cross_layers
    if ctr.model == "dcnv2":
        kw["model_structure"] = ctr.dcnv2_structure
    if ctr.model == "dlrm":
        kw["interaction_op"] = ctr.dlrm_interaction
    return kw


def build_ctr_model(ctr: CtrParams, vocab_sizes: list[int]) -> CTRModel:
    return build_model(ctr.model, vocab_sizes, **model_kwargs(ctr))


def step_rule_for(model: CTRModel, optim: OptimParams):
    """Adam / SAM / Helen over the model's embedding tables (field i -> tables[i] of every group) and the
    rest of its parameters."""
    field_tables = [(i, t) for tables in model.embedding_groups().values() for i, t in enumerate(tables)]
    return build_step_rule(optim.name, field_tables=field_tables, embed_params=model.embedding_parameters(),
                           net_params=model.net_parameters(), lr_embed=optim.lr_embed, lr_net=optim.lr_net,
                           rho=optim.rho, bound=optim.bound, net_pert=optim.net_pert, net_norm=optim.net_norm,
                           clip_norm=optim.clip_norm)


def loop_config(train: TrainParams, seed: int) -> LoopConfig:
    return LoopConfig(epochs=train.epochs, batch_size=train.batch_size, eval_every_steps=train.eval_every_steps,
                      monitor=train.monitor, patience=train.patience, lr_decay=train.lr_decay,
                      min_lr=train.min_lr, embedding_regularizer=train.embedding_regularizer,
                      net_regularizer=train.net_regularizer, checkpoint_every_steps=train.checkpoint_every_steps,
                      eval_batch_size=train.eval_batch_size, seed=seed)


def split_metrics(trainer, data: TensorData) -> dict:
    """Model AUC/logloss on ``data``; beside them the oracle's (synthetic data) and the gap."""
    out = trainer.evaluate(data)
    out["rows"] = len(data)
    if data.oracle is not None:
        o = ctr_metrics(data.y.numpy(), data.oracle.numpy())
        out.update(oracle_auc=o["auc"], oracle_logloss=o["logloss"], gap_to_oracle_auc=o["auc"] - out["auc"])
    return out


def fit_ctr(p, train: TensorData, valid: TensorData, *, vocab_sizes: list[int], ckpt_dir, tb_dir=None,
            optim: OptimParams | None = None):
    """Seed, build ``p.ctr``'s model and ``optim`` (default ``p.optim``)'s step rule, and train them with the
    one loop (resuming from ``ckpt_dir`` if a killed run left a checkpoint there). Returns
    (trainer, model, state, wall seconds)."""
    import time

    from pipeline.core.seeding import seed_everything
    from pipeline.core.train import Trainer

    seed_everything(p.seed)
    model = build_ctr_model(p.ctr, vocab_sizes)
    rule = step_rule_for(model, optim or p.optim)
    trainer = Trainer(model, rule, loop_config(p.train, p.seed), embedding_params=model.embedding_parameters(),
                      checkpoint_dir=ckpt_dir, tb_dir=tb_dir)
    t0 = time.time()
    state = trainer.fit(train, valid)
    return trainer, model, state, time.time() - t0
