"""Pointwise CTR as a task of the one training loop: BCE on logits, AUC / logloss (scikit-learn), the
click predictor (logits and probabilities), and the figures of a model on a split: AUC / logloss,
calibration (:mod:`pipeline.core.calibration`) and, on synthetic data, the oracle beside it and the model's
agreement with the oracle's true probabilities."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from pipeline.core.calibration import ECE_BINS, calibration, oracle_agreement, reliability_bins
from pipeline.core.data import TensorData
from pipeline.core.train import Task

MONITORS = ("auc", "auc_minus_logloss")


def ctr_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    """AUC (NaN when one class only) and logloss of click probabilities ``p`` (clipped to [1e-7, 1 - 1e-7])."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {"auc": auc, "logloss": float(log_loss(y, p, labels=[0, 1]))}


@torch.no_grad()
def predict_logits(model: nn.Module, data: TensorData, batch_size: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Click logits (float32, in row order) of every row of ``data``, in eval mode. Batches go to the
    model's device and come back to the CPU; under DDP each rank scores its shard and all ranks gather."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    order = data.shard(torch.arange(len(data)), rank, world, pad=False)
    out = np.empty(len(order), dtype=np.float32)
    try:
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            xb = data.x.index_select(0, idx).to(device, non_blocking=True)
            out[i:i + len(idx)] = model(xb).float().cpu().numpy()
    finally:
        model.train(was)
    if world == 1:
        return out
    parts = [None] * world
    dist.all_gather_object(parts, (order.numpy(), out))
    z = np.empty(len(data), dtype=np.float32)
    for idx, vals in parts:
        z[idx] = vals
    return z


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Click probabilities (float32) of float32 logits, as torch computes them in training."""
    return torch.sigmoid(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))).numpy()


def predict_proba(model: nn.Module, data: TensorData, batch_size: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Click probabilities (float32, in row order): sigmoid of :func:`predict_logits`."""
    return sigmoid(predict_logits(model, data, batch_size, rank, world))


class CtrTask(Task):
    """BCE-with-logits on ``model(x)`` (labels moved to the logits' device and dtype, so a model on CUDA
    trains from CPU batches); AUC, logloss and AUC − logloss; monitor one of the first two or the last."""

    def __init__(self, monitor: str = "auc"):
        if monitor not in MONITORS:
            raise ValueError(f"CtrTask monitor: {monitor}")
        self.monitor = monitor

    def loss(self, model, x, y):
        d = model(x)
        return F.binary_cross_entropy_with_logits(d, y.to(d.device, d.dtype))

    def evaluate(self, trainer, data: TensorData) -> dict:
        p = predict_proba(trainer.raw_model, data, trainer.cfg.eval_batch_size, trainer.rank, trainer.world)
        m = ctr_metrics(data.y.numpy(), p)
        m["auc_minus_logloss"] = m["auc"] - m["logloss"]
        return m


def beside_oracle(metrics: dict, data: TensorData) -> dict:
    """``metrics`` (a model's AUC/logloss on ``data``) with the rows and, on synthetic data, the oracle's
    AUC/logloss and the model's AUC gap to it."""
    out = dict(metrics, rows=len(data))
    if data.oracle is not None:
        o = ctr_metrics(data.y.numpy(), data.oracle.numpy())
        out.update(oracle_auc=o["auc"], oracle_logloss=o["logloss"], gap_to_oracle_auc=o["auc"] - out["auc"])
    return out


def split_report(data: TensorData, logits: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Every figure of one model on one split: AUC, logloss, rows, calibration (observed and mean predicted
    CTR, their ratio, equal-mass ECE, base-rate logloss, normalized entropy) and, on synthetic data, the
    oracle's AUC / logloss / ECE beside the model's (the oracle's ECE is the sampling-noise floor of ECE on
    this many rows), the AUC gap, and the model's agreement with the oracle (Pearson / Spearman of logits
    against logit(p_true), mean KL(p_true ‖ p̂))."""
    y = data.y.numpy()
    p = sigmoid(logits)
    out = beside_oracle(ctr_metrics(y, p), data)
    out.update(calibration(y, p, bins))
    if data.oracle is not None:
        out["oracle_ece"] = calibration(y, data.oracle.numpy(), bins)["ece"]
        out.update(oracle_agreement(logits, data.oracle.numpy()))
    return out


def reliability(data: TensorData, logits: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """The equal-mass reliability bins (``rows``, ``mean_pred``, ``observed``) of a model on a split."""
    return reliability_bins(data.y.numpy(), sigmoid(logits), bins)
