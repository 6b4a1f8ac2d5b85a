"""Calibration of predicted probabilities and agreement with the true ones: one implementation for every
pointwise click model (the CTR baseline, LLM-CTR, the Tenrec ranker's click head).

Calibration (labels ``y`` in {0, 1}, predictions ``p``):

* ``ctr`` (observed click rate), ``mean_pred`` (mean predicted), ``calibration_ratio`` = mean_pred / ctr
  (1 = calibrated on average; the "calibration" of He et al., *Practical Lessons from Predicting Clicks
  on Ads at Facebook*, ADKDD 2014);
* ``ece``: expected calibration error over :data:`ECE_BINS` **equal-mass** bins (rows sorted by ``p``,
  stable sort, split into bins whose sizes differ by at most one) = Σ_b (n_b / N) |mean(y_b) − mean(p_b)|
  — the adaptive / equal-mass ECE of Nixon et al., *Measuring Calibration in Deep Learning*, CVPR-W 2019.
  Equal-mass bins keep every bin populated when predictions crowd near the base rate, as click
  probabilities do; equal-width bins would leave most of them empty;
* ``base_rate_logloss``: the logloss of the constant predictor at the split's own click rate (what a
  model must beat), and ``normalized_entropy`` = logloss / base_rate_logloss (He et al.; < 1 = better
  than the base rate).

Agreement with the truth (synthetic data, where the generator's ``p_true`` is known):

* ``pearson_logit_vs_oracle`` / ``spearman_logit_vs_oracle``: correlation of the model's logits with
  logit(p_true) (scipy's ``pearsonr`` / ``spearmanr``);
* ``kl_oracle_model``: mean over rows of KL(Bernoulli(p_true) ‖ Bernoulli(p̂)) in nats (0 = the model
  predicts the true probability of every row).

Probabilities are clipped to [1e-7, 1 − 1e-7] (as the logloss is) before logits and KL. scikit-learn
provides no ECE; ``calibration_curve`` bins by quantile edges (unequal bins under ties) and returns no bin
sizes, so the bins are cut here, by position in the sorted order.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import log_loss

ECE_BINS = 20
EPS = 1e-7


def _clip(p) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)


def logit(p) -> np.ndarray:
    """log(p / (1 − p)) of clipped ``p`` (float64)."""
    p = _clip(p)
    return np.log(p) - np.log1p(-p)


def reliability_bins(y, p, bins: int = ECE_BINS) -> list[dict]:
    """Equal-mass bins of ``p`` (ascending): each ``{"rows", "mean_pred", "observed"}``. Fewer rows than
    bins gives one bin per row; no rows, no bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for idx in np.array_split(order, min(bins, len(p))):
        out.append({"rows": int(len(idx)), "mean_pred": float(p[idx].mean()), "observed": float(y[idx].mean())})
    return out


def ece(bins: list[dict]) -> float:
    """Σ_b (n_b / N) |observed_b − mean_pred_b| over :func:`reliability_bins`."""
    n = sum(b["rows"] for b in bins)
    return float(sum(b["rows"] * abs(b["observed"] - b["mean_pred"]) for b in bins) / n) if n else float("nan")


def base_rate_logloss(ctr: float) -> float | None:
    """Logloss of the constant predictor at click rate ``ctr`` (None when ``ctr`` is 0 or 1)."""
    if ctr is None or not 0 < ctr < 1:
        return None
    return float(-(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr)))


def calibration(y, p, bins: int = ECE_BINS) -> dict:
    """``ctr``, ``mean_pred``, ``calibration_ratio``, ``ece`` (equal-mass, ``bins``), ``base_rate_logloss``
    and ``normalized_entropy`` of predictions ``p`` for labels ``y`` (see the module docstring)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("calibration of an empty split")
    ctr, mean_pred = float(y.mean()), float(p.mean())
    base = base_rate_logloss(ctr)
    ll = float(log_loss(y, _clip(p), labels=[0, 1]))
    return {"ctr": ctr, "mean_pred": mean_pred, "calibration_ratio": mean_pred / ctr if ctr > 0 else None,
            "ece": ece(reliability_bins(y, p, bins)), "ece_bins": bins, "base_rate_logloss": base,
            "normalized_entropy": ll / base if base else None}


def oracle_agreement(logits, p_true) -> dict:
    """``pearson_logit_vs_oracle``, ``spearman_logit_vs_oracle`` (model logits vs logit(p_true)) and
    ``kl_oracle_model`` (mean Bernoulli KL(p_true ‖ sigmoid(logits)), nats). Correlations are None when
    either side is constant."""
    z = np.asarray(logits, dtype=np.float64)
    t = _clip(p_true)
    q = _clip(1.0 / (1.0 + np.exp(-z)))
    kl = t * (np.log(t) - np.log(q)) + (1 - t) * (np.log1p(-t) - np.log1p(-q))
    zt = logit(t)
    constant = len(z) < 2 or np.ptp(z) == 0 or np.ptp(zt) == 0
    return {"pearson_logit_vs_oracle": None if constant else float(stats.pearsonr(z, zt).statistic),
            "spearman_logit_vs_oracle": None if constant else float(stats.spearmanr(z, zt).statistic),
            "kl_oracle_model": float(kl.mean()) if len(kl) else None}
