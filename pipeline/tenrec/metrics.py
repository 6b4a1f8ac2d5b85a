"""Ranking metrics over candidate lists with (at most) one held-out positive per user.

``scores`` [U, C]; ``positive`` [U, C] bool (≤ 1 True per row); ``valid`` [U, C] bool (False = an empty
slot, e.g. ANN returned fewer candidates). The positive's 0-based rank counts the valid candidates that
score strictly higher plus the other valid candidates that tie with it (ties are resolved against the
positive, so a constant scorer never looks good). A row without a positive (the retriever missed the
held-out item) scores 0 on every ranking metric.

* NDCG@k = 1 / log2(rank + 2) if rank < k (one relevant item, so IDCG = 1)
* Hit@1 = [rank == 0]
* MRR = 1 / (rank + 1) (not truncated)
* AUC = scikit-learn's ``roc_auc_score`` over all valid (user, candidate) pairs pooled, labels = positive
  (or the like label for like-AUC); ``None`` when only one class is present.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def positive_ranks(scores: np.ndarray, positive: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[U] rank of the positive (−1 where the row has none)."""
    scores = np.where(valid, scores, -np.inf)
    has = (positive & valid).any(1)
    pos_col = np.argmax(positive & valid, axis=1)
    s_pos = scores[np.arange(len(scores)), pos_col][:, None]
    higher = ((scores > s_pos) & valid).sum(1)
    ties = ((scores == s_pos) & valid).sum(1) - 1
    return np.where(has, higher + ties, -1)


def ranking_metrics(scores: np.ndarray, positive: np.ndarray, valid: np.ndarray, k: int) -> dict:
    r = positive_ranks(scores, positive, valid)
    hit = r >= 0
    ndcg = np.where(hit & (r < k), 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0)
    return {f"ndcg_{k}": float(ndcg.mean()), "hit_1": float((hit & (r == 0)).mean()),
            "mrr": float(np.where(hit, 1.0 / (np.maximum(r, 0) + 1.0), 0.0).mean()),
            "positive_in_candidates": float(hit.mean())}


def pooled_auc(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> float | None:
    y = labels[valid].astype(np.int64)
    if y.min(initial=1) == y.max(initial=0):
        return None
    return float(roc_auc_score(y, scores[valid].astype(np.float64)))


def protocol_metrics(click_scores: np.ndarray, like_scores: np.ndarray, positive: np.ndarray,
                     liked: np.ndarray, valid: np.ndarray, k: int) -> dict:
    """click AUC, like-AUC and the ranking metrics of one scorer on one candidate set. ``liked`` [U, C] is
    True only at a liked positive."""
    out = {"auc": pooled_auc(click_scores, positive, valid), "like_auc": pooled_auc(like_scores, liked, valid)}
    out.update(ranking_metrics(click_scores, positive, valid, k))
    return out
