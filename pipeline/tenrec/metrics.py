"""The Tenrec ranking figures of one scorer on one candidate set, and the model-beside-oracle helper.

``scores`` [U, C]; ``positive`` [U, C] bool (≤ 1 True per row); ``valid`` [U, C] bool (False = an empty
slot, e.g. ANN returned fewer candidates). The ranking metrics (``ndcg@k``, ``hr@1``, ``mrr``) are
:mod:`pipeline.core.ranking`'s, with its tie rule (ties count against the positive, so a constant scorer
never looks good); a row without a positive (the retriever missed the held-out item) scores 0 on each.
``positive_in_candidates`` is the share of rows whose positive is among the candidates (the bound the
retriever puts on the ranking metrics).

Tenrec-specific: AUC = scikit-learn's ``roc_auc_score`` over all valid (user, candidate) pairs pooled, labels
= positive (or the like label for like-AUC); ``None`` when only one class is present.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.core.ranking import rank_metrics, target_ranks


def pooled_auc(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> float | None:
    y = labels[valid].astype(np.int64)
    if y.min(initial=1) == y.max(initial=0):
        return None
    return float(roc_auc_score(y, scores[valid].astype(np.float64)))


def protocol_metrics(click_scores: np.ndarray, like_scores: np.ndarray, positive: np.ndarray,
                     liked: np.ndarray, valid: np.ndarray, k: int) -> dict:
    """click AUC, like-AUC, ``ndcg@k``, ``hr@1``, ``mrr`` and ``positive_in_candidates`` of one scorer on
    one candidate set. ``liked`` [U, C] is True only at a liked positive."""
    ranks = target_ranks(click_scores, positive, valid)
    out = {"auc": pooled_auc(click_scores, positive, valid), "like_auc": pooled_auc(like_scores, liked, valid)}
    out.update(rank_metrics(ranks, ndcg=(k,), hr=(1,), mrr=True))
    out["positive_in_candidates"] = float((ranks >= 0).mean()) if len(ranks) else 0.0
    return out


def beside_oracle(model: dict, oracle: dict | None, skip=()) -> dict:
    """``model``'s figures with the oracle's beside them as ``oracle_<key>`` (keys in ``skip`` left out);
    ``model`` alone when there is no oracle (real data)."""
    if oracle is None:
        return dict(model)
    return {**model, **{f"oracle_{k}": v for k, v in oracle.items() if k not in skip}}
