"""Calibration and oracle agreement (pipeline/core/calibration.py), and the CTR split report built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from pipeline.core.calibration import (base_rate_logloss, calibration, ece, logit, oracle_agreement,
                                       reliability_bins)
from pipeline.core.data import TensorData
from pipeline.ctr.task import sigmoid, split_report


def test_equal_mass_bins_by_hand():
    p = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6])
    y = np.array([1, 0, 0, 1, 1, 0, 0, 1])
    bins = reliability_bins(y, p, bins=4)
    # sorted p: 0.1 0.2 | 0.3 0.4 | 0.6 0.7 | 0.8 0.9 with labels 0 0 | 1 0 | 1 0 | 1 1
    assert [b["rows"] for b in bins] == [2, 2, 2, 2]
    assert [b["mean_pred"] for b in bins] == pytest.approx([0.15, 0.35, 0.65, 0.85])
    assert [b["observed"] for b in bins] == pytest.approx([0.0, 0.5, 0.5, 1.0])
    assert ece(bins) == pytest.approx((0.15 + 0.15 + 0.15 + 0.15) / 4)


def test_bins_are_equal_mass_under_ties_and_uneven_counts():
    p = np.full(103, 0.2)
    p[:50] = 0.1
    bins = reliability_bins(np.zeros(103), p, bins=10)
    sizes = [b["rows"] for b in bins]
    assert sum(sizes) == 103 and max(sizes) - min(sizes) <= 1        # ties split by position, not by value
    assert reliability_bins([1, 0], [0.3, 0.6], bins=20) == [{"rows": 1, "mean_pred": 0.3, "observed": 1.0},
                                                             {"rows": 1, "mean_pred": 0.6, "observed": 0.0}]
    assert reliability_bins([], [], bins=5) == []


def test_calibration_of_true_probabilities_is_near_zero_and_of_inflated_ones_is_not():
    g = np.random.default_rng(0)
    t = 1 / (1 + np.exp(-g.normal(-1.6, 1.0, 200_000)))
    y = (g.random(len(t)) < t).astype(np.int8)
    c = calibration(y, t)
    assert c["ece"] < 0.005 and abs(c["calibration_ratio"] - 1) < 0.02 and c["normalized_entropy"] < 1
    inflated = 1 / (1 + np.exp(-(logit(t) + 1.0)))                  # odds × e: over-predicts everywhere
    d = calibration(y, inflated)
    assert d["calibration_ratio"] > 1.4 and d["ece"] > 0.05
    assert d["ece_bins"] == 20 and d["ctr"] == pytest.approx(y.mean())


def test_base_rate_logloss_is_the_constant_predictors_and_its_normalized_entropy_is_one():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    const = np.full(len(y), 0.2)
    assert base_rate_logloss(0.2) == pytest.approx(log_loss(y, const))
    assert calibration(y, const)["normalized_entropy"] == pytest.approx(1.0)
    assert base_rate_logloss(0.0) is None and base_rate_logloss(1.0) is None


def test_oracle_agreement():
    g = np.random.default_rng(1)
    t = 1 / (1 + np.exp(-g.normal(-1.0, 1.2, 5000)))
    exact = oracle_agreement(logit(t), t)
    assert exact["pearson_logit_vs_oracle"] == pytest.approx(1.0)
    assert exact["spearman_logit_vs_oracle"] == pytest.approx(1.0) and exact["kl_oracle_model"] == pytest.approx(0.0, abs=1e-9)
    mono = oracle_agreement(np.exp(logit(t) / 2), t)                 # increasing, not affine
    assert mono["spearman_logit_vs_oracle"] == pytest.approx(1.0) and mono["pearson_logit_vs_oracle"] < 0.99
    noisy = oracle_agreement(logit(t) + g.normal(0, 1.0, len(t)), t)
    assert 0.3 < noisy["spearman_logit_vs_oracle"] < 0.95 and noisy["kl_oracle_model"] > 0.01
    # KL(Bernoulli(0.3) || Bernoulli(0.5)) by hand
    one = oracle_agreement(np.array([0.0, 0.0]), np.array([0.3, 0.3]))
    assert one["kl_oracle_model"] == pytest.approx(0.3 * np.log(0.3 / 0.5) + 0.7 * np.log(0.7 / 0.5))
    assert one["pearson_logit_vs_oracle"] is None and one["spearman_logit_vs_oracle"] is None   # constant


def test_split_report_has_calibration_and_the_oracle_beside_the_model():
    g = np.random.default_rng(2)
    n = 20_000
    t = (1 / (1 + np.exp(-g.normal(-1.5, 1.0, n)))).astype(np.float32)
    y = (g.random(n) < t).astype(np.float32)
    data = TensorData(torch.zeros(n, 2, dtype=torch.int32), torch.from_numpy(y), torch.from_numpy(t), name="s")
    z = (logit(t) * 0.5 - 0.8).astype(np.float32)                    # right ranking, wrong scale
    r = split_report(data, z)
    assert r["rows"] == n and r["oracle_auc"] == pytest.approx(r["auc"], abs=1e-6)   # same ranking
    assert r["spearman_logit_vs_oracle"] == pytest.approx(1.0, abs=1e-6)
    assert r["ece"] > r["oracle_ece"] and r["oracle_ece"] < 0.02 and r["kl_oracle_model"] > 0
    assert r["mean_pred"] == pytest.approx(float(sigmoid(z).mean()), rel=1e-5)
    real = TensorData(data.x, data.y, None, name="r")
    r2 = split_report(real, z)
    assert "oracle_auc" not in r2 and "spearman_logit_vs_oracle" not in r2 and "ece" in r2
